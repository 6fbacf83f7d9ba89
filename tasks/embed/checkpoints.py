"""Checkpoint files checked before any work: readable without running code, and shaped like the model.

`check_checkpoint` reads the file with `torch.load(weights_only=True)` (a pickle's code is never
run: a file that needs more than tensors is refused) onto the meta device (no data is read into
memory), then lets open_clip's own loader match it against the architecture built on the meta
device, so a file passes here exactly when `--pretrained FILE` will load later.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import warnings
from collections.abc import Mapping

import open_clip
import torch

import tasks.embed.models  # noqa: F401  (registers the ICM-Tiny architecture with open_clip)
from tasks.errors import InputError

SAFETENSORS = ".safetensors"
# open_clip's loader takes a bare state dict or one under "state_dict"; training scripts often save these too
CONTAINER_KEYS = ("state_dict", "model", "model_state_dict", "state_dict_ema")
SHOWN = 3  # keys named per kind of mismatch


@contextlib.contextmanager
def _quiet():
    """open_clip logs that the meta model has random weights and torch warns about meta copies and
    old pickle protocols: all true, none news here, and a failed check must print one line only."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)


@functools.lru_cache(maxsize=4)
def meta_model(name: str) -> torch.nn.Module:
    """The architecture with shapes and no data: no weights read, no memory used."""
    with _quiet():
        return open_clip.create_model(name, device="meta")


def _kind_of_file(path: str) -> str:
    with open(path, "rb") as handle:
        head = handle.read(512)
    if head.startswith(b"PK\x03\x04"):
        return "a torch.save archive"
    if head[:1] == b"\x80":
        return "a Python pickle"
    try:
        head.decode("utf-8")
        return "a text file"
    except UnicodeDecodeError:
        return "a binary file of an unknown format"


def _read(path: str):
    """The file's contents as meta tensors (shapes, no data), never running a pickle's code."""
    if path.endswith(SAFETENSORS):
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(path, framework="pt") as handle:
                return {key: torch.empty(handle.get_slice(key).get_shape(), device="meta") for key in handle.keys()}
        except (SafetensorError, OSError) as error:
            raise InputError(f"is not a readable safetensors file ({error})") from error
    try:
        return torch.load(path, map_location="meta", weights_only=True)
    except Exception as error:  # torch reports bad files with many exception types
        kind = _kind_of_file(path)
        if "Weights only load failed" in str(error):
            found = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
            holds = f" (it refers to {found.group(1)})" if found else ""
            raise InputError(
                f"is not a weights-only checkpoint: {kind} that needs Python objects beyond tensors{holds}; "
                "torch refused to unpickle it, so none of its code ran. Save only tensors: "
                "torch.save(model.state_dict(), FILE)"
            ) from error
        if "TorchScript" in str(error):
            raise InputError("is a TorchScript archive (torch.jit.save), which cannot be read without running its "
                             "code; save its state dict instead: torch.save(model.state_dict(), FILE)") from error
        problem = "truncated or corrupt" if kind == "a torch.save archive" else f"{kind}, not a PyTorch checkpoint"
        first_sentence = str(error).split(". ")[0]
        raise InputError(f"is {problem} (torch.load: {type(error).__name__}: {first_sentence})") from error


def _tensors(value) -> bool:
    return isinstance(value, Mapping) and bool(value) and all(isinstance(v, torch.Tensor) for v in value.values())


def _state_dict(contents) -> tuple[dict, str | None]:
    """(the tensors, the container key they sit under, if any)."""
    if isinstance(contents, Mapping):
        for key in CONTAINER_KEYS:
            if _tensors(contents.get(key)):
                return dict(contents[key]), key
    if _tensors(contents):
        return dict(contents), None
    raise InputError(f"holds {type(contents).__name__} {_preview(contents)}, not a state dict "
                     "(a mapping of parameter names to tensors)")


def _preview(contents) -> str:
    if isinstance(contents, Mapping):
        return f"with keys {list(contents)[:5]}"
    return f"of length {len(contents)}" if hasattr(contents, "__len__") else ""


def _mismatch(state: dict, model: torch.nn.Module) -> list[str]:
    """What differs between a state dict and the architecture, in a few words each; empty if nothing."""
    expected = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    state = {key.removeprefix("module."): value for key, value in state.items()}
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    shapes = [f"{key} {list(state[key].shape)} vs {list(shape)}" for key, shape in expected.items()
              if key in state and tuple(state[key].shape) != shape]
    return [f"{len(keys)} {what} (e.g. {', '.join(keys[:SHOWN])})" for keys, what in
            ((missing, "missing keys"), (unexpected, "unexpected keys"), (shapes, "wrong shapes, file vs model"))
            if keys]


def check_checkpoint(path: str, model_name: str) -> None:
    """Raise InputError naming the file and what is wrong, unless open_clip will load it into model_name."""
    def fail(problem: str, error: Exception | None = None):
        raise InputError(f"checkpoint file {path!r} {problem}", "pretrained") from error

    if os.path.isdir(path):
        fail("is a folder; pass the checkpoint file inside it")
    if not os.access(path, os.R_OK):
        fail("cannot be read (permission denied)")
    if os.path.getsize(path) == 0:
        fail("is empty (0 bytes); download or copy it again")
    try:
        with _quiet():
            state, container = _state_dict(_read(path))
    except InputError as error:
        fail(str(error), error)
    model = meta_model(model_name)
    try:
        # the loader that --pretrained FILE goes through later, here into a model without data
        # (safetensors cannot load onto the meta device: their tensors are read, then dropped)
        with _quiet():
            open_clip.load_checkpoint(model, path, strict=True, device="cpu" if path.endswith(SAFETENSORS) else "meta")
    except Exception as error:  # open_clip reports mismatches as RuntimeError, AssertionError, KeyError, …
        problems = _mismatch(state, model)
        if container not in (None, "state_dict") and not problems:
            fail(f"keeps its weights under the key {container!r}, which open_clip does not read; save them "
                 f"on their own: torch.save(torch.load(FILE)[{container!r}], NEW_FILE)", error)
        fail(f"does not fit model {model_name!r}: {'; '.join(problems) or f'{type(error).__name__}: {error}'}; "
             "pass the --model it was trained as, or a checkpoint of this model", error)
