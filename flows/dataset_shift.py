"""Dataset shift, the paper's ImageNet experiment: fit on one dataset, test on others.

The source dataset (all its domains) gives the interventions, the moments, the (lambda, k)
selection on its validation split and the probes' training data. Each target dataset is only
embedded (originals) and tested, over the classes it holds: classes match the source's by
folder id (`tasks.data.class_names.match_classes`), and a target's class prompts are the source's
prompts for those classes (same class, same name, same templates).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from flows.config import RunConfig
from flows.embed_dataset import discover_dataset, embed_dataset
from flows.evaluate import Evaluation, collect
from flows.fit_projection import fit_projection
from icm_core import LinearProbe
from tasks.data.class_names import match_classes
from tasks.data.datasets import Dataset
from tasks.evaluate.predictions import fit_linear_probes, method_rows, zero_shot_scorers
from tasks.store.catalog import EmbeddingCatalog
from tasks.fit.moments import load_projection, projection_url
from tasks.errors import InputError
from tasks.vocabulary import DATASET_SHIFT, ORIGINAL


def check_shift_options(config: RunConfig) -> None:
    """The options dataset-shift takes and those it refuses: before any file is read."""
    if not config.target_datasets:
        raise InputError("config field 'target_datasets': --protocol dataset-shift needs at least one NAME=URL "
                         "(e.g. --target-datasets imagenet-v2=/data/imagenetv2)")
    if config.targets:
        raise InputError("config field 'targets': target domains apply to domain-shift and open-class; "
                         "dataset-shift tests the --target-datasets")
    if "mean" in config.target_datasets:
        raise InputError("config field 'target_datasets': 'mean' names the summary's mean rows; rename that target")
    if config.selection != "training-domain":
        raise InputError(f"config field 'selection': dataset-shift selects (lambda, k) on the source's validation "
                         f"split (training-domain); {config.selection!r} is not available for it")
    if config.test_split != "all":
        raise InputError(f"config field 'test_split': dataset-shift tests every image of each target dataset; "
                         f"{config.test_split!r} applies to domain-shift")


def check_target_datasets(config: RunConfig, source: Dataset) -> None:
    """Every target dataset listed and its classes matched to the source's: before anything is embedded."""
    for name, url in config.target_datasets.items():
        target = discover_dataset.fn(url, config.store_url, config.holdout, config.split_seed, config.class_policy)
        match_classes(config.class_names, source.classes, target.classes, name)


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


# the projection travels as its stored file, not as a subflow's result (which the Prefect UI cannot show)
@task(name="fit-linear-probes", cache_policy=NO_CACHE)
def fit_probes(index: EmbeddingCatalog, projection_url: str, probe_c: float = 0.316,
               preset: str = "default", solver: str = "torch") -> dict[str, LinearProbe]:
    """CLIP and CLIP-ICM probes over every source class, on the source's train split; fitted once for all targets."""
    rows, blocks = index.blocks(index.domains, "train")
    return fit_linear_probes(preset, load_projection(projection_url), probe_c, solver, blocks, rows["label"])


def probe_scorer_among(probe: LinearProbe, labels):
    """(scores of a chunk of rows, their labels) over the probe's classes among `labels` only: a target is
    scored over its classes."""
    keep = np.isin(probe.classes_, labels)
    return (lambda part: probe.decision_function(part)[:, keep]), probe.classes_[keep]


@task(name="evaluate-dataset-shift", task_run_name="evaluate target dataset {name}", cache_policy=NO_CACHE)
def evaluate_target_dataset(source: EmbeddingCatalog, target: EmbeddingCatalog, name: str, class_map: dict[str, str],
                            projection_url: str, probes: dict[str, LinearProbe], preset: str = "default") -> pd.DataFrame:
    """The four methods on every image of one target, each scoring the target's classes only."""
    rows, embeddings = target.load(target.domains)
    label = {folder: index for index, folder in enumerate(source.classes)}
    rows = rows.assign(**{"class": rows["class"].map(class_map)})  # reports name classes as the source does
    rows["label"] = rows["class"].map(label).astype("int32")
    labels = np.array(sorted(label[class_map[folder]] for folder in target.classes))
    class_embeddings = source.class_embeddings([source.classes[i] for i in labels])
    return method_rows(DATASET_SHIFT, name, rows, embeddings, {
        **zero_shot_scorers(preset, class_embeddings, load_projection(projection_url), labels),
        **{method: probe_scorer_among(probe, labels) for method, probe in probes.items()},
    })


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
