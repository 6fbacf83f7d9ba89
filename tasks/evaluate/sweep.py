"""The sweep's task: every (lambda, k) of the grid scored on one held-out target, with the selection rule's pick marked
and each cell's Δ over CLIP on the target's images with its paired interval and McNemar p."""
from __future__ import annotations

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from icm_core import LinearProbe, accuracy, paired_difference, zero_shot_predict
from tasks.evaluate.comparisons import COMPARISON_COLUMNS
from tasks.fit.selection import select_by_rule
from tasks.specs import Recipe, SelectionSpec
from tasks.store.catalog import EmbeddingCatalog
from tasks.vocabulary import TRAIN


def versus_clip(name: str, labels, clip_predictions, predictions) -> dict:
    """target_{name}_delta, _ci_low, _ci_high, _mcnemar_p: a cell's predictions against CLIP's on the same images."""
    difference = paired_difference(clip_predictions == labels, predictions == labels)
    return {f"target_{name}_{column}": getattr(difference, column) for column in COMPARISON_COLUMNS}


@task(name="sweep-target", task_run_name="sweep target {target}", cache_policy=NO_CACHE)
def sweep_target(catalog: EmbeddingCatalog, per_domain: dict, text, target: str, recipe: Recipe,
                 selection: SelectionSpec) -> pd.DataFrame:
    """Every (lambda, k): its source-validation accuracy (the selection rule's score, the pick marked) and its
    target accuracy, zero-shot and linear probe, on every image of the target, each with its Δ over CLIP's (the same
    way of predicting without the projection), Δ's paired 95% interval and McNemar p."""
    sources = [domain for domain in catalog.domains if domain != target]
    # the run's own selection, so the sweep marks the pick the run makes
    chosen = select_by_rule.fn(catalog, per_domain, text, sources, target, None, recipe, selection)
    train_rows, train = catalog.blocks(sources, TRAIN)
    target_rows, test = catalog.load([target])
    classes = catalog.class_embeddings()
    # every cell's torch probe starts where the run's CLIP-ICM probe does: at the CLIP probe's solution
    solver, C = recipe.probe, recipe.probe_c
    clip_probe = LinearProbe(C=C, solver=solver).fit(train, train_rows["label"])  # also the baseline of every Δ
    labels = target_rows["label"].to_numpy()
    clip = {"zero_shot": zero_shot_predict(test, classes), "linear_probe": clip_probe.predict(test)}
    rows = []
    for row in chosen.grid:
        projection = chosen.projections[(row["lam"], row["n_components"])]
        linear_probe = LinearProbe(projection, C=C, solver=solver, start_from=clip_probe).fit(train, train_rows["label"])
        predictions = {"zero_shot": zero_shot_predict(test, classes, projection), "linear_probe": linear_probe.predict(test)}
        rows.append({
            **row, "target": target,
            "target_zero_shot_accuracy": accuracy(labels, predictions["zero_shot"]),
            "target_linear_probe_accuracy": accuracy(labels, predictions["linear_probe"]),
            "retained_intervention": projection.retained_intervention_,
            **{key: value for name in predictions for key, value in
               versus_clip(name, labels, clip[name], predictions[name]).items()},
        })
    return pd.DataFrame(rows)
