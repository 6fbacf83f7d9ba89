"""Diagnostics of each fitted projection: what it keeps, how clear the cut at k is, and M's spectrum."""
from __future__ import annotations


import numpy as np
import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from icm_core import (Selection, eigengap, kept_share, kept_share_by_family, pair_movement, positive_eigenvalues,
                      variance_kept)
from tasks.store.catalog import EmbeddingCatalog
from tasks.fit.moments import paired_rows, total_moments
from tasks.vocabulary import INTERVENED, ORIGINAL


@task(name="diagnose-projection", cache_policy=NO_CACHE)
def diagnose_projection(index: EmbeddingCatalog, selection: Selection, per_domain: dict, text, sources, classes) -> dict:
    """What the chosen projection keeps: intervention movement on the sources' held-out validation
    pairs (all, and per intervention family), data variance, and how clear the cut at k is."""
    projection = selection.projection
    movement, families = [], []
    for domain in sources:  # one domain's validation pairs at a time: no stacked copy of every source's
        originals, (Z,) = index.blocks([domain], "val", classes, ORIGINAL)
        intervened, (Z_intervened,) = index.blocks([domain], "val", classes, INTERVENED)
        twin = paired_rows(originals["sample_id"].to_numpy(), intervened["sample_id"].to_numpy())
        paired = np.flatnonzero(twin >= 0)
        if len(paired):
            movement.append(pair_movement(Z[paired], Z_intervened[twin[paired]], projection.components_))
            families.append(intervened["view"].to_numpy()[twin[paired]])
    diagnostics = {
        "variance_kept": variance_kept(total_moments(per_domain, sources, text).second_moment(), projection.components_),
        "positive_eigenvalues": positive_eigenvalues(selection.eigenvalues[selection.lam]),
        "eigengap": eigengap(selection.eigenvalues[selection.lam], selection.n_components),
        "movement_kept_train": projection.retained_intervention_,
        "movement_kept_val": float("nan"),
    }
    if movement:
        movement, families = np.concatenate(movement), np.concatenate(families)
        diagnostics["movement_kept_val"] = kept_share(movement)
        for family, share in kept_share_by_family(movement, families).items():
            diagnostics[f"movement_kept_val_{family}"] = share
    return diagnostics


def selection_table(selection: Selection, diagnostics: dict, rule: str) -> pd.DataFrame:
    """One row per (lambda, k) with its validation accuracy and the rule; the chosen row carries the diagnostics."""
    grid = pd.DataFrame(selection.grid).assign(selection=rule)
    for name, value in diagnostics.items():
        grid[name] = grid["selected"].map({True: value, False: float("nan")})
    return grid


def chosen_diagnostics(selections: pd.DataFrame) -> list[dict]:
    """The chosen (lambda, k) and the diagnostics of each fitted projection, for run.json."""
    chosen = selections[selections["selected"]].drop(columns=["selected"])
    return [{key: value for key, value in row.items() if pd.notna(value)} for row in chosen.to_dict("records")]


def spectrum_rows(selection) -> pd.DataFrame:
    """Every eigenvalue of M at the chosen lambda, in kept-first order, the kept ones marked."""
    values = selection.eigenvalues[selection.lam]
    return pd.DataFrame({"lam": selection.lam, "rank": range(1, len(values) + 1), "eigenvalue": values,
                         "kept": [rank < selection.n_components for rank in range(len(values))]})
