"""Flow: moments from the source domains, (lambda, k) chosen by a model-selection rule, the projection stored.

The flow returns plain tables, never the fitted objects: a task that took a subflow's
result as input would show in the Prefect UI with an input it cannot display (the classic
UI's Task Runs tab then lists no task runs). Tasks that need the projection read its file.
"""
from __future__ import annotations


import pandas as pd
from prefect import flow, unmapped

from tasks.store.catalog import EmbeddingCatalog
from tasks.fit.moments import accumulate_image_moments, accumulate_text_moments, store_projection
from tasks.fit.diagnostics import diagnose_projection, spectrum_rows
from tasks.fit.selection import select_by_rule
from tasks.vocabulary import DOMAIN_SHIFT


def domain_moments(index: EmbeddingCatalog, sources, classes=None, use_text: bool = True):
    """Map: one cached moment task per source domain (train split); and the text pairs' moments, if used."""
    per_domain = accumulate_image_moments.map(unmapped(index), sources, unmapped(classes))
    text = accumulate_text_moments.submit(index, classes) if use_text else None
    return dict(zip(sources, per_domain.result())), (text.result() if text is not None else None)


@flow(name="fit-projection", flow_run_name="fit {protocol}, hold out {target}")
def fit_projection(
    index: EmbeddingCatalog,
    sources: list[str],
    projection_url: str,
    lams: list[float],
    ks: list[int] | None = None,
    order: str = "largest",
    use_text: bool = True,
    classes: list[str] | None = None,
    *,
    protocol: str = DOMAIN_SHIFT,
    target: str = "",
    selection: str = "training-domain",
    preset: str = "default",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(grid, spectrum): one row per (lambda, k) with its validation accuracy, the chosen row carrying
    the projection's diagnostics; and M's eigenvalues at the chosen lambda. Only the `oracle`
    rule reads the target."""
    per_domain, text = domain_moments(index, sources, classes, use_text)
    chosen = select_by_rule(index, per_domain, text, sources, target, classes, lams, ks, order, use_text, selection, preset)
    diagnostics = diagnose_projection(index, chosen, per_domain, text, sources, classes)
    store_projection(
        chosen.projection, projection_url,
        sources=list(sources), classes=list(classes or index.classes), dataset_fingerprint=index.fingerprint,
        val_accuracy=chosen.accuracy, selection=selection,
    )
    grid = pd.DataFrame(chosen.grid).assign(selection=selection)
    for name, value in diagnostics.items():
        grid[name] = grid["selected"].map({True: value, False: float("nan")})
    return grid, spectrum_rows(chosen)
