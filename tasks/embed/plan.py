"""Where every shard of a configuration lives, computed without loading the model: what the embed flow
submits, and what a run that only reads the store (the sweep) opens."""
from __future__ import annotations

from tasks.data.datasets import Dataset
from tasks.data.interventions import InterventionConfig
from tasks.embed.images import DEFAULT_SHARD_SIZE, image_shard_url, plan_shard
from tasks.embed.models import check_model
from tasks.embed.text import text_url
from tasks.errors import InputError
from tasks.store.catalog import EmbeddingCatalog
from tasks.store.storage import exists
from tasks.vocabulary import VIEWS


def plan_index(data: Dataset, model, pretrained, store, interventions: InterventionConfig, text, views=VIEWS) -> EmbeddingCatalog:
    """The catalog of this configuration: one URL per (domain, view), and the text table's.

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
    """The catalog of an already embedded configuration; fails naming what is missing."""
    index = plan_index(data, model, pretrained, store, interventions, text)
    missing = [url for url in [*index.shards.values(), index.text_url] if url and not exists(url)]
    if missing:
        raise InputError(
            f"{len(missing)} embedding file(s) are not in the store, e.g. {missing[0]}; "
            "run `clip-icm run` (or the embed-dataset flow) with the same dataset, model and store first"
        )
    return index


def plan_shards(data: Dataset, model, pretrained, store, interventions, shard_size: int = DEFAULT_SHARD_SIZE,
                views=VIEWS):
    """Every (domain, view) of the dataset as a ShardPlan of parts of at most shard_size images."""
    return [plan_shard(data, domain, view, model, pretrained, store, interventions, shard_size)
            for domain in data.domains for view in views]
