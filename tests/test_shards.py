"""Bounded shards, concurrent writers on one store, stable skipped reasons."""
import math
import multiprocessing
import pickle

import fsspec
import numpy as np
import pytest
import pandas as pd
from conftest import make_image_folder, read_embedding_file, tiny_embedding

from tasks.data.datasets import Dataset, discover
from tasks.embed.images import (
    PART_COLUMNS,
    embed_image_shard,
    plan_shard,
    skipped_url,
)
from tasks.vocabulary import INTERVENED, ORIGINAL
from tasks.store.storage import read_bytes, read_parquet

pytestmark = pytest.mark.pipeline  # embedding passes, and concurrent writer processes


def all_files(url):
    fs, path = fsspec.core.url_to_fs(url)
    return fs.find(path) if fs.exists(path) else []


def test_a_domain_larger_than_the_shard_size_runs_as_parts_and_reads_back_as_one_table(memory_root):
    data = discover(make_image_folder(f"{memory_root}/data", per_class=4, corrupt=[("art", "cat")]))
    plan = plan_shard(data, "art", INTERVENED, tiny_embedding(f"{memory_root}/parts", shard_size=5))
    assert [len(rows) for rows in plan.parts] == [5, 5, 5, 2]  # 17 images: ceil(17 / 5) parts
    assert pd.concat(plan.parts)["sample_id"].is_monotonic_increasing

    parted = embed_image_shard(data, "art", INTERVENED, tiny_embedding(f"{memory_root}/parts", shard_size=5))
    single = embed_image_shard(data, "art", INTERVENED, tiny_embedding(f"{memory_root}/one", shard_size=8192))
    assert (parted["images"], parted["embedded"], parted["skipped"]) == (17, 16, 1)
    rows_parted, emb_parted = read_embedding_file(parted["url"])
    rows_single, emb_single = read_embedding_file(single["url"])
    pd.testing.assert_frame_equal(rows_parted, rows_single)
    np.testing.assert_allclose(emb_parted, emb_single, rtol=1e-4, atol=1e-5)  # other batches, other rounding
    assert read_parquet(parted["url"]).schema.metadata == read_parquet(single["url"]).schema.metadata
    assert read_parquet(skipped_url(parted["url"])).equals(read_parquet(skipped_url(single["url"])))
    assert not [f for f in all_files(f"{memory_root}/parts") if ".parts" in f or ".tmp-" in f]

    again = embed_image_shard(data, "art", INTERVENED, tiny_embedding(f"{memory_root}/parts", shard_size=5))
    assert again["embedded"] == 0 and again["url"] == parted["url"]


def test_imagenet_sized_domain_plans_ceil_n_over_shard_size_small_tasks():
    n, shard_size = 1_281_167, 8192
    ids = pd.Series([f"imagenet/n{index % 1000:08d}/{index:07d}.JPEG" for index in range(n)])
    samples = pd.DataFrame({
        "sample_id": ids, "path": "s3://bucket/imagenet/" + ids, "domain": "imagenet",
        "class": ids.str.split("/").str[1], "label": np.arange(n, dtype="int32") % 1000, "split": "train", "size": 1,
        "locator": "", "position": 0,
    })
    data = Dataset("s3://bucket/imagenet", samples, ("imagenet",), tuple(sorted(samples["class"].unique())), "f" * 16,
                   {"imagenet": "f" * 16})
    plan = plan_shard(data, "imagenet", ORIGINAL, tiny_embedding("s3://bucket/store", shard_size=shard_size))
    assert len(plan.parts) == math.ceil(n / shard_size) == 157
    assert max(len(rows) for rows in plan.parts) == shard_size and plan.images == n
    # what one task is sent: its own rows (never the dataset table) and a few strings
    assert all(list(rows.columns) == PART_COLUMNS for rows in plan.parts)
    biggest = max(len(pickle.dumps((rows, plan.url, plan.metadata))) for rows in plan.parts)
    assert biggest < 1_500_000  # about 150 bytes an image; the whole table pickles to about 157 times that


def write_shard(root, store, barrier):
    """One writer process: discover and embed the same (domain, view) as its rivals, started together."""
    import torch

    torch.set_num_threads(1)  # three writers share the test machine's cores
    data = discover(root)
    if barrier is not None:
        barrier.wait(timeout=120)
    return embed_image_shard(data, "art", INTERVENED, tiny_embedding(store, shard_size=3, batch_size=2))["url"]


def test_concurrent_writer_processes_on_one_store_all_succeed_with_one_writers_bytes(tmp_path):
    root = make_image_folder(str(tmp_path / "data"), per_class=3, corrupt=[("art", "dog")])
    context, store, writers = multiprocessing.get_context("spawn"), str(tmp_path / "shared"), 3
    with context.Manager() as manager, context.Pool(writers) as pool:
        # the reference: one writer alone, in a process like the others
        reference = pool.apply(write_shard, (root, str(tmp_path / "alone"), None))
        barrier = manager.Barrier(writers)  # a worker waiting at it takes no second task: one writer each
        urls = pool.starmap(write_shard, [(root, store, barrier)] * writers, chunksize=1)
    assert len(set(urls)) == 1
    shared = urls[0]
    assert read_bytes(shared) == read_bytes(reference)
    assert read_bytes(skipped_url(shared)) == read_bytes(skipped_url(reference))
    leftovers = [f for f in all_files(store) if ".parts" in f or ".tmp-" in f]
    assert not leftovers
    assert sorted(f.rsplit("/", 1)[-1].split("-")[0] for f in all_files(store)) == ["intervened", "intervened"]


def test_identical_runs_write_byte_identical_skipped_tables_with_stable_reasons(memory_root):
    root = make_image_folder(f"{memory_root}/data", per_class=2, corrupt=[("art", "cat"), ("art", "fish")])
    data = discover(root)
    first = embed_image_shard(data, "art", ORIGINAL, tiny_embedding(f"{memory_root}/one", shard_size=4))
    second = embed_image_shard(data, "art", ORIGINAL, tiny_embedding(f"{memory_root}/two", shard_size=4))
    assert read_bytes(skipped_url(first["url"])) == read_bytes(skipped_url(second["url"]))
    reasons = read_parquet(skipped_url(first["url"])).column("reason").to_pylist()
    assert len(reasons) == 2 and all(reason.startswith("UnidentifiedImageError: cannot identify") for reason in reasons)
    assert not any("0x" in reason for reason in reasons)
