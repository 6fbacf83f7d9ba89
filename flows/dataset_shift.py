"""Dataset shift, the paper's ImageNet experiment: fit on one dataset, test on others.

The source dataset (all its domains) gives the interventions, the moments, the (lambda, k)
selection on its validation split and the probes' training data. Each target dataset is only
embedded (originals) and tested, over the classes it holds: classes match the source's by
folder id (`tasks.data.class_names.match_classes`), and a target's class prompts are the source's
prompts for those classes (same class, same name, same templates).
"""
from __future__ import annotations

from dataclasses import replace

from prefect import flow

from flows.embed import embed_and_read
from flows.fit import fit_projection
from tasks.data.class_names import match_classes
from tasks.evaluate.dataset_shift import evaluate_target_dataset, fit_probes
from tasks.evaluate.summary import Evaluation, collect
from tasks.fit.projections import projection_url
from tasks.specs import DataSpec, EmbedSpec, Recipe, SelectionSpec
from tasks.store.catalog import EmbeddingCatalog
from tasks.vocabulary import DATASET_SHIFT, ORIGINAL


def embed_targets(target_datasets: dict[str, str], data: DataSpec, embedding: EmbedSpec, task_runner,
                  normalize: bool) -> dict[str, EmbeddingCatalog]:
    """Each target's original images, read once (flows.embed.embed_and_read); no interventions or prompts (the
    source's prompts serve)."""
    return {name: embed_and_read(replace(data, dataset=url), embedding, task_runner, normalize, views=(ORIGINAL,),
                                 with_text=False)
            for name, url in target_datasets.items()}


@flow(name="evaluate-dataset-shift", flow_run_name="dataset shift: source -> target datasets")
def evaluate_dataset_shift(catalog: EmbeddingCatalog, run_url: str, targets: dict[str, EmbeddingCatalog],
                           class_names: str | None, recipe: Recipe, selection: SelectionSpec) -> Evaluation:
    """Fit once on the source (every domain; (lambda, k) on its validation split), then test each
    target over its own classes."""
    projection = projection_url(run_url, DATASET_SHIFT)
    fitted = fit_projection(catalog, list(catalog.domains), projection, recipe, selection, protocol=DATASET_SHIFT,
                            target=", ".join(targets))
    probes = fit_probes(catalog, projection, recipe)
    return collect(DATASET_SHIFT, [
        (name, evaluate_target_dataset(catalog, target, name,
                                       match_classes(class_names, catalog.classes, target.classes, name),
                                       projection, probes, recipe), fitted)
        for name, target in targets.items()
    ])
