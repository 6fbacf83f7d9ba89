"""Parquet in the Hugging Face datasets layout (what `datasets` writes and the hub serves, e.g. PACS, OfficeHome):
any number of .parquet files under the root (ROOT/data/train-00000-of-00002.parquet, …), any number of row groups,
with columns

    image   struct<bytes: binary, path: string>  the encoded image and its original file name
    label   integer, named by the ClassLabel feature in the schema metadata (key "huggingface")
    domain  string, or a ClassLabel (absent: one domain)

A sample's id is <domain>/<class>/<name of image.path> (the folder tree's id where the rows keep their original
file names), else <domain>/<class>/<file>:<row>. Rows are read a row group at a time, only the image bytes.
"""
from __future__ import annotations

import json
from typing import Iterator

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from tasks.data.fingerprints import file_stamp, store_checksum
from tasks.data.sources.base import (
    IMAGEFOLDER_DOMAIN, SAMPLE_COLUMNS, Format, Options, SourceListing, Tree, class_ids, image_id,
)
from tasks.data.sources.reading import open_regular, too_large
from tasks.errors import InputError

NAME = "parquet"
IMAGE, LABEL, DOMAIN = "image", "label", "domain"
METADATA_KEY = b"huggingface"


def _features(schema: pa.Schema) -> dict:
    """The datasets features the file's schema metadata declares ({} when it declares none)."""
    try:
        return json.loads((schema.metadata or {}).get(METADATA_KEY, b"{}")).get("info", {}).get("features", {}) or {}
    except (ValueError, AttributeError):
        return {}


def _names(features: dict, column: str) -> list[str] | None:
    feature = features.get(column) or {}
    return list(feature["names"]) if feature.get("_type") == "ClassLabel" and feature.get("names") else None


def _open(tree: Tree, relative: str):
    return open_regular(tree.fs, tree.fs_path(relative))


def _file_samples(tree: Tree, relative: str) -> tuple[pd.DataFrame, list[str]]:
    """The rows of one file (domain, class, name, row group, row) and its class names; fails naming the file."""
    url = tree.url(relative)
    try:
        with _open(tree, relative) as handle:
            parquet = pq.ParquetFile(handle)
            schema = parquet.schema_arrow
            image = schema.field(IMAGE).type if IMAGE in schema.names else None
            if image is None or not pa.types.is_struct(image) or image.get_field_index("bytes") < 0:
                raise InputError(f"{url!r} has no {IMAGE!r} column of encoded images (a struct of bytes and path, as "
                                 f"the datasets library writes an Image feature); its columns are {schema.names}")
            if LABEL not in schema.names or not pa.types.is_integer(schema.field(LABEL).type):
                raise InputError(f"{url!r} has no integer {LABEL!r} column; its columns are {schema.names}: save the "
                                 "dataset with a ClassLabel feature named label")
            features = _features(schema)
            names = _names(features, LABEL)
            if names is None:
                raise InputError(f"{url!r}: its labels have no names (no ClassLabel feature for {LABEL!r} in the schema "
                                 f"metadata {METADATA_KEY.decode()!r}); cast the column to a ClassLabel with the class "
                                 "names before saving (datasets' cast_column)")
            has_path = image.get_field_index("path") >= 0
            columns = [LABEL] + ([DOMAIN] if DOMAIN in schema.names else []) + ([f"{IMAGE}.path"] if has_path else [])
            table = parquet.read(columns=columns)
            bytes_column = [index for index in range(parquet.metadata.num_columns)
                            if parquet.metadata.schema.column(index).path == f"{IMAGE}.bytes"]
            for group in range(parquet.metadata.num_row_groups):
                statistics = parquet.metadata.row_group(group).column(bytes_column[0]).statistics
                if statistics is not None and statistics.has_null_count and statistics.null_count:
                    raise InputError(f"{url!r}: row group {group} holds {statistics.null_count} row(s) without image "
                                     "bytes (an image kept as a path alone); embed the images (datasets' Image "
                                     "feature with decode, then save) or drop those rows")
            sizes = [parquet.metadata.row_group(group).num_rows for group in range(parquet.metadata.num_row_groups)]
    except InputError:
        raise
    except (pa.ArrowException, OSError, ValueError) as error:
        raise InputError(f"{url!r} is not a readable Parquet file ({type(error).__name__}: {error}); "
                         "repair or remove it") from error
    labels = table.column(LABEL).to_numpy(zero_copy_only=False)
    frame = pd.DataFrame({"label": labels})
    frame["row_group"] = [group for group, size in enumerate(sizes) for _ in range(size)]
    frame["row"] = [row for size in sizes for row in range(size)]
    if table.column(LABEL).null_count:
        row = table.column(LABEL).to_pandas().isna().idxmax()
        raise InputError(f"{url!r} row {row} has no label; label every row or drop the unlabelled ones")
    outside = frame.index[(frame["label"] < 0) | (frame["label"] >= len(names))]
    if len(outside):
        raise InputError(f"{url!r} row {outside[0]} has label {frame['label'].iat[outside[0]]}, outside its "
                         f"{len(names)} class names (0 to {len(names) - 1}); fix the label or the ClassLabel names")
    ids = class_ids(names)
    frame["class"] = [ids[label] for label in frame["label"]]
    frame["domain"] = _domain_column(table, features, url)
    paths = table.column(IMAGE).combine_chunks().field("path").to_pylist() if has_path else [None] * len(frame)
    frame["file"] = [path.replace("\\", "/").rsplit("/", 1)[-1] if path else None for path in paths]
    return frame, names


def _domain_column(table: pa.Table, features: dict, url: str) -> list[str]:
    if DOMAIN not in table.column_names:
        return [None] * table.num_rows
    column = table.column(DOMAIN)
    names = _names(features, DOMAIN)
    if pa.types.is_integer(column.type) and names:
        values = [names[value] if value is not None and 0 <= value < len(names) else None for value in column.to_pylist()]
    else:
        values = [None if value is None else str(value) for value in column.to_pylist()]
    empty = [row for row, value in enumerate(values) if not value or not value.strip()]
    if empty:
        raise InputError(f"{url!r} row {empty[0]} has an empty domain; name every row's domain (or drop the "
                         f"{DOMAIN!r} column for a dataset of one domain)")
    return values


def list_samples(tree: Tree, options: Options) -> SourceListing:
    files = tree.with_suffix(".parquet")
    frames, display = [], {}
    for relative in files:
        frame, names = _file_samples(tree, relative)
        display.update(zip(class_ids(names), names))
        info = tree.files[relative]
        frames.append(frame.assign(source_file=relative, path=tree.url(relative), fs_path=tree.fs_path(relative),
                                   checksum=store_checksum(info), stamp=file_stamp(info)))
    frame = pd.concat(frames, ignore_index=True)
    if frame.empty:
        raise InputError(f"the Parquet files of {tree.root!r} hold no rows; add images or point at another folder")
    one_domain = frame["domain"].isna()
    if one_domain.any() and not one_domain.all():
        raise InputError(f"some Parquet files of {tree.root!r} have a {DOMAIN!r} column and some do not, e.g. "
                         f"{frame.loc[one_domain, 'source_file'].iat[0]!r}: give every file the column, or none")
    repeated = frame.assign(sample_id=[image_id(domain, cls, name) for domain, cls, name in
                                       zip(frame["domain"], frame["class"], frame["file"])])["sample_id"].duplicated(keep=False)
    repeated |= frame["file"].isna()
    # a name used twice (or no name): those rows are named by their file, row group and row
    frame.loc[repeated, "file"] = [f"{source}:{group}:{row}" for source, group, row in
                                   zip(frame.loc[repeated, "source_file"], frame.loc[repeated, "row_group"],
                                       frame.loc[repeated, "row"])]
    frame["sample_id"] = [image_id(domain, cls, name) for domain, cls, name in
                          zip(frame["domain"], frame["class"], frame["file"])]
    frame["domain"] = frame["domain"].fillna(IMAGEFOLDER_DOMAIN)
    frame["locator"] = [f"parquet:{group}:{row}" for group, row in zip(frame["row_group"], frame["row"])]
    frame["position"] = frame.groupby("source_file").cumcount()
    frame["size"] = 0  # unknown until read: the bytes are bounded when read
    return SourceListing(NAME, frame[SAMPLE_COLUMNS], class_names=display)


def read_file(fs, path: str, name: str, locators: list[str], limit: int) -> Iterator[bytes | Exception]:
    """The rows' image bytes, in the order given: one row group in memory at a time, the image column only."""
    try:
        handle = open_regular(fs, path)
        parquet = pq.ParquetFile(handle)
    except Exception as error:  # unreadable: every row of the file is skipped with the reason
        yield from (error for _ in locators)
        return
    with handle:
        group, images = None, None
        for locator in locators:
            _, row_group, row = locator.split(":")
            try:
                if int(row_group) != group:
                    group, images = int(row_group), None
                    images = parquet.read_row_group(group, columns=[f"{IMAGE}.bytes"]).column(IMAGE).combine_chunks().field("bytes")
                data = images[int(row)].as_py()
                if data is None:
                    raise ValueError(f"{name} row group {row_group} row {row} holds no image bytes")
                if len(data) > limit:
                    raise too_large(f"{name} row group {row_group} row {row}", len(data), limit)
            except Exception as error:
                yield error
                continue
            yield data


FORMAT = Format(NAME, (".parquet",), "parquet", list_samples, read_file)
