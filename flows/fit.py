"""Flow: moments from the source domains, (lambda, k) chosen by a model-selection rule, the projection stored.

The flow returns plain tables, never the fitted objects: a task that took a subflow's
result as input would show in the Prefect UI with an input it cannot display (the classic
UI's Task Runs tab then lists no task runs). Tasks that need the projection read its file.
"""
from __future__ import annotations

from dataclasses import replace

import pandas as pd
from prefect import flow, unmapped

from tasks.fit.diagnostics import diagnose_projection, selection_table, spectrum_rows
from tasks.fit.moments import accumulate_image_moments, accumulate_text_moments
from tasks.fit.projections import projection_url, store_projection
from tasks.fit.selection import select_by_rule
from tasks.specs import Recipe, SelectionSpec
from tasks.store.catalog import EmbeddingCatalog
from tasks.vocabulary import DOMAIN_SHIFT, FINAL, ORACLE, TRAINING_DOMAIN


def domain_moments(catalog: EmbeddingCatalog, sources, classes=None, use_text: bool = True):
    """Map: one cached moment task per source domain (train split); and the text pairs' moments, if used."""
    per_domain = accumulate_image_moments.map(unmapped(catalog), sources, unmapped(classes))
    text = accumulate_text_moments.submit(catalog, classes) if use_text else None
    return dict(zip(sources, per_domain.result())), (text.result() if text is not None else None)


@flow(name="fit-projection", flow_run_name="fit {protocol}, hold out {target}")
def fit_projection(catalog: EmbeddingCatalog, sources: list[str], projection_url: str, recipe: Recipe,
                   selection: SelectionSpec, classes: list[str] | None = None, *, protocol: str = DOMAIN_SHIFT,
                   target: str = "") -> tuple[pd.DataFrame, pd.DataFrame]:
    """(grid, spectrum): one row per (lambda, k) with its validation accuracy, the chosen row carrying
    the projection's diagnostics; and M's eigenvalues at the chosen lambda. Only the `oracle`
    rule reads the target."""
    per_domain, text = domain_moments(catalog, sources, classes, recipe.use_text)
    chosen = select_by_rule(catalog, per_domain, text, sources, target, classes, recipe, selection)
    diagnostics = diagnose_projection(catalog, chosen, per_domain, text, sources, classes)
    store_projection(chosen.projection, projection_url, sources=list(sources),
                     classes=list(classes or catalog.classes), dataset_fingerprint=catalog.fingerprint,
                     val_accuracy=chosen.accuracy, selection=selection.rule)
    return selection_table(chosen, diagnostics, selection.rule), spectrum_rows(chosen)


@flow(name="fit-final", flow_run_name="fit on every domain (what a user deploys)")
def fit_final(catalog: EmbeddingCatalog, run_url: str, recipe: Recipe, selection: SelectionSpec) -> dict:
    """The projection a user deploys: fitted on every domain and class, (lambda, k) chosen by the run's rule on
    every domain's validation split (oracle has no target here: training-domain stands in). Stored as
    RUN/projections/final.npz; returns what run.json records of it."""
    rule = TRAINING_DOMAIN if selection.rule == ORACLE else selection.rule
    grid, _ = fit_projection(catalog, list(catalog.domains), projection_url(run_url, FINAL), recipe,
                             replace(selection, rule=rule), protocol=FINAL, target="none")
    chosen = grid[grid["selected"]].iloc[0]
    return {"projection": f"projections/{FINAL}.npz", "domains": list(catalog.domains), "selection": rule,
            "lam": float(chosen["lam"]), "n_components": int(chosen["n_components"]),
            "val_accuracy": float(chosen["val_accuracy"])}
