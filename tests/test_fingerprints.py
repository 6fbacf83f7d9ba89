"""Fingerprints see content: any changed byte, same name and size, changes them; an unchanged re-run reads no image."""
import os

import numpy as np
import pandas as pd
import pytest
from conftest import colourful_image, make_image_folder, swap_bytes_keeping_stamps_a_user_can_set

import tasks.data.fingerprints
from tasks.data.datasets import discover
from tasks.data.discover import discover_dataset
from tasks.specs import DataSpec
from tasks.data.fingerprints import content_digests, store_checksum


@pytest.fixture
def hashed(monkeypatch):
    """The files whose bytes the fingerprinting reads."""
    read, real = [], tasks.data.fingerprints._hash_bytes
    monkeypatch.setattr(tasks.data.fingerprints, "_hash_bytes", lambda fs, path: read.append(path) or real(fs, path))
    return read


def test_a_same_size_byte_swap_changes_the_fingerprint_of_its_domain_alone(tmp_path, hashed):
    root = make_image_folder(str(tmp_path / "data"), domains=("art", "photo"), classes=("cat", "dog"), per_class=3)
    for name in ("000", "001"):  # two BMPs of one size, different pixels
        os.remove(f"{root}/photo/cat/{name}.jpg")
    rng = np.random.default_rng(5)
    for name in ("000", "001"):
        colourful_image(rng, 0, 1).save(f"{root}/photo/cat/{name}.bmp")
    data = DataSpec(root, str(tmp_path / "store"))
    assert discover(root, store=data.store) and len(hashed) == 12  # a listing reads every image once...
    first = discover_dataset.fn(data)  # ...until a run remembers the digests
    assert len(hashed) == 24
    again = discover_dataset.fn(data)
    assert len(hashed) == 24 and again.fingerprint == first.fingerprint  # unchanged: nothing read
    swap_bytes_keeping_stamps_a_user_can_set(f"{root}/photo/cat/000.bmp", f"{root}/photo/cat/001.bmp")
    swapped = discover_dataset.fn(data)
    assert sorted(hashed[24:]) == sorted([f"{root}/photo/cat/000.bmp", f"{root}/photo/cat/001.bmp"])
    assert swapped.fingerprint != first.fingerprint
    assert swapped.domain_fingerprints["art"] == first.domain_fingerprints["art"]
    assert swapped.domain_fingerprints["photo"] != first.domain_fingerprints["photo"]
    digests = swapped.samples.set_index("sample_id")["digest"]
    before = first.samples.set_index("sample_id")["digest"]
    assert digests["photo/cat/000.bmp"] == before["photo/cat/001.bmp"] != digests["photo/cat/001.bmp"]


def test_a_stores_own_checksum_is_the_digest_and_nothing_is_read(tmp_path, hashed):
    assert store_checksum({"ETag": '"9b2cf535f27731c974343645a3985328"', "size": 3}) == "ETag:9b2cf535f27731c974343645a3985328"
    assert store_checksum({"md5Hash": "XrY7u+Ae7tCTyyK7j1rNww==", "crc32c": "x"}) == "md5Hash:XrY7u+Ae7tCTyyK7j1rNww=="
    assert store_checksum({"size": 3, "mtime": 1.0}) is None
    files = pd.DataFrame({"sample_id": ["a/b/c.jpg"], "fs_path": ["s3://bucket/a/b/c.jpg"],
                          "checksum": ["ETag:abc"], "stamp": ["3:::"]})
    assert content_digests(None, files, str(tmp_path / "store"), "s3://bucket").tolist() == ["ETag:abc"]
    assert hashed == [] and not (tmp_path / "store").exists()
