"""Storage on any fsspec URL: atomic writes (temp name + rename), Parquet via pyarrow, JSON.

No locking primitive is assumed (object stores have none): every writer writes under its own
temporary name and renames it onto the final name, so concurrent writers of the same content
are safe, and the last rename wins with identical bytes. A temporary name says who writes it
(host and process): a process that is stopped removes its own, and the files of a writer that
was killed outright are removed by the next writer of their folder on the same host.
"""
from __future__ import annotations

import io
import json
import os
import socket
import uuid
from contextlib import contextmanager, suppress

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.asyn import AsyncFileSystem
from fsspec.implementations.local import LocalFileSystem
from fsspec.utils import get_protocol

from tasks.errors import InputError


def filesystem(url: str):
    """(filesystem, path) for a local path, memory://, s3://, gs://, ...

    Object stores' clients (fsspec's async filesystems: s3fs, gcsfs, ...) answer exists() and open() from folder
    listings they cached, which miss what other workers, or this process's other threads, wrote since: the
    store is shared, so its clients cache no listing.
    """
    store_class = fsspec.get_filesystem_class(get_protocol(url))
    options = {"use_listings_cache": False} if issubclass(store_class, AsyncFileSystem) else {}
    return fsspec.core.url_to_fs(url, **options)


def open_input(url: str):
    """A file of the store opened for reading: a local one natively (pyarrow then reads it without a Python call per
    read: its Parquet decodes a fifth faster), any other through fsspec. FileNotFoundError when there is none."""
    fs, path = filesystem(url)
    if isinstance(fs, LocalFileSystem):
        return pa.OSFile(path)
    return fs.open(path, "rb")


def missing_bucket(url: str) -> str | None:
    """The bucket of an object-store URL (s3://BUCKET/..., gs://BUCKET/...) when it does not exist; None otherwise."""
    fs, path = filesystem(url)
    bucket = path.split("/", 1)[0]
    return bucket if isinstance(fs, AsyncFileSystem) and not fs.exists(bucket) else None


def join(url: str, *parts: str) -> str:
    return "/".join([url.rstrip("/"), *(part.strip("/") for part in parts)])


def exists(url: str) -> bool:
    fs, path = filesystem(url)
    return fs.exists(path)


WRITER = f"{socket.gethostname()}-{os.getpid()}"  # who writes a temporary file
TEMPORARY = ".tmp-"
_writing: set[tuple] = set()  # (filesystem, path) of the temporary files this process is writing
_tidied: set[str] = set()  # folders this process has written to, and so cleared of dead writers' files


@contextmanager
def atomic_writer(url: str):
    """A handle on this writer's own temporary sibling of url, renamed onto url when the block
    succeeds and removed when it fails: readers never see a half-written file. A store that cannot
    be written (full, read-only, unreachable) fails in one line naming the file."""
    fs, path = filesystem(url)
    temporary = f"{path}{TEMPORARY}{WRITER}-{uuid.uuid4().hex}"
    _writing.add((fs, temporary))
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
        folder = url.rstrip("/").rsplit("/", 1)[0]
        if folder not in _tidied:
            _tidied.add(folder)
            remove_dead_writers_files(folder)
    except FileNotFoundError:  # a folder another writer removed, or an input read inside the block: the caller's
        raise
    except OSError as error:
        raise InputError(f"cannot write {url} ({type(error).__name__}: {error.strerror or error}): the store is full, "
                         "read-only or unreachable; free space, fix its permissions or pass another --store",
                         "store") from error
    finally:
        _writing.discard((fs, temporary))
        if fs.exists(temporary):
            fs.rm(temporary)


def remove_unfinished_writes() -> None:
    """Remove the temporary files this process is writing (it is being stopped: no thread will finish them)."""
    for fs, temporary in list(_writing):
        with suppress(OSError):
            fs.rm(temporary)


def remove_dead_writers_files(folder: str) -> list[str]:
    """Remove the temporary files in `folder` that a process of this host was writing when it was killed."""
    fs, path = filesystem(folder)
    try:
        names = fs.ls(path, detail=False)
    except OSError:  # no folder yet
        return []
    removed = []
    for name in names:
        writer = name.rsplit(TEMPORARY, 1)[1].rsplit("-", 1)[0] if TEMPORARY in name else ""
        host, _, pid = writer.rpartition("-")
        if host == socket.gethostname() and pid.isdigit() and not alive(int(pid)):
            with suppress(FileNotFoundError):
                fs.rm_file(name)
            removed.append(name)
    return removed


def alive(pid: int) -> bool:
    """Whether a process of this host is running."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def write_bytes(url: str, data: bytes) -> str:
    with atomic_writer(url) as handle:
        handle.write(data)
    return url


def read_bytes(url: str) -> bytes:
    fs, path = filesystem(url)
    return fs.cat_file(path)


def write_parquet(table: pa.Table, url: str) -> str:
    """The table as Parquet, with a CRC in every page (readers that ask for it find damaged pages)."""
    buffer = io.BytesIO()
    pq.write_table(table, buffer, write_page_checksum=True)
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
