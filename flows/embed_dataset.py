"""Flow: embed a dataset's images (originals + interventions) and prompts, one task per shard."""
from __future__ import annotations

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner

from tasks.datasets import Dataset, discover, resolve_dataset
from tasks.class_names import class_display_names
from tasks.embed import INTERVENED, ORIGINAL, embed_image_shard, image_shard_url
from tasks.embed_text import embed_text, text_url
from tasks.fit import EmbeddingIndex
from tasks.interventions import InterventionConfig, load_text_pairs, prompt_bank_pairs
from tasks.models import check_model
from tasks.prompts import class_prompts, load_templates
from tasks.storage import exists
from tasks.errors import InputError

VIEWS = (ORIGINAL, INTERVENED)


@task(name="discover-dataset", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def discover_dataset(dataset: str, store: str, holdout: float, split_seed: int, class_policy: str) -> Dataset:
    return discover(resolve_dataset(dataset, store), holdout=holdout, seed=split_seed, class_policy=class_policy)


def text_inputs(data: Dataset, text_pairs: str | None = None, templates: str = "simple", class_names: str | None = None):
    """(class prompts: every template per class, caption pairs: the shipped prompt bank's or the user's file)."""
    names = class_display_names(class_names, data.classes, f"dataset {data.root!r}")
    prompts = class_prompts(data.classes, names, load_templates(templates))
    pairs = load_text_pairs(text_pairs, data.classes) if text_pairs else prompt_bank_pairs(data.classes, names=names)
    return prompts, pairs


def plan_index(data: Dataset, model, pretrained, store, interventions: InterventionConfig, text, views=VIEWS) -> EmbeddingIndex:
    """Where every shard of this configuration lives, computed without loading the model.

    text is (prompts, pairs) from text_inputs, or None for image shards only (a dataset-shift target).
    """
    weights_id = check_model(model, pretrained)
    return EmbeddingIndex(
        dataset_root=data.root,
        fingerprint=data.fingerprint,
        domains=data.domains,
        classes=data.classes,
        shards={f"{d}/{v}": image_shard_url(store, model, weights_id, data, d, v, interventions)
                for d in data.domains for v in views},
        text_url=text_url(store, model, weights_id, data.classes, *text) if text else None,
    )


def cached_index(data: Dataset, model, pretrained, store, interventions, text) -> EmbeddingIndex:
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
    batch_size: int = 64,
    num_workers: int | None = None,
    templates: str = "simple",
    class_names: str | None = None,
    views: tuple[str, ...] = VIEWS,
    with_text: bool = True,
) -> EmbeddingIndex:
    """Every (domain, view) shard of `views`, and (with_text) the class prompts and caption pairs."""
    data = discover_dataset(dataset, store, holdout, split_seed, class_policy)
    text = text_inputs(data, text_pairs, templates, class_names) if with_text else None
    index = plan_index(data, model, pretrained, store, interventions, text, views)

    shards = [
        embed_image_shard.submit(data, domain, view, model, pretrained, store, interventions,
                                 device=device, batch_size=batch_size, num_workers=num_workers)
        for domain in data.domains
        for view in views
    ]
    prompts = embed_text.submit(data.classes, *text, model, pretrained, store, device=device) if text else None

    results = [shard.result() for shard in shards]
    index.embedded = sum(r["embedded"] for r in results) + (prompts.result()["embedded"] if prompts else 0)
    return index
