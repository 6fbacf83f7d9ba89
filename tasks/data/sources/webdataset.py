"""WebDataset shards in CLIP_benchmark's layout (what `clip_benchmark_export_wds` writes, and what LAION publishes):

    ROOT/<split>/0.tar … N-1.tar, ROOT/<split>/nshards.txt (N), ROOT/classnames.txt (one class a line),
    ROOT/zeroshot_classification_templates.txt (one template a line, "{c}" for the class name)

Each sample is an image member (KEY.webp, .png, .jpg or .jpeg) and KEY.cls, its integer label (a line of
classnames.txt). The split is `test` unless another is chosen (--dataset-split), as CLIP_benchmark's `--split`.
A dataset with domains is one such folder per domain: ROOT/<domain>/<split>/..., each with its classnames.txt or
sharing ROOT's. A sample's id is <domain>/<class>/<name>.<ext>, the name being the key's last part: a shard written from a
folder tree keeping its file names (keys <class>/<file name without its extension>) gives every image the id, and
the split, it had there.

A shard is indexed from its tar headers (seeking past the members' data) and read back a member at a time in
file order from one open file: one sequential pass, nothing extracted, memory one image. The index of every
shard is remembered on the store (STORE/datasets/shard-index/<hash of the root>.parquet) under the shard's
checksum or stamp, so listing unchanged shards again reads none of them.
"""
from __future__ import annotations

import tarfile
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator

import pandas as pd
import pyarrow as pa

from tasks.data.fingerprints import file_stamp, store_checksum
from tasks.data.sources.base import (
    IMAGEFOLDER_DOMAIN, SAMPLE_COLUMNS, Format, Options, SourceListing, Tree, class_ids, image_id,
)
from tasks.data.sources.reading import open_regular, too_large
from tasks.data.sources.text_files import read_lines
from tasks.errors import InputError
from tasks.store.names import stable_hash
from tasks.store.storage import exists, join, read_parquet, write_parquet

NAME = "webdataset"
IMAGE_MEMBERS = ("webp", "png", "jpg", "jpeg")  # what CLIP_benchmark's loader decodes
LABEL_MEMBER = "cls"
CLASSNAMES, TEMPLATES, NSHARDS = "classnames.txt", "zeroshot_classification_templates.txt", "nshards.txt"
MAX_LABEL_BYTES = 64
LISTERS = 8  # shards indexed at once: reading headers is I/O-bound
INDEX_COLUMNS = ["source_file", "identity", "key", "extension", "offset", "size", "label"]
FIX = "re-export the split (clip_benchmark_export_wds) or repair the shard"


def _domains(tree: Tree, split: str) -> dict[str | None, str]:
    """{domain (None: a dataset without domains): its folder prefix}; fails on shards outside the layout."""
    tars = tree.with_suffix(".tar")
    shallow = [path for path in tars if path.count("/") == 1]
    deep = [path for path in tars if path.count("/") == 2]
    stray = [path for path in tars if path.count("/") not in (1, 2)]
    if stray or (shallow and deep):
        example = (stray or deep)[0]
        raise InputError(
            f"dataset root {tree.root!r} holds shards outside CLIP_benchmark's layout, e.g. {example!r}: keep them "
            "at ROOT/<split>/N.tar (one domain) or ROOT/<domain>/<split>/N.tar (one folder per domain)")
    if shallow:
        splits = sorted({path.split("/")[0] for path in shallow})
        if split not in splits:
            raise InputError(f"dataset root {tree.root!r} has no shards of split {split!r} (ROOT/{split}/N.tar); its "
                             f"shards are in {splits}: pass --dataset-split {splits[0]}", "dataset_split")
        return {None: ""}
    domains = {}
    for folder in tree.folders:
        splits = sorted({path.split("/")[1] for path in deep if path.startswith(f"{folder}/")})
        if not splits:
            raise InputError(f"domain folder {folder!r} under {tree.root!r} holds no shards: add "
                             f"{folder}/{split}/0.tar … (CLIP_benchmark's layout) or remove the folder")
        if split not in splits:
            raise InputError(f"domain {folder!r} of {tree.root!r} has no shards of split {split!r}; its shards are in "
                             f"{splits}: pass --dataset-split, or add {folder}/{split}/", "dataset_split")
        domains[folder] = f"{folder}/"
    return domains


def _shards(tree: Tree, folder: str) -> list[str]:
    """The split folder's shards 0.tar … N-1.tar, as its nshards.txt counts them."""
    count_file = f"{folder}/{NSHARDS}"
    present = sorted((path for path in tree.with_suffix(".tar") if path.rsplit("/", 1)[0] == folder),
                     key=lambda path: (len(path), path))
    if count_file not in tree.files:
        raise InputError(f"{tree.url(count_file)!r} is missing: CLIP_benchmark's layout counts a split's shards in "
                         f"it; write {len(present)} into it if {folder}/ holds all of them")
    text = " ".join(read_lines(tree, count_file)).strip()
    if not text.isdigit():
        raise InputError(f"{tree.url(count_file)!r} holds {text[:40]!r}, not a number of shards; write the count, "
                         f"e.g. {len(present)}")
    expected = [f"{folder}/{number}.tar" for number in range(int(text))]
    if set(expected) != set(present):
        missing, extra = sorted(set(expected) - set(present)), sorted(set(present) - set(expected))
        raise InputError(
            f"{tree.url(count_file)!r} says {int(text)} shard(s) but {tree.url(folder)!r} holds {len(present)}"
            + (f"; missing {missing[:3]}" if missing else "") + (f"; not counted {extra[:3]}" if extra else "")
            + ": shards are numbered 0.tar to N-1.tar; restore the missing ones or correct nshards.txt")
    return expected


def _class_names(tree: Tree, prefix: str) -> tuple[str, list[str]]:
    """(which file, the class names in label order): the domain's classnames.txt, else the root's."""
    relative = next((path for path in (f"{prefix}{CLASSNAMES}", CLASSNAMES) if path in tree.files), None)
    if relative is None:
        raise InputError(f"{tree.url(prefix + CLASSNAMES)!r} is missing: a shard set names its classes there, one "
                         "a line in label order, as CLIP_benchmark's exports do")
    names = [line.strip() for line in read_lines(tree, relative)]
    while names and not names[-1]:
        names.pop()
    blank = [number for number, name in enumerate(names, 1) if not name]
    if not names or blank:
        problem = "holds no class name" if not names else f"line {blank[0]} is blank"
        raise InputError(f"{tree.url(relative)!r} {problem}: it needs one class name a line, in label order")
    return relative, names


def _templates(tree: Tree, prefixes) -> tuple[str, ...] | None:
    """The set's zero-shot templates ("{c}" becomes "{}"): the root's file, else the first domain's."""
    relative = next((path for path in (TEMPLATES, *(f"{prefix}{TEMPLATES}" for prefix in prefixes))
                     if path in tree.files), None)
    if relative is None:
        return None
    lines = [(number, line.strip()) for number, line in enumerate(read_lines(tree, relative), 1) if line.strip()]
    templates = [template for _, template in lines]
    for number, template in lines:
        if template.count("{c}") != 1 or "{}" in template:
            raise InputError(f"{tree.url(relative)!r} line {number} ({template!r}) must hold {{c}} exactly once, "
                             "where the class name goes")
    return tuple(dict.fromkeys(template.replace("{c}", "{}") for template in templates)) or None


def _index(tree: Tree, relative: str) -> list[tuple[str, str, int, int, int | None]]:
    """(key, extension, data offset, size, label or None) of every regular member of a shard, in file order."""
    url, size = tree.url(relative), int(tree.files[relative].get("size") or 0)
    members = []
    try:
        with open_regular(tree.fs, tree.fs_path(relative)) as handle, \
                tarfile.open(fileobj=handle, mode="r:") as archive:
            for member in archive:
                name = member.name.rsplit("/", 1)[-1]
                if not member.isfile() or "." not in name:
                    continue
                if member.offset_data + member.size > size:
                    raise tarfile.ReadError(f"member {member.name!r} ends past the end of the file")
                stem, extension = name.split(".", 1)  # webdataset's rule: the key ends at the first dot
                key, extension = member.name[: len(member.name) - len(name)] + stem, extension.lower()
                label = None
                if extension == LABEL_MEMBER:
                    if member.size > MAX_LABEL_BYTES:
                        raise InputError(f"shard {url!r}: member {member.name!r} holds {member.size} bytes, not an "
                                         f"integer label; {FIX}")
                    text = archive.extractfile(member).read().decode("ascii", "replace").strip()
                    if not text.lstrip("-").isdigit():
                        raise InputError(f"shard {url!r}: member {member.name!r} holds {text[:20]!r}, not an integer "
                                         f"label; {FIX}")
                    label = int(text)
                members.append((key, extension, member.offset_data, member.size, label))
            if size < archive.offset + 2 * tarfile.BLOCKSIZE:  # tarfile ends quietly at a header cut short
                raise tarfile.ReadError(f"it ends at byte {size}, inside the header at byte {archive.offset}, before "
                                        "the end-of-archive blocks")
    except InputError:
        raise
    except (tarfile.TarError, EOFError, OSError) as error:
        raise InputError(f"shard {url!r} is not a complete tar file ({type(error).__name__}: {error}); {FIX}") from error
    return members


def _identity(tree: Tree, relative: str) -> str:
    """What changes whenever a shard is rewritten: the store's checksum, else its stamp (tasks.data.fingerprints)."""
    info = tree.files[relative]
    return store_checksum(info) or file_stamp(info)


def index_url(store: str, root: str) -> str:
    return join(store, "datasets", "shard-index", f"{stable_hash(root)}.parquet")


def _remembered(store: str | None, root: str) -> dict[tuple[str, str], list[tuple]]:
    """{(shard, identity): its members} as a listing of this root remembered them on the store."""
    url = index_url(store, root) if store else None
    if not url or not exists(url):
        return {}
    frame = read_parquet(url).to_pandas()
    frame["label"] = frame["label"].astype(object).where(frame["label"].notna(), None)
    return {(shard, identity): list(group[INDEX_COLUMNS[2:]].itertuples(index=False, name=None))
            for (shard, identity), group in frame.groupby(["source_file", "identity"], sort=False)}


def _remember(store: str, root: str, indexes: dict[tuple[str, str], list[tuple]]) -> None:
    """The members of every shard of this listing, so that the next listing of unchanged shards reads none."""
    rows = [(shard, identity, key, extension, offset, size, None if label is None else int(label))
            for (shard, identity), members in indexes.items() for key, extension, offset, size, label in members]
    frame = pd.DataFrame(rows, columns=INDEX_COLUMNS).astype({"offset": "int64", "size": "int64", "label": "Int64"})
    write_parquet(pa.Table.from_pandas(frame, preserve_index=False), index_url(store, root))


def _shard_samples(tree: Tree, relative: str, members, domain: str | None, names: list[str],
                   names_file: str) -> list[tuple]:
    """The samples of one shard: (key, domain, class, image extension, offset, size, source_file)."""
    url, keys = tree.url(relative), {}
    for key, extension, offset, size, label in members:
        entry = keys.setdefault(key, {})
        if label is not None:
            entry["label"] = label
        elif extension in IMAGE_MEMBERS:
            if "image" in entry:
                raise InputError(f"shard {url!r}: sample {key!r} has two images ({entry['image'][0]}, {extension}); "
                                 f"keep one image member per key; {FIX}")
            entry["image"] = (extension, offset, size)
    samples = []
    for key, entry in keys.items():
        if "image" not in entry and "label" not in entry:
            continue  # a key of other members only (captions, metadata): not a classification sample
        if "image" not in entry:
            raise InputError(f"shard {url!r}: sample {key!r} has a label but no image member "
                             f"({', '.join('.' + e for e in IMAGE_MEMBERS)}); {FIX}")
        if "label" not in entry:
            raise InputError(f"shard {url!r}: sample {key!r} has no .{LABEL_MEMBER} member (its integer label); {FIX}")
        if not 0 <= entry["label"] < len(names):
            raise InputError(f"shard {url!r}: sample {key!r} has label {entry['label']}, outside the {len(names)} "
                             f"class names of {tree.url(names_file)!r} (0 to {len(names) - 1}); fix the label or "
                             "the class names")
        extension, offset, size = entry["image"]
        samples.append((key, domain, names[entry["label"]], extension, offset, size, relative))
    return samples


def _name(samples: pd.DataFrame) -> pd.DataFrame:
    """Each sample's name and id: the key's last part and the image's extension (a folder tree written as shards
    keeping its names, keys <class>/<file stem>, gives back the tree's ids); a name two samples of one class
    share falls back to the whole key."""
    def ids(names):
        return [image_id(domain, class_name, name)
                for domain, class_name, name in zip(samples["domain"], samples["class"], names)]

    names = samples["key"].str.rsplit("/", n=1).str[-1] + "." + samples["extension"]
    clash = pd.Series(ids(names), index=samples.index).duplicated(keep=False)
    names = names.where(~clash, samples["key"] + "." + samples["extension"])
    return samples.assign(file=names, sample_id=ids(names))


def _members(tree: Tree, shards: list[str], store: str | None) -> dict[str, list[tuple]]:
    """{shard: its members}: remembered on the store for the shard's checksum or stamp, else indexed now (and the
    whole listing's indexes remembered)."""
    remembered = _remembered(store, tree.root)
    identities = {relative: _identity(tree, relative) for relative in shards}
    members = {relative: remembered.get((relative, identity)) for relative, identity in identities.items()}
    missing = [relative for relative, found in members.items() if found is None]
    with ThreadPoolExecutor(LISTERS) as pool:
        members.update(zip(missing, pool.map(lambda relative: _index(tree, relative), missing)))
    if missing and store:
        _remember(store, tree.root, {(relative, identities[relative]): found for relative, found in members.items()})
    return members


def list_samples(tree: Tree, options: Options) -> SourceListing:
    domains = _domains(tree, options.dataset_split)
    jobs, display = [], {}
    for domain, prefix in domains.items():
        names_file, names = _class_names(tree, prefix)
        display.update(zip(class_ids(names), names))
        jobs += [(relative, domain, class_ids(names), names_file)
                 for relative in _shards(tree, f"{prefix}{options.dataset_split}")]
    members = _members(tree, [relative for relative, *_ in jobs], options.store)
    shards = [_shard_samples(tree, relative, members[relative], *rest) for relative, *rest in jobs]
    if not any(shards):
        raise InputError(f"the {options.dataset_split!r} shards of {tree.root!r} hold no sample (an image member and "
                         "a .cls label per key); add samples or point at another folder")
    frame = _name(pd.DataFrame([sample for samples in shards for sample in samples],
                               columns=["key", "domain", "class", "extension", "position", "size", "source_file"]))
    repeated = frame.loc[frame["sample_id"].duplicated(keep=False)]
    if len(repeated):
        raise InputError(f"key {repeated['key'].iat[0]!r} appears twice in the {options.dataset_split!r} shards of "
                         f"{tree.root!r} (in {sorted(set(repeated['source_file']))[:2]}): keys name one sample each; "
                         "re-export with distinct keys")
    frame["locator"] = [f"tar:{offset}:{size}" for offset, size in zip(frame["position"], frame["size"])]
    frame["domain"] = frame["domain"].fillna(IMAGEFOLDER_DOMAIN)
    for domain, prefix in domains.items():
        if not (frame["domain"] == (domain or IMAGEFOLDER_DOMAIN)).any():
            raise InputError(f"the {options.dataset_split!r} shards of {tree.url(prefix) if prefix else tree.root!r} "
                             "hold no sample (an image member and a .cls label per key); add samples or remove it")
    info = {relative: tree.files[relative] for relative in frame["source_file"].unique()}
    frame = frame.assign(
        path=frame["source_file"].map(tree.url), fs_path=frame["source_file"].map(tree.fs_path),
        checksum=frame["source_file"].map(lambda relative: store_checksum(info[relative])),
        stamp=frame["source_file"].map(lambda relative: file_stamp(info[relative])))
    return SourceListing(NAME, frame[SAMPLE_COLUMNS], class_names=display,
                         templates=_templates(tree, [prefix for prefix in domains.values() if prefix]))


def read_file(fs, path: str, name: str, locators: list[str], limit: int) -> Iterator[bytes | Exception]:
    """The members' bytes, in the order given (file order: one forward pass over one open file)."""
    try:
        handle = open_regular(fs, path)
    except Exception as error:  # unreadable: every sample of the file is skipped with the reason
        yield from (error for _ in locators)
        return
    with handle:
        for locator in locators:
            _, offset, size = locator.split(":")
            offset, size = int(offset), int(size)
            if size > limit:
                yield too_large(f"{name} (member at byte {offset})", size, limit)
                continue
            try:
                handle.seek(offset)
                data = handle.read(size)
                if len(data) != size:
                    raise EOFError(f"{name} ends inside the member at byte {offset}: the shard was truncated")
            except Exception as error:
                yield error
                continue
            yield data


FORMAT = Format(NAME, (".tar",), "tar", list_samples, read_file)
