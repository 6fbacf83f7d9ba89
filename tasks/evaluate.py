"""Evaluation tasks: per-sample predictions of CLIP and CLIP-ICM, and their summaries."""
from __future__ import annotations

import numpy as np
import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from icm_core import (
    LinearProbe,
    ReleasedLinearProbe,
    balanced_accuracy,
    harmonic_mean,
    released_zero_shot_logits,
    top_k_correct,
    top_k_labels,
    zero_shot_logits,
)
from tasks.catalog import EmbeddingCatalog
from tasks.fit import load_projection
from tasks.errors import InputError

METHODS = ("clip_zero_shot", "clip_linear_probe", "clip_icm_zero_shot", "clip_icm_linear_probe")
PREDICTION_COLUMNS = ["protocol", "target", "method", "sample_id", "class", "label", "prediction", "correct",
                      "top5_correct"]
# which target images are tested: all, DomainBed's 80% "in" split, or the released code's 20% "out" split
TEST_SPLITS = {"all": None, "in": "train", "out": "val"}
TOP_K = 5


def zero_shot_scores(preset: str, images, classes, projection=None) -> np.ndarray:
    """Zero-shot logits: normalise-then-project (the method) or the released code's recipe."""
    logits = released_zero_shot_logits if preset == "released" else zero_shot_logits
    return logits(images, classes, projection)


def make_probe(preset: str, projection, probe_c: float, solver: str = "torch"):
    return ReleasedLinearProbe(projection) if preset == "released" else LinearProbe(projection, C=probe_c, solver=solver)


def _rows(protocol, target, method, frame, scores, labels=None) -> pd.DataFrame:
    """One row per image: the top-1 prediction and, over >= 5 scored classes, whether top-5 holds the label.

    Fewer than 5 scored classes make top-5 trivially right: its column is then null (NA).
    """
    truth = frame["label"].to_numpy()
    ranked = top_k_labels(scores, min(TOP_K, scores.shape[1]), labels)
    top5 = (pd.array(top_k_correct(truth, ranked), dtype="boolean") if scores.shape[1] >= TOP_K
            else pd.array([pd.NA] * len(frame), dtype="boolean"))
    return pd.DataFrame({
        "protocol": protocol, "target": target, "method": method,
        "sample_id": frame["sample_id"].to_numpy(), "class": frame["class"].to_numpy(),
        "label": truth.astype("int32"), "prediction": ranked[:, 0].astype("int32"),
        "correct": truth == ranked[:, 0], "top5_correct": top5,
    })[PREDICTION_COLUMNS]


def load_target(index: EmbeddingCatalog, target: str, test_split: str):
    if test_split not in TEST_SPLITS:
        raise ValueError(f"config field 'test_split': {test_split!r} is not one of {list(TEST_SPLITS)}")
    rows, embeddings = index.load([target], TEST_SPLITS[test_split])
    if len(rows) == 0:
        raise InputError(f"target {target!r} has no images in test split {test_split!r}; choose --test-split all")
    return rows, embeddings


@task(name="evaluate-domain-shift", task_run_name="evaluate target {target}", cache_policy=NO_CACHE)
def evaluate_target(
    index: EmbeddingCatalog, sources, target: str, projection_url: str, probe_c: float = 0.316,
    test_split: str = "all", preset: str = "default", probe: str = "torch",
) -> pd.DataFrame:
    """The four methods on the target's test split, from the same cached embeddings."""
    projection = load_projection(projection_url)
    train_rows, train_embeddings = index.load(sources, "train")
    target_rows, target_embeddings = load_target(index, target, test_split)
    classes = index.class_embeddings()
    probes = {method: make_probe(preset, fitted, probe_c, probe).fit(train_embeddings, train_rows["label"])
              for method, fitted in (("clip_linear_probe", None), ("clip_icm_linear_probe", projection))}
    scores = {  # method: (scores, the label of each score column)
        "clip_zero_shot": (zero_shot_scores(preset, target_embeddings, classes), None),
        "clip_icm_zero_shot": (zero_shot_scores(preset, target_embeddings, classes, projection), None),
        **{method: (probe.decision_function(target_embeddings), probe.classes_) for method, probe in probes.items()},
    }
    return pd.concat([_rows("domain_shift", target, method, target_rows, *scores[method]) for method in METHODS],
                     ignore_index=True)


@task(name="evaluate-open-class", task_run_name="open-class target {target}", cache_policy=NO_CACHE)
def evaluate_open_class_target(
    index: EmbeddingCatalog, target: str, projection_url: str, test_split: str = "all", preset: str = "default",
) -> pd.DataFrame:
    """Zero-shot over base + novel class names on the target's test split, CLIP and CLIP-ICM."""
    projection = load_projection(projection_url)
    target_rows, target_embeddings = load_target(index, target, test_split)
    classes = index.class_embeddings()
    return pd.concat([
        _rows("open_class", target, "clip_zero_shot", target_rows, zero_shot_scores(preset, target_embeddings, classes)),
        _rows("open_class", target, "clip_icm_zero_shot", target_rows,
              zero_shot_scores(preset, target_embeddings, classes, projection)),
    ], ignore_index=True)


def split_base_novel(classes) -> tuple[list[str], list[str]]:
    """Base = the first half (floor) of the sorted class names, novel = the rest."""
    ordered = sorted(classes)
    return ordered[: len(ordered) // 2], ordered[len(ordered) // 2 :]


def _metrics(group: pd.DataFrame) -> dict:
    top5 = group["top5_correct"]
    return {
        "accuracy": group["correct"].mean(),
        "top5_accuracy": float("nan") if top5.isna().any() else top5.astype(bool).mean(),
        "balanced_accuracy": balanced_accuracy(group["label"].to_numpy(), group["prediction"].to_numpy()),
    }


def summarize(predictions: pd.DataFrame, classes, selection: str = "training-domain") -> pd.DataFrame:
    """Top-1, top-5 and balanced accuracy per protocol x method x target, a 'mean' row per method
    (the mean over targets; NaN when a target has none), open-class base/novel/HM, and the selection rule."""
    base, _ = split_base_novel(classes)
    rows = []
    for (protocol, method, target), group in predictions.groupby(["protocol", "method", "target"], sort=True):
        row = {"protocol": protocol, "method": method, "target": target, **_metrics(group), "n": len(group)}
        if protocol == "open_class":
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
        open_class = means["protocol"] == "open_class"
        means.loc[open_class, "harmonic_mean"] = [
            harmonic_mean(b, n) for b, n in means.loc[open_class, ["base_accuracy", "novel_accuracy"]].to_numpy()
        ]
    summary = pd.concat([summary, means], ignore_index=True).assign(selection=selection)
    return summary.sort_values(["protocol", "method", "target"], key=lambda c: c.replace("mean", "~")).reset_index(drop=True)
