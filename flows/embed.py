"""Flow: embed a dataset's images (originals + interventions) and prompts.

Each (domain, view) runs as parts of at most `shard_size` images, one task each, that receive
only their own rows; a merge task per (domain, view) writes the one table readers use."""
from __future__ import annotations

from prefect import flow
from prefect.task_runners import ThreadPoolTaskRunner

from tasks.data.datasets import discover_dataset
from tasks.data.interventions import InterventionConfig
from tasks.data.prompts import text_inputs
from tasks.embed.gpu_images import assign_devices
from tasks.embed.images import DEFAULT_SHARD_SIZE, embed_image_part, merge_image_shard
from tasks.embed.plan import plan_index, plan_shards
from tasks.embed.text import embed_text
from tasks.store.catalog import EmbeddingCatalog
from tasks.store.storage import exists
from tasks.vocabulary import VIEWS


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
