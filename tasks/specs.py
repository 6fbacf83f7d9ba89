"""What each stage is asked to do: one small typed object per stage.

The run's configuration (`flows.config.run_config.RunConfig`) holds every option as the user gave
it, and hands each stage one of these: which data and how it splits (`DataSpec`), what to embed
with which model (`EmbedSpec`), how CLIP-ICM fits and predicts (`Recipe`), and how (lambda, k)
is chosen (`SelectionSpec`). A preset is resolved into them once; no stage branches on its name.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from tasks.data.interventions import InterventionConfig
from tasks.vocabulary import TRAINING_DOMAIN

DEFAULT_SHARD_SIZE = 8192


@dataclass(frozen=True)
class DataSpec:
    """A dataset and how each of its domains splits into training and validation images."""

    dataset: str  # a folder URL, or the built-in dataset's name
    store: str  # where the built-in dataset is written
    holdout: float = 0.2  # per-domain validation share
    split_seed: int = 0
    class_policy: str = "strict"  # when domains disagree on classes: fail, or keep the shared ones


@dataclass(frozen=True)
class EmbedSpec:
    """What to embed with which model (images, interventions, prompts), where it is stored and how it runs."""

    model: str
    pretrained: str  # an open_clip tag, a checkpoint file, or RANDOM_WEIGHTS
    store: str
    interventions: InterventionConfig = field(default_factory=InterventionConfig)
    templates: str = "simple"  # zero-shot prompt templates: a built-in set or a file
    class_names: str | None = None  # class display names: 'imagenet', a CSV, or the folder names
    text_pairs: str | None = None  # user caption pairs instead of the shipped prompt bank
    device: str = "auto"
    precision: str = "auto"
    batch_size: int | None = None
    num_workers: int | None = None
    shard_size: int = DEFAULT_SHARD_SIZE  # images per embedding task


@dataclass(frozen=True)
class Recipe:
    """How CLIP-ICM is fitted on the embeddings, and how it and CLIP predict."""

    normalize: bool = True  # L2-normalise image and caption-pair embeddings as they are read
    order: str = "largest"  # eigenvectors kept: largest (the method) or released (the authors' code)
    use_text: bool = True  # caption-pair differences beside the image ones
    zero_shot_normalizes_images: bool = True  # False: raw image embeddings, as the authors' released zero-shot
    probe: str = "torch"  # linear-probe solver: torch (L-BFGS) or sklearn
    probe_c: float = 0.316  # scikit-learn's C
    test_split: str = "all"  # target images tested: all, "in" or "out" (tasks.vocabulary.TEST_SPLITS)


@dataclass(frozen=True)
class SelectionSpec:
    """How (lambda, k) is chosen: a grid, scored by a model-selection rule."""

    lams: tuple[float, ...] = (1.0,)
    ks: tuple[int, ...] | None = None  # None: fractions of the embedding width (tasks.fit.selection.default_ks)
    rule: str = TRAINING_DOMAIN
