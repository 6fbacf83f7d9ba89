"""The exported model's folder, in open_clip's hub layout: what `create_model_and_transforms("local-dir:DIR")` reads.

    DIR/open_clip_config.json         {"model_cfg": …, "preprocess_cfg": …, "clip_icm": where it came from}
    DIR/open_clip_model.safetensors   the weights, the projection folded in
    DIR/tokenizer files               only for a model whose tokenizer is a Hugging Face one (open_clip's own BPE
                                      tokenizer ships with open_clip)
    DIR/README.md                     the model card

The folder is written under a temporary name next to DIR and renamed when complete: a stopped export leaves
no half-written model that open_clip would load.
"""
from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

import torch
from safetensors.torch import save_file

from tasks.embed.models import FOLDER_CONFIG, FOLDER_WEIGHTS
from tasks.errors import InputError

WEIGHTS_FILE = FOLDER_WEIGHTS[0]  # the name open_clip prefers
CARD_FILE = "README.md"
PROVENANCE_KEY = "clip_icm"  # open_clip ignores keys of its config file other than its own


def check_out(out: str) -> Path:
    """A local folder that does not exist yet, or an empty one (open_clip reads local-dir: from a local disk)."""
    if "://" in out:
        raise InputError(f"{out!r} is a URL; open_clip loads local-dir: from a local folder: pass a path", "out")
    path = Path(out)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise InputError(f"{out} already exists and is not an empty folder; pass a new folder, or remove it first",
                         "out")
    return path


def write_folder(out: str, model: torch.nn.Module, model_cfg: dict, preprocess_cfg: dict, tokenizer,
                 provenance: dict, card: str, check=None) -> Path:
    """Write the folder (atomically: complete, or not at all) and return its path; `check(folder)` runs on the
    complete folder before it takes its name, and a failure leaves nothing behind."""
    path = check_out(out).absolute()
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    staging.mkdir()
    try:
        save_file({key: value.detach().contiguous().cpu() for key, value in model.state_dict().items()},
                  staging / WEIGHTS_FILE)
        if hasattr(tokenizer, "save_pretrained"):  # a Hugging Face tokenizer: local-dir: loads it from the folder
            tokenizer.save_pretrained(str(staging))
        config = {"model_cfg": model_cfg, "preprocess_cfg": preprocess_cfg, PROVENANCE_KEY: provenance}
        (staging / FOLDER_CONFIG).write_text(json.dumps(config, indent=2) + "\n")
        (staging / CARD_FILE).write_text(card)
        if check is not None:
            check(staging)
        if path.exists():
            path.rmdir()  # empty: check_out said so
        os.rename(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return path
