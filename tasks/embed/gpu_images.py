"""Images as tensors on the model's device: batched GPU JPEG decoding, the interventions and the
open_clip preprocess on tensors, and the assignment of embedding tasks to GPUs.

On CUDA, decoding JPEGs with PIL in worker processes is what starves the model; here the
DataLoader workers only read bytes, nvJPEG decodes a whole batch on the GPU, and the
interventions and preprocessing run there too. Files the GPU decoder refuses (PNG, CMYK
JPEG, a damaged file) are decoded with PIL and join the same tensor path. The results match
the PIL path to within resize and rounding tolerance (tests/test_gpu_images.py).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch
import torchvision.transforms as T
import torchvision.transforms.functional as TF
from torchvision.io import ImageReadMode, decode_jpeg

from tasks.embed.cpu_images import SampleStream, failure_reason, open_image, pil_batches
from tasks.specs import InterventionConfig
from tasks.embed.intervene import intervene
from tasks.vocabulary import ORIGINAL

JPEG_MAGIC = b"\xff\xd8"


class TensorPreprocess:
    """open_clip's image preprocess (Resize, CenterCrop, to float, Normalize) on uint8 tensors."""

    def __init__(self, preprocess):
        steps = getattr(preprocess, "transforms", None) or []
        resize = [s for s in steps if isinstance(s, T.Resize)]
        crop = [s for s in steps if isinstance(s, T.CenterCrop)]
        normalize = [s for s in steps if isinstance(s, T.Normalize)]
        if len(resize) != 1 or len(crop) != 1 or len(normalize) != 1:
            raise ValueError(f"no tensor equivalent of this preprocess (expected Resize, CenterCrop, Normalize): {preprocess}")
        self.size, self.interpolation, self.max_size = resize[0].size, resize[0].interpolation, resize[0].max_size
        self.crop = crop[0].size
        self.mean = torch.tensor(normalize[0].mean).view(3, 1, 1)
        self.std = torch.tensor(normalize[0].std).view(3, 1, 1)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        """uint8 3xHxW -> normalised float 3xSxS, on the image's device."""
        image = TF.resize(image, self.size, self.interpolation, self.max_size, antialias=True)
        image = TF.center_crop(image, self.crop).float().div_(255)
        return (image - self.mean.to(image.device)) / self.std.to(image.device)


def raw_bytes(index, data):
    """(index, bytes, None), or (index, None, why they could not be read)."""
    return (index, None, failure_reason(data)) if isinstance(data, Exception) else (index, data, None)


def decode_with_pil(data: bytes) -> torch.Tensor:
    image = open_image(data)
    image.load()
    return torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1).contiguous()


def decode_batch(blobs: list[bytes], device: str) -> list[torch.Tensor | Exception]:
    """uint8 3xHxW tensors on `device`: JPEGs decoded there in one batch, the rest (and any JPEG the
    decoder refuses) with PIL; an exception in place of a file neither can decode, or one over the pixel limit."""
    decoded: list[torch.Tensor | Exception | None] = [None] * len(blobs)
    for i, blob in enumerate(blobs):
        if blob[:2] == JPEG_MAGIC:  # the GPU decoder knows no limit: PIL reads the header first
            try:
                open_image(blob)
            except Exception as error:
                decoded[i] = error
    jpegs = [i for i, blob in enumerate(blobs) if blob[:2] == JPEG_MAGIC and decoded[i] is None]
    if jpegs:
        data = [torch.frombuffer(bytearray(blobs[i]), dtype=torch.uint8) for i in jpegs]
        try:
            images = decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
        except RuntimeError:  # one file spoils the batch: find it, one by one
            images = []
            for one in data:
                try:
                    images.append(decode_jpeg(one, mode=ImageReadMode.RGB, device=device))
                except RuntimeError:
                    images.append(None)
        for i, image in zip(jpegs, images):
            decoded[i] = image
    for i, image in enumerate(decoded):
        if image is None:
            try:
                decoded[i] = decode_with_pil(blobs[i]).to(device, non_blocking=True)
            except Exception as error:
                decoded[i] = error
    return decoded


def tensor_batches(rows: pd.DataFrame, preprocess, device: str, interventions: InterventionConfig | None,
                   batch_size: int, num_workers: int):
    """Batches in embed_rows' format (index, view, pixels, errors), decoded and transformed on `device`."""
    to_tensor = TensorPreprocess(preprocess)
    sample_ids = rows["sample_id"].tolist()
    # the workers only read bytes; decoding happens on the device
    loader = torch.utils.data.DataLoader(SampleStream(rows, raw_bytes), batch_size=batch_size, num_workers=num_workers,
                                         collate_fn=list, prefetch_factor=4 if num_workers else None)
    for items in loader:
        errors = [(index, reason) for index, blob, reason in items if blob is None]
        readable = [(index, blob) for index, blob, _ in items if blob is not None]
        indices, views, pixels = [], [], []
        for (index, _), image in zip(readable, decode_batch([blob for _, blob in readable], device)):
            if isinstance(image, Exception):
                errors.append((index, failure_reason(image)))
                continue
            view = ORIGINAL
            if interventions is not None:
                view, image = intervene(interventions, image, sample_ids[index])
            indices.append(index)
            views.append(view)
            pixels.append(to_tensor(image))
        yield {"index": indices, "view": views, "pixels": torch.stack(pixels) if pixels else None, "errors": errors}


def gpu_batches(loaded, rows: pd.DataFrame, interventions, batch_size: int, num_workers: int):
    """The CUDA input path of embed_rows; PIL throughout when the preprocess has no tensor form."""
    try:
        TensorPreprocess(loaded.preprocess)
    except ValueError:
        return pil_batches(loaded, rows, interventions, batch_size, num_workers)
    return tensor_batches(rows, loaded.preprocess, loaded.device, interventions, batch_size, num_workers)


def assign_devices(n_tasks: int, requested: str = "auto", visible_gpus: int | None = None) -> list[str]:
    """The device of each embedding task: round robin over the visible GPUs (default: this
    host's) when the device is 'auto' or 'cuda' and there are several (one model per GPU, each
    task bound to one), else the requested device for all (a named device such as cuda:1 is honoured)."""
    if visible_gpus is None:
        visible_gpus = torch.cuda.device_count()
    if requested in ("auto", "cuda") and visible_gpus > 1:
        return [f"cuda:{number % visible_gpus}" for number in range(n_tasks)]
    return [requested] * n_tasks
