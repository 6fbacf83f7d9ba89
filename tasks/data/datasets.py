"""Datasets on any fsspec URL, in any layout tasks.data.sources reads (folder trees, WebDataset shards, Hugging
Face Parquet), and RotatedDigits: listed once, split, and fingerprinted by content."""
from __future__ import annotations

import contextlib
import io
from contextvars import ContextVar
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from tasks.store.storage import exists, filesystem, join, write_bytes
from tasks.store.names import stable_hash
from tasks.data.fingerprints import content_digests
from tasks.data.sources import FOLDER, list_source, list_tree
from tasks.data.sources.base import WHOLE_FILE, Options, SourceListing
from tasks.data.sources.reading import max_image_bytes
from tasks.data.splits import assign_splits, split_base_novel
from tasks.errors import InputError
from tasks.specs import DataSpec
from tasks.vocabulary import DEFAULT_DATASET_SPLIT, ROTATED_DIGITS, STABLE, dataset_label

ROTATED_DIGITS_ANGLES = (0, 15, 30, 45, 60, 75)
DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


@dataclass(frozen=True)
class Dataset:
    root: str
    # sample_id, path, locator, position, source_file (tasks.data.sources.base), domain, class, file, label, split,
    # open_split, size, stamp, digest
    samples: pd.DataFrame
    domains: tuple[str, ...]
    classes: tuple[str, ...]
    fingerprint: str  # of every image's content: any changed byte changes it
    domain_fingerprints: dict[str, str] = field(default_factory=dict)  # as `fingerprint`, per domain
    split_rule: str = STABLE
    holdout: float = 0.2
    seed: int = 0
    format: str = FOLDER  # the layout it was listed from (tasks.data.sources)
    class_names: dict[str, str] | None = None  # class -> display name, where the data names its classes
    templates: tuple[str, ...] | None = None  # the data's own zero-shot templates

    def rows(self, domains=None, split=None, classes=None, column: str = "split") -> pd.DataFrame:
        frame = self.samples
        if domains is not None:
            frame = frame[frame["domain"].isin(list(domains))]
        if split is not None:
            frame = frame[frame[column] == split]
        if classes is not None:
            frame = frame[frame["class"].isin(list(classes))]
        return frame


def _list_files(fs, base: str) -> dict:
    """Every entry under base with what the store lists of it (type, size, checksum, stamp): one listing."""
    return fs.find(base, detail=True)


_LISTINGS: ContextVar[dict[tuple, SourceListing] | None] = ContextVar("clip_icm_listings", default=None)


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


def _listing(root: str, options: Options) -> SourceListing:
    listings = _LISTINGS.get()
    if listings is not None and (root, options) in listings:
        return listings[(root, options)]
    listing = list_source(list_tree(root, _list_files), options)
    if listings is not None:
        listings[(root, options)] = listing
    return listing


def _digests(listing: SourceListing, samples: pd.DataFrame, root: str, store: str | None) -> pd.Series:
    """The samples' content digests: their file's digest (those this listing took already, the others taken now and
    kept with it), and where in the file they sit. An image over the byte limit is never read: it is skipped when
    embedded, and its digest is its stamp."""
    files = samples.drop_duplicates("source_file")[["source_file", "fs_path", "checksum", "stamp", "size", "locator"]]
    digests = files["source_file"].map(listing.digests).astype(object)
    unread = (files["locator"] == WHOLE_FILE) & (files["size"] > max_image_bytes()) & digests.isna()
    digests[unread] = "unread:" + files.loc[unread, "stamp"]
    unknown = digests.isna()
    if unknown.any():
        digests[unknown] = content_digests(filesystem(root)[0], files[unknown].rename(columns={"source_file": "sample_id"}),
                                           store, root)
        listing.digests.update(zip(files.loc[unknown, "source_file"], digests[unknown]))
    by_file = dict(zip(files["source_file"], digests))
    return pd.Series([by_file[source] + (f"#{locator}" if locator else "")
                      for source, locator in zip(samples["source_file"], samples["locator"])], index=samples.index,
                     dtype=object)


def file_digests(samples: pd.DataFrame) -> pd.DataFrame:
    """One row per file of the samples (sample_id: the file's path in the root, stamp, digest), as
    tasks.data.fingerprints remembers digests."""
    files = samples.drop_duplicates("source_file")
    return pd.DataFrame({"sample_id": files["source_file"], "stamp": files["stamp"],
                         "digest": files["digest"].str.split("#").str[0]}).reset_index(drop=True)


def discover(root: str, *, holdout: float = 0.2, seed: int = 0, class_policy: str = "strict", split: str = STABLE,
             store: str | None = None, dataset_split: str = DEFAULT_DATASET_SPLIT) -> Dataset:
    """List a dataset in any layout (tasks.data.sources); domains and classes sorted; each domain split under the
    split rule; every sample's content digest taken (remembered under `store`).

    class_policy "strict" fails when domains disagree on their classes; "intersection"
    keeps the classes every domain has.
    """
    listing = _listing(root, Options(split, dataset_split, store))
    frame = listing.samples
    class_sets = {domain: set(group["class"]) for domain, group in frame.groupby("domain")}
    shared = set.intersection(*class_sets.values())
    if any(classes != shared for classes in class_sets.values()) and class_policy == "strict":
        differences = "; ".join(
            f"{domain} lacks {sorted(set.union(*class_sets.values()) - classes)}"
            for domain, classes in sorted(class_sets.items())
            if classes != set.union(*class_sets.values())
        )
        raise InputError(
            f"classes differ between domains under {root!r}: {differences}. "
            "Fix the data, or pass class_policy='intersection' (--class-policy intersection) "
            f"to keep the {len(shared)} shared classes"
        )
    if not shared:
        raise InputError(f"no class is shared by every domain under {root!r}")
    classes = tuple(sorted(shared))
    # split every listed image first, so a domain's positions are those of its whole ImageFolder listing
    frame = assign_splits(frame, split, holdout, seed, split_base_novel(classes)[0])
    frame = frame[frame["class"].isin(shared)].sort_values("sample_id").reset_index(drop=True)
    frame["label"] = frame["class"].map({name: index for index, name in enumerate(classes)}).astype("int32")
    frame["digest"] = _digests(listing, frame, root, store)
    fingerprint = stable_hash(list(zip(frame["sample_id"], frame["digest"])))
    domain_fingerprints = {domain: stable_hash(list(zip(group["sample_id"], group["digest"])))
                           for domain, group in frame.groupby("domain")}
    return Dataset(
        root=root,
        samples=frame[["sample_id", "path", "locator", "position", "source_file", "domain", "class", "file", "label",
                       "split", "open_split", "size", "stamp", "digest"]],
        domains=tuple(sorted(frame["domain"].unique())),
        classes=classes,
        fingerprint=fingerprint,
        domain_fingerprints=domain_fingerprints,
        split_rule=split,
        holdout=holdout,
        seed=seed,
        format=listing.format,
        class_names={name: listing.class_names[name] for name in classes} if listing.class_names else None,
        templates=listing.templates,
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
                    class_policy=data.class_policy, split=data.split, store=data.store, dataset_split=data.dataset_split)


def split_table_url(dataset: Dataset, store: str) -> str:
    """Where a listing's split lives: keyed by its content, the split rule, the holdout and the seed."""
    key = stable_hash({"fingerprint": dataset.fingerprint, "rule": dataset.split_rule, "holdout": dataset.holdout,
                       "seed": dataset.seed})
    return join(store, "splits", f"{dataset_label(dataset.root)}-{key}.parquet")
