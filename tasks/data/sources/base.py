"""What every dataset source shares: the one listing of a root, and the table of samples a source makes of it.

A source turns the listing into samples, one row each (SAMPLE_COLUMNS): its id (the path the image would have in a
folder tree, ROOT/<domain>/<class>/<name>, so one image keeps its id in every layout), domain, class, the name
DomainBed's ImageFolder would sort it by (`file`), and where its bytes are: `path` (the URL of the file that holds
them), `locator` (where in that file: "" for the whole file, "tar:OFFSET:SIZE" for a shard's member,
"parquet:ROW_GROUP:ROW" for a Parquet row) and `position` (its order in that file). The digest of a sample is its
file's (`source_file`, with the store's `checksum` or a digest remembered by `stamp`) and its locator.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterator

import pandas as pd

from tasks.vocabulary import DEFAULT_DATASET_SPLIT

SAMPLE_COLUMNS = ["sample_id", "domain", "class", "file", "path", "locator", "position", "size", "source_file",
                  "fs_path", "checksum", "stamp"]
WHOLE_FILE = ""  # the locator of a sample that is a whole file
# the one domain of a dataset without domains: fixed, because the root's own name ("train", "val", …) says little
IMAGEFOLDER_DOMAIN = "all"


@dataclass(frozen=True)
class Tree:
    """One listing of a dataset root: every regular file under it, by path relative to the root."""

    root: str  # the URL as given
    fs: object
    base: str  # the root's path on `fs`, no trailing slash
    files: dict  # relative path -> the listing's info (size, checksum, stamp, ...)
    folders: tuple[str, ...]  # the root's own sub-folders, sorted

    def url(self, relative: str) -> str:
        return f"{self.root.rstrip('/')}/{relative}"

    def fs_path(self, relative: str) -> str:
        return f"{self.base}/{relative}"

    def with_suffix(self, *suffixes: str) -> list[str]:
        return sorted(path for path in self.files if path.lower().endswith(suffixes))


@dataclass(frozen=True)
class Options:
    """What decides a listing besides the files: the split rule (folders check what ImageFolder counts) and the
    split of a shard set (CLIP_benchmark's `test`, `train`, ...)."""

    split_rule: str
    dataset_split: str = DEFAULT_DATASET_SPLIT
    store: str | None = None  # where what a listing learnt is remembered (digests, shard indexes)


@dataclass
class SourceListing:
    """A source's samples, and what the data says of its classes and prompts."""

    format: str
    samples: pd.DataFrame  # SAMPLE_COLUMNS
    class_names: dict[str, str] | None = None  # class -> display name, where the data names its classes
    templates: tuple[str, ...] | None = None  # the data's own zero-shot templates ("{}" for the class name)
    digests: dict[str, str] = field(default_factory=dict)  # source_file -> digest, taken so far


@dataclass(frozen=True)
class Format:
    """One layout: how to tell it (files it holds), list it, and read samples' bytes from one of its files."""

    name: str
    suffixes: tuple[str, ...]  # the files that mark the layout (images, .tar, .parquet)
    scheme: str  # how its locators start ("" for whole files, "tar", "parquet")
    list_samples: Callable[[Tree, Options], SourceListing]
    # (fs, path, name, locators in file order, byte limit) -> bytes or an exception per locator, in order
    read_file: Callable[[object, str, str, list[str], int], Iterator[bytes | Exception]]


def image_id(domain: str | None, class_name: str, name: str) -> str:
    """The id of an image: the path it has, or would have, in a folder tree (<domain>/<class>/<name>, or
    <class>/<name> in a dataset without domains), so that one image keeps its id, and its split, in every layout."""
    return f"{class_name}/{name}" if domain is None else f"{domain}/{class_name}/{name}"


def class_ids(names: list[str]) -> list[str]:
    """The id of each label from its class name: the name, or where two labels share a name (CLIP's curated
    ImageNet names hold 'missile' and 'sunglasses' twice) the name and its label, "missile (657)"; prompts still
    say the name."""
    return [f"{name} ({label})" if names.count(name) > 1 else name for label, name in enumerate(names)]
