"""open_clip models: name/weights validation, loading on the best device, encoding."""
from __future__ import annotations

import difflib
import functools
import hashlib
import json
import logging
import os
import threading
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import open_clip
import torch

from icm_core.devices import resolve_device
from tasks.errors import InputError
from tasks.vocabulary import HF_HUB, LOCAL_DIR, RANDOM_WEIGHTS, named_weights, random_weights, weights_of

log = logging.getLogger(__name__)

# A 2-layer, 32-px architecture for tests and smoke runs; never for results.
open_clip.add_model_config(Path(__file__).parent / "model_configs")

# shard tasks run in threads: load each model once, and never seed torch's RNG concurrently
_LOAD_LOCK = threading.Lock()


@functools.lru_cache(maxsize=None)
def _file_digest(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


FOLDER_CONFIG = "open_clip_config.json"  # what such a folder or repository holds: model_cfg and preprocess_cfg
# the weight files open_clip looks for in a folder, in its order of preference
FOLDER_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.safetensors", "open_clip_pytorch_model.bin",
                  "open_clip_pytorch_model.pth", "model.safetensors", "pytorch_model.bin", "pytorch_model.pth",
                  "model.pth")


def folder_config(folder: str) -> dict:
    """A model folder's open_clip_config.json, read without network; InputError naming the file if it is unusable."""
    path = Path(folder) / FOLDER_CONFIG
    if not Path(folder).is_dir():
        raise InputError(f"{LOCAL_DIR}{folder}: no such folder; pass a folder that `clip-icm export` (or open_clip's "
                         "push_to_hf_hub) wrote", "model")
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError as error:
        raise InputError(f"{folder} holds no {FOLDER_CONFIG}, so it is not an open_clip model folder; pass a folder "
                         "that `clip-icm export` wrote", "model") from error
    except (OSError, ValueError) as error:
        raise InputError(f"{path} cannot be read as JSON ({error}); export the model again", "model") from error
    if not isinstance(config, dict) or not isinstance(config.get("model_cfg"), dict):
        raise InputError(f"{path} has no model_cfg object, so open_clip cannot build a model from it", "model")
    return config


def folder_weights(folder: str) -> Path:
    """The weight file open_clip loads from a model folder."""
    for name in FOLDER_WEIGHTS:
        if (Path(folder) / name).is_file():
            return Path(folder) / name
    raise InputError(f"{folder} holds no weights ({FOLDER_WEIGHTS[0]} or another name open_clip reads); "
                     "export the model again", "model")


def hub_config(repo: str) -> dict:
    """A hub repository's open_clip_config.json (needs the hub, or its files in the local Hugging Face cache)."""
    from huggingface_hub import hf_hub_download

    try:
        with open(hf_hub_download(repo, FOLDER_CONFIG)) as handle:
            return json.load(handle)
    except Exception as error:  # offline, no such repository, no such file: the hub reports each its own way
        raise InputError(f"{HF_HUB}{repo}: cannot read its {FOLDER_CONFIG} from the Hugging Face hub "
                         f"({type(error).__name__}); check the name, or the network (export the model to a folder "
                         f"and pass {LOCAL_DIR}DIR where there is none)", "model") from error


def model_config(name: str) -> dict:
    """The architecture of an open_clip name (built in, local-dir: or hf-hub:), as open_clip resolves it."""
    if name.startswith(LOCAL_DIR):
        return folder_config(name[len(LOCAL_DIR):])["model_cfg"]
    if name.startswith(HF_HUB):
        return hub_config(name[len(HF_HUB):])["model_cfg"]
    check_model(name, RANDOM_WEIGHTS)
    return open_clip.get_model_config(name)


def check_model(name: str, pretrained: str) -> str:
    """Validate a model name and weights before any work; return the weights' identity.

    pretrained is an open_clip tag, a local checkpoint file, or "none" (random weights).
    The identity goes into cache keys: the tag, "none", or the checkpoint's content hash.
    A local-dir:DIR or hf-hub:ORG/NAME model carries its weights (pretrained is not used): the
    identity is the folder's weight file's content hash, or the hub repository's name.
    """
    if name.startswith(LOCAL_DIR):
        folder = name[len(LOCAL_DIR):]
        folder_config(folder)
        return f"file-sha256:{_file_digest(str(folder_weights(folder).resolve()))}"
    if name.startswith(HF_HUB):
        if name.count("/") != 1 or not all(name[len(HF_HUB):].split("/")):
            raise InputError(f"{name!r} is not {HF_HUB}ORG/NAME", "model")
        return name
    models = open_clip.list_models()
    if name not in models:
        close = difflib.get_close_matches(name, models, n=5, cutoff=0.5)
        raise InputError(f"unknown open_clip model {name!r}; close names: {close or 'none'} (open_clip.list_models())",
                         "model")
    if pretrained == RANDOM_WEIGHTS:
        return RANDOM_WEIGHTS
    if os.path.isfile(pretrained):
        return f"file-sha256:{_file_digest(pretrained)}"
    tags = open_clip.list_pretrained_tags_by_model(name)
    if pretrained not in tags:
        close = difflib.get_close_matches(pretrained, tags, n=5, cutoff=0.3) or tags[:8]
        raise InputError(
            f"pretrained {pretrained!r} is neither an open_clip tag of {name!r} nor an existing checkpoint file; "
            f"tags for {name!r}: {close or 'none'}; or pass a local file path, or 'none' for random weights",
            "pretrained")
    return pretrained


@dataclass
class LoadedModel:
    name: str
    pretrained: str
    weights_id: str
    device: str
    model: torch.nn.Module
    preprocess: object
    tokenizer: object

    @property
    def weights(self) -> str:
        """The weights as error messages name them (tasks.vocabulary.named_weights)."""
        return named_weights(self.name, self.pretrained, self.weights_id)

    def autocast(self, precision: str = "auto"):
        dtype = autocast_dtype(self.device, precision)
        return torch.autocast(self.device.split(":")[0], dtype=dtype) if dtype is not None else nullcontext()

    # no_grad, not inference_mode: under inference_mode a CPU's bf16 autocast ran ViT-B-32 1.6x slower (same values)
    @torch.no_grad()
    def encode_images(self, pixels: torch.Tensor, precision: str = "auto") -> np.ndarray:
        """The model's raw image embeddings (not normalised: that is the reader's choice), float32."""
        with self.autocast(precision):
            features = self.model.encode_image(pixels.to(self.device, non_blocking=True), normalize=False)
        return features.float().cpu().numpy()

    @torch.no_grad()
    def encode_texts(self, texts, precision: str = "auto", batch_size: int = 256) -> np.ndarray:
        """The text encoder's raw output (not normalised: that is the reader's choice), float32."""
        chunks = []
        for start in range(0, len(texts), batch_size):
            tokens = self.tokenizer(list(texts[start : start + batch_size])).to(self.device)
            with self.autocast(precision):
                chunks.append(self.model.encode_text(tokens, normalize=False).float().cpu().numpy())
        return np.concatenate(chunks)


def cpu_has_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 natively (AVX512-BF16 or AMX); elsewhere bf16 is emulated, and slower."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # torch.cpu's own probes (private, so guarded)
    return any(getattr(torch.cpu, check, lambda: False)() for check in checks)


def autocast_dtype(device: str, precision: str = "auto"):
    """The autocast dtype for a device and RunConfig.precision; None runs in fp32.

    auto is the half precision the hardware runs natively, as CLIP_benchmark's default amp does: on a CUDA device
    bf16 where supported, else fp16; on a CPU with native bf16, bf16 (twice float32's speed for ViT-B-32 on an
    AVX512-BF16 EPYC); fp32 on any other CPU."""
    if precision == "fp32":
        return None
    if precision == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if device == "cpu" and cpu_has_bf16() else None
    return {"fp16": torch.float16, "bf16": torch.bfloat16}[precision]


def effective_precision(device: str, precision: str = "auto") -> str:
    """The precision a device embeds at for RunConfig.precision: fp32, bf16 or fp16 (what cache keys hold)."""
    dtype = autocast_dtype(resolve_device(device), precision)
    return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


def host_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def default_loader_workers(device: str, visible_gpus: int | None = None) -> int:
    """DataLoader workers: none on CPU (the model uses every core); on a GPU, this GPU's share of
    the host's cores less one for the process that feeds it, capped where more stop helping."""
    if not device.startswith("cuda"):
        return 0
    gpus = max(1, visible_gpus if visible_gpus is not None else torch.cuda.device_count())
    return max(1, min(16, host_cores() // gpus - 1))


def default_batch_size(device: str) -> int:
    """Images per batch when none is given: large enough to fill a GPU, small on CPU."""
    return 256 if device.startswith("cuda") else 64


def load_model(name: str, pretrained: str, device: str = "auto") -> LoadedModel:
    """open_clip.create_model_and_transforms, once per process for each (name, weights, device)."""
    with _LOAD_LOCK:
        return _load_model(name, pretrained, resolve_device(device))


@functools.lru_cache(maxsize=4)
def _load_model(name: str, pretrained: str, device: str) -> LoadedModel:
    weights_id = check_model(name, pretrained)
    weights = weights_of(name, pretrained)
    if random_weights(name, pretrained):
        log.warning("=" * 72)
        log.warning("RANDOM WEIGHTS for %s (--pretrained none): a smoke run, not a result", name)
        log.warning("=" * 72)
    try:
        # seeded so that random-weights runs are reproducible and resumable
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model, _, preprocess = open_clip.create_model_and_transforms(
                name, pretrained=None if weights in (None, RANDOM_WEIGHTS) else weights, device=device)
    except RuntimeError as error:
        raise RuntimeError(
            f"could not load weights {pretrained!r} for model {name!r}: {error}. Without internet access, "
            f"download the checkpoint on another machine and pass its local path as --pretrained /path/to/file"
        ) from error
    model.eval()
    return LoadedModel(name, pretrained, weights_id, device, model, preprocess, open_clip.get_tokenizer(name))
