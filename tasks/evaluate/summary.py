"""A protocol's results gathered over its targets, and the run's summary: top-1, top-5 and balanced accuracy per
protocol, method and target, open-class base/novel/HM, and on each CLIP-ICM row its Δ over CLIP with the paired
interval and McNemar p."""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from icm_core import balanced_accuracy, harmonic_mean
from tasks.data.splits import split_base_novel
from tasks.evaluate.comparisons import paired_comparisons
from tasks.evaluate.predictions import open_clip_rows_everywhere
from tasks.vocabulary import OPEN_CLASS, STABLE, TRAINING_DOMAIN


@dataclass
class Evaluation:
    predictions: pd.DataFrame  # one row per target image and method
    selections: pd.DataFrame  # one row per target and (lambda, k); the chosen row carries the diagnostics
    spectra: pd.DataFrame  # M's eigenvalues at the chosen lambda, per target


def collect(protocol: str, outcomes) -> Evaluation:
    """One Evaluation from (target, predictions, (grid, spectrum)) per target."""
    predictions, selections, spectra = [], [], []
    for target, target_predictions, (grid, spectrum) in outcomes:
        predictions.append(target_predictions)
        selections.append(grid.assign(protocol=protocol, target=target))
        spectra.append(spectrum.assign(protocol=protocol, target=target))
    return Evaluation(open_clip_rows_everywhere(pd.concat(predictions, ignore_index=True)),
                      *(pd.concat(frames, ignore_index=True) for frames in (selections, spectra)))


def _metrics(group: pd.DataFrame) -> dict:
    top5 = group["top5_correct"]
    return {
        "accuracy": group["correct"].mean(),
        "top5_accuracy": float("nan") if top5.isna().any() else top5.astype(bool).mean(),
        "balanced_accuracy": balanced_accuracy(group["label"].to_numpy(), group["prediction"].to_numpy()),
    }


def summarize(predictions: pd.DataFrame, classes, selection: str = TRAINING_DOMAIN, split: str = STABLE) -> pd.DataFrame:
    """Top-1, top-5 and balanced accuracy per protocol x method x target, a 'mean' row per method
    (the mean over targets; NaN when a target has none), open-class base/novel/HM, the selection rule and the split;
    CLIP-ICM rows add delta, ci_low, ci_high and mcnemar_p over their CLIP baseline (NaN on CLIP's rows)."""
    base, _ = split_base_novel(classes)
    rows = []
    for (protocol, method, target), group in predictions.groupby(["protocol", "method", "target"], sort=True):
        row = {"protocol": protocol, "method": method, "target": target, **_metrics(group), "n": len(group)}
        if protocol == OPEN_CLASS:
            is_base = group["class"].isin(base)
            row["base_accuracy"] = group.loc[is_base, "correct"].mean()
            row["novel_accuracy"] = group.loc[~is_base, "correct"].mean()
            row["harmonic_mean"] = harmonic_mean(row["base_accuracy"], row["novel_accuracy"])
        rows.append(row)
    summary = pd.DataFrame(rows)
    metrics = [column for column in summary.select_dtypes("number").columns if column != "n"]
    grouped = summary.groupby(["protocol", "method"], sort=True)
    means = grouped[metrics].agg(lambda column: column.mean(skipna=False)).reset_index()
    means["target"] = "mean"
    means["n"] = grouped["n"].sum().to_numpy()
    if "harmonic_mean" in means:
        open_class = means["protocol"] == OPEN_CLASS
        means.loc[open_class, "harmonic_mean"] = [
            harmonic_mean(b, n) for b, n in means.loc[open_class, ["base_accuracy", "novel_accuracy"]].to_numpy()
        ]
    summary = pd.concat([summary, means], ignore_index=True).assign(selection=selection, split=split)
    summary = summary.merge(paired_comparisons(predictions), on=["protocol", "method", "target"], how="left")
    return summary.sort_values(["protocol", "method", "target"], key=lambda c: c.replace("mean", "~")).reset_index(drop=True)
