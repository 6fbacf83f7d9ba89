"""The embedding cache's files are checked before they are used: what their footer says here, the rest as they are read.

Every embedding file says what it holds (tasks.store.contents). Before a cached file is used the embedding
stage reads its footer alone: a file that cannot be read, or whose key or row count are not what they should
be (cut short by a crash or a full disk, another file copied over it), is damaged: it is named in one line,
removed and embedded again; where nothing can embed it (a sweep) it is refused. Its ids and checksum are
checked by the catalog's one read (`read_once`): bit rot inside a file is found there, named, removed and
embedded again before anything reads the catalog. Embeddings that are not finite are never written.
"""
from __future__ import annotations

import logging

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tasks.errors import InputError
from tasks.store.contents import DamagedEmbeddings, footer_problem, said
from tasks.store.storage import filesystem

log = logging.getLogger(__name__)


def metadata_of(url: str) -> dict:
    """An embedding file's clip-icm metadata, from its footer's key-value metadata (a merged shard writes it last)."""
    fs, path = filesystem(url)
    with fs.open(path, "rb") as handle:
        return said(pq.ParquetFile(handle))


def problem_with(url: str, key: str) -> str | None:
    """What the footer shows is wrong with an embedding file, or None: it ends in a readable footer that says it is
    the file of `key`, with the rows it has. Reads the footer only: the ids and checksum are the catalog's to check."""
    fs, path = filesystem(url)
    try:
        with fs.open(path, "rb") as handle:
            return footer_problem(pq.ParquetFile(handle), key)
    except (OSError, ValueError, pa.ArrowException) as error:  # cut short, not Parquet, ...
        return f"it cannot be read ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})"


def discard(url: str, problem: str) -> None:
    """Name a damaged cached file in one line and remove it, so that whoever asked embeds it again."""
    log.warning("cached embeddings %s are damaged: %s; embedding them again", url, problem)
    fs, path = filesystem(url)
    fs.rm(path)


def usable(url: str, key: str) -> bool:
    """Whether a cached file exists and its footer holds what it says; a damaged one is discarded."""
    fs, path = filesystem(url)
    if not fs.exists(path):
        return False
    problem = problem_with(url, key)
    if problem is None:
        return True
    discard(url, problem)
    return False


def check_usable(url: str, key: str) -> None:
    """Refuse a damaged cached file where nothing can embed it again (a sweep reads the store only)."""
    problem = problem_with(url, key)
    if problem:
        raise DamagedEmbeddings(url, problem)


def read_once(catalog, embed_again):
    """The catalog with every file read (tasks.store.catalog.EmbeddingCatalog.read_all): a file whose ids or checksum
    are not what it says is discarded, `embed_again()` embeds what is missing (returning how many rows it embedded),
    and the catalog reads on; returns the catalog. The same file damaged twice is refused: the store itself is at
    fault."""
    damaged = set()
    while True:
        try:
            return catalog.read_all()
        except DamagedEmbeddings as error:
            if error.url in damaged:
                raise
            damaged.add(error.url)
            discard(error.url, error.problem)
            catalog.embedded += embed_again()


def check_finite(embeddings: np.ndarray, what: str, weights: str) -> None:
    """Embeddings with NaN or inf are never cached: they come from the weights, so the weights are named."""
    bad = ~np.isfinite(embeddings).all(axis=1)
    if bad.any():
        raise InputError(f"the weights {weights!r} give NaN or infinite embeddings for {int(bad.sum())} of {len(bad)} "
                         f"{what}; nothing was cached. Check the checkpoint (a wrong dtype, a failed conversion or "
                         "a diverged training run) or pass other weights", "pretrained")
