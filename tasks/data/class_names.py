"""Class names for prompts, and class identity across datasets.

A class is its folder id everywhere (labels, reports, matching across datasets); names only
fill prompt templates. `--class-names` chooses them:

- none: the folder name, underscores and dashes read as spaces (today's prompts);
- `imagenet`: CLIP's curated ImageNet names (open_clip) for WordNet ids (`n01440764`) and for
  ImageNet-V2's numeric folders (`0`..`999`, the class index in timm's synset order); a numeric
  folder's identity is its synset, so V2 matches ImageNet, -Sketch, -A and -R by class;
- a CSV file with columns `folder,name`.
"""
from __future__ import annotations

import functools
import io

import pandas as pd

from tasks.store.storage import filesystem
from tasks.errors import InputError

IMAGENET = "imagenet"
CSV_COLUMNS = ["folder", "name"]


@functools.cache
def imagenet_synsets() -> tuple[str, ...]:
    """The 1000 ImageNet-1k WordNet ids in class-index order, as timm ships them."""
    from timm.data import ImageNetInfo

    return tuple(ImageNetInfo("imagenet-1k").label_names())


@functools.cache
def imagenet_class_names() -> dict[str, str]:
    """WordNet id -> CLIP's curated class name (open_clip's list is in the same class-index order)."""
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    synsets = imagenet_synsets()
    if len(synsets) != len(IMAGENET_CLASSNAMES):  # a dependency changed under us: never pair names off by one
        raise RuntimeError(f"timm lists {len(synsets)} ImageNet synsets but open_clip {len(IMAGENET_CLASSNAMES)} names")
    return dict(zip(synsets, IMAGENET_CLASSNAMES))


def class_identity(spec: str | None, folder: str) -> str:
    """The id that matches a class across datasets: the folder, or under `imagenet` a class index's synset."""
    if spec == IMAGENET and folder.isdigit() and int(folder) < len(imagenet_synsets()):
        return imagenet_synsets()[int(folder)]
    return folder


# which characters of a class folder's name become spaces in its prompts: this project's default, and the authors'
# code's (DomainNet's t-shirt stays "t-shirt" there)
FOLDER_NAME_SPACES = {"underscores-and-dashes": "_-", "underscores": "_"}


def class_prompt_name(folder_name: str, spaces: str = "underscores-and-dashes") -> str:
    """The name a class folder gives its prompts: `spaces` (a FOLDER_NAME_SPACES key) says which characters read as spaces."""
    return "".join(" " if character in FOLDER_NAME_SPACES[spaces] else character for character in folder_name)


def read_class_names_csv(url: str) -> dict[str, str]:
    """folder -> name from a CSV with columns folder,name; fails naming the file and the fix."""
    fs, path = filesystem(url)
    if not fs.isfile(path):
        raise InputError(f"class names file {url!r} does not exist; pass a CSV with columns folder,name or 'imagenet'")
    with fs.open(path, "rb") as handle:
        frame = pd.read_csv(io.BytesIO(handle.read()), dtype=str, keep_default_na=False)
    if list(frame.columns) != CSV_COLUMNS:
        raise InputError(f"class names file {url!r} has columns {list(frame.columns)}; it needs exactly {CSV_COLUMNS}")
    duplicated = sorted(set(frame.loc[frame["folder"].duplicated(), "folder"]))
    if duplicated:
        raise InputError(f"class names file {url!r} names folder(s) {duplicated[:10]} more than once; keep one row each")
    blank = frame.loc[frame["name"].str.strip() == "", "folder"].tolist()
    if blank:
        raise InputError(f"class names file {url!r} gives folder(s) {blank[:10]} an empty name; fill the name column")
    return dict(zip(frame["folder"], frame["name"].str.strip()))


def class_display_names(spec: str | None, classes, where: str, spaces: str = "underscores-and-dashes") -> dict[str, str]:
    """The prompt name of every class folder of a dataset (`where` names it in errors); without `spec`, the folder's
    name with the `spaces` characters read as spaces."""
    if spec is None:
        return {folder: class_prompt_name(folder, spaces) for folder in classes}
    if spec == IMAGENET:
        names = imagenet_class_names()
        known = {folder: names.get(class_identity(IMAGENET, folder)) for folder in classes}
        unknown = sorted(folder for folder, name in known.items() if name is None)
        if unknown:
            raise InputError(
                f"--class-names imagenet: {len(unknown)} class folder(s) of {where} are neither ImageNet WordNet ids "
                f"(n01440764) nor class indices (0-999), e.g. {unknown[:5]}; pass --class-names FILE "
                "(CSV folder,name) for other datasets"
            )
        return known
    names = read_class_names_csv(spec)
    unnamed = sorted(set(classes) - set(names))
    extra = sorted(set(names) - set(classes))
    if unnamed or extra:
        problems = [f"{len(unnamed)} folder(s) of {where} are not named, e.g. {unnamed[:5]}"] if unnamed else []
        problems += [f"{len(extra)} named folder(s) are not in {where}, e.g. {extra[:5]}"] if extra else []
        raise InputError(
            f"class names file {spec!r} does not match the class folders: {'; '.join(problems)}; "
            "give exactly one row per class folder"
        )
    return {folder: names[folder] for folder in classes}


def match_classes(spec: str | None, source_classes, target_classes, target: str) -> dict[str, str]:
    """target folder -> the source class of the same identity; fails naming the classes the source lacks."""
    by_identity = {class_identity(spec, folder): folder for folder in source_classes}
    matched = {folder: by_identity.get(class_identity(spec, folder)) for folder in target_classes}
    missing = sorted(folder for folder, source in matched.items() if source is None)
    if missing:
        hint = "" if spec == IMAGENET else "; if the folders are ImageNet WordNet ids or class indices, pass --class-names imagenet"
        raise InputError(
            f"target dataset {target!r} has {len(missing)} class folder(s) that the source dataset lacks, "
            f"e.g. {missing[:5]}: the probe and the projection know only the source's classes. Remove those "
            f"folders from the target or add them to the source{hint}"
        )
    return matched
