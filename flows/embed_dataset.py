"""Flow: embed a dataset's images (originals + interventions) and prompts.

Each (domain, view) runs as parts of at most `shard_size` images, one task each, that receive
only their own rows; a merge task per (domain, view) writes the one table readers use."""
from __future__ import annotations

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner

from tasks.data.datasets import Dataset, discover, resolve_dataset
from tasks.data.class_names import class_display_names
from tasks.embed.images import (
    DEFAULT_SHARD_SIZE, embed_image_part, image_shard_url, merge_image_shard, plan_shard,
)
from tasks.embed.text import embed_text, text_url
from tasks.store.catalog import EmbeddingCatalog
from tasks.embed.gpu_images import assign_devices
from tasks.data.interventions import InterventionConfig, load_text_pairs, prompt_bank_pairs
from tasks.embed.models import check_model
from tasks.data.prompts import class_prompts, load_templates
from tasks.store.storage import exists
from tasks.errors import InputError
from tasks.vocabulary import VIEWS


@task(name="discover-dataset", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def discover_dataset(dataset: str, store: str, holdout: float, split_seed: int, class_policy: str) -> Dataset:
    return discover(resolve_dataset(dataset, store), holdout=holdout, seed=split_seed, class_policy=class_policy)


def text_inputs(data: Dataset, text_pairs: str | None = None, templates: str = "simple", class_names: str | None = None):
    """(class prompts: every template per class, caption pairs: the shipped prompt bank's or the user's file)."""
    names = class_display_names(class_names, data.classes, f"dataset {data.root!r}")
    prompts = class_prompts(data.classes, names, load_templates(templates))
    pairs = load_text_pairs(text_pairs, data.classes) if text_pairs else prompt_bank_pairs(data.classes, names=names)
    return prompts, pairs


def plan_index(data: Dataset, model, pretrained, store, interventions: InterventionConfig, text, views=VIEWS) -> EmbeddingCatalog:
    """Where every shard of this configuration lives, computed without loading the model.

    text is (prompts, pairs) from text_inputs, or None for image shards only (a dataset-shift target).
    """
    weights_id = check_model(model, pretrained)
    return EmbeddingCatalog(
        dataset_root=data.root,
        fingerprint=data.fingerprint,
        domains=data.domains,
        classes=data.classes,
        shards={f"{d}/{v}": image_shard_url(store, model, weights_id, data, d, v, interventions)
                for d in data.domains for v in views},
        text_url=text_url(store, model, weights_id, data.classes, *text) if text else None,
    )


def cached_index(data: Dataset, model, pretrained, store, interventions, text) -> EmbeddingCatalog:
    """The index of an already embedded configuration; fails naming what is missing."""
    index = plan_index(data, model, pretrained, store, interventions, text)
    missing = [url for url in [*index.shards.values(), index.text_url] if url and not exists(url)]
    if missing:
        raise InputError(
            f"{len(missing)} embedding file(s) are not in the store, e.g. {missing[0]}; "
            "run `clip-icm run` (or the embed-dataset flow) with the same dataset, model and store first"
        )
    return index


@flow(name="embed-dataset", flow_run_name="embed {dataset} with {model}", task_runner=ThreadPoolTaskRunner(max_workers=4))
def embed_dataset(
    dataset: str,
    model: str,
    pretrained: str,
    store: str,
    interventions: InterventionConfig = InterventionConfig(),
    text_pairs: str | None = None,
    holdout: float = 0.2,
    split_seed: int = 0,
    class_policy: str = "strict",
    device: str = "auto",
    batch_size: int | None = None,
    num_workers: int | None = None,
    shard_size: int = DEFAULT_SHARD_SIZE,
    precision: str = "auto",
    templates: str = "simple",
    class_names: str | None = None,
    views: tuple[str, ...] = VIEWS,
    with_text: bool = True,
) -> EmbeddingCatalog:
    """Every (domain, view) shard of `views`, and (with_text) the class prompts and caption pairs."""
    data = discover_dataset(dataset, store, holdout, split_seed, class_policy)
    text = text_inputs(data, text_pairs, templates, class_names) if with_text else None
    index = plan_index(data, model, pretrained, store, interventions, text, views)

    todo = [plan for plan in plan_shards(data, model, pretrained, store, interventions, shard_size, views)
            if not exists(plan.url)]  # cached shards: nothing to submit
    # several GPUs on this host: parts spread over them, one model per GPU, each part on one device
    devices = iter(assign_devices(sum(len(plan.parts) for plan in todo), device))
    shards = []
    for plan in todo:
        parts = [
            embed_image_part.with_options(task_run_name=f"embed {plan.label} {number + 1}/{len(plan.parts)}").submit(
                rows, plan.url, plan.metadata, plan.label, interventions, next(devices), batch_size, num_workers,
                precision)
            for number, rows in enumerate(plan.parts)
        ]
        shards.append(merge_image_shard.submit(plan.url, parts, plan.label))
    prompts = embed_text.submit(data.classes, *text, model, pretrained, store, device=device) if text else None

    index.embedded = sum(shard.result()["embedded"] for shard in shards) + (prompts.result()["embedded"] if prompts else 0)
    return index


def plan_shards(data: Dataset, model, pretrained, store, interventions, shard_size: int = DEFAULT_SHARD_SIZE,
                views=VIEWS):
    """Every (domain, view) of the dataset as a ShardPlan of parts of at most shard_size images."""
    return [plan_shard(data, domain, view, model, pretrained, store, interventions, shard_size)
            for domain in data.domains for view in views]
