"""Storage on any fsspec URL: atomic writes (temp name + rename), Parquet via pyarrow, JSON.

No locking primitive is assumed (object stores have none): every writer writes under its own
temporary name and renames it onto the final name, so concurrent writers of the same content
are safe, and the last rename wins with identical bytes.
"""
from __future__ import annotations

import io
import json
import uuid
from contextlib import contextmanager

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.asyn import AsyncFileSystem
from fsspec.utils import get_protocol


def filesystem(url: str):
    """(filesystem, path) for a local path, memory://, s3://, gs://, ...

    Object stores' clients (fsspec's async filesystems: s3fs, gcsfs, ...) answer exists() and open() from folder
    listings they cached, which miss what other workers, or this process's other threads, wrote since: the
    store is shared, so its clients cache no listing.
    """
    store_class = fsspec.get_filesystem_class(get_protocol(url))
    options = {"use_listings_cache": False} if issubclass(store_class, AsyncFileSystem) else {}
    return fsspec.core.url_to_fs(url, **options)


def join(url: str, *parts: str) -> str:
    return "/".join([url.rstrip("/"), *(part.strip("/") for part in parts)])


def exists(url: str) -> bool:
    fs, path = filesystem(url)
    return fs.exists(path)


@contextmanager
def atomic_writer(url: str):
    """A handle on this writer's own temporary sibling of url, renamed onto url when the block
    succeeds and removed when it fails: readers never see a half-written file."""
    fs, path = filesystem(url)
    temporary = f"{path}.tmp-{uuid.uuid4().hex}"
    try:
        for attempt in range(3):  # another writer may remove an emptied parent folder between the two calls
            fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
            try:
                handle = fs.open(temporary, "wb")
                break
            except FileNotFoundError:
                if attempt == 2:
                    raise
        with handle:
            yield handle
        fs.mv(temporary, path)
    finally:
        if fs.exists(temporary):
            fs.rm(temporary)


def write_bytes(url: str, data: bytes) -> str:
    with atomic_writer(url) as handle:
        handle.write(data)
    return url


def read_bytes(url: str) -> bytes:
    fs, path = filesystem(url)
    return fs.cat_file(path)


def write_parquet(table: pa.Table, url: str) -> str:
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return write_bytes(url, buffer.getvalue())


def read_parquet(url: str) -> pa.Table:
    fs, path = filesystem(url)
    try:
        return pq.read_table(path, filesystem=fs)
    except FileNotFoundError:
        raise FileNotFoundError(f"{url} does not exist") from None


def write_json(url: str, value) -> str:
    return write_bytes(url, json.dumps(value, indent=2, sort_keys=True, default=str).encode())


def read_json(url: str):
    return json.loads(read_bytes(url))


def remove(url: str, recursive: bool = False) -> None:
    fs, path = filesystem(url)
    if fs.exists(path):
        fs.rm(path, recursive=recursive)


def remove_files(urls, folder: str | None = None) -> None:
    """Remove files that may already be gone (another writer cleaned them), then `folder` if it is
    empty; never a folder with content, which may hold another writer's work in progress."""
    for url in urls:
        fs, path = filesystem(url)
        try:
            fs.rm_file(path)
        except FileNotFoundError:
            pass
    if folder is not None:
        fs, path = filesystem(folder)
        try:
            if not fs.ls(path, detail=False):
                fs.rmdir(path)
        except (FileNotFoundError, OSError):
            pass  # gone already, refilled by another writer, or folders are implicit (object stores)
