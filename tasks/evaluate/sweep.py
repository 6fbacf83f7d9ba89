"""The sweep's task: every (lambda, k) of the grid scored on one held-out target, with the selection rule's pick marked."""
from __future__ import annotations

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from icm_core import LinearProbe, accuracy, zero_shot_predict
from tasks.fit.selection import select_by_rule
from tasks.specs import Recipe, SelectionSpec
from tasks.store.catalog import EmbeddingCatalog
from tasks.vocabulary import TRAIN


@task(name="sweep-target", task_run_name="sweep target {target}", cache_policy=NO_CACHE)
def sweep_target(catalog: EmbeddingCatalog, per_domain: dict, text, target: str, recipe: Recipe,
                 selection: SelectionSpec) -> pd.DataFrame:
    """Every (lambda, k): its source-validation accuracy (the selection rule's score, the pick marked) and its
    target accuracy, zero-shot and linear probe, on every image of the target."""
    sources = [domain for domain in catalog.domains if domain != target]
    # the run's own selection, so the sweep marks the pick the run makes
    chosen = select_by_rule.fn(catalog, per_domain, text, sources, target, None, recipe, selection)
    train_rows, train = catalog.blocks(sources, TRAIN)
    target_rows, test = catalog.load([target])
    classes = catalog.class_embeddings()
    # every cell's torch probe starts where the run's CLIP-ICM probe does: at the CLIP probe's solution
    solver, C = recipe.probe, recipe.probe_c
    clip_probe = LinearProbe(C=C, solver=solver).fit(train, train_rows["label"]) if solver == "torch" else None
    rows = []
    for row in chosen.grid:
        projection = chosen.projections[(row["lam"], row["n_components"])]
        linear_probe = LinearProbe(projection, C=C, solver=solver, start_from=clip_probe).fit(train, train_rows["label"])
        rows.append({
            **row, "target": target,
            "target_zero_shot_accuracy": accuracy(target_rows["label"], zero_shot_predict(test, classes, projection)),
            "target_linear_probe_accuracy": accuracy(target_rows["label"], linear_probe.predict(test)),
            "retained_intervention": projection.retained_intervention_,
        })
    return pd.DataFrame(rows)
