"""Storage on any fsspec URL: atomic writes (temp name + rename), Parquet via pyarrow, JSON."""
from __future__ import annotations

import hashlib
import io
import json
import uuid

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq


def filesystem(url: str):
    """(filesystem, path) for a local path, memory://, s3://, gs://, ..."""
    return fsspec.core.url_to_fs(url)


def join(url: str, *parts: str) -> str:
    return "/".join([url.rstrip("/"), *(part.strip("/") for part in parts)])


def exists(url: str) -> bool:
    fs, path = filesystem(url)
    return fs.exists(path)


def write_bytes(url: str, data: bytes) -> str:
    """Write to a temporary sibling, then rename: readers never see a half-written file."""
    fs, path = filesystem(url)
    parent = path.rsplit("/", 1)[0]
    fs.makedirs(parent, exist_ok=True)
    temporary = f"{path}.tmp-{uuid.uuid4().hex}"
    try:
        with fs.open(temporary, "wb") as handle:
            handle.write(data)
        fs.mv(temporary, path)
    finally:
        if fs.exists(temporary):
            fs.rm(temporary)
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


def stable_hash(value, length: int = 16) -> str:
    """A short hash of a JSON-able value, identical across processes and machines."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:length]
