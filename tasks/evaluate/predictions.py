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
from icm_core.chunks import map_row_chunks
from tasks.store.catalog import EmbeddingCatalog
from tasks.fit.moments import load_projection
from tasks.store.memory import release_freed_memory
from tasks.errors import InputError
from tasks.vocabulary import DOMAIN_SHIFT, METHODS, OPEN_CLASS, TEST_SPLITS

PREDICTION_COLUMNS = ["protocol", "target", "method", "sample_id", "class", "label", "prediction", "correct",
                      "top5_correct"]
TOP_K = 5


def zero_shot_scores(preset: str, images, classes, projection=None) -> np.ndarray:
    """Zero-shot logits: normalise-then-project (the method) or the released code's recipe."""
    logits = released_zero_shot_logits if preset == "released" else zero_shot_logits
    return logits(images, classes, projection)


def make_probe(preset: str, projection, probe_c: float, solver: str = "torch", start_from=None):
    """The released recipe's probe, or ours (warm-started at `start_from`'s solution where it can be)."""
    if preset == "released":
        return ReleasedLinearProbe(projection)
    return LinearProbe(projection, C=probe_c, solver=solver, start_from=start_from)


def fit_linear_probes(preset: str, projection, probe_c: float, solver: str, blocks, labels) -> dict:
    """{method: fitted probe}: CLIP's on the embeddings, then CLIP-ICM's started from CLIP's solution."""
    clip_probe = make_probe(preset, None, probe_c, solver).fit(blocks, labels)
    icm_probe = make_probe(preset, projection, probe_c, solver, start_from=clip_probe).fit(blocks, labels)
    release_freed_memory()  # the probes' passes: many chunk-sized buffers, freed
    return {"clip_linear_probe": clip_probe, "clip_icm_linear_probe": icm_probe}


def probe_scorer(probe) -> tuple:
    """A probe's scorer for `method_rows`: (scores of a chunk of rows, the label of each column)."""
    return probe.decision_function, probe.classes_


def ranked(scores_of, columns, embeddings) -> np.ndarray:
    """n x min(5, columns): each image's best-scored labels, best first. `scores_of(rows)` scores a chunk of
    rows (column j is label columns[j]); an n x classes score matrix is never held."""
    k = min(TOP_K, len(columns))
    return map_row_chunks(lambda part: top_k_labels(scores_of(part), k, columns), embeddings)


def _rows(protocol, target, method, frame, ranking) -> pd.DataFrame:
    """One row per image: the top-1 prediction and, over >= 5 scored classes, whether top-5 holds the label.

    Fewer than 5 scored classes make top-5 trivially right: its column is then null (NA).
    """
    truth = frame["label"].to_numpy()
    top5 = (pd.array(top_k_correct(truth, ranking), dtype="boolean") if ranking.shape[1] >= TOP_K
            else pd.array([pd.NA] * len(frame), dtype="boolean"))
    return pd.DataFrame({
        "protocol": protocol, "target": target, "method": method,
        "sample_id": frame["sample_id"].to_numpy(), "class": frame["class"].to_numpy(),
        "label": truth.astype("int32"), "prediction": ranking[:, 0].astype("int32"),
        "correct": truth == ranking[:, 0], "top5_correct": top5,
    })[PREDICTION_COLUMNS]


def zero_shot_scorers(preset: str, class_embeddings, projection, columns=None) -> dict:
    """CLIP's and CLIP-ICM's zero-shot scorers for `method_rows`; columns: the label of each class embedding."""
    columns = np.arange(len(class_embeddings)) if columns is None else columns
    return {
        "clip_zero_shot": (lambda part: zero_shot_scores(preset, part, class_embeddings), columns),
        "clip_icm_zero_shot": (lambda part: zero_shot_scores(preset, part, class_embeddings, projection), columns),
    }


def method_rows(protocol, target, frame, embeddings, scorers) -> pd.DataFrame:
    """`_rows` of each method scored, in METHODS order; scorers: method -> (scores of a chunk of rows,
    the label of each score column)."""
    return pd.concat([_rows(protocol, target, method, frame, ranked(*scorers[method], embeddings))
                      for method in METHODS if method in scorers], ignore_index=True)


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
    """The four methods on the target's test split, from the same cached embeddings.

    The probes read the sources' held arrays in place (one block per domain); the CLIP-ICM
    probe starts from the CLIP probe's solution, carried into the invariant subspace.
    """
    projection = load_projection(projection_url)
    train_rows, train_blocks = index.blocks(sources, "train")
    target_rows, target_embeddings = load_target(index, target, test_split)
    classes = index.class_embeddings()
    probes = fit_linear_probes(preset, projection, probe_c, probe, train_blocks, train_rows["label"])
    return method_rows(DOMAIN_SHIFT, target, target_rows, target_embeddings, {
        **zero_shot_scorers(preset, classes, projection),
        **{method: probe_scorer(fitted) for method, fitted in probes.items()},
    })


@task(name="evaluate-open-class", task_run_name="open-class target {target}", cache_policy=NO_CACHE)
def evaluate_open_class_target(
    index: EmbeddingCatalog, target: str, projection_url: str, test_split: str = "all", preset: str = "default",
) -> pd.DataFrame:
    """Zero-shot over base + novel class names on the target's test split, CLIP and CLIP-ICM."""
    projection = load_projection(projection_url)
    target_rows, target_embeddings = load_target(index, target, test_split)
    classes = index.class_embeddings()
    return method_rows(OPEN_CLASS, target, target_rows, target_embeddings,
                       zero_shot_scorers(preset, classes, projection))


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
    summary = pd.concat([summary, means], ignore_index=True).assign(selection=selection)
    return summary.sort_values(["protocol", "method", "target"], key=lambda c: c.replace("mean", "~")).reset_index(drop=True)
