"""Image-folder datasets on any fsspec URL, and RotatedDigits.

Two layouts: DomainBed's ROOT/<domain>/<class>/<image> (several domains), and ImageFolder's
ROOT/<class>/<image> (ImageNet and its variants): one domain, named IMAGEFOLDER_DOMAIN.
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.store.storage import exists, filesystem, join, write_bytes
from tasks.store.names import stable_hash
from tasks.data.splits import assign_split
from tasks.errors import InputError
from tasks.specs import DataSpec
from tasks.vocabulary import ROTATED_DIGITS

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
ROTATED_DIGITS_ANGLES = (0, 15, 30, 45, 60, 75)
# the one domain of an ImageFolder dataset: fixed, because the root's own name ("train", "val", …) says little
IMAGEFOLDER_DOMAIN = "all"
DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


@dataclass(frozen=True)
class Dataset:
    root: str
    samples: pd.DataFrame  # sample_id, path, domain, class, label, split, size
    domains: tuple[str, ...]
    classes: tuple[str, ...]
    fingerprint: str
    holdout: float
    seed: int
    domain_fingerprints: dict[str, str] = field(default_factory=dict)  # as `fingerprint`, per domain

    def rows(self, domains=None, split=None, classes=None) -> pd.DataFrame:
        frame = self.samples
        if domains is not None:
            frame = frame[frame["domain"].isin(list(domains))]
        if split is not None:
            frame = frame[frame["split"] == split]
        if classes is not None:
            frame = frame[frame["class"].isin(list(classes))]
        return frame


def _list_images(fs, base: str, root: str) -> tuple[pd.DataFrame, bool]:
    """Every image under base (sample_id = relative path, domain, class, size), and whether it is an ImageFolder.

    Images at depth three are DomainBed's <domain>/<class>/<image>; at depth two, ImageFolder's
    <class>/<image> (domain IMAGEFOLDER_DOMAIN). Images at other depths are ignored; both depths at once fail.
    """
    by_depth = {2: [], 3: []}
    for path, info in fs.find(base, detail=True).items():
        relative = path[len(base) :].lstrip("/")
        parts = relative.split("/")
        if len(parts) in by_depth and relative.lower().endswith(IMAGE_EXTENSIONS) and not parts[-1].startswith("."):
            by_depth[len(parts)].append((relative, parts, int(info.get("size") or 0)))
    if by_depth[2] and by_depth[3]:
        raise InputError(
            f"dataset root {root!r} mixes two layouts: images at ROOT/<class>/<image> (e.g. {by_depth[2][0][0]!r}) "
            f"and at ROOT/<domain>/<class>/<image> (e.g. {by_depth[3][0][0]!r}); keep one layout "
            "(move the stray images into class folders, or one level down into domain folders)"
        )
    imagefolder = bool(by_depth[2])
    if imagefolder:
        records = [(relative, IMAGEFOLDER_DOMAIN, parts[0], size) for relative, parts, size in by_depth[2]]
    else:
        records = [(relative, parts[0], parts[1], size) for relative, parts, size in by_depth[3]]
    return pd.DataFrame(records, columns=["sample_id", "domain", "class", "size"]), imagefolder


def discover(root: str, *, holdout: float = 0.2, seed: int = 0, class_policy: str = "strict") -> Dataset:
    """List a DomainBed or ImageFolder dataset; domains and classes sorted; non-image files ignored.

    class_policy "strict" fails when domains disagree on their classes; "intersection"
    keeps the classes every domain has.
    """
    fs, base = filesystem(root)
    if not fs.isdir(base):
        raise InputError(
            f"dataset root {root!r} does not exist or is not a folder; expected ROOT/<domain>/<class>/<image> "
            f"or ROOT/<class>/<image> (pass --dataset {ROTATED_DIGITS} for the built-in dataset)"
        )
    base = base.rstrip("/")
    frame, imagefolder = _list_images(fs, base, root)
    top_folders = sorted(
        entry.rstrip("/").rsplit("/", 1)[-1] for entry in fs.ls(base, detail=False) if fs.isdir(entry)
    )
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
    if any(classes != shared for classes in class_sets.values()):
        if class_policy == "strict":
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
        frame = frame[frame["class"].isin(shared)]
    if not shared:
        raise InputError(f"no class is shared by every domain under {root!r}")
    frame = frame.sort_values("sample_id").reset_index(drop=True)
    classes = tuple(sorted(shared))
    frame["label"] = frame["class"].map({name: index for index, name in enumerate(classes)}).astype("int32")
    frame["path"] = [join(root, sample_id) for sample_id in frame["sample_id"]]
    frame["split"] = "train"
    for _, group in frame.groupby("domain"):
        frame.loc[group.index, "split"] = assign_split(group["sample_id"], holdout, seed)
    fingerprint = stable_hash(list(zip(frame["sample_id"], frame["size"])))
    domain_fingerprints = {domain: stable_hash(list(zip(group["sample_id"], group["size"])))
                           for domain, group in frame.groupby("domain")}
    return Dataset(
        root=root,
        samples=frame[["sample_id", "path", "domain", "class", "label", "split", "size"]],
        domains=tuple(sorted(frame["domain"].unique())),
        classes=classes,
        fingerprint=fingerprint,
        holdout=holdout,
        seed=seed,
        domain_fingerprints=domain_fingerprints,
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


@task(name="discover-dataset", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def discover_dataset(data: DataSpec) -> Dataset:
    """The dataset (a folder URL or the built-in name) listed and split."""
    return discover(resolve_dataset(data.dataset, data.store), holdout=data.holdout, seed=data.split_seed,
                    class_policy=data.class_policy)
