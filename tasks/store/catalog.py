"""The embedding catalog of one run: where each (domain, view) shard and the text table are, and their
contents, each read once and held as float32 arrays with the metadata columns beside them.

Every consumer (the moments of each fold, the selection, the evaluation, the sweep) takes arrays
from the same catalog, so a leave-one-domain-out run reads each domain's originals once instead
of once per fold. That one read is also the check of what the file holds (tasks.store.contents): the
ids and the embeddings' checksum (a CRC-32 of their values: the check of every byte that decodes to them) are
computed as the file is decoded, the other columns' page CRCs verified, and a file that is not what it says
raises DamagedEmbeddings before its arrays reach anyone. Rows of a
domain are held ordered by split (stable, train before val), so one domain's split is a slice of its
array: a view, not a copy. Intervened views are not held whole: the moments, cached per domain by
Prefect, are their main reader; their validation split is held for the projections' diagnostics.
`read_all` reads every file up front, so a run meets a damaged one before it evaluates anything (where
Prefect's cache holds no moments yet, the moments read an intervened view a second time).

Embeddings at rest are the model's raw output; with `normalize` (the default) image embeddings
and text-pair embeddings are L2-normalised as they are read. Class embeddings are always the
L2-normalised mean of the L2-normalised template embeddings (a prompt ensemble).
"""
from __future__ import annotations

import contextlib
import functools
import threading
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from icm_core import prompt_ensemble
from tasks.store.contents import Contents, DamagedEmbeddings, contents_problem, said, table_contents
from tasks.store.memory import release_freed_memory
from tasks.store.storage import open_input
from tasks.store.names import stable_hash
from tasks.vocabulary import ORIGINAL

IMAGE_COLUMNS = ("sample_id", "class", "label", "view")  # view: the intervention family of a row
FEW_VALUES = ("class", "view")  # string columns with a handful of distinct values
SPLIT_COLUMNS = ("split", "open_split")  # a split table's two assignments (tasks.data.splits.split_column)
TEXT_COLUMNS = ("class", "role", "pair_id")
TEXT_READ = (*TEXT_COLUMNS, "text", "embedding")  # the texts are the text table's ids: its check needs them


@contextlib.contextmanager
def opened(url: str):
    """A file of the store, open: a read of it that fails (a damaged page, footer or compressed stream) is named,
    never used (the embedding stage embeds a damaged file anew; a run writes a missing split table again)."""
    try:
        handle = open_input(url)
    except FileNotFoundError:
        raise FileNotFoundError(f"{url} does not exist") from None
    with handle:
        try:
            yield handle
        except (OSError, pa.ArrowException) as error:
            raise DamagedEmbeddings(url, f"it cannot be read ({type(error).__name__}: {str(error).splitlines()[0]})") \
                from error


@contextlib.contextmanager
def parquet_file(url: str):
    """A Parquet file of the store, its pages' CRCs checked as they are read."""
    with opened(url) as handle:
        yield pq.ParquetFile(handle, page_checksum_verification=True)


def checked(url: str, source: pq.ParquetFile, found: Contents) -> None:
    """Raise DamagedEmbeddings unless what was decoded from `source` is what its footer says."""
    problem = contents_problem(said(source), found)
    if problem:
        raise DamagedEmbeddings(url, problem)


def read_table(url: str, columns) -> pa.Table:
    with parquet_file(url) as source:
        return source.read(columns=list(columns), use_threads=False)


def normalized_rows(X: np.ndarray) -> np.ndarray:
    """The rows of a float32 array L2-normalised, as a new array (a zero row stays zero)."""
    return np.divide(X, np.maximum(np.linalg.norm(X, axis=1, keepdims=True), np.finfo(np.float32).tiny))


def _place(out: np.ndarray, chunks, destination: np.ndarray, normalize: bool = False) -> np.ndarray:
    """Copy fixed_size_list<float32>[d] chunks, file row after file row, to rows `destination` of out (-1: not
    kept); with `normalize`, L2-normalised on the way, while a chunk is in cache (a second pass over out costs as
    much again)."""
    start = 0
    for chunk in chunks:
        values = chunk.flatten().to_numpy(zero_copy_only=False).reshape(-1, out.shape[1])
        rows = destination[start : start + len(values)]
        start += len(values)
        if len(out) < len(destination):
            values, rows = values[rows >= 0], rows[rows >= 0]
        out[rows] = normalized_rows(values) if normalize else values
    return out


def embedding_array(column: pa.ChunkedArray) -> np.ndarray:
    """A fixed_size_list<float32>[d] column as one writable n x d float32 array."""
    return _place(np.empty((len(column), column.type.list_size), np.float32), column.chunks, np.arange(len(column)))


def streamed_embeddings(source: pq.ParquetFile, order: np.ndarray, found: Contents, normalize: bool = False,
                        batch_rows: int = 1024) -> np.ndarray:
    """The embedding column as one len(order) x d float32 array, file row order[i] at row i (a row not in `order`
    is decoded and checked, not kept), decoded a batch at a time straight to its place (each batch fed to `found`
    on its way, L2-normalised with `normalize`): the peak is the array plus a batch's decoding buffers (a
    whole-table read holds several times the array in them)."""
    out = np.empty((len(order), source.schema_arrow.field("embedding").type.list_size), np.float32)
    destination = np.full(source.metadata.num_rows, -1, np.int64)
    destination[order] = np.arange(len(order))
    batches = source.iter_batches(batch_size=batch_rows, columns=["embedding"], use_threads=False)

    def checked_columns():
        for batch in batches:
            found.add_embeddings(batch.column(0))
            yield batch.column(0)

    return _place(out, checked_columns(), destination, normalize)


def interned(column: pa.ChunkedArray, order: np.ndarray) -> np.ndarray:
    """A string column of a few distinct values (class, split, view) in `order`: one Python string per
    value, not one per row."""
    encoded = pc.dictionary_encode(column.combine_chunks())
    return encoded.dictionary.to_numpy(zero_copy_only=False)[encoded.indices.to_numpy()[order]]


@dataclass
class DomainEmbeddings:
    """One (domain, view): metadata columns and embeddings, rows ordered by split."""

    domain: str
    columns: dict[str, np.ndarray]  # IMAGE_COLUMNS -> n-long arrays
    embeddings: np.ndarray  # n x d float32
    splits: dict[str, slice]  # split name -> its rows

    def __len__(self) -> int:
        return len(self.embeddings)

    def rows(self, split: str | None = None) -> slice:
        if split is None:
            return slice(0, len(self))
        return self.splits.get(split, slice(0, 0))

    def only(self, split: str) -> "DomainEmbeddings":
        """A copy holding one split's rows only."""
        rows = self.rows(split)
        return DomainEmbeddings(self.domain, {name: values[rows].copy() for name, values in self.columns.items()},
                                self.embeddings[rows].copy(), {split: slice(0, rows.stop - rows.start)})


def read_domain(url: str, domain: str, normalize: bool, splits: tuple[pa.Array, pa.Array],
                only: str | None = None) -> DomainEmbeddings:
    """One (domain, view) file, rows ordered by their split, checked as it is decoded; `splits` is (sample ids,
    split) of the domain. With `only`, the rows of that split alone are kept (every row is still checked)."""
    with opened(url) as handle:
        source = pq.ParquetFile(handle, page_checksum_verification=True)
        table = source.read(columns=list(IMAGE_COLUMNS), use_threads=False)
        found = Contents().add_ids(table.column("sample_id"))
        ids, labels = splits
        position = pc.index_in(table.column("sample_id"), value_set=ids)
        if position.null_count:
            raise ValueError(f"{url} holds {position.null_count} image(s) of domain {domain!r} that its split table "
                             "lacks, e.g. " + repr(table.column("sample_id").filter(position.is_null())[0].as_py()))
        split = pc.take(labels, position)
        order = pc.sort_indices(pa.table({"split": split}), [("split", "ascending")]).to_numpy()  # stable: file order within a split
        split_of_row = interned(split, order)
        names, starts, counts = np.unique(split_of_row, return_index=True, return_counts=True)
        rows_of = {name: slice(start, start + count) for name, start, count in zip(names, starts, counts)}
        if only is not None:
            kept = rows_of.get(only, slice(0, 0))
            order, split_of_row, rows_of = order[kept], split_of_row[kept], {only: slice(0, kept.stop - kept.start)}
        columns = {name: interned(table.column(name), order) if name in FEW_VALUES else table.column(name).to_numpy()[order]
                   for name in IMAGE_COLUMNS}
        columns["split"] = split_of_row
        del table
        # the embeddings' pages unchecked: the CRC-32 of their decoded values is their check, at a quarter of the cost
        values = pq.ParquetFile(handle, metadata=source.metadata, page_checksum_verification=False)
        embeddings = streamed_embeddings(values, order, found, normalize)
        checked(url, values, found)
    release_freed_memory()  # the decoding buffers
    return DomainEmbeddings(domain, columns, embeddings, rows_of)


@dataclass
class EmbeddingCatalog:
    """One dataset's embeddings for one model: shard URLs, and their contents once read.

    `shards["<domain>/<view>"]` is one Parquet URL per (domain, view); `text_url` holds the
    class prompts and caption pairs. Only these fields describe the catalog (they are what
    Prefect records and what `cache_key` hashes); the arrays read so far live beside them.
    """

    dataset_root: str
    fingerprint: str
    domains: tuple[str, ...]
    classes: tuple[str, ...]
    shards: dict[str, str]  # "domain/view" -> url
    text_url: str | None  # None for a dataset-shift target: its prompts come from the source's table
    split_url: str  # sample_id, domain and its SPLIT_COLUMNS (tasks.data.splits)
    split_column: str = "split"  # which of the split table's assignments the catalog serves
    embedded: int = 0  # images and prompts embedded by this call (0 when all came from cache)
    normalize: bool = True  # L2-normalise image and text-pair embeddings as they are read

    def __post_init__(self):
        self._reset()

    def _reset(self):
        # not dataclass fields: never hashed, serialised or compared
        self._held: dict[str, DomainEmbeddings] = {}
        self._held_intervened_val: dict[str, DomainEmbeddings] = {}
        self._text: tuple[dict, np.ndarray] | None = None
        self._splits: dict[str, tuple[pa.Array, pa.Array]] | None = None
        self._lock = threading.RLock()  # reentrant: a domain's read takes its splits under the same lock
        self._domain_locks: dict[str, threading.Lock] = {}  # one read of a domain's originals, others meanwhile

    def __getstate__(self):
        """Pickles (to Dask/Ray workers, Prefect's hashing) carry the description, never the arrays."""
        state = dict(self.__dict__)
        for name in ("_held", "_held_intervened_val", "_text", "_splits", "_lock", "_domain_locks"):
            state.pop(name, None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._reset()

    @property
    def cache_key(self) -> str:
        """What decides every array the catalog serves: the shards and the split table (content-addressed URLs), the
        split it serves and the normalisation."""
        return stable_hash({"shards": self.shards, "text": self.text_url, "splits": self.split_url,
                            "split_column": self.split_column, "normalize": self.normalize})

    def with_split(self, column: str) -> "EmbeddingCatalog":
        """The catalog serving another of the split table's assignments (itself, with what it holds, if the same)."""
        return self if column == self.split_column else replace(self, split_column=column)

    def domain_splits(self, domain: str) -> tuple[pa.Array, pa.Array]:
        """(sample ids, split) of one domain, from the split table (read once)."""
        with self._lock:
            if self._splits is None:
                table = read_table(self.split_url, ("sample_id", "domain", self.split_column))
                self._splits = {}
                for name in pc.unique(table.column("domain")).to_pylist():
                    rows = table.filter(pc.equal(table.column("domain"), name))
                    self._splits[name] = (rows.column("sample_id").combine_chunks(),
                                          rows.column(self.split_column).combine_chunks())
            return self._splits[domain]

    def shard(self, domain: str, view: str) -> str:
        try:
            return self.shards[f"{domain}/{view}"]
        except KeyError:
            raise KeyError(f"no {view!r} embeddings of domain {domain!r}; the catalog has {sorted(self.shards)}") from None

    def images(self, domain: str, view: str = ORIGINAL, split: str | None = None) -> DomainEmbeddings:
        """One (domain, view); originals are read once and held. An intervened view is read when asked
        for (the moments, cached per domain, are its main reader); its small validation split is held
        for the projections' diagnostics, so no fold reads it again."""
        if view != ORIGINAL:
            with self._lock:
                if split == "val" and domain in self._held_intervened_val:
                    return self._held_intervened_val[domain]
            held = read_domain(self.shard(domain, view), domain, self.normalize, self.domain_splits(domain),
                               only="val" if split == "val" else None)
            with self._lock:
                self._held_intervened_val[domain] = held if split == "val" else held.only("val")
            return held
        with self._lock:
            domain_lock = self._domain_locks.setdefault(domain, threading.Lock())
        with domain_lock:
            if domain not in self._held:
                self._held[domain] = read_domain(self.shard(domain, view), domain, self.normalize,
                                                 self.domain_splits(domain))
            return self._held[domain]

    def blocks(self, domains, split=None, classes=None, view=ORIGINAL) -> tuple[pd.DataFrame, list[np.ndarray]]:
        """(rows, one n_domain x d float32 block per domain) of the given domains' view, optionally one
        split and some classes. Without a class filter each block is a view of the held array: no copy."""
        frames, arrays = [], []
        for domain in domains:
            held = self.images(domain, view, split)
            rows = held.rows(split)
            columns = {name: values[rows] for name, values in held.columns.items()}
            embeddings = held.embeddings[rows]
            if classes is not None:
                keep = np.isin(columns["class"], list(classes))
                columns = {name: values[keep] for name, values in columns.items()}
                embeddings = embeddings[keep]
            frames.append(pd.DataFrame({"sample_id": columns["sample_id"], "domain": domain, "class": columns["class"],
                                        "label": columns["label"], "split": columns["split"],
                                        "view": columns["view"]}))
            arrays.append(embeddings)
        return (frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)), arrays

    def load(self, domains, split=None, classes=None, view=ORIGINAL) -> tuple[pd.DataFrame, np.ndarray]:
        """`blocks` as one n x d float32 array: a view for one domain without a class filter, else one copy."""
        rows, arrays = self.blocks(domains, split, classes, view)
        return rows, (arrays[0] if len(arrays) == 1 else np.concatenate(arrays))

    def read_all(self) -> "EmbeddingCatalog":
        """Read every file now, each once, checking it as it decodes: originals and the text held for the run, every
        other view's validation split held (its training rows are the moments' alone, cached per domain by Prefect).
        Files are read side by side, as many as pyarrow has CPU threads (decoding, the checksum and numpy release
        the GIL). A damaged file raises DamagedEmbeddings here, before anything uses the catalog. Returns the
        catalog."""
        reads = [functools.partial(self.images, domain, view, None if view == ORIGINAL else "val")
                 for domain, view in (key.split("/", 1) for key in self.shards)]
        if self.text_url:
            reads.append(self._text_table)
        with ThreadPoolExecutor(max_workers=max(1, min(len(reads), pa.cpu_count()))) as pool:
            for finished in as_completed([pool.submit(read) for read in reads]):
                finished.result()  # the first damaged file raises here
        return self

    def _text_table(self) -> tuple[dict, np.ndarray]:
        with self._lock:
            if self._text is None:
                with parquet_file(self.text_url) as source:
                    table = source.read(columns=list(TEXT_READ), use_threads=False)
                    checked(self.text_url, source, table_contents(table))
                self._text = ({name: table.column(name).to_numpy(zero_copy_only=False) for name in TEXT_COLUMNS},
                              embedding_array(table.column("embedding")))
            return self._text

    def class_embeddings(self, classes=None, projection=None) -> np.ndarray:
        """Per class, in the order asked: the normalised mean of its normalised template embeddings; with a
        projection, of its projected template embeddings (open_clip's order on an exported model)."""
        columns, embeddings = self._text_table()
        prompts = columns["role"] == "class_prompt"
        names, group = np.unique(columns["class"][prompts], return_inverse=True)
        means = prompt_ensemble(embeddings[prompts], group, len(names), projection)
        wanted = list(classes if classes is not None else self.classes)
        missing = sorted(set(wanted) - set(names))
        if missing:
            raise KeyError(f"{self.text_url} has no class prompts for {missing}; re-embed the text with these classes")
        return means[np.searchsorted(names, wanted)]

    def text_pairs(self, classes=None) -> tuple[np.ndarray, np.ndarray]:
        """Caption pairs (pair_a, pair_b), row-aligned by pair_id, optionally of some classes only."""
        columns, embeddings = self._text_table()
        wanted = np.ones(len(embeddings), bool) if classes is None else np.isin(columns["class"], list(classes))
        sides = []
        for role in ("pair_a", "pair_b"):
            rows = np.flatnonzero(wanted & (columns["role"] == role))
            rows = rows[np.argsort(columns["pair_id"][rows], kind="stable")]
            side = embeddings[rows]
            sides.append(normalized_rows(side) if self.normalize else side)
        return sides[0], sides[1]

