"""Embedding tasks: images of one (domain, view) shard to Parquet (text: tasks.embed.text).

A (domain, view) is cut into parts of at most `shard_size` images (a part never spans two of the data's
shard or Parquet files, so each file is read once, front to back), each its own task that
receives only its own rows, so any number of workers share a domain of any size; a merge task
then writes the one table per (domain, view) that readers use. Outputs live on the store under
a key of everything that decides them (model, weights, dataset fingerprint, domain, view,
intervention config, format, code version): a second identical run embeds nothing, and a
killed run resumes with the missing parts only. Parts are content-keyed and every file is
written under a writer's own temporary name and renamed, so any number of concurrent runs may
embed the same shard into one store (no lock needed): identical content wins the last rename,
and the last writer to finish removes the parts. Image embeddings at rest are the model's raw
output (schema metadata `"normalized": false`); readers normalise.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from prefect import task
from prefect.cache_policies import NO_CACHE
from tqdm.auto import tqdm

from tasks import __version__
from tasks.data.datasets import Dataset
from tasks.data.sources.base import WHOLE_FILE
from tasks.embed.cpu_images import pil_batches
from tasks.embed.cache import check_finite, discard, usable
from tasks.embed.models import (
    check_model, default_batch_size, default_loader_workers, effective_precision, load_model,
)
from tasks.specs import EmbedSpec
from tasks.store.contents import (
    METADATA_KEY, Contents, DamagedEmbeddings, contents_of, contents_problem, table_contents,
)
from tasks.vocabulary import INTERVENED, model_folder
from tasks.store.storage import atomic_writer, exists, join, read_parquet, remove_files, write_parquet
from tasks.store.names import stable_hash

# bumped whenever the meaning of a stored image embedding changes (raw-v2: not normalised; v3: no split, which is
# the split table's, so one embedding serves every split rule, holdout and seed)
IMAGE_FORMAT = "raw-v3"
PART_COLUMNS = ["sample_id", "path", "locator", "domain", "class", "label"]
IMAGE_SCHEMA = pa.schema([
    ("sample_id", pa.string()), ("path", pa.string()), ("domain", pa.string()), ("class", pa.string()),
    ("label", pa.int32()), ("view", pa.string()),
])
SKIPPED_SCHEMA = pa.schema([
    ("sample_id", pa.string()), ("path", pa.string()), ("domain", pa.string()), ("class", pa.string()),
    ("reason", pa.string()),
])


def image_shard_url(embedding: EmbedSpec, weights_id: str, dataset: Dataset, domain: str, view: str) -> str:
    """Where a shard lives; computable without loading the model (the sweep relies on it). The key holds what
    decides the embeddings: the model and weights, the content of the domain's images (any changed byte changes
    it), the view and its interventions, the precision, the format and the code version."""
    key = stable_hash({
        "model": embedding.model, "weights": weights_id, "images": dataset.domain_fingerprints[domain],
        "domain": domain, "view": view, "code": __version__, "format": IMAGE_FORMAT,
        "precision": effective_precision(embedding.device, embedding.precision),
        "interventions": embedding.interventions.key if view == INTERVENED else None,
    })
    return join(embedding.store, "embeddings", model_folder(embedding.model), domain, f"{view}-{key}.parquet")


def skipped_url(shard_url: str) -> str:
    return shard_url.replace(".parquet", ".skipped.parquet")


def parts_folder(shard_url: str) -> str:
    return shard_url.replace(".parquet", ".parts")


def part_key(rows: pd.DataFrame) -> str:
    """Content-keyed: every writer (and a resumed run) embedding these rows writes this name."""
    return stable_hash(rows["sample_id"].tolist())


def part_url(shard_url: str, rows: pd.DataFrame) -> str:
    return join(parts_folder(shard_url), f"part-{part_key(rows)}.parquet")


def key_of(url: str) -> str:
    """The content key an embedding file's name ends with: <view>-<key>.parquet, part-<key>.parquet, prompts-<key>.parquet."""
    return url.rsplit("/", 1)[-1].removesuffix(".parquet").rsplit("-", 1)[-1]


def embedding_table(frame: pd.DataFrame, schema: pa.Schema, embeddings: np.ndarray, metadata: dict) -> pa.Table:
    """The shared Parquet layout: typed id/label columns plus embedding as fixed_size_list<float32>[d], and metadata
    that says what the file holds (tasks.store.contents): `metadata` must name the file's `key`."""
    embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
    column = pa.FixedSizeListArray.from_arrays(pa.array(embeddings.ravel()), embeddings.shape[1])
    table = pa.Table.from_pandas(frame[schema.names], schema=schema, preserve_index=False)
    table = table.append_column("embedding", column)
    return table.replace_schema_metadata({METADATA_KEY: json.dumps({**metadata, **contents_of(table)}, sort_keys=True)})


def skipped_images(catalog) -> pd.DataFrame:
    """Unreadable images, once each (the original and intervened shards skip the same files)."""
    tables = [read_parquet(skipped_url(url)).to_pandas() for key, url in catalog.shards.items() if key.endswith("/original")]
    return pd.concat(tables, ignore_index=True)


def embed_rows(loaded, rows: pd.DataFrame, interventions, batch_size, num_workers, precision="auto", label=""):
    """(kept rows with their view, raw embeddings, skipped rows with a reason) of some images."""
    if loaded.device.startswith("cuda"):
        from tasks.embed.gpu_images import gpu_batches  # CUDA only: JPEGs decoded on the GPU

        batches = gpu_batches(loaded, rows, interventions, batch_size, num_workers)
    else:
        batches = pil_batches(loaded, rows, interventions, batch_size, num_workers)
    indices, views, chunks, errors = [], [], [], []
    with tqdm(total=len(rows), desc=f"embed {label}".strip(), unit="img") as progress:
        for batch in batches:
            errors += batch["errors"]
            if batch["pixels"] is not None:
                chunks.append(loaded.encode_images(batch["pixels"], precision))
                indices += batch["index"]
                views += batch["view"]
            progress.update(len(batch["index"]) + len(batch["errors"]))
    # in row order, whatever order the loader's workers delivered them in
    order = np.argsort(indices, kind="stable")
    kept = rows.iloc[np.asarray(indices, dtype=np.int64)[order]][PART_COLUMNS].assign(view=np.asarray(views, dtype=object)[order])
    errors.sort()
    failed = rows.iloc[[index for index, _ in errors]].assign(reason=[reason for _, reason in errors])
    width = loaded.model.visual.output_dim
    embeddings = np.concatenate(chunks)[order] if chunks else np.zeros((0, width), np.float32)
    return kept, embeddings, failed[SKIPPED_SCHEMA.names]


@dataclass(frozen=True)
class ShardPlan:
    """One (domain, view): its final URL, its parts' rows, and the metadata every part records."""

    url: str
    label: str  # "domain/view", for task names and logs
    parts: tuple[pd.DataFrame, ...]
    metadata: dict

    @property
    def images(self) -> int:
        return sum(len(rows) for rows in self.parts)


def split_rows(rows: pd.DataFrame, shard_size: int) -> tuple[pd.DataFrame, ...]:
    """Rows cut into parts of at most shard_size, each one task's whole input, following the data's files: images
    that are files of their own sorted by sample id; the samples of a shard or Parquet file in file order, a part
    never spanning two files, so that every file is read once, front to back, by one task."""
    rows = rows.assign(container=rows["path"].where(rows["locator"] != WHOLE_FILE, ""))
    rows = rows.sort_values(["container", "position", "sample_id"])
    parts = []
    for _, group in rows.groupby("container", sort=True):
        group = group[PART_COLUMNS].reset_index(drop=True)
        parts += [group.iloc[start : start + shard_size].reset_index(drop=True) for start in range(0, len(group), shard_size)]
    return tuple(parts)


def plan_shard(dataset: Dataset, domain: str, view: str, embedding: EmbedSpec) -> ShardPlan:
    """Where one (domain, view) goes and how it splits; needs no model."""
    weights_id = check_model(embedding.model, embedding.pretrained)
    interventions = embedding.interventions
    metadata = {
        "model": embedding.model, "pretrained": embedding.pretrained, "weights_id": weights_id,
        "images_fingerprint": dataset.domain_fingerprints[domain],
        "precision": effective_precision(embedding.device, embedding.precision),
        "domain": domain, "view": view, "code_version": __version__, "format": IMAGE_FORMAT, "normalized": False,
        "interventions": {"families": list(interventions.families), "seed": interventions.seed,
                          "params": {f: interventions.parameters(f) for f in interventions.families}}
        if view == INTERVENED else None,
    }
    return ShardPlan(
        url=image_shard_url(embedding, weights_id, dataset, domain, view),
        label=f"{domain}/{view}",
        parts=split_rows(dataset.rows(domains=[domain]), embedding.shard_size),
        metadata=metadata,
    )


@task(name="embed-image-part", task_run_name="embed {label}", tags=["gpu"], cache_policy=NO_CACHE, retries=1)
def embed_image_part(rows: pd.DataFrame, shard_url: str, metadata: dict, embedding: EmbedSpec, label: str = "") -> dict:
    """Embed one part of a (domain, view): only these rows; skipped when the part or the shard exists."""
    url = part_url(shard_url, rows)
    result = {"url": url, "images": len(rows), "embedded": 0}
    if usable(url, part_key(rows)) or usable(shard_url, key_of(shard_url)):  # done: by this run before, or another
        return result
    loaded = load_model(embedding.model, embedding.pretrained, embedding.device)
    kept, embeddings, failed = embed_rows(
        loaded, rows, embedding.interventions if metadata["view"] == INTERVENED else None,
        embedding.batch_size or default_batch_size(loaded.device),
        default_loader_workers(loaded.device) if embedding.num_workers is None else embedding.num_workers,
        embedding.precision, label,
    )
    check_finite(embeddings, f"images of {label}", loaded.weights)
    metadata = {**metadata, "preprocess": repr(loaded.preprocess), "key": part_key(rows)}
    # the skipped rows first: a part's table existing means the part is complete
    write_parquet(pa.Table.from_pandas(failed, schema=SKIPPED_SCHEMA, preserve_index=False), skipped_url(url))
    write_parquet(embedding_table(kept, IMAGE_SCHEMA, embeddings, metadata), url)
    return {**result, "embedded": len(kept)}


@task(name="merge-image-shard", task_run_name="merge {label}", cache_policy=NO_CACHE, retries=2)
def merge_image_shard(shard_url: str, parts: list[dict], label: str = "") -> dict:
    """Concatenate a (domain, view)'s parts into its one table; tolerates another writer merging first."""
    result = {"url": shard_url, "images": sum(p["images"] for p in parts), "embedded": sum(p["embedded"] for p in parts)}
    part_urls = [p["url"] for p in parts]
    cleanup = part_urls + [skipped_url(url) for url in part_urls]
    if not usable(shard_url, key_of(shard_url)):
        try:
            skipped = pa.concat_tables([read_parquet(skipped_url(url)) for url in part_urls])
            write_parquet(skipped, skipped_url(shard_url))
            write_merged(shard_url, part_urls)
        except FileNotFoundError:
            if not exists(shard_url):  # not another writer's finished merge: parts are really missing
                raise
    remove_files(cleanup, folder=parts_folder(shard_url))
    return {**result, "skipped": read_parquet(skipped_url(shard_url)).num_rows}


def checked_part(url: str) -> pa.Table:
    """A part, read whole and checked against what it says (its footer alone was checked before it was trusted); a
    damaged one is discarded, so that the next run embeds it again."""
    table = read_parquet(url)
    problem = contents_problem(json.loads(table.schema.metadata[METADATA_KEY]), table_contents(table))
    if problem:
        discard(url, problem)
        raise DamagedEmbeddings(url, problem)
    return table


def write_merged(shard_url: str, part_urls: list[str]) -> None:
    """The parts as one file, streamed part by part (one row group each: memory stays one part, whatever the shard's
    size), each checked as it goes through; what it holds is said last, in the footer, once every part has."""
    first = checked_part(part_urls[0])
    metadata = json.loads(first.schema.metadata[METADATA_KEY])
    contents = Contents()
    with atomic_writer(shard_url) as handle:
        with pq.ParquetWriter(handle, first.schema.remove_metadata(), write_page_checksum=True) as writer:
            for table in (first, *(checked_part(url) for url in part_urls[1:])):
                writer.write_table(table.replace_schema_metadata(None))
                contents.add(table.column("sample_id").combine_chunks(), table.column("embedding").combine_chunks())
            writer.add_key_value_metadata({METADATA_KEY: json.dumps(
                {**metadata, "key": key_of(shard_url), **contents.fields()}, sort_keys=True)})


def embed_image_shard(dataset: Dataset, domain: str, view: str, embedding: EmbedSpec) -> dict:
    """One (domain, view) in this process, part after part (the flow runs the parts as parallel tasks)."""
    plan = plan_shard(dataset, domain, view, embedding)
    if usable(plan.url, key_of(plan.url)):
        return {"url": plan.url, "images": plan.images, "embedded": 0,
                "skipped": read_parquet(skipped_url(plan.url)).num_rows}
    parts = [embed_image_part.fn(rows, plan.url, plan.metadata, embedding, plan.label) for rows in plan.parts]
    return merge_image_shard.fn(plan.url, parts, plan.label)

