"""Flow: embed a dataset's images (originals + interventions) and prompts.

Each (domain, view) runs as parts of at most `shard_size` images, one task each, that receive
only their own rows; a merge task per (domain, view) writes the one table readers use."""
from __future__ import annotations

from dataclasses import replace

from prefect import flow
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.utilities.annotations import quote

from tasks.data.discover import discover_dataset, store_split_table
from tasks.data.prompts import text_inputs
from tasks.embed.gpu_images import assign_devices
from tasks.embed.cache import read_once, usable
from tasks.embed.images import embed_image_part, key_of, merge_image_shard
from tasks.embed.plan import plan_catalog, plan_shards
from tasks.embed.text import embed_text
from tasks.specs import DataSpec, EmbedSpec
from tasks.store.catalog import EmbeddingCatalog
from tasks.vocabulary import VIEWS


@flow(name="embed-dataset", flow_run_name="embed {data.dataset_label} with {embedding.model}",
      task_runner=ThreadPoolTaskRunner(max_workers=4))
def embed_dataset(data: DataSpec, embedding: EmbedSpec, views: tuple[str, ...] = VIEWS,
                  with_text: bool = True) -> EmbeddingCatalog:
    """Every (domain, view) shard of `views`, and (with_text) the class prompts and caption pairs."""
    dataset = discover_dataset(data)
    text = text_inputs(dataset, embedding) if with_text else None
    catalog = plan_catalog(dataset, embedding, text, store_split_table(dataset, data.store), views)

    todo = [plan for plan in plan_shards(dataset, embedding, views) if not usable(plan.url, key_of(plan.url))]
    # several GPUs on this host: parts spread over them, one model per GPU, each part on one device
    devices = iter(assign_devices(sum(len(plan.parts) for plan in todo), embedding.device))
    parts, shards = [], []
    for plan in todo:
        shard_parts = [
            embed_image_part.with_options(task_run_name=f"embed {plan.label} {number + 1}/{len(plan.parts)}").submit(
                rows, plan.url, plan.metadata, replace(embedding, device=next(devices)), plan.label)
            for number, rows in enumerate(plan.parts)
        ]
        parts += shard_parts
        shards.append(merge_image_shard.submit(plan.url, shard_parts, plan.label))
    prompts = embed_text.submit(dataset.classes, *text, embedding) if text else None

    for future in [*parts, *([prompts] if prompts else [])]:  # a failed part raises its own error, not a merge's
        future.result()
    catalog.embedded = sum(shard.result()["embedded"] for shard in shards) + (prompts.result()["embedded"] if prompts else 0)
    return catalog


def embed_and_read(data: DataSpec, embedding: EmbedSpec, task_runner, normalize: bool, views: tuple[str, ...] = VIEWS,
                   with_text: bool = True) -> EmbeddingCatalog:
    """The embed flow, then its catalog read whole, once, as the run reads it (raw or L2-normalised): a file whose
    contents are not what it says is named and embedded again before anything uses the catalog."""
    # quoted: the specs' strings are also fields of the first pass's catalog, which Prefect would record as the
    # input of a second pass (a re-embed) and then show as a subflow's result among its inputs
    embed = embed_dataset.with_options(task_runner=task_runner)
    catalog = replace(embed(quote(data), quote(embedding), views, with_text), normalize=normalize)
    return read_once(catalog, lambda: embed(quote(data), quote(embedding), views, with_text).embedded)
