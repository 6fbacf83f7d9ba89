"""Folder trees: DomainBed's ROOT/<domain>/<class>/<image> (several domains), and ImageFolder's ROOT/<class>/<image>
(ImageNet and its variants): one domain, named IMAGEFOLDER_DOMAIN. A sample is a whole file: its id is its path."""
from __future__ import annotations

from typing import Iterator

import pandas as pd

from tasks.data.fingerprints import file_stamp, store_checksum
from tasks.data.sources.base import IMAGEFOLDER_DOMAIN, SAMPLE_COLUMNS, WHOLE_FILE, Format, Options, SourceListing, Tree
from tasks.data.sources.reading import read_whole
from tasks.errors import InputError
from tasks.vocabulary import DOMAINBED

NAME = "folder"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
# what torchvision's ImageFolder counts (torchvision.datasets.folder.IMG_EXTENSIONS), at any depth below a class folder
IMAGEFOLDER_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def _candidates(tree: Tree) -> pd.DataFrame:
    """Every file that clip-icm or torchvision's ImageFolder could count as an image: its path relative to the
    root, depth, the store's checksum and stamp (tasks.data.fingerprints)."""
    records = []
    for relative, info in tree.files.items():
        parts = relative.split("/")
        name = parts[-1].lower()
        ours = name.endswith(IMAGE_EXTENSIONS) and not parts[-1].startswith(".")
        counted_by_imagefolder = name.endswith(IMAGEFOLDER_EXTENSIONS)
        if len(parts) >= 2 and (ours or counted_by_imagefolder):
            records.append((relative, len(parts), parts[0], parts[-2], parts[-1], ours, counted_by_imagefolder,
                            int(info.get("size") or 0), store_checksum(info), file_stamp(info)))
    return pd.DataFrame(records, columns=["sample_id", "depth", "top", "parent", "file", "ours", "imagefolder", "size",
                                          "checksum", "stamp"])


def list_samples(tree: Tree, options: Options) -> SourceListing:
    """The images at depth three (<domain>/<class>/<image>) or two (<class>/<image>, domain IMAGEFOLDER_DOMAIN).
    Under the domainbed split, the files must be those torchvision's ImageFolder counts, or the split's positions
    would not be DomainBed's."""
    root, files = tree.root, _candidates(tree)
    ours = files[files["ours"]]
    shallow, deep = ours[ours["depth"] == 2], ours[ours["depth"] == 3]
    if len(shallow) and len(deep):
        raise InputError(
            f"dataset root {root!r} mixes two layouts: images at ROOT/<class>/<image> (e.g. {shallow['sample_id'].iat[0]!r}) "
            f"and at ROOT/<domain>/<class>/<image> (e.g. {deep['sample_id'].iat[0]!r}); keep one layout "
            "(move the stray images into class folders, or one level down into domain folders)"
        )
    imagefolder = bool(len(shallow))
    depth = 2 if imagefolder else 3
    images = ours[ours["depth"] == depth]
    if options.split_rule == DOMAINBED:
        counted = files[files["imagefolder"] & (files["depth"] >= depth)]
        differ = sorted(set(counted["sample_id"]) ^ set(images["sample_id"]))
        if differ:
            raise InputError(
                f"dataset root {root!r} holds files that clip-icm and torchvision's ImageFolder count differently, "
                f"e.g. {differ[:3]}: the domainbed split numbers a domain's images as ImageFolder does, so both must "
                f"see the same images. Keep only {', '.join(sorted(set(IMAGE_EXTENSIONS) & set(IMAGEFOLDER_EXTENSIONS)))} "
                "files, directly in the class folders and not hidden, or use --split stable", "split")
    if not tree.folders:
        raise InputError(
            f"dataset root {root!r} has no domain or class folders; expected ROOT/<domain>/<class>/<image> "
            "or ROOT/<class>/<image>"
        )
    present = set(images["top"])
    empty = [folder for folder in tree.folders if folder not in present]
    if empty:
        kind, layout = ("class", "<class>/<image>") if imagefolder else ("domain", "<domain>/<class>/<image>")
        raise InputError(
            f"{kind} folder(s) {empty} under {root!r} contain no images ({', '.join(IMAGE_EXTENSIONS)}); "
            f"add images as {layout} or remove the folder"
        )
    if imagefolder:
        images = images.assign(domain=IMAGEFOLDER_DOMAIN, **{"class": images["top"]})
    else:
        images = images.assign(domain=images["top"], **{"class": images["parent"]})
    images = images.assign(path=[tree.url(sample_id) for sample_id in images["sample_id"]], locator=WHOLE_FILE,
                           position=0, source_file=images["sample_id"],
                           fs_path=[tree.fs_path(sample_id) for sample_id in images["sample_id"]])
    return SourceListing(NAME, images[SAMPLE_COLUMNS].reset_index(drop=True))


def read_file(fs, path: str, name: str, locators: list[str], limit: int) -> Iterator[bytes | Exception]:
    """One image file's bytes (a regular file, at most `limit` bytes)."""
    try:
        data = read_whole(fs, path, name, limit)
    except Exception as error:  # unreadable: recorded as skipped
        data = error
    for _ in locators:
        yield data


FORMAT = Format(NAME, IMAGE_EXTENSIONS, WHOLE_FILE, list_samples, read_file)
