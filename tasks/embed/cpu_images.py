"""Images decoded into batches on the CPU: read through their dataset's source (a file, a shard's member, a Parquet
row: tasks.data.sources, bounded in bytes), decoded with PIL, intervened and preprocessed in DataLoader workers.
An unreadable file becomes a skip record with a stable reason,
never a crash; so does an image over PIL's pixel limit (Image.MAX_IMAGE_PIXELS), whatever its size: it is
refused from its header, before a byte of it is decoded, so memory stays bounded. (tasks/embed/gpu_images.py
does the same on a CUDA device and falls back to this path.)"""
from __future__ import annotations

import io
import re
import warnings

import numpy as np
import pandas as pd
import torch
from PIL import Image

from tasks.data.sources import read_samples
from tasks.data.sources.reading import max_image_bytes
from tasks.specs import InterventionConfig
from tasks.embed.intervene import intervene
from tasks.vocabulary import ORIGINAL

_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def failure_reason(error: Exception) -> str:
    """Stable text for a skipped image: the error's type and message without memory addresses
    (PIL names its buffer `<_io.BytesIO object at 0x7f..>`), so identical runs write identical files."""
    return f"{type(error).__name__}: {_ADDRESS.sub('', str(error))}"


def open_image(data: bytes) -> Image.Image:
    """The image's header (nothing decoded yet); over the pixel limit, the error PIL raises at twice the limit.
    (PIL only warns between the limit and twice it, and then decodes: three times a healthy run's memory.)"""
    with warnings.catch_warnings():  # the check below is the rule, the warning only noise
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        image = Image.open(io.BytesIO(data))
    pixels = image.width * image.height
    if Image.MAX_IMAGE_PIXELS and pixels > Image.MAX_IMAGE_PIXELS:
        raise Image.DecompressionBombError(f"Image size ({pixels} pixels) exceeds limit of {Image.MAX_IMAGE_PIXELS} "
                                           "pixels, could be decompression bomb DOS attack.")
    return image


class SampleStream(torch.utils.data.IterableDataset):
    """The rows' bytes, read through their dataset source (tasks.data.sources): each loader worker reads one
    contiguous slice of the rows, so a shard or Parquet file is read front to back once, whatever the worker count.
    `transform(index, bytes or the exception that stopped the read)` makes each item."""

    def __init__(self, rows: pd.DataFrame, transform):
        self.rows = rows[["path", "locator"]].reset_index(drop=True)
        self.transform = transform
        self.limit = max_image_bytes()  # read here: workers may not see this process's environment changes

    def __iter__(self):
        worker = torch.utils.data.get_worker_info()
        bounds = np.linspace(0, len(self.rows), (worker.num_workers if worker else 1) + 1).astype(int)
        start, stop = (bounds[worker.id], bounds[worker.id + 1]) if worker else (0, len(self.rows))
        for position, data in read_samples(self.rows.iloc[start:stop], self.limit):
            yield self.transform(start + position, data)


class DecodedImages:
    """A sample's bytes decoded with PIL, intervened and preprocessed; unreadable or undecodable, an error record."""

    def __init__(self, sample_ids, preprocess, interventions: InterventionConfig | None):
        self.sample_ids = sample_ids
        self.preprocess = preprocess
        self.interventions = interventions

    def __call__(self, index, data):
        try:
            if isinstance(data, Exception):
                raise data
            image = open_image(data)
            image.load()
            image = image.convert("RGB")
        except Exception as error:  # any decoder failure: record it and keep going
            return {"index": index, "error": failure_reason(error)}
        view = ORIGINAL
        if self.interventions is not None:
            view, image = intervene(self.interventions, image, self.sample_ids[index])
        return {"index": index, "pixels": self.preprocess(image), "view": view}


def collate(items):
    good = [item for item in items if "pixels" in item]
    return {
        "index": [item["index"] for item in good],
        "view": [item["view"] for item in good],
        "pixels": torch.stack([item["pixels"] for item in good]) if good else None,
        "errors": [(item["index"], item["error"]) for item in items if "error" in item],
    }


def pil_batches(loaded, rows: pd.DataFrame, interventions, batch_size, num_workers):
    """Batches decoded, intervened and preprocessed with PIL in DataLoader workers."""
    cuda = loaded.device.startswith("cuda")
    return torch.utils.data.DataLoader(
        SampleStream(rows, DecodedImages(rows["sample_id"].tolist(), loaded.preprocess, interventions)),
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=collate,
        pin_memory=cuda,
        prefetch_factor=4 if num_workers and cuda else None,
    )
