"""Flows: leave-one-domain-out and open-class evaluation of CLIP and CLIP-ICM from cached embeddings."""
from __future__ import annotations

from prefect import flow

from flows.fit import fit_projection
from tasks.data.splits import split_base_novel
from tasks.evaluate.predictions import evaluate_open_class_target, evaluate_target
from tasks.evaluate.summary import Evaluation, collect
from tasks.fit.projections import projection_url
from tasks.specs import Recipe, SelectionSpec
from tasks.store.catalog import EmbeddingCatalog
from tasks.vocabulary import DOMAIN_SHIFT, OPEN_CLASS


@flow(name="evaluate-domain-shift", flow_run_name="leave-one-domain-out")
def evaluate_domain_shift(catalog: EmbeddingCatalog, run_url: str, targets: list[str] | None, recipe: Recipe,
                          selection: SelectionSpec) -> Evaluation:
    """For each target: fit on the other domains, select (lambda, k) by the rule, test on the target."""
    outcomes = []
    for target in targets or catalog.domains:
        sources = [domain for domain in catalog.domains if domain != target]
        projection = projection_url(run_url, DOMAIN_SHIFT, target)
        fitted = fit_projection(catalog, sources, projection, recipe, selection, protocol=DOMAIN_SHIFT, target=target)
        outcomes.append((target, evaluate_target(catalog, sources, target, projection, recipe), fitted))
    return collect(DOMAIN_SHIFT, outcomes)


@flow(name="evaluate-open-class", flow_run_name="open-class (base -> base + novel)")
def evaluate_open_class(catalog: EmbeddingCatalog, run_url: str, targets: list[str] | None, recipe: Recipe,
                        selection: SelectionSpec) -> Evaluation:
    """Fit on the base classes of the sources; zero-shot the target over base + novel names."""
    base, _novel = split_base_novel(catalog.classes)
    outcomes = []
    for target in targets or catalog.domains:
        sources = [domain for domain in catalog.domains if domain != target]
        projection = projection_url(run_url, OPEN_CLASS, target)
        fitted = fit_projection(catalog, sources, projection, recipe, selection, base, protocol=OPEN_CLASS,
                                target=target)
        outcomes.append((target, evaluate_open_class_target(catalog, target, projection, recipe), fitted))
    return collect(OPEN_CLASS, outcomes)
