"""Embedding tasks: images of one (domain, view) shard to Parquet (text: tasks.embed_text).

Outputs live on the store under a key of everything that decides them (model, weights,
dataset fingerprint, domain, view, intervention config, code version): a second
identical call embeds nothing. Work is written in atomic parts, so a killed run resumes
with the missing parts only; no partial file is ever visible.
"""
from __future__ import annotations

import io
import json

import fsspec
import numpy as np
import pandas as pd
import pyarrow as pa
import torch
from PIL import Image
from prefect import task
from prefect.cache_policies import NO_CACHE
from tqdm.auto import tqdm

from tasks import __version__
from tasks.datasets import Dataset
from tasks.interventions import InterventionConfig
from tasks.models import check_model, load_model
from tasks.storage import exists, join, read_parquet, remove, stable_hash, write_parquet

ORIGINAL, INTERVENED = "original", "intervened"
METADATA_KEY = b"clip_icm"
IMAGE_SCHEMA = pa.schema([
    ("sample_id", pa.string()), ("path", pa.string()), ("domain", pa.string()), ("class", pa.string()),
    ("label", pa.int32()), ("split", pa.string()), ("view", pa.string()),
])
SKIPPED_SCHEMA = pa.schema([
    ("sample_id", pa.string()), ("path", pa.string()), ("domain", pa.string()), ("class", pa.string()),
    ("reason", pa.string()),
])


def image_shard_url(store, model, weights_id, dataset: Dataset, domain, view, interventions: InterventionConfig) -> str:
    """Where a shard lives; computable without loading the model (the sweep relies on it)."""
    key = stable_hash({
        "model": model, "weights": weights_id, "dataset": dataset.fingerprint, "holdout": dataset.holdout,
        "split_seed": dataset.seed, "domain": domain, "view": view, "code": __version__,
        "interventions": interventions.key if view == INTERVENED else None,
    })
    return join(store, "embeddings", model, domain, f"{view}-{key}.parquet")


def skipped_url(shard_url: str) -> str:
    return shard_url.replace(".parquet", ".skipped.parquet")


def embedding_table(frame: pd.DataFrame, schema: pa.Schema, embeddings: np.ndarray, metadata: dict) -> pa.Table:
    """The shared Parquet layout: typed id/label columns plus embedding as fixed_size_list<float32>[d]."""
    embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
    column = pa.FixedSizeListArray.from_arrays(pa.array(embeddings.ravel()), embeddings.shape[1])
    table = pa.Table.from_pandas(frame[schema.names], schema=schema, preserve_index=False)
    table = table.append_column("embedding", column)
    return table.replace_schema_metadata({METADATA_KEY: json.dumps(metadata, sort_keys=True)})


def read_embeddings(url: str, filters=None) -> tuple[pd.DataFrame, np.ndarray]:
    """(metadata columns, n x d float32 embeddings) of an embedding Parquet file."""
    table = read_parquet(url)
    if filters:
        mask = np.ones(table.num_rows, bool)
        for column, values in filters.items():
            mask &= table.column(column).to_pandas().isin(list(values)).to_numpy()
        table = table.filter(pa.array(mask))
    column = table.column("embedding").combine_chunks()
    width = column.type.list_size
    embeddings = column.flatten().to_numpy(zero_copy_only=False).reshape(-1, width)
    return table.drop_columns(["embedding"]).to_pandas(), embeddings


def embedding_metadata(url: str) -> dict:
    return json.loads(read_parquet(url).schema.metadata[METADATA_KEY])


class ImageRows(torch.utils.data.Dataset):
    """Decodes images from any fsspec URL; an unreadable file becomes an error record, not a crash."""

    def __init__(self, rows: pd.DataFrame, preprocess, interventions: InterventionConfig | None):
        self.paths = rows["path"].tolist()
        self.sample_ids = rows["sample_id"].tolist()
        self.preprocess = preprocess
        self.interventions = interventions

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, index):
        try:
            with fsspec.open(self.paths[index], "rb") as handle:
                image = Image.open(io.BytesIO(handle.read()))
                image.load()
            image = image.convert("RGB")
        except Exception as error:  # any decoder failure: record it and keep going
            return {"index": index, "error": f"{type(error).__name__}: {error}"}
        view = ORIGINAL
        if self.interventions is not None:
            view, image = self.interventions.apply(image, self.sample_ids[index])
        return {"index": index, "pixels": self.preprocess(image), "view": view}


def collate(items):
    good = [item for item in items if "pixels" in item]
    return {
        "index": [item["index"] for item in good],
        "view": [item["view"] for item in good],
        "pixels": torch.stack([item["pixels"] for item in good]) if good else None,
        "errors": [(item["index"], item["error"]) for item in items if "error" in item],
    }


def _embed_part(loaded, rows: pd.DataFrame, interventions, batch_size, num_workers, progress) -> tuple[pd.DataFrame, np.ndarray, pd.DataFrame]:
    loader = torch.utils.data.DataLoader(
        ImageRows(rows, loaded.preprocess, interventions),
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=collate,
        pin_memory=loaded.device.startswith("cuda"),
    )
    indices, views, chunks, errors = [], [], [], []
    for batch in loader:
        errors += batch["errors"]
        if batch["pixels"] is not None:
            chunks.append(loaded.encode_images(batch["pixels"]))
            indices += batch["index"]
            views += batch["view"]
        progress.update(len(batch["index"]) + len(batch["errors"]))
    kept = rows.iloc[indices][["sample_id", "path", "domain", "class", "label", "split"]].assign(view=views)
    failed = rows.iloc[[index for index, _ in errors]].assign(reason=[reason for _, reason in errors])
    width = loaded.model.visual.output_dim
    return kept, (np.concatenate(chunks) if chunks else np.zeros((0, width), np.float32)), failed[SKIPPED_SCHEMA.names]


@task(name="embed-images", task_run_name="embed {domain}/{view}", tags=["gpu"], cache_policy=NO_CACHE)
def embed_image_shard(
    dataset: Dataset,
    domain: str,
    view: str,
    model: str,
    pretrained: str,
    store: str,
    interventions: InterventionConfig = InterventionConfig(),
    device: str = "auto",
    batch_size: int = 64,
    num_workers: int | None = None,
    part_size: int = 1024,
) -> dict:
    """Embed every image of one domain (both splits) in one view; returns where and how much."""
    if view not in (ORIGINAL, INTERVENED):
        raise ValueError(f"view must be {ORIGINAL!r} or {INTERVENED!r}, got {view!r}")
    weights_id = check_model(model, pretrained)
    url = image_shard_url(store, model, weights_id, dataset, domain, view, interventions)
    rows = dataset.rows(domains=[domain]).sort_values("sample_id").reset_index(drop=True)
    result = {"domain": domain, "view": view, "url": url, "images": len(rows)}
    if exists(url):
        return {**result, "embedded": 0, "skipped": read_parquet(skipped_url(url)).num_rows}

    loaded = load_model(model, pretrained, device)
    if num_workers is None:
        num_workers = 2 if loaded.device.startswith("cuda") else 0
    parts_dir = url.replace(".parquet", ".parts")
    part_urls, embedded = [], 0
    with tqdm(total=len(rows), desc=f"embed {domain}/{view}", unit="img") as progress:
        for number, start in enumerate(range(0, len(rows), part_size)):
            part_url = join(parts_dir, f"part-{number:05d}.parquet")
            part_urls.append(part_url)
            part_rows = rows.iloc[start : start + part_size]
            if exists(part_url):
                progress.update(len(part_rows))
                continue
            kept, embeddings, failed = _embed_part(
                loaded, part_rows, interventions if view == INTERVENED else None, batch_size, num_workers, progress
            )
            write_parquet(pa.Table.from_pandas(failed, schema=SKIPPED_SCHEMA, preserve_index=False), skipped_url(part_url))
            write_parquet(embedding_table(kept, IMAGE_SCHEMA, embeddings, {}), part_url)
            embedded += len(kept)

    tables = [read_parquet(part_url) for part_url in part_urls]
    metadata = {
        "model": model, "pretrained": pretrained, "weights_id": weights_id, "preprocess": repr(loaded.preprocess),
        "dataset_fingerprint": dataset.fingerprint, "domain": domain, "view": view, "code_version": __version__,
        "interventions": {"families": list(interventions.families), "seed": interventions.seed,
                          "params": {f: interventions.parameters(f) for f in interventions.families}}
        if view == INTERVENED else None,
        "normalized": True,
    }
    merged = pa.concat_tables(tables).replace_schema_metadata({METADATA_KEY: json.dumps(metadata, sort_keys=True)})
    skipped = pa.concat_tables([read_parquet(skipped_url(part_url)) for part_url in part_urls])
    write_parquet(skipped, skipped_url(url))
    write_parquet(merged, url)
    remove(parts_dir, recursive=True)
    return {**result, "embedded": embedded, "skipped": skipped.num_rows}
