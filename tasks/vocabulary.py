"""The names every stage, report and command shares, each spelled once.

Protocols, views, methods, selection rules, test splits, the random-weights tag, which models carry
their own weights, and how a run, a dataset and its weights are labelled in titles, tags and
artifact keys. Nothing here imports
more than the standard library and python-slugify, so a command that only prints tables loads it
at no cost.
"""
from __future__ import annotations

import re

from slugify import slugify

# ---- protocols: how a run tests out of distribution (the CLI's --protocol and every report's `protocol`)
DOMAIN_SHIFT = "domain-shift"  # leave one domain out
OPEN_CLASS = "open-class"  # fit on base classes, zero-shot the target over base + novel names
DATASET_SHIFT = "dataset-shift"  # fit on one dataset, test on others
BOTH = "both"  # domain-shift, then open-class
# not a protocol: the projection a run fits on every domain (and class), what a user deploys (`clip-icm export`)
FINAL = "final"
PROTOCOL_CHOICES = (DOMAIN_SHIFT, OPEN_CLASS, BOTH, DATASET_SHIFT)


# runs written before 0.3 spelled them with underscores; readers of old runs map them here
LEGACY_PROTOCOLS = {"domain_shift": DOMAIN_SHIFT, "open_class": OPEN_CLASS, "dataset_shift": DATASET_SHIFT}


def protocols(choice: str) -> tuple[str, ...]:
    """The protocols a --protocol choice runs, in order."""
    return (DOMAIN_SHIFT, OPEN_CLASS) if choice == BOTH else (choice,)


def protocol_title(protocol: str) -> str:
    """'domain shift', for headings."""
    return protocol.replace("-", " ")


# ---- the two views of an image: as it is, and with one intervention applied
ORIGINAL, INTERVENED = "original", "intervened"
VIEWS = (ORIGINAL, INTERVENED)

# ---- methods, each scored on the same cached embeddings; every CLIP-ICM method beside its CLIP baseline
CLIP_ZERO_SHOT, CLIP_LINEAR_PROBE = "clip_zero_shot", "clip_linear_probe"
CLIP_ICM_ZERO_SHOT, CLIP_ICM_LINEAR_PROBE = "clip_icm_zero_shot", "clip_icm_linear_probe"
# CLIP-ICM's zero-shot as open_clip's users (and CLIP_benchmark) score the exported model: project, then normalise;
# reported beside the recipe's (normalise, then project) where they can differ (k < d)
CLIP_ICM_ZERO_SHOT_OPEN_CLIP = "clip_icm_zero_shot_open_clip"
METHODS = (CLIP_ZERO_SHOT, CLIP_LINEAR_PROBE, CLIP_ICM_ZERO_SHOT, CLIP_ICM_ZERO_SHOT_OPEN_CLIP, CLIP_ICM_LINEAR_PROBE)
# (CLIP, CLIP-ICM) per way of predicting, as reports name them
METHOD_PAIRS = {"zero-shot": (CLIP_ZERO_SHOT, CLIP_ICM_ZERO_SHOT), "linear probe": (CLIP_LINEAR_PROBE, CLIP_ICM_LINEAR_PROBE)}
# every CLIP-ICM method's CLIP baseline, which its Δ, interval and McNemar p are over: the pairs', and CLIP's zero-shot
# for the exported model's (it predicts the same way)
BASELINES = {icm: clip for clip, icm in METHOD_PAIRS.values()} | {CLIP_ICM_ZERO_SHOT_OPEN_CLIP: CLIP_ZERO_SHOT}

# ---- DomainBed's model-selection rules for (lambda, k)
TRAINING_DOMAIN, LEAVE_ONE_DOMAIN_OUT, ORACLE = "training-domain", "leave-one-domain-out", "oracle"
SELECTION_RULES = (TRAINING_DOMAIN, LEAVE_ONE_DOMAIN_OUT, ORACLE)

# ---- how each domain splits into training and validation images (tasks.data.splits)
DEFAULT_DATASET_SPLIT = "test"  # the split of a shard set read unless another is chosen, as CLIP_benchmark's
STABLE, DOMAINBED = "stable", "domainbed"
SPLIT_RULES = (STABLE, DOMAINBED)

# ---- which target images are tested: every one, DomainBed's 80% "in" split, or the released code's 20% "out" split
TRAIN, VAL = "train", "val"  # a domain's two splits: "in" and "out" in DomainBed's words
TEST_SPLITS = {"all": None, "in": TRAIN, "out": VAL}

# ---- weights and datasets
RANDOM_WEIGHTS = "none"  # --pretrained none: random weights, a smoke run
SMOKE_TAG = "smoke"
ROTATED_DIGITS = "rotated-digits"  # the built-in dataset


def dataset_label(dataset: str) -> str:
    """The dataset folder's name (the last part of its URL), or the built-in dataset's name."""
    return dataset.rstrip("/").rsplit("/", 1)[-1]


LOCAL_DIR, HF_HUB = "local-dir:", "hf-hub:"  # open_clip's names of a model folder and of a hub repository


def carries_weights(model: str) -> bool:
    """A local-dir: or hf-hub: name brings its own weights: open_clip ignores `pretrained` for it."""
    return model.startswith((LOCAL_DIR, HF_HUB))


def weights_of(model: str, pretrained: str) -> str | None:
    """The weights a model loads as --pretrained gave them (a tag, a checkpoint file or RANDOM_WEIGHTS); None for a
    model that carries its own, whose name then names its weights."""
    return None if carries_weights(model) else pretrained


def named_weights(model: str, pretrained: str, weights_id: str) -> str:
    """The weights a model loads, in full: --pretrained as given, or, for a model carrying its own, their identity
    (tasks.embed.models.check_model's: a local-dir: folder's file hash, a hub repository's name)."""
    return weights_of(model, pretrained) or weights_id


def random_weights(model: str, pretrained: str) -> bool:
    """A smoke run: random weights, never a result."""
    return weights_of(model, pretrained) == RANDOM_WEIGHTS


def weights_label(model: str, pretrained: str) -> str | None:
    """An open_clip tag or 'none' as is; a checkpoint file by its file name; None for a model carrying its weights."""
    weights = weights_of(model, pretrained)
    return None if weights is None else weights.replace("\\", "/").rsplit("/", 1)[-1]


def model_folder(model: str) -> str:
    """A model name as one folder of the store: open_clip's built-in names as they are; local-dir:/path/to/DIR and
    hf-hub:ORG/NAME with their slashes and colon replaced (the weights' identity, not the name, keys the files)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", model)


def model_label(model: str, pretrained: str) -> str:
    """'ViT-B-16 (openai)': a model and its weights in tables; a local-dir: or hf-hub: model by its name alone."""
    weights = weights_label(model, pretrained)
    return model if weights is None else f"{model} ({weights})"


def run_label(dataset: str, model: str, pretrained: str) -> str:
    """'PACS · ViT-B-16 (openai)': a run in titles."""
    return f"{dataset_label(dataset)} · {model_label(model, pretrained)}"


def run_tags(dataset: str, model: str, pretrained: str) -> list[str]:
    """model:…, pretrained:… (none for a model carrying its weights), dataset:… (filters in the UI's run list), and
    `smoke` for random weights."""
    label = weights_label(model, pretrained)
    weights = [f"pretrained:{label}"] if label else []
    tags = [f"model:{model}", *weights, f"dataset:{dataset_label(dataset)}"]
    return tags + [SMOKE_TAG] if random_weights(model, pretrained) else tags


def artifact_key(kind: str, dataset: str, model: str, pretrained: str) -> str:
    """One key per kind x dataset x model x weights, so the histories of different jobs never mix.
    Prefect allows lowercase letters, digits and dashes only."""
    return slugify(f"clip-icm-{kind}-{dataset_label(dataset)}-{model_label(model, pretrained)}")


def trend_key(config_name: str) -> str:
    """One trend per config (STORE/runs/NAME): two configs of one model and dataset (another split, other λ) never
    share a trend."""
    return slugify(f"clip-icm-trend-{config_name}")
