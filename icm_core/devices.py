"""Which torch device work runs on: one rule for the package (embedding, probes)."""
from __future__ import annotations

import torch


def resolve_device(requested: str = "auto") -> str:
    """auto: a CUDA GPU when there is one, then Apple's MPS, then the CPU; any other value as given."""
    if requested != "auto":
        return requested
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"
