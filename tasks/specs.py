"""What each stage is asked to do: one small typed object per stage.

The run's configuration (`flows.config.run_config.RunConfig`) holds every option as the user gave
it, and hands each stage one of these: which data and how it splits (`DataSpec`), what to embed
with which model (`EmbedSpec`), how CLIP-ICM fits and predicts (`Recipe`), and how (lambda, k)
is chosen (`SelectionSpec`). A preset is resolved into them once; no stage branches on its name.

The image interventions an EmbedSpec asks for are an `InterventionConfig`: the families, their
parameters (checked here, before anything is embedded) and the per-sample draw, keyed by (seed,
sample id) so that the result never depends on batch order, batch size or worker count. Applying
them to pixels is the embedding stage's (`tasks.embed.intervene`); the caption pairs of the text
interventions are prompts (`tasks.data.prompts`).
"""
from __future__ import annotations

import hashlib
import json
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from tasks.errors import InputError
from tasks.store.names import stable_hash
from tasks.vocabulary import DEFAULT_DATASET_SPLIT, STABLE, TRAINING_DOMAIN, dataset_label

DEFAULT_SHARD_SIZE = 8192


# Documented defaults; any entry can be overridden through InterventionConfig.params.
DEFAULT_PARAMS = {
    "color_jitter": {"brightness": 0.5, "contrast": 0.5, "saturation": 0.5, "hue": 0.3},
    "grayscale": {},
    "gaussian_blur": {"kernel_size": 9, "sigma": (1.0, 3.0)},
    "invert": {},
    "posterize": {"bits": (2, 4)},
    "solarize": {"threshold": (64, 192)},
    "equalize": {},
}
FAMILIES = tuple(DEFAULT_PARAMS)


def _number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and np.isfinite(value)


def _number_in(low: float, high: float):
    """A rule: a finite number in [low, high]; returns the problem, or None."""
    def rule(value):
        return None if _number(value) and low <= value <= high else f"a number in [{low}, {high}]"
    return rule


def _range_in(low: float, high: float, integer: bool = False):
    """A rule: a [low, high] pair drawn from uniformly, inside [low, high] bounds and in order."""
    kind = "integers" if integer else "numbers"

    def rule(value):
        if (not isinstance(value, (list, tuple)) or len(value) != 2
                or not all(_number(v) and (not integer or isinstance(v, (int, np.integer))) for v in value)):
            return f"a [low, high] pair of {kind} in [{low}, {high}] (a fixed value: [x, x])"
        if not low <= value[0] <= value[1] <= high:
            return f"a [low, high] pair with {low} <= low <= high <= {high}"
        return None
    return rule


MAX_KERNEL = 63  # torchvision pads by half the kernel, which must stay below the image side: 32 px and up


def _odd_kernel(value):
    sizes = value if isinstance(value, (list, tuple)) and len(value) == 2 else [value]
    if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and 0 < v <= MAX_KERNEL and v % 2 == 1
           for v in sizes):
        return None
    return f"an odd integer from 1 to {MAX_KERNEL} (or a pair of them), e.g. 9"


# what each parameter may be: the checks torchvision would otherwise make mid-embedding, or never
PARAMETER_RULES = {
    ("color_jitter", "brightness"): _number_in(0, 1),
    ("color_jitter", "contrast"): _number_in(0, 1),
    ("color_jitter", "saturation"): _number_in(0, 1),
    ("color_jitter", "hue"): _number_in(0, 0.5),
    ("gaussian_blur", "kernel_size"): _odd_kernel,
    ("gaussian_blur", "sigma"): _range_in(1e-3, 100),
    ("posterize", "bits"): _range_in(1, 8, integer=True),
    ("solarize", "threshold"): _range_in(0, 255),
}


@dataclass(frozen=True)
class InterventionConfig:
    families: tuple[str, ...] = FAMILIES
    seed: int = 0
    params: dict = field(default_factory=dict)  # {family: {parameter: value}} overrides

    def __post_init__(self):
        """Fail on any family, seed or parameter the draw could not use: before anything is embedded."""
        families = list(self.families) if isinstance(self.families, (list, tuple)) else None
        if not families or any(not isinstance(family, str) for family in families):
            raise InputError(f"interventions must be a non-empty list of family names from {list(FAMILIES)}, "
                             f"got {self.families!r}", "interventions")
        unknown = sorted(set(families) - set(FAMILIES))
        if unknown:
            raise InputError(f"unknown or no intervention families {unknown}; choose from {list(FAMILIES)}", "interventions")
        repeated = sorted({family for family in families if families.count(family) > 1})
        if repeated:
            raise InputError(f"intervention families {repeated} are listed twice; list each family once", "interventions")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise InputError(f"intervention seed must be an integer >= 0, got {self.seed!r}", "intervention_seed")
        if not isinstance(self.params, Mapping):
            raise InputError(f'intervention parameters must be a mapping {{family: {{parameter: value}}}}, '
                             f'got {self.params!r}', "intervention_params")
        for family, overrides in self.params.items():
            if family not in FAMILIES:
                raise InputError(f"parameters given for unknown intervention family {family!r}; "
                                 f"choose from {list(FAMILIES)}", "intervention_params")
            if family not in families:
                raise InputError(f"parameters given for intervention {family!r}, which is not among the "
                                 f"families used {families}; add it or drop its parameters", "intervention_params")
            if not isinstance(overrides, Mapping):
                raise InputError(f"intervention {family!r}: parameters must be a mapping {{parameter: value}}, "
                                 f"e.g. {json.dumps(DEFAULT_PARAMS[family]) if DEFAULT_PARAMS[family] else '{}'}; "
                                 f"got {overrides!r}", "intervention_params")
            bad = sorted(set(overrides) - set(DEFAULT_PARAMS[family]))
            if bad:
                raise InputError(
                    f"intervention {family!r} has no parameter(s) {bad}; it takes {sorted(DEFAULT_PARAMS[family])}",
                    "intervention_params")
            for name, value in overrides.items():
                problem = PARAMETER_RULES[family, name](value)
                if problem:
                    raise InputError(f"intervention {family!r} parameter {name!r} must be {problem}, got {value!r} "
                                     f"(default {json.dumps(DEFAULT_PARAMS[family][name])})", "intervention_params")

    def parameters(self, family: str) -> dict:
        return {**DEFAULT_PARAMS[family], **self.params.get(family, {})}

    @property
    def key(self) -> str:
        return stable_hash({"families": list(self.families), "seed": self.seed,
                            "params": {f: self.parameters(f) for f in self.families}})

    def rng(self, sample_id: str) -> np.random.Generator:
        digest = int.from_bytes(hashlib.sha256(sample_id.encode()).digest()[:8], "little")
        return np.random.default_rng([self.seed, digest])

    def draw(self, sample_id: str, family: str | None = None) -> tuple[str, np.random.Generator]:
        """(family, RNG for its parameters) of one sample: drawn from (seed, sample id) alone, so neither batch
        order, batch size nor worker count changes it. A given family replaces the drawn one."""
        rng = self.rng(sample_id)
        drawn = self.families[int(rng.integers(len(self.families)))]
        return family or drawn, rng


@dataclass(frozen=True)
class DataSpec:
    """A dataset and how each of its domains splits into training and validation images."""

    dataset: str  # a folder URL, or the built-in dataset's name
    store: str  # where the built-in dataset is written and the images' digests are remembered
    holdout: float = 0.2  # per-domain validation share
    split_seed: int = 0  # DomainBed's trial_seed under the domainbed split
    class_policy: str = "strict"  # when domains disagree on classes: fail, or keep the shared ones
    split: str = STABLE  # the split rule (tasks.data.splits)
    dataset_split: str = DEFAULT_DATASET_SPLIT  # which split of a shard set is read (CLIP_benchmark's test, train, ...)

    @property
    def dataset_label(self) -> str:
        """The dataset's short name (its folder's), as run titles show it."""
        return dataset_label(self.dataset)


@dataclass(frozen=True)
class EmbedSpec:
    """What to embed with which model (images, interventions, prompts), where it is stored and how it runs."""

    model: str
    pretrained: str  # an open_clip tag, a checkpoint file, or RANDOM_WEIGHTS
    store: str
    interventions: InterventionConfig = field(default_factory=InterventionConfig)
    templates: str = "simple"  # zero-shot prompt templates: a built-in set or a file
    class_names: str | None = None  # class display names: 'imagenet', a CSV, or the folder names
    folder_name_spaces: str = "underscores-and-dashes"  # which characters of a folder name become spaces
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
    open_class_test_split: str = "all"  # the same, for open class


@dataclass(frozen=True)
class SelectionSpec:
    """How (lambda, k) is chosen: a grid, scored by a model-selection rule."""

    lams: tuple[float, ...] = (1.0,)
    ks: tuple[int, ...] | None = None  # None: fractions of the embedding width (tasks.fit.selection.default_ks)
    rule: str = TRAINING_DOMAIN
