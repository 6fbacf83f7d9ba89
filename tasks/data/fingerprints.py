"""What each image file holds, as a digest: the dataset's fingerprints see any changed byte.

A digest is the store's own checksum of the object where it keeps one (S3's ETag, GCS's MD5 or
CRC32C, the Hugging Face hub's blob id): free with the listing. Elsewhere (local disks, NFS, memory://) it is a hash of the file's
bytes, remembered on the store per file with the stamp it was computed at (size, modification
time, change time, inode): a file whose stamp is unchanged was not rewritten (the change time
cannot be set back, unlike the modification time), so an unchanged re-run reads no image. A file
rewritten with the same name and size gets a new stamp, is read again, and changes the digest.

    STORE/datasets/digests/<hash of the dataset root>.parquet   sample_id, stamp, digest
"""
from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor

import pandas as pd
import pyarrow as pa
from tqdm.auto import tqdm

from tasks.store.names import stable_hash
from tasks.store.storage import exists, join, read_parquet, write_parquet

# object stores' checksums of an object's bytes, as their listings name them (S3, GCS, GCS composite objects, and
# the Hugging Face hub's git blob id: of a large file's LFS pointer, which names the content's sha256)
STORE_CHECKSUMS = ("ETag", "md5Hash", "crc32c", "blob_id")
READERS = 16  # files hashed at once: reading is I/O-bound
HASHED = "blake2b:"  # the prefix of a digest taken from a file's bytes
HASH_BLOCK = 4 * 2**20


def store_checksum(info: dict) -> str | None:
    """The store's checksum of a file's bytes, if its listing carries one."""
    for key in STORE_CHECKSUMS:
        if info.get(key):
            return f"{key}:{str(info[key]).strip(chr(34))}"
    return None


def file_stamp(info: dict) -> str:
    """What changes whenever a file is rewritten: size, modification and change time, inode (what the store lists)."""
    return ":".join(str(info.get(key, "")) for key in ("size", "mtime", "created", "ino"))


def digests_url(store: str, root: str) -> str:
    return join(store, "datasets", "digests", f"{stable_hash(root)}.parquet")


def content_digests(fs, files: pd.DataFrame, store: str | None, root: str) -> pd.Series:
    """The digest of every file (columns sample_id, fs_path, checksum, stamp), in the rows' order: the store's
    checksum, else the digest remembered on `store` for the file's stamp (`remember_digests`), else a hash of its bytes."""
    digests = files["checksum"].copy()
    missing = digests.isna()
    if not missing.any():
        return digests
    remembered_url = digests_url(store, root) if store else None
    if remembered_url and exists(remembered_url):
        remembered = read_parquet(remembered_url).to_pandas().set_index(["sample_id", "stamp"])["digest"]
        keys = pd.MultiIndex.from_frame(files.loc[missing, ["sample_id", "stamp"]])
        digests[missing] = remembered.reindex(keys).to_numpy()
        missing = digests.isna()
    if missing.any():
        paths = files.loc[missing, "fs_path"].tolist()
        with ThreadPoolExecutor(READERS) as pool:
            hashed = list(tqdm(pool.map(lambda path: _hash_bytes(fs, path), paths), total=len(paths),
                               desc=f"fingerprint {root}", unit="file", disable=len(paths) < 1000))
        digests[missing] = hashed
    return digests


def remember_digests(samples: pd.DataFrame, store: str, root: str) -> None:
    """Remember the digests taken from bytes (columns sample_id, stamp, digest), so that the next listing reads only
    files whose stamp changed; nothing is written when they are all remembered already."""
    taken = samples.loc[samples["digest"].str.startswith(HASHED), ["sample_id", "stamp", "digest"]].reset_index(drop=True)
    url = digests_url(store, root)
    if exists(url) and read_parquet(url).to_pandas().equals(taken):
        return
    write_parquet(pa.Table.from_pandas(taken, preserve_index=False), url)


def _hash_bytes(fs, path: str) -> str:
    """A regular file's bytes hashed a block at a time: a shard of any size costs one block of memory."""
    from tasks.data.sources.reading import open_regular  # the sources import this module's stamps

    digest = hashlib.blake2b(digest_size=16)
    with open_regular(fs, path) as handle:
        while block := handle.read(HASH_BLOCK):
            digest.update(block)
    return HASHED + digest.hexdigest()
