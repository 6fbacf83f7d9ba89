"""Dataset shift, the paper's ImageNet experiment: fit on one dataset, test on others.

The source dataset (all its domains) gives the interventions, the moments, the (lambda, k)
selection on its validation split and the probes' training data. Each target dataset is only
embedded (originals) and tested, over the classes it holds: classes match the source's by
folder id (`tasks.data.class_names.match_classes`), and a target's class prompts are the source's
prompts for those classes (same class, same name, same templates).
"""
from __future__ import annotations

from prefect import flow

from flows.config.run_config import RunConfig
from flows.embed import embed_dataset
from flows.evaluate import Evaluation, collect
from flows.fit import fit_projection
from tasks.data.class_names import match_classes
from tasks.evaluate.dataset_shift import evaluate_target_dataset, fit_probes
from tasks.fit.moments import projection_url
from tasks.store.catalog import EmbeddingCatalog
from tasks.vocabulary import DATASET_SHIFT, ORIGINAL


def embed_targets(config: RunConfig, task_runner) -> dict[str, EmbeddingCatalog]:
    """Each target's original images; no interventions or prompts (the source's prompts serve)."""
    embed = embed_dataset.with_options(task_runner=task_runner)
    return {
        name: embed(url, config.model, config.pretrained, config.store_url, holdout=config.holdout,
                    split_seed=config.split_seed, class_policy=config.class_policy, device=config.device,
                    batch_size=config.batch_size, num_workers=config.num_workers, shard_size=config.shard_size,
                    precision=config.precision, views=(ORIGINAL,), with_text=False)
        for name, url in config.target_datasets.items()
    }


@flow(name="evaluate-dataset-shift", flow_run_name="dataset shift: source -> target datasets")
def evaluate_dataset_shift(
    index: EmbeddingCatalog, run_url: str, targets: dict[str, EmbeddingCatalog], class_names: str | None = None,
    lams: list[float] = (1.0,), ks: list[int] | None = None, order: str = "largest", use_text: bool = True,
    preset: str = "default", probe: str = "torch", probe_c: float = 0.316,
) -> Evaluation:
    """Fit once on the source (every domain; (lambda, k) on its validation split), then test each
    target over its own classes."""
    projection = projection_url(run_url, DATASET_SHIFT)
    fitted = fit_projection(index, list(index.domains), projection, lams, ks, order, use_text,
                            protocol=DATASET_SHIFT, target=", ".join(targets), preset=preset)
    probes = fit_probes(index, projection, probe_c, preset, probe)
    return collect(DATASET_SHIFT, [
        (name, evaluate_target_dataset(index, target, name,
                                       match_classes(class_names, index.classes, target.classes, name),
                                       projection, probes, preset), fitted)
        for name, target in targets.items()
    ])
