"""The embedding cache's files say what they hold, and are checked against it before they are used.

Every embedding file (a part, a shard, the text table) carries, in its schema metadata beside the model
and the rest: `key` (the content key its name ends with), `rows`, `ids` (a digest of its sample ids, or
texts, in file order) and `checksum` (a digest of its embeddings' float32 bytes). Its pages carry
Parquet's own CRC checksums. A file that cannot be read, or whose key, rows, ids or checksum are not
what they should be (cut short by a crash or a full disk, bit rot, another file copied over it) is
damaged: the embedding stage names it in one line, removes it and embeds it again; where nothing can
embed it (a sweep) it is refused. Embeddings that are not finite are never written.
"""
from __future__ import annotations

import hashlib
import json
import logging

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tasks.errors import InputError
from tasks.store.storage import filesystem

METADATA_KEY = b"clip_icm"
BATCH_ROWS = 8192  # rows hashed at a time when a file is checked: memory stays a batch, whatever the file's size
log = logging.getLogger(__name__)


class Contents:
    """Running digests of what an embedding file holds, fed table by table in file order."""

    def __init__(self):
        self.rows, self._ids, self._checksum = 0, hashlib.blake2b(digest_size=16), hashlib.blake2b(digest_size=16)

    def add(self, identities: pa.Array, embeddings: pa.Array) -> "Contents":
        """identities: the sample ids (or texts) of some rows; embeddings: their fixed_size_list<float32> column."""
        self.rows += len(identities)
        for identity in identities.to_pylist():
            self._ids.update(identity.encode() + b"\0")
        values = embeddings.flatten() if isinstance(embeddings, pa.FixedSizeListArray) else embeddings.values
        self._checksum.update(np.ascontiguousarray(values.to_numpy(zero_copy_only=False), dtype=np.float32).tobytes())
        return self

    def fields(self) -> dict:
        return {"rows": self.rows, "ids": self._ids.hexdigest(), "checksum": self._checksum.hexdigest()}


def identity_column(schema: pa.Schema) -> str:
    """Image files are identified by their sample ids, the text table by its texts."""
    return "sample_id" if "sample_id" in schema.names else "text"


def contents_of(table: pa.Table) -> dict:
    return Contents().add(table.column(identity_column(table.schema)).combine_chunks(),
                          table.column("embedding").combine_chunks()).fields()


def metadata_of(url: str) -> dict:
    """An embedding file's clip-icm metadata, from its footer's key-value metadata (a merged shard writes it last)."""
    fs, path = filesystem(url)
    with fs.open(path, "rb") as handle:
        return json.loads(pq.ParquetFile(handle).metadata.metadata[METADATA_KEY])


def problem_with(url: str, key: str) -> str | None:
    """What is wrong with an embedding file, or None: it is readable to its last page (CRCs checked), says it is the
    file of `key`, and its rows, ids and embeddings are those it says."""
    fs, path = filesystem(url)
    try:
        with fs.open(path, "rb") as handle:
            source = pq.ParquetFile(handle, page_checksum_verification=True)
            said = json.loads((source.metadata.metadata or {}).get(METADATA_KEY, b"{}"))
            if said.get("key") != key:
                return f"it holds the embeddings of key {said.get('key')!r}, not {key!r} (another file copied over it?)"
            found = Contents()
            columns = [identity_column(source.schema_arrow), "embedding"]
            for batch in source.iter_batches(batch_size=BATCH_ROWS, columns=columns, use_threads=False):
                found.add(batch.column(0), batch.column(1))
    except (OSError, ValueError, pa.ArrowException) as error:  # cut short, not Parquet, a page's CRC wrong, ...
        return f"it cannot be read ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})"
    expected = {name: said.get(name) for name in ("rows", "ids", "checksum")}
    wrong = [name for name, value in found.fields().items() if expected[name] != value]
    return f"its {', '.join(wrong)} are not what the file says (damaged)" if wrong else None


def usable(url: str, key: str) -> bool:
    """Whether a cached file exists and holds what it says; a damaged one is named in one line and removed, so that
    whoever asked embeds it again."""
    fs, path = filesystem(url)
    if not fs.exists(path):
        return False
    problem = problem_with(url, key)
    if problem is None:
        return True
    log.warning("cached embeddings %s are damaged: %s; embedding them again", url, problem)
    fs.rm(path)
    return False


def check_usable(url: str, key: str) -> None:
    """Refuse a damaged cached file where nothing can embed it again (a sweep reads the store only)."""
    problem = problem_with(url, key)
    if problem:
        raise InputError(f"cached embeddings {url} are damaged: {problem}; run `clip-icm run` with the same "
                         "dataset, model and store to embed them again", "store")


def check_finite(embeddings: np.ndarray, what: str, weights: str) -> None:
    """Embeddings with NaN or inf are never cached: they come from the weights, so the weights are named."""
    bad = ~np.isfinite(embeddings).all(axis=1)
    if bad.any():
        raise InputError(f"the weights {weights!r} give NaN or infinite embeddings for {int(bad.sum())} of {len(bad)} "
                         f"{what}; nothing was cached. Check the checkpoint (a wrong dtype, a failed conversion or "
                         "a diverged training run) or pass other weights", "pretrained")
