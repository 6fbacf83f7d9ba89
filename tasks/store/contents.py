"""What an embedding file says it holds, and the checks that it holds it, split by what they cost.

Every embedding file (a part, a shard, the text table) carries in its footer's key-value metadata, beside the
model and the rest: `key` (the content key its name ends with), `rows`, `ids` (a digest of its sample ids, or
texts, in file order) and `checksum` (a digest of its embeddings' float32 values). Its pages carry Parquet's
own CRCs. The checks are split so that a cached run reads each file once:

- the footer alone (`footer_problem`): the file ends in a readable footer, names the key it should and has
  the rows it says. The embedding stage checks this before it trusts a cached file; it catches a file cut
  short and another file copied over it, and reads a few kilobytes.
- the contents (`Contents`, `contents_problem`): the ids and the checksum, computed by the one read that
  decodes the file (the catalog's, and a merge's of its parts) as it decodes, with the pages' CRCs (the
  catalog leaves the embeddings' pages to the checksum, which covers every byte that decodes to them, at a
  quarter of the cost); bit rot inside the file is found there, before the arrays are handed to anyone, and
  raised as `DamagedEmbeddings`.
"""
from __future__ import annotations

import hashlib
import json
import zlib

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tasks.errors import InputError

METADATA_KEY = b"clip_icm"


class DamagedEmbeddings(InputError):
    """A cached embedding file that is not what it says: `url` and what is wrong with it (`problem`)."""

    def __init__(self, url: str, problem: str):
        super().__init__(f"cached embeddings {url} are damaged: {problem}; run `clip-icm run` with the same dataset, "
                         "model and store to embed them again", "store")
        self.url, self.problem = url, problem


class Contents:
    """Running digests of what an embedding file holds, fed in file order: the ids and the embeddings may come in
    batches of their own (a reader decodes them column by column)."""

    def __init__(self):
        self.rows, self._ids, self._checksum = 0, hashlib.blake2b(digest_size=16), 0

    def add_ids(self, identities: pa.Array) -> "Contents":
        """Some rows' sample ids (or texts); one string, "\\0"-terminated each, hashed at once."""
        self.rows += len(identities)
        if len(identities):
            self._ids.update(("\0".join(identities.to_pylist()) + "\0").encode())
        return self

    def add_embeddings(self, embeddings: pa.Array) -> "Contents":
        """Some rows' fixed_size_list<float32> embeddings: CRC-32 of their float32 bytes (a damage check, cheap
        beside decoding them; the ids' digest and the key tell one file from another)."""
        values = embeddings.flatten() if isinstance(embeddings, pa.FixedSizeListArray) else embeddings.values
        data = np.ascontiguousarray(values.to_numpy(zero_copy_only=False), dtype=np.float32)
        self._checksum = zlib.crc32(memoryview(data).cast("B"), self._checksum)
        return self

    def add(self, identities: pa.Array, embeddings: pa.Array) -> "Contents":
        return self.add_ids(identities).add_embeddings(embeddings)

    def fields(self) -> dict:
        return {"rows": self.rows, "ids": self._ids.hexdigest(), "checksum": f"crc32:{self._checksum:08x}"}


def identity_column(schema: pa.Schema) -> str:
    """Image files are identified by their sample ids, the text table by its texts."""
    return "sample_id" if "sample_id" in schema.names else "text"


def table_contents(table: pa.Table) -> Contents:
    """The digests of a whole decoded table: its ids (or texts) and its embeddings."""
    return Contents().add(table.column(identity_column(table.schema)).combine_chunks(),
                          table.column("embedding").combine_chunks())


def contents_of(table: pa.Table) -> dict:
    return table_contents(table).fields()


def said(source: pq.ParquetFile) -> dict:
    """The clip-icm metadata of an open embedding file, from its footer ({} when it has none)."""
    return json.loads((source.metadata.metadata or {}).get(METADATA_KEY, b"{}"))


def footer_problem(source: pq.ParquetFile, key: str) -> str | None:
    """What the footer alone shows is wrong (another file's key, rows other than it says), or None."""
    metadata = said(source)
    if metadata.get("key") != key:
        return f"it holds the embeddings of key {metadata.get('key')!r}, not {key!r} (another file copied over it?)"
    if metadata.get("rows") != source.metadata.num_rows:
        return f"it has {source.metadata.num_rows} rows, not the {metadata.get('rows')} it says (damaged)"
    return None


def contents_problem(metadata: dict, found: Contents) -> str | None:
    """What is wrong with the rows, ids and embeddings decoded from a file, given what it says (`metadata`), or None."""
    wrong = [name for name, value in found.fields().items() if metadata.get(name) != value]
    return f"its {', '.join(wrong)} are not what the file says (damaged)" if wrong else None
