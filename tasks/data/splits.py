"""How a dataset is divided: each domain's images into training ("in") and validation ("out") splits, and the
classes into base and novel for the open-class protocol.

Two split rules, chosen with `--split`:

- `stable`: the images with the smallest seeded hashes of their ids are held out, round(holdout * n) per
  domain. One image never moves when another is added, and listing order never matters. Open-class uses
  the same split.
- `domainbed`: DomainBed's own split (`domainbed/lib/misc.py`, `scripts/train.py`), the one behind every
  published DomainBed number and the authors' released code. A domain's images in torchvision ImageFolder
  order (class folders sorted, files sorted within each) are shuffled by `RandomState(seed_hash(trial_seed,
  env_i))`, env_i being the domain's index among the sorted domains; the first int(holdout * n) are "out".
  Open-class, as the authors run it, cuts each domain into its base-class and novel-class images and splits
  each part on its own, seeded with seed_hash(trial_seed, env_i, "base") and (…, "open").
"""
from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

from tasks.vocabulary import DOMAINBED, OPEN_CLASS, STABLE, TRAIN, VAL

OPEN_RATIO = 0.5  # the share of novel classes in open-class


def split_base_novel(classes, open_ratio: float = OPEN_RATIO) -> tuple[list[str], list[str]]:
    """Base = the first int((1 - open_ratio) * C) of the sorted class names, novel = the rest."""
    ordered = sorted(classes)
    n_base = int((1 - open_ratio) * len(ordered))
    return ordered[:n_base], ordered[n_base:]


def seed_hash(*args) -> int:
    """DomainBed's misc.seed_hash: an integer seed derived from any arguments."""
    return int(hashlib.md5(str(args).encode("utf-8")).hexdigest(), 16) % (2**31)


def held_out_positions(n: int, holdout: float, seed: int) -> np.ndarray:
    """DomainBed's misc.split_dataset: the positions of the int(holdout * n) "out" items of n."""
    keys = list(range(n))
    np.random.RandomState(seed).shuffle(keys)
    return np.array(keys[: int(n * holdout)], dtype=np.int64)


def stable_split(sample_ids: pd.Series, holdout: float, seed: int) -> np.ndarray:
    """Exactly round(holdout * n) ids become "val": those with the smallest seeded hashes.

    Depends only on the ids and the seed, so listing order, machine and run never change it.
    """
    keys = sample_ids.map(lambda sample_id: hashlib.sha256(f"{seed}:{sample_id}".encode()).hexdigest())
    n_val = int(round(holdout * len(sample_ids)))
    val = set(keys.sort_values().index[:n_val])
    return np.array([VAL if index in val else TRAIN for index in sample_ids.index])


def domainbed_split(count: int, holdout: float, seed: int) -> np.ndarray:
    """TRAIN/VAL for `count` items in ImageFolder order, as DomainBed splits them."""
    split = np.full(count, TRAIN, dtype=object)
    split[held_out_positions(count, holdout, seed)] = VAL
    return split


def imagefolder_order(samples: pd.DataFrame) -> pd.DataFrame:
    """A domain's rows in torchvision ImageFolder order: class folders sorted, then file names (Python's string
    order, not the order of the joined path: 'cat' and all its files come before 'cat-big')."""
    keys = sorted(range(len(samples)), key=lambda i: (samples["class"].iat[i], samples["file"].iat[i]))
    return samples.iloc[keys]


def assign_splits(samples: pd.DataFrame, rule: str, holdout: float, seed: int, base_classes,
                  env_index: int | None = None) -> pd.DataFrame:
    """`split` (domain shift, dataset shift) and `open_split` (open class) of every row of `samples` (columns
    sample_id, domain, class, file), under the rule. Domains are numbered in sorted order (env_i), unless
    `samples` holds one domain whose number among the dataset's is `env_index`."""
    samples = samples.assign(split=TRAIN, open_split=TRAIN)
    domains = sorted(samples["domain"].unique())
    numbered = zip([env_index] if env_index is not None else range(len(domains)), domains)
    for env_i, domain in numbered:
        rows = samples[samples["domain"] == domain]
        if rule == STABLE:
            split = stable_split(rows["sample_id"], holdout, seed)
            samples.loc[rows.index, "split"] = split
            samples.loc[rows.index, "open_split"] = split
            continue
        ordered = imagefolder_order(rows)
        samples.loc[ordered.index, "split"] = domainbed_split(len(ordered), holdout, seed_hash(seed, env_i))
        is_base = ordered["class"].isin(list(base_classes))
        for part, tag in ((ordered[is_base], "base"), (ordered[~is_base], "open")):
            samples.loc[part.index, "open_split"] = domainbed_split(len(part), holdout, seed_hash(seed, env_i, tag))
    return samples


def split_column(protocol: str, rule: str) -> str:
    """The column of the split table a protocol trains, selects and tests by."""
    return "open_split" if protocol == OPEN_CLASS and rule == DOMAINBED else "split"
