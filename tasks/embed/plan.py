"""Where every shard of a configuration lives, computed without loading the model: what the embed flow
submits, and what a run that only reads the store (the sweep) opens."""
from __future__ import annotations

from tasks.data.datasets import Dataset
from tasks.embed.cache import check_usable
from tasks.embed.images import ShardPlan, image_shard_url, key_of, plan_shard
from tasks.embed.models import check_model
from tasks.embed.text import text_url
from tasks.errors import InputError
from tasks.specs import EmbedSpec
from tasks.store.catalog import EmbeddingCatalog
from tasks.store.storage import exists
from tasks.vocabulary import VIEWS


def plan_catalog(dataset: Dataset, embedding: EmbedSpec, text, split_url: str, views=VIEWS) -> EmbeddingCatalog:
    """The catalog of this configuration: one URL per (domain, view), the text table's and the split table's.

    text is (prompts, pairs) from `tasks.data.prompts.text_inputs`, or None for image shards only (a
    dataset-shift target).
    """
    weights_id = check_model(embedding.model, embedding.pretrained)
    return EmbeddingCatalog(
        dataset_root=dataset.root,
        fingerprint=dataset.fingerprint,
        domains=dataset.domains,
        classes=dataset.classes,
        shards={f"{domain}/{view}": image_shard_url(embedding, weights_id, dataset, domain, view)
                for domain in dataset.domains for view in views},
        text_url=text_url(embedding, weights_id, dataset.classes, *text) if text else None,
        split_url=split_url,
    )


def cached_catalog(dataset: Dataset, embedding: EmbedSpec, text, split_url: str) -> EmbeddingCatalog:
    """The catalog of an already embedded configuration; fails naming what is missing."""
    catalog = plan_catalog(dataset, embedding, text, split_url)
    files = [url for url in [*catalog.shards.values(), catalog.text_url] if url]
    missing = [url for url in files if not exists(url)]
    if missing:
        raise InputError(
            f"{len(missing)} embedding file(s) are not in the store, e.g. {missing[0]}; "
            "run `clip-icm run` (or the embed-dataset flow) with the same dataset, model and store first", "store"
        )
    for url in files:
        check_usable(url, key_of(url))
    return catalog


def plan_shards(dataset: Dataset, embedding: EmbedSpec, views=VIEWS) -> list[ShardPlan]:
    """Every (domain, view) of the dataset as a ShardPlan of parts of at most embedding.shard_size images."""
    return [plan_shard(dataset, domain, view, embedding) for domain in dataset.domains for view in views]
