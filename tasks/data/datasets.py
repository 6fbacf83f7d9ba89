"""Image-folder datasets on any fsspec URL, and RotatedDigits.

Two layouts: DomainBed's ROOT/<domain>/<class>/<image> (several domains), and ImageFolder's
ROOT/<class>/<image> (ImageNet and its variants): one domain, named IMAGEFOLDER_DOMAIN.
"""
from __future__ import annotations

import contextlib
import io
from contextvars import ContextVar
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from tasks.store.storage import exists, filesystem, join, write_bytes
from tasks.store.names import stable_hash
from tasks.data.fingerprints import content_digests, file_stamp, store_checksum
from tasks.data.splits import assign_splits, split_base_novel
from tasks.errors import InputError
from tasks.specs import DataSpec
from tasks.vocabulary import DOMAINBED, ROTATED_DIGITS, STABLE, dataset_label

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
# what torchvision's ImageFolder counts (torchvision.datasets.folder.IMG_EXTENSIONS), at any depth below a class folder
IMAGEFOLDER_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
ROTATED_DIGITS_ANGLES = (0, 15, 30, 45, 60, 75)
# the one domain of an ImageFolder dataset: fixed, because the root's own name ("train", "val", …) says little
IMAGEFOLDER_DOMAIN = "all"
DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


@dataclass(frozen=True)
class Dataset:
    root: str
    samples: pd.DataFrame  # sample_id, path, domain, class, file, label, split, open_split, size, stamp, digest
    domains: tuple[str, ...]
    classes: tuple[str, ...]
    fingerprint: str  # of every image's content: any changed byte changes it
    domain_fingerprints: dict[str, str] = field(default_factory=dict)  # as `fingerprint`, per domain
    split_rule: str = STABLE
    holdout: float = 0.2
    seed: int = 0

    def rows(self, domains=None, split=None, classes=None, column: str = "split") -> pd.DataFrame:
        frame = self.samples
        if domains is not None:
            frame = frame[frame["domain"].isin(list(domains))]
        if split is not None:
            frame = frame[frame[column] == split]
        if classes is not None:
            frame = frame[frame["class"].isin(list(classes))]
        return frame


def _list_files(fs, base: str) -> pd.DataFrame:
    """Every file under base that clip-icm or torchvision's ImageFolder could count as an image: its path
    relative to base, depth, the store's checksum and stamp (tasks.data.fingerprints)."""
    records = []
    for path, info in fs.find(base, detail=True).items():
        relative = path[len(base) :].lstrip("/")
        parts = relative.split("/")
        name = parts[-1].lower()
        ours = name.endswith(IMAGE_EXTENSIONS) and not parts[-1].startswith(".")
        counted_by_imagefolder = name.endswith(IMAGEFOLDER_EXTENSIONS)
        if len(parts) >= 2 and (ours or counted_by_imagefolder):
            records.append((relative, len(parts), parts[0], parts[-2], parts[-1], ours, counted_by_imagefolder,
                            int(info.get("size") or 0), store_checksum(info), file_stamp(info), path))
    return pd.DataFrame(records, columns=["sample_id", "depth", "top", "parent", "file", "ours", "imagefolder", "size",
                                          "checksum", "stamp", "fs_path"])


def _images(files: pd.DataFrame, root: str, split_rule: str) -> tuple[pd.DataFrame, bool]:
    """(the images: sample_id, domain, class, file, size, checksum, stamp, fs_path; whether the layout is an
    ImageFolder). Images at depth three are DomainBed's <domain>/<class>/<image>; at depth two, ImageFolder's
    <class>/<image> (domain IMAGEFOLDER_DOMAIN). Under the domainbed split, the files must be those
    torchvision's ImageFolder counts, or the split's positions would not be DomainBed's."""
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
    if split_rule == DOMAINBED:
        counted = files[files["imagefolder"] & (files["depth"] >= depth)]
        differ = sorted(set(counted["sample_id"]) ^ set(images["sample_id"]))
        if differ:
            raise InputError(
                f"dataset root {root!r} holds files that clip-icm and torchvision's ImageFolder count differently, "
                f"e.g. {differ[:3]}: the domainbed split numbers a domain's images as ImageFolder does, so both must "
                f"see the same images. Keep only {', '.join(sorted(set(IMAGE_EXTENSIONS) & set(IMAGEFOLDER_EXTENSIONS)))} "
                "files, directly in the class folders and not hidden, or use --split stable", "split")
    if imagefolder:
        images = images.assign(domain=IMAGEFOLDER_DOMAIN, **{"class": images["top"]})
    else:
        images = images.assign(domain=images["top"], **{"class": images["parent"]})
    return images.drop(columns=["depth", "top", "parent", "ours", "imagefolder"]), imagefolder


@dataclass
class Listing:
    """What a dataset root holds: its candidate image files and top-level folders, and the digests taken so far."""

    files: pd.DataFrame  # _list_files
    top_folders: list[str]
    digests: dict[str, str] = field(default_factory=dict)  # sample_id -> digest


_LISTINGS: ContextVar[dict[str, Listing] | None] = ContextVar("clip_icm_listings", default=None)


@contextlib.contextmanager
def one_listing_per_dataset():
    """Within the block (a run, a sweep, a bench: nested blocks share the outermost), each dataset root is listed
    and its files' digests taken once: the checks before a run, the run and its embedding share one listing. On an
    object store holding ImageNet's 1.28M files, a listing takes minutes."""
    if _LISTINGS.get() is not None:
        yield
        return
    token = _LISTINGS.set({})
    try:
        yield
    finally:
        _LISTINGS.reset(token)


def _listing(root: str) -> Listing:
    listings = _LISTINGS.get()
    if listings is not None and root in listings:
        return listings[root]
    fs, base = filesystem(root)
    if not fs.isdir(base):
        raise InputError(
            f"dataset root {root!r} does not exist or is not a folder; expected ROOT/<domain>/<class>/<image> "
            f"or ROOT/<class>/<image> (pass --dataset {ROTATED_DIGITS} for the built-in dataset)"
        )
    base = base.rstrip("/")
    listing = Listing(_list_files(fs, base), sorted(
        entry.rstrip("/").rsplit("/", 1)[-1] for entry in fs.ls(base, detail=False) if fs.isdir(entry)))
    if listings is not None:
        listings[root] = listing
    return listing


def _digests(listing: Listing, images: pd.DataFrame, root: str, store: str | None) -> pd.Series:
    """The images' content digests: those this listing took already, the others taken now (and kept with it)."""
    digests = images["sample_id"].map(listing.digests).astype(object)
    unknown = digests.isna()
    if unknown.any():
        digests[unknown] = content_digests(filesystem(root)[0], images[unknown], store, root)
        listing.digests.update(zip(images.loc[unknown, "sample_id"], digests[unknown]))
    return digests


def discover(root: str, *, holdout: float = 0.2, seed: int = 0, class_policy: str = "strict", split: str = STABLE,
             store: str | None = None) -> Dataset:
    """List a DomainBed or ImageFolder dataset; domains and classes sorted; non-image files ignored; each
    domain split under the split rule; every image's content digest taken (remembered under `store`).

    class_policy "strict" fails when domains disagree on their classes; "intersection"
    keeps the classes every domain has.
    """
    listing = _listing(root)
    frame, imagefolder = _images(listing.files, root, split)
    top_folders = listing.top_folders
    if not top_folders:
        raise InputError(
            f"dataset root {root!r} has no domain or class folders; expected ROOT/<domain>/<class>/<image> "
            "or ROOT/<class>/<image>"
        )
    present = set(frame["class"] if imagefolder else frame["domain"])
    empty = [folder for folder in top_folders if folder not in present]
    if empty:
        kind, layout = ("class", "<class>/<image>") if imagefolder else ("domain", "<domain>/<class>/<image>")
        raise InputError(
            f"{kind} folder(s) {empty} under {root!r} contain no images ({', '.join(IMAGE_EXTENSIONS)}); "
            f"add images as {layout} or remove the folder"
        )
    class_sets = {domain: set(group["class"]) for domain, group in frame.groupby("domain")}
    shared = set.intersection(*class_sets.values())
    if any(classes != shared for classes in class_sets.values()) and class_policy == "strict":
        differences = "; ".join(
            f"{domain} lacks {sorted(set.union(*class_sets.values()) - classes)}"
            for domain, classes in sorted(class_sets.items())
            if classes != set.union(*class_sets.values())
        )
        raise InputError(
            f"class folders differ between domains under {root!r}: {differences}. "
            "Fix the folders, or pass class_policy='intersection' (--class-policy intersection) "
            f"to keep the {len(shared)} shared classes"
        )
    if not shared:
        raise InputError(f"no class is shared by every domain under {root!r}")
    classes = tuple(sorted(shared))
    # split every listed image first, so a domain's positions are those of its whole ImageFolder listing
    frame = assign_splits(frame, split, holdout, seed, split_base_novel(classes)[0])
    frame = frame[frame["class"].isin(shared)].sort_values("sample_id").reset_index(drop=True)
    frame["label"] = frame["class"].map({name: index for index, name in enumerate(classes)}).astype("int32")
    frame["path"] = [join(root, sample_id) for sample_id in frame["sample_id"]]
    frame["digest"] = _digests(listing, frame, root, store)
    fingerprint = stable_hash(list(zip(frame["sample_id"], frame["digest"])))
    domain_fingerprints = {domain: stable_hash(list(zip(group["sample_id"], group["digest"])))
                           for domain, group in frame.groupby("domain")}
    return Dataset(
        root=root,
        samples=frame[["sample_id", "path", "domain", "class", "file", "label", "split", "open_split", "size", "stamp",
                       "digest"]],
        domains=tuple(sorted(frame["domain"].unique())),
        classes=classes,
        fingerprint=fingerprint,
        domain_fingerprints=domain_fingerprints,
        split_rule=split,
        holdout=holdout,
        seed=seed,
    )


def materialize_rotated_digits(cache_url: str, image_size: int = 32) -> str:
    """RotatedDigits: scikit-learn's bundled 8x8 digits, rendered and rotated by 0..75 degrees.

    Each of the six domains takes a disjoint sixth of the 1,797 digits, as DomainBed's
    RotatedMNIST does with MNIST. Written once; a marker written last makes reuse safe.
    """
    from PIL import Image
    from sklearn.datasets import load_digits

    root = join(cache_url, f"rotated-digits-{image_size}px")
    marker = join(root, ".complete")
    if exists(marker):
        return root
    digits = load_digits()
    order = np.random.default_rng(0).permutation(len(digits.images))
    for angle, indices in zip(ROTATED_DIGITS_ANGLES, np.array_split(order, len(ROTATED_DIGITS_ANGLES))):
        for index in indices:
            pixels = (digits.images[index] * (255 / 16)).astype(np.uint8)
            image = Image.fromarray(pixels).resize((image_size, image_size), Image.BILINEAR)
            image = image.rotate(angle, resample=Image.BILINEAR).convert("RGB")
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            name = DIGIT_NAMES[digits.target[index]]
            write_bytes(join(root, f"rotated_{angle:02d}", name, f"{index:04d}.png"), buffer.getvalue())
    write_bytes(marker, b"")
    return root


def resolve_dataset(dataset: str, cache_url: str) -> str:
    """The root URL of a dataset argument: a DomainBed folder URL, or 'rotated-digits'."""
    return materialize_rotated_digits(join(cache_url, "datasets")) if dataset == ROTATED_DIGITS else dataset


def list_dataset(data: DataSpec) -> Dataset:
    """The dataset (a folder URL or the built-in name) listed, fingerprinted and split; nothing written but the
    built-in dataset (what the checks before a run use)."""
    return discover(resolve_dataset(data.dataset, data.store), holdout=data.holdout, seed=data.split_seed,
                    class_policy=data.class_policy, split=data.split, store=data.store)


def split_table_url(dataset: Dataset, store: str) -> str:
    """Where a listing's split lives: keyed by its content, the split rule, the holdout and the seed."""
    key = stable_hash({"fingerprint": dataset.fingerprint, "rule": dataset.split_rule, "holdout": dataset.holdout,
                       "seed": dataset.seed})
    return join(store, "splits", f"{dataset_label(dataset.root)}-{key}.parquet")
