"""Evaluation tasks: per-sample predictions of CLIP and CLIP-ICM, and their summaries."""
from __future__ import annotations

import numpy as np
import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from icm_core import LinearProbe, harmonic_mean, zero_shot_predict
from tasks.catalog import EmbeddingCatalog

METHODS = ("clip_zero_shot", "clip_linear_probe", "clip_icm_zero_shot", "clip_icm_linear_probe")
PREDICTION_COLUMNS = ["protocol", "target", "method", "sample_id", "class", "label", "prediction", "correct"]


def _rows(protocol, target, method, frame, predictions) -> pd.DataFrame:
    return pd.DataFrame({
        "protocol": protocol, "target": target, "method": method,
        "sample_id": frame["sample_id"].to_numpy(), "class": frame["class"].to_numpy(),
        "label": frame["label"].to_numpy().astype("int32"), "prediction": np.asarray(predictions, dtype="int32"),
        "correct": frame["label"].to_numpy() == np.asarray(predictions),
    })[PREDICTION_COLUMNS]


@task(name="evaluate-domain-shift", task_run_name="evaluate target {target}", cache_policy=NO_CACHE)
def evaluate_target(index: EmbeddingCatalog, sources, target: str, projection, probe_C: float = 0.316,
                    probe: str = "torch") -> pd.DataFrame:
    """The four methods on every image of the target, from the same cached embeddings."""
    train_rows, train_embeddings = index.load(sources, "train")
    target_rows, target_embeddings = index.load([target])
    classes = index.class_embeddings()
    predictions = {
        "clip_zero_shot": zero_shot_predict(target_embeddings, classes),
        "clip_linear_probe": LinearProbe(C=probe_C, solver=probe).fit(train_embeddings, train_rows["label"]).predict(target_embeddings),
        "clip_icm_zero_shot": zero_shot_predict(target_embeddings, classes, projection),
        "clip_icm_linear_probe": LinearProbe(projection, C=probe_C, solver=probe)
        .fit(train_embeddings, train_rows["label"])
        .predict(target_embeddings),
    }
    return pd.concat([_rows("domain_shift", target, m, target_rows, p) for m, p in predictions.items()], ignore_index=True)


@task(name="evaluate-open-class", task_run_name="open-class target {target}", cache_policy=NO_CACHE)
def evaluate_open_class_target(index: EmbeddingCatalog, target: str, projection) -> pd.DataFrame:
    """Zero-shot over base + novel class names on every target image, CLIP and CLIP-ICM."""
    target_rows, target_embeddings = index.load([target])
    classes = index.class_embeddings()
    predictions = {
        "clip_zero_shot": zero_shot_predict(target_embeddings, classes),
        "clip_icm_zero_shot": zero_shot_predict(target_embeddings, classes, projection),
    }
    return pd.concat([_rows("open_class", target, m, target_rows, p) for m, p in predictions.items()], ignore_index=True)


def split_base_novel(classes) -> tuple[list[str], list[str]]:
    """Base = the first half of the sorted class names, novel = the rest."""
    ordered = sorted(classes)
    return ordered[: len(ordered) // 2], ordered[len(ordered) // 2 :]


def summarize(predictions: pd.DataFrame, classes) -> pd.DataFrame:
    """Accuracy per protocol x method x target, a 'mean' row per method, and open-class base/novel/HM."""
    base, _ = split_base_novel(classes)
    rows = []
    for (protocol, method, target), group in predictions.groupby(["protocol", "method", "target"], sort=True):
        row = {"protocol": protocol, "method": method, "target": target,
               "accuracy": group["correct"].mean(), "n": len(group)}
        if protocol == "open_class":
            is_base = group["class"].isin(base)
            row["base_accuracy"] = group.loc[is_base, "correct"].mean()
            row["novel_accuracy"] = group.loc[~is_base, "correct"].mean()
            row["harmonic_mean"] = harmonic_mean(row["base_accuracy"], row["novel_accuracy"])
        rows.append(row)
    summary = pd.DataFrame(rows)
    means = summary.groupby(["protocol", "method"], sort=True).mean(numeric_only=True).reset_index()
    means["target"] = "mean"
    means["n"] = summary.groupby(["protocol", "method"], sort=True)["n"].sum().to_numpy()
    if "harmonic_mean" in means:
        open_class = means["protocol"] == "open_class"
        means.loc[open_class, "harmonic_mean"] = [
            harmonic_mean(b, n) for b, n in means.loc[open_class, ["base_accuracy", "novel_accuracy"]].to_numpy()
        ]
    summary = pd.concat([summary, means], ignore_index=True)
    return summary.sort_values(["protocol", "method", "target"], key=lambda c: c.replace("mean", "~")).reset_index(drop=True)
