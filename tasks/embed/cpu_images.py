"""Images decoded into batches on the CPU: read from any fsspec URL, decoded with PIL, intervened and
preprocessed in DataLoader workers. An unreadable file becomes a skip record with a stable reason,
never a crash; so does an image over PIL's pixel limit (Image.MAX_IMAGE_PIXELS), whatever its size: it is
refused from its header, before a byte of it is decoded, so memory stays bounded. (tasks/embed/gpu_images.py
does the same on a CUDA device and falls back to this path.)"""
from __future__ import annotations

import io
import re
import warnings

import fsspec
import pandas as pd
import torch
from PIL import Image

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


class ImageRows(torch.utils.data.Dataset):
    """Decodes images from any fsspec URL; an unreadable file becomes an error record, not a crash."""

    def __init__(self, rows: pd.DataFrame, preprocess, interventions: InterventionConfig | None):
        self.paths = rows["path"].tolist()
        self.sample_ids = rows["sample_id"].tolist()
        self.preprocess = preprocess
        self.interventions = interventions

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, index):
        try:
            with fsspec.open(self.paths[index], "rb") as handle:
                image = open_image(handle.read())
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
        ImageRows(rows, loaded.preprocess, interventions),
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=collate,
        pin_memory=cuda,
        prefetch_factor=4 if num_workers and cuda else None,
    )
