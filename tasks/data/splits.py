"""How a dataset is divided: each domain's images into training and validation splits, and the classes into
base and novel for the open-class protocol."""
from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd


def _split_key(seed: int, sample_id: str) -> str:
    return hashlib.sha256(f"{seed}:{sample_id}".encode()).hexdigest()


def assign_split(sample_ids: pd.Series, holdout: float, seed: int) -> np.ndarray:
    """Exactly round(holdout * n) ids become "val": those with the smallest seeded hashes.

    Depends only on the ids and the seed, so listing order, machine and run never change it.
    """
    keys = sample_ids.map(lambda sample_id: _split_key(seed, sample_id))
    n_val = int(round(holdout * len(sample_ids)))
    val = set(keys.sort_values().index[:n_val])
    return np.array(["val" if index in val else "train" for index in sample_ids.index])


def split_base_novel(classes) -> tuple[list[str], list[str]]:
    """Base = the first half (floor) of the sorted class names, novel = the rest."""
    ordered = sorted(classes)
    return ordered[: len(ordered) // 2], ordered[len(ordered) // 2 :]
