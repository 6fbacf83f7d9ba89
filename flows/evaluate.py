"""Flows: leave-one-domain-out and open-class evaluation of CLIP and CLIP-ICM from cached embeddings."""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
from prefect import flow

from flows.fit import fit_projection
from tasks.evaluate.predictions import evaluate_open_class_target, evaluate_target, split_base_novel
from tasks.store.catalog import EmbeddingCatalog
from tasks.fit.moments import projection_url
from tasks.vocabulary import DOMAIN_SHIFT, OPEN_CLASS


@dataclass
class Evaluation:
    predictions: pd.DataFrame  # one row per target image and method
    selections: pd.DataFrame  # one row per target and (lambda, k); the chosen row carries the diagnostics
    spectra: pd.DataFrame  # M's eigenvalues at the chosen lambda, per target


def collect(protocol: str, outcomes) -> Evaluation:
    predictions, selections, spectra = [], [], []
    for target, target_predictions, (grid, spectrum) in outcomes:
        predictions.append(target_predictions)
        selections.append(grid.assign(protocol=protocol, target=target))
        spectra.append(spectrum.assign(protocol=protocol, target=target))
    return Evaluation(*(pd.concat(frames, ignore_index=True) for frames in (predictions, selections, spectra)))


@flow(name="evaluate-domain-shift", flow_run_name="leave-one-domain-out")
def evaluate_domain_shift(
    index: EmbeddingCatalog, run_url: str, targets: list[str] | None = None, lams: list[float] = (1.0,),
    ks: list[int] | None = None, order: str = "largest", use_text: bool = True, selection: str = "training-domain",
    test_split: str = "all", preset: str = "default", probe: str = "torch", probe_c: float = 0.316,
) -> Evaluation:
    """For each target: fit on the other domains, select (lambda, k) by the rule, test on the target."""
    outcomes = []
    for target in targets or index.domains:
        sources = [domain for domain in index.domains if domain != target]
        projection = projection_url(run_url, DOMAIN_SHIFT, target)
        fitted = fit_projection(index, sources, projection, lams, ks, order, use_text, protocol=DOMAIN_SHIFT,
                                target=target, selection=selection, preset=preset)
        predictions = evaluate_target(index, sources, target, projection, probe_c, test_split, preset, probe)
        outcomes.append((target, predictions, fitted))
    return collect(DOMAIN_SHIFT, outcomes)


@flow(name="evaluate-open-class", flow_run_name="open-class (base -> base + novel)")
def evaluate_open_class(
    index: EmbeddingCatalog, run_url: str, targets: list[str] | None = None, lams: list[float] = (1.0,),
    ks: list[int] | None = None, order: str = "largest", use_text: bool = True, selection: str = "training-domain",
    test_split: str = "all", preset: str = "default",
) -> Evaluation:
    """Fit on the base classes of the sources; zero-shot the target over base + novel names."""
    base, _novel = split_base_novel(index.classes)
    outcomes = []
    for target in targets or index.domains:
        sources = [domain for domain in index.domains if domain != target]
        projection = projection_url(run_url, OPEN_CLASS, target)
        fitted = fit_projection(index, sources, projection, lams, ks, order, use_text, classes=base,
                                protocol=OPEN_CLASS, target=target, selection=selection, preset=preset)
        predictions = evaluate_open_class_target(index, target, projection, test_split, preset)
        outcomes.append((target, predictions, fitted))
    return collect(OPEN_CLASS, outcomes)
