"""Evaluation tasks: per-sample predictions of CLIP and CLIP-ICM (zero-shot and linear probe) on a target."""
from __future__ import annotations

import numpy as np
import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from icm_core import LinearProbe, top_k_correct, top_k_labels, zero_shot_logits
from icm_core.chunks import map_row_chunks
from tasks.fit.projections import load_projection
from tasks.specs import Recipe
from tasks.store.catalog import EmbeddingCatalog
from tasks.store.memory import release_freed_memory
from tasks.vocabulary import (
    CLIP_ICM_LINEAR_PROBE, CLIP_ICM_ZERO_SHOT, CLIP_ICM_ZERO_SHOT_OPEN_CLIP, CLIP_LINEAR_PROBE, CLIP_ZERO_SHOT,
    DOMAIN_SHIFT, METHODS, OPEN_CLASS, TEST_SPLITS, TRAIN,
)

PREDICTION_COLUMNS = ["protocol", "target", "method", "sample_id", "class", "label", "prediction", "correct",
                      "top5_correct"]
TOP_K = 5


def fit_linear_probes(recipe: Recipe, projection, blocks, labels) -> dict:
    """{method: fitted probe}: CLIP's on the embeddings, then CLIP-ICM's started from CLIP's solution (the torch
    solver warm-starts there; scikit-learn's starts from zero)."""
    clip_probe = LinearProbe(None, C=recipe.probe_c, solver=recipe.probe).fit(blocks, labels)
    icm_probe = LinearProbe(projection, C=recipe.probe_c, solver=recipe.probe, start_from=clip_probe).fit(blocks, labels)
    release_freed_memory()  # the probes' passes: many chunk-sized buffers, freed
    return {CLIP_LINEAR_PROBE: clip_probe, CLIP_ICM_LINEAR_PROBE: icm_probe}


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


def zero_shot_scorers(recipe: Recipe, catalog: EmbeddingCatalog, projection, classes=None, columns=None) -> dict:
    """Zero-shot scorers for `method_rows` over `classes` (default: the catalog's), `columns` the label of each:
    CLIP's; CLIP-ICM's as the recipe scores it (normalise, then project); and, where the two orders can differ
    (k < d), CLIP-ICM's as open_clip's users score the exported model (project, then normalise: per prompt
    template, the class mean, the image), the number CLIP_benchmark prints."""
    class_embeddings = catalog.class_embeddings(classes)
    columns = np.arange(len(class_embeddings)) if columns is None else columns
    normalize = recipe.zero_shot_normalizes_images

    def scorer(projected):
        return lambda part: zero_shot_logits(part, class_embeddings, projected, normalize_images=normalize)

    scorers = {CLIP_ZERO_SHOT: (scorer(None), columns), CLIP_ICM_ZERO_SHOT: (scorer(projection), columns)}
    if projection.n_components < projection.n_features_in_:
        exported = catalog.class_embeddings(classes, projection)
        scorers[CLIP_ICM_ZERO_SHOT_OPEN_CLIP] = (lambda part: zero_shot_logits(projection.transform(part), exported),
                                                 columns)
    return scorers


def open_clip_rows_everywhere(predictions: pd.DataFrame) -> pd.DataFrame:
    """A protocol that reports the open_clip order for some targets gets it for every target: where k = d (a
    rotation keeps every norm) its predictions are the recipe's, so those are copied, and its mean is over every
    target as the other methods' are."""
    reported = set(predictions.loc[predictions["method"] == CLIP_ICM_ZERO_SHOT_OPEN_CLIP, "target"])
    if not reported:
        return predictions
    recipe = predictions[(predictions["method"] == CLIP_ICM_ZERO_SHOT) & ~predictions["target"].isin(reported)]
    return pd.concat([predictions, recipe.assign(method=CLIP_ICM_ZERO_SHOT_OPEN_CLIP)], ignore_index=True)


def method_rows(protocol, target, frame, embeddings, scorers) -> pd.DataFrame:
    """`_rows` of each method scored, in METHODS order; scorers: method -> (scores of a chunk of rows,
    the label of each score column)."""
    return pd.concat([_rows(protocol, target, method, frame, ranked(*scorers[method], embeddings))
                      for method in METHODS if method in scorers], ignore_index=True)


@task(name="evaluate-target", task_run_name="evaluate target {target}", cache_policy=NO_CACHE)
def evaluate_target(catalog: EmbeddingCatalog, sources, target: str, projection_url: str, recipe: Recipe) -> pd.DataFrame:
    """The methods on the target's test split, from the same cached embeddings.

    The probes read the sources' held arrays in place (one block per domain); the CLIP-ICM
    probe starts from the CLIP probe's solution, carried into the invariant subspace.
    """
    projection = load_projection(projection_url)
    train_rows, train_blocks = catalog.blocks(sources, TRAIN)
    target_rows, target_embeddings = catalog.load([target], TEST_SPLITS[recipe.test_split])
    probes = fit_linear_probes(recipe, projection, train_blocks, train_rows["label"])
    return method_rows(DOMAIN_SHIFT, target, target_rows, target_embeddings, {
        **zero_shot_scorers(recipe, catalog, projection),
        **{method: probe_scorer(fitted) for method, fitted in probes.items()},
    })


@task(name="evaluate-open-class-target", task_run_name="open-class target {target}", cache_policy=NO_CACHE)
def evaluate_open_class_target(catalog: EmbeddingCatalog, target: str, projection_url: str, recipe: Recipe) -> pd.DataFrame:
    """Zero-shot over base + novel class names on the target's test split, CLIP and CLIP-ICM."""
    target_rows, target_embeddings = catalog.load([target], TEST_SPLITS[recipe.open_class_test_split])
    return method_rows(OPEN_CLASS, target, target_rows, target_embeddings,
                       zero_shot_scorers(recipe, catalog, load_projection(projection_url)))
