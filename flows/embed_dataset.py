"""Flow: embed a dataset's images (originals + interventions) and prompts, one task per shard."""
from __future__ import annotations

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner

from tasks.datasets import Dataset, discover, resolve_dataset
from tasks.embed import INTERVENED, ORIGINAL, embed_image_shard, embed_text, image_shard_url, text_url
from tasks.catalog import EmbeddingCatalog
from tasks.interventions import InterventionConfig, load_text_pairs, prompt_bank_pairs
from tasks.models import check_model
from tasks.storage import exists

VIEWS = (ORIGINAL, INTERVENED)


@task(name="discover-dataset", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def discover_dataset(dataset: str, store: str, holdout: float, split_seed: int, class_policy: str) -> Dataset:
    return discover(resolve_dataset(dataset, store), holdout=holdout, seed=split_seed, class_policy=class_policy)


def text_pairs_for(data: Dataset, text_pairs: str | None):
    """The shipped prompt bank's pairs, or the user's pairs file when one is given."""
    return load_text_pairs(text_pairs, data.classes) if text_pairs else prompt_bank_pairs(data.classes)


def plan_index(data: Dataset, model, pretrained, store, interventions: InterventionConfig, pairs) -> EmbeddingCatalog:
    """Where every shard of this configuration lives, computed without loading the model."""
    weights_id = check_model(model, pretrained)
    return EmbeddingCatalog(
        dataset_root=data.root,
        fingerprint=data.fingerprint,
        domains=data.domains,
        classes=data.classes,
        shards={f"{d}/{v}": image_shard_url(store, model, weights_id, data, d, v, interventions)
                for d in data.domains for v in VIEWS},
        text_url=text_url(store, model, weights_id, data.classes, pairs),
    )


def cached_index(data: Dataset, model, pretrained, store, interventions, pairs) -> EmbeddingCatalog:
    """The index of an already embedded configuration; fails naming what is missing."""
    index = plan_index(data, model, pretrained, store, interventions, pairs)
    missing = [url for url in [*index.shards.values(), index.text_url] if not exists(url)]
    if missing:
        raise FileNotFoundError(
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
) -> EmbeddingCatalog:
    data = discover_dataset(dataset, store, holdout, split_seed, class_policy)
    pairs = text_pairs_for(data, text_pairs)
    index = plan_index(data, model, pretrained, store, interventions, pairs)

    shards = [
        embed_image_shard.submit(data, domain, view, model, pretrained, store, interventions,
                                 device=device, batch_size=batch_size, num_workers=num_workers)
        for domain in data.domains
        for view in VIEWS
    ]
    prompts = embed_text.submit(data.classes, pairs, model, pretrained, store, device=device)

    results = [shard.result() for shard in shards]
    index.embedded = sum(r["embedded"] for r in results) + prompts.result()["embedded"]
    return index
