"""Flows: leave-one-domain-out and open-class evaluation of CLIP and CLIP-ICM from cached embeddings."""
from __future__ import annotations

import pandas as pd
from prefect import flow

from flows.fit_projection import fit_projection
from tasks.evaluate import evaluate_open_class_target, evaluate_target, split_base_novel
from tasks.catalog import EmbeddingCatalog
from tasks.storage import join


def selection_rows(selection, protocol: str, target: str) -> pd.DataFrame:
    return pd.DataFrame(selection.grid).assign(protocol=protocol, target=target)


@flow(name="evaluate-domain-shift", flow_run_name="leave-one-domain-out")
def evaluate_domain_shift(
    index: EmbeddingCatalog, run_url: str, targets: list[str] | None = None, lams: list[float] = (1.0,),
    ks: list[int] | None = None, order: str = "largest", use_text: bool = True, probe: str = "torch",
    probe_c: float = 0.316,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """For each target: fit on the other domains, select on their validation split, test on the target."""
    predictions, selections = [], []
    for target in targets or index.domains:
        sources = [domain for domain in index.domains if domain != target]
        selection = fit_projection(
            index, sources, join(run_url, "projections", f"domain_shift-{target}.npz"), lams, ks, order, use_text
        )
        predictions.append(evaluate_target(index, sources, target, selection.projection, probe_c, probe))
        selections.append(selection_rows(selection, "domain_shift", target))
    return pd.concat(predictions, ignore_index=True), pd.concat(selections, ignore_index=True)


@flow(name="evaluate-open-class", flow_run_name="open-class (base -> base + novel)")
def evaluate_open_class(
    index: EmbeddingCatalog, run_url: str, targets: list[str] | None = None, lams: list[float] = (1.0,),
    ks: list[int] | None = None, order: str = "largest", use_text: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Fit on the base classes of the sources; zero-shot the target over base + novel names."""
    base, _novel = split_base_novel(index.classes)
    predictions, selections = [], []
    for target in targets or index.domains:
        sources = [domain for domain in index.domains if domain != target]
        selection = fit_projection(
            index, sources, join(run_url, "projections", f"open_class-{target}.npz"), lams, ks, order, use_text,
            classes=base,
        )
        predictions.append(evaluate_open_class_target(index, target, selection.projection))
        selections.append(selection_rows(selection, "open_class", target))
    return pd.concat(predictions, ignore_index=True), pd.concat(selections, ignore_index=True)
