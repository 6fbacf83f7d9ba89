"""Where a dataset's samples come from: one source per layout, chosen once from what the URL holds (as open_clip
resolves a model name once); everything downstream reads the samples it lists and never asks the layout again.

    folder      ROOT/<domain>/<class>/<image> or ROOT/<class>/<image> (tasks.data.sources.folder)
    webdataset  CLIP_benchmark's shards: ROOT/[<domain>/]<split>/N.tar (tasks.data.sources.webdataset)
    parquet     the Hugging Face datasets layout: ROOT/**/*.parquet (tasks.data.sources.parquet)

A dataset is untrusted input (tasks.data.sources.reading): only regular files are listed or read, and the bytes
read per image are bounded.
"""
from __future__ import annotations

import itertools
from typing import Iterator

import pandas as pd

from tasks.data.sources import folder, parquet, webdataset
from tasks.data.sources.base import Format, Options, SourceListing, Tree
from tasks.data.sources.reading import refuse_irregular, regular_entries
from tasks.errors import InputError
from tasks.store.storage import filesystem
from tasks.vocabulary import ROTATED_DIGITS

# the layouts, as DomainBed's DATASETS: the first whose files a root holds is its layout (images: a folder tree)
FORMATS: dict[str, Format] = {source.FORMAT.name: source.FORMAT for source in (webdataset, parquet, folder)}
FOLDER = folder.FORMAT.name


def list_tree(root: str, list_files) -> Tree:
    """Every regular file under the root, one listing; anything else (a pipe, a device, a socket) refused by name.
    `list_files(fs, base)` is the store's listing ({path: info}), fsspec's find."""
    fs, base = filesystem(root)
    if not fs.isdir(base):
        raise InputError(
            f"dataset root {root!r} does not exist or is not a folder; expected a folder tree "
            "ROOT/<domain>/<class>/<image>, CLIP_benchmark's shards ROOT/<split>/N.tar, or Hugging Face Parquet files "
            f"(pass --dataset {ROTATED_DIGITS} for the built-in dataset)")
    base = base.rstrip("/")
    regular, irregular = regular_entries(fs, list_files(fs, base))
    refuse_irregular(root, base, irregular)
    folders = sorted(entry.rstrip("/").rsplit("/", 1)[-1] for entry in fs.ls(base, detail=False) if fs.isdir(entry))
    return Tree(root, fs, base, {path[len(base):].lstrip("/"): info for path, info in regular.items()}, tuple(folders))


def choose(tree: Tree) -> Format:
    """The layout the root holds; a root holding two (images beside shards, shards beside Parquet) is refused."""
    found = {name: tree.with_suffix(*source.suffixes) for name, source in FORMATS.items()}
    found = {name: files for name, files in found.items() if files}
    if len(found) > 1:
        examples = "; ".join(f"{name}: {files[0]!r}" for name, files in found.items())
        raise InputError(f"dataset root {tree.root!r} mixes layouts ({examples}); keep one layout per root: a folder "
                         "tree of images, CLIP_benchmark's shards, or Parquet files")
    return FORMATS[next(iter(found), FOLDER)]


def list_source(tree: Tree, options: Options) -> SourceListing:
    return choose(tree).list_samples(tree, options)


SCHEMES: dict[str, Format] = {source.scheme: source for source in FORMATS.values()}


def read_samples(rows: pd.DataFrame, limit: int) -> Iterator[tuple[int, bytes | Exception]]:
    """(position in `rows`, the sample's bytes or why they cannot be read), in the rows' order (columns path,
    locator); consecutive rows of one file are read from one open file, by the source their locator names."""
    paths, locators = rows["path"].tolist(), rows["locator"].tolist()
    for path, group in itertools.groupby(range(len(rows)), key=lambda position: paths[position]):
        group = list(group)
        source = SCHEMES[locators[group[0]].split(":", 1)[0]]
        try:
            fs, fs_path = filesystem(path)
        except Exception as error:  # an unreadable URL is a skipped sample, as any unreadable file
            yield from ((position, error) for position in group)
            continue
        name = path.rsplit("/", 1)[-1]
        yield from zip(group, source.read_file(fs, fs_path, name, [locators[position] for position in group], limit))
