"""The data stage's Prefect tasks: a dataset discovered (its digests remembered for the next listing) and its
split stored. The listing itself (tasks.data.datasets) imports no Prefect, so the checks before a run answer
before Prefect, torch or open_clip load."""
from __future__ import annotations

import pyarrow as pa
from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.data.datasets import Dataset, file_digests, list_dataset, split_table_url
from tasks.data.fingerprints import remember_digests
from tasks.specs import DataSpec
from tasks.store.storage import exists, write_parquet


@task(name="discover-dataset", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def discover_dataset(data: DataSpec) -> Dataset:
    """`list_dataset`, and the digests its files' bytes gave remembered on the store for the next listing."""
    dataset = list_dataset(data)
    remember_digests(file_digests(dataset.samples), data.store, dataset.root)
    return dataset


@task(name="store-split-table", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def store_split_table(dataset: Dataset, store: str) -> str:
    """STORE/splits/<dataset>-<key>.parquet: which images of every domain are trained, selected and tested on
    (sample_id, domain, split, open_split), for the catalog and for whoever wants to see the exact split."""
    url = split_table_url(dataset, store)
    if not exists(url):
        columns = ["sample_id", "domain", "split", "open_split"]
        write_parquet(pa.Table.from_pandas(dataset.samples[columns], preserve_index=False), url)
    return url
