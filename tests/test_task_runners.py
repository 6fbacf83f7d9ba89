"""The main job on Dask (2 worker processes) and Ray (local, 2 CPUs) reports what the thread runner reports."""
import asyncio
import math
from datetime import datetime, timezone

import pandas as pd
import pytest
from conftest import TINY_MODEL, make_image_folder
from prefect import get_client
from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterName, TaskRunFilterStartTime

from clip_icm.cli import main
from tasks.store.storage import join, read_bytes, read_parquet
from tasks.store.history import resolve_run

SHARD_SIZE = 5
PER_CLASS, CLASSES = 3, ("bird", "cat", "dog", "fish")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    base = tmp_path_factory.mktemp("runners")
    return make_image_folder(str(base / "data"), domains=("art", "photo"), classes=CLASSES, per_class=PER_CLASS,
                             corrupt=[("photo", "dog")])


def run_with(runner: str, dataset: str, base) -> str:
    """One run of the main job on `runner`, into a store of its own so that it embeds everything itself."""
    store = str(base / f"store-{runner}")
    args = ["run", "--dataset", dataset, "--model", TINY_MODEL, "--pretrained", "none", "--store", store,
            "--protocol", "domain-shift", "--lams", "0.1", "10", "--ks", "4", "8", "--shard-size", str(SHARD_SIZE), "--task-runner", runner,
            "--max-workers", "2", "--run-name", runner]
    assert main(args) == 0
    return resolve_run(join(store, "runs", runner))


@pytest.fixture(scope="module")
def timed_threads_run(prefect_api, dataset, tmp_path_factory):
    started = datetime.now(timezone.utc)
    run_url = run_with("threads", dataset, tmp_path_factory.mktemp("threads"))
    return run_url, started, datetime.now(timezone.utc)


@pytest.fixture(scope="module")
def threads_run(timed_threads_run):
    return timed_threads_run[0]


def reports(run_url):
    return {name: read_parquet(join(run_url, name)).to_pandas()
            for name in ("summary.parquet", "predictions.parquet", "selection.parquet")}


def test_thread_run_embeds_each_domain_view_as_ceil_n_over_shard_size_part_tasks(timed_threads_run):
    _, started, finished = timed_threads_run

    async def part_runs():
        async with get_client() as client:
            runs = await client.read_task_runs(task_run_filter=TaskRunFilter(
                name=TaskRunFilterName(like_="embed art/"),
                start_time=TaskRunFilterStartTime(after_=started, before_=finished)))
            return sorted(run.name for run in runs)

    names = asyncio.run(part_runs())
    parts = math.ceil(len(CLASSES) * PER_CLASS / SHARD_SIZE)  # art has 12 images: 3 parts per view
    assert names == sorted(f"embed art/{view} {n}/{parts}" for view in ("intervened", "original")
                           for n in range(1, parts + 1))


@pytest.mark.parametrize("runner", ["dask", "ray"])
def test_process_runners_report_what_threads_report(runner, threads_run, dataset, tmp_path_factory):
    run_url = run_with(runner, dataset, tmp_path_factory.mktemp(runner))
    expected, got = reports(threads_run), reports(run_url)
    for name in expected:
        pd.testing.assert_frame_equal(got[name], expected[name], check_exact=False, rtol=1e-6, obj=f"{runner} {name}")
    assert len(got["predictions.parquet"]) > 0
    # skipped reasons are stable text: identical runs write identical files
    assert read_bytes(join(run_url, "skipped.parquet")) == read_bytes(join(threads_run, "skipped.parquet"))
    assert read_parquet(join(run_url, "skipped.parquet")).column("sample_id").to_pylist() == ["photo/dog/broken.jpg"]
