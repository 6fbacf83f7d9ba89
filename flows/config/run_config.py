"""The run configuration: every knob of the main job, typed so that the CLI, the deployment
form in the Prefect UI and the reports all read the same choices, defaults and help text.

Field-level checks (types, ranges, choices) happen when a RunConfig is built; checks that
need the dataset listing, the model config, the checkpoint, the device or the store run in
`flows.config.preflight`, still before anything is embedded.
"""
from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tasks.errors import InputError
from tasks.specs import DEFAULT_SHARD_SIZE, FAMILIES, DataSpec, EmbedSpec, InterventionConfig, Recipe, SelectionSpec
from tasks.store.names import stable_hash, store_url
from tasks.vocabulary import (
    BOTH, DATASET_SHIFT, DEFAULT_DATASET_SPLIT, DOMAINBED, PROTOCOL_CHOICES, ROTATED_DIGITS, SELECTION_RULES,
    SPLIT_RULES, STABLE, dataset_label,
)

DEFAULT_LAMS = [0.1, 1.0, 10.0, 100.0]
MAX_LAMBDA = 1e12

# `--preset released`: the authors' released code (ML-TASA/CLIP-ICM): DomainBed's split, fp32 embeddings, their
# prompt ("_" read as a space, nothing else; one template, no text pairs), raw embeddings, smallest eigenvalues,
# their zero-shot and sklearn probe at C=0.316, the target's 20% split for domain shift (every target image for
# open class: see RunConfig.recipe)
RELEASED_PRESET = {"split": DOMAINBED, "precision": "fp32", "folder_name_spaces": "underscores", "templates": "simple",
                   "use_text": False, "normalize": False, "order": "released", "test_split": "out", "probe": "sklearn",
                   "probe_c": 0.316}

# fields that decide where and how fast work runs, not what it computes
EXECUTION_FIELDS = ("run_name", "device", "batch_size", "num_workers", "task_runner", "max_workers", "store",
                    "shard_size", "precision")
# fields added after config names were first derived: left out of the name at their default, so that an existing
# config keeps its name, and with it its run history and trend
ADDED_FIELDS = ("split", "folder_name_spaces")
# fields `clip-icm bench` sets for each of its runs; every other field passes through from its options
BENCH_PER_RUN_FIELDS = ("model", "pretrained", "dataset", "run_name", "targets", "target_datasets")


class RunConfig(BaseModel):
    # descriptions are the deployment form's help, which the Prefect UI renders as HTML: no <placeholder>, no &entity;
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    dataset: str = Field(ROTATED_DIGITS, description=(
        "Dataset folder URL (local, s3://, gs://, memory://, hf://): DomainBed layout ROOT/DOMAIN/CLASS/IMAGE, "
        "ImageFolder layout ROOT/CLASS/IMAGE (one domain), CLIP_benchmark's WebDataset shards ROOT/SPLIT/N.tar "
        f"(ROOT/DOMAIN/SPLIT/N.tar with domains), or Hugging Face Parquet files; or '{ROTATED_DIGITS}', built in"))
    model: str = Field("ViT-B-32", description=(
        "open_clip model name, e.g. ViT-B-32, ViT-B-16; or a model that carries its weights: local-dir:DIR "
        "(e.g. a `clip-icm export` folder) or hf-hub:ORG/NAME"))
    pretrained: str = Field("openai", description=(
        "open_clip pretrained tag (e.g. openai, laion2b_s34b_b79k), a local checkpoint file, "
        "or 'none' for random weights (smoke runs only); not used with a local-dir: or hf-hub: model"))
    store: str = Field("./clip-icm-store", description="where embeddings and reports go: a path or fsspec URL")
    targets: list[str] | None = Field(None, description="target domains to hold out (default: every domain in turn)")
    protocol: Literal[PROTOCOL_CHOICES] = Field(BOTH, description=(
        "domain-shift (leave one domain out), open-class (base -> base + novel classes), both, "
        "or dataset-shift (fit on --dataset, test on --target-datasets)"))
    target_datasets: dict[str, str] | None = Field(None, validate_default=True, description=(
        "dataset-shift targets as NAME=URL, e.g. imagenet-v2=/data/imagenetv2; classes match by folder id"))
    class_names: str | None = Field(None, description=(
        "class display names: 'imagenet' (CLIP's curated ImageNet names by WordNet id or class index) "
        "or a CSV file with columns folder,name (default: folder names)"))
    folder_name_spaces: Literal["underscores-and-dashes", "underscores"] = Field("underscores-and-dashes", description=(
        "which characters of a class folder name become spaces in its prompts when --class-names is not given: "
        "underscores-and-dashes (ice-cream_cone: 'ice cream cone') or underscores, as the authors' code "
        "('ice-cream cone')"))
    templates: str = Field("simple", description=(
        "zero-shot prompts: 'simple' (a photo of a {}.), 'openai-imagenet' (OpenAI's 80 templates, "
        "ensembled) or a text file with one template per line"))
    lams: list[float] = Field(DEFAULT_LAMS, min_length=1, description="lambda grid")
    ks: list[int] | None = Field(None, description="k grid (default: 1/8, 1/4, 1/2, 3/4 of the embedding dimension)")
    order: Literal["largest", "released"] = Field("largest", description=(
        "eigenvectors kept: 'largest' (the method) or 'released' (the authors' code; reproduction only)"))
    selection: Literal[SELECTION_RULES] = Field("training-domain", description=(
        "DomainBed model selection for (lambda, k): the sources' validation split, leave one source out, "
        "or the target's validation split (oracle; labelled as such in every report)"))
    test_split: Literal["all", "in", "out"] = Field("all", description=(
        "target images tested: all, the 80% 'in' split (DomainBed), or the 20% 'out' split (released code)"))
    normalize: bool = Field(True, description="L2-normalise embeddings before fitting and predicting")
    preset: Literal["default", "released"] = Field("default", description=(
        "'released' reproduces the authors' released code exactly (raw embeddings, smallest eigenvalues, "
        "their zero-shot and probe, target's 20% split, one template, no text pairs)"))
    probe: Literal["torch", "sklearn"] = Field("torch", description=(
        "linear-probe solver: torch (L-BFGS on the run's device) or sklearn (LogisticRegression, as the authors)"))
    probe_c: float = Field(0.316, gt=0, allow_inf_nan=False, description="inverse L2 strength C of the linear probe (scikit-learn's C)")
    use_text: bool = Field(True, description="use text-intervention pairs as well as image interventions")
    text_pairs: str | None = Field(None, description=(
        "CSV/Parquet of user caption pairs (columns class, text_a, text_b) instead of the prompt bank"))
    interventions: list[Literal[FAMILIES]] | None = Field(None, description="image intervention families (default: all seven)")
    intervention_seed: int = Field(0, ge=0, description="seed of the per-sample intervention draw")
    intervention_params: dict[str, dict] | None = Field(None, description=(
        'overrides of intervention parameters, e.g. {"gaussian_blur": {"sigma": [0.5, 1.5]}}'))
    holdout: float = Field(0.2, gt=0, lt=1, description="per-domain validation share")
    split: Literal[SPLIT_RULES] = Field(STABLE, description=(
        "how each domain splits into training and validation images: stable (a seeded hash per image; adding an "
        "image never moves another) or domainbed (DomainBed's seeded shuffle, behind every published DomainBed "
        "number; --split-seed is its trial_seed)"))
    split_seed: int = Field(0, ge=0, description="seed of the per-domain train/validation split")
    class_policy: Literal["strict", "intersection"] = Field("strict", description=(
        "when domains disagree on classes: fail (strict) or keep the shared ones (intersection)"))
    dataset_split: str = Field(DEFAULT_DATASET_SPLIT, description=(
        "which split of a WebDataset shard set is read (ROOT/SPLIT/N.tar, as CLIP_benchmark's --split): test, "
        "train, ..."))
    device: str = Field("auto", description="auto (cuda, mps, cpu), or a torch device such as cuda:1")
    precision: Literal["auto", "fp32", "fp16", "bf16"] = Field("auto", description=(
        "embedding precision: auto (bf16/fp16 autocast on GPU, bf16 on a CPU with native bfloat16, else fp32) or "
        "a fixed one"))
    batch_size: int | None = Field(None, gt=0, description="images per batch (default: 256 on GPU, 64 on CPU)")
    num_workers: int | None = Field(None, ge=0, description="DataLoader workers (default: sized to the host's cores on GPU, 0 on CPU)")
    shard_size: int = Field(DEFAULT_SHARD_SIZE, gt=0, description="images per embedding task: a (domain, view) splits into shards of at most this many")
    task_runner: Literal["threads", "dask", "ray"] = Field("threads", description="how embedding shards run in parallel: threads, or dask/ray to scale out")
    max_workers: int = Field(4, gt=0, description="parallel tasks (threads, or Dask/Ray workers)")
    run_name: str | None = Field(None, description="run folder name under STORE/runs (default: derived from the config)")

    @model_validator(mode="before")
    @classmethod
    def _resolve_preset(cls, data):
        """A preset sets its fields; setting one of them to another value as well is an error."""
        if not isinstance(data, dict) or data.get("preset") != "released":
            return data
        clashes = {name: data[name] for name in RELEASED_PRESET if name in data and data[name] != RELEASED_PRESET[name]}
        if clashes:
            raise ValueError(f"preset 'released' sets {RELEASED_PRESET}; drop {clashes} or the preset")
        return {**data, **RELEASED_PRESET}

    @field_validator("lams")
    @classmethod
    def _finite_non_negative(cls, lams):
        if any(not 0 <= lam <= MAX_LAMBDA for lam in lams):
            raise ValueError(f"{lams} must be finite numbers from 0 to {MAX_LAMBDA:g} (beyond that, float64 "
                             "arithmetic loses the data term of the moment matrix)")
        return _distinct(lams)

    @field_validator("ks")
    @classmethod
    def _positive_ks(cls, ks):
        if ks is not None and (not ks or any(k <= 0 for k in ks)):
            raise ValueError(f"{ks} must be a non-empty list of positive integers")
        return ks if ks is None else _distinct(ks)

    @field_validator("targets")
    @classmethod
    def _distinct_targets(cls, targets):
        if targets is not None and not targets:
            raise ValueError("an empty list holds out no domain; omit it to hold out every domain in turn")
        return targets if targets is None else _distinct(targets)

    @field_validator("interventions")
    @classmethod
    def _distinct_families(cls, families):
        return families if families is None else _distinct(families)

    @field_validator("intervention_params")
    @classmethod
    def _usable_intervention_params(cls, params, info):
        if params and "interventions" in info.data and "intervention_seed" in info.data:
            families = tuple(info.data["interventions"] or FAMILIES)
            try:
                InterventionConfig(families, info.data["intervention_seed"], params)
            except InputError as error:  # pydantic names the field itself
                raise ValueError(error.message) from None
        return params

    @field_validator("dataset_split")
    @classmethod
    def _split_folder_name(cls, dataset_split):
        if not re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9._-]*", dataset_split):
            raise ValueError(f"{dataset_split!r} is not a split folder's name: letters, digits, '.', '_' and '-', "
                             "e.g. test or train")
        return dataset_split

    @field_validator("target_datasets")
    @classmethod
    def _targets_of_dataset_shift(cls, target_datasets, info):
        protocol = info.data.get("protocol")
        if protocol == DATASET_SHIFT and not target_datasets:
            raise ValueError("protocol 'dataset-shift' tests on other datasets: give them as "
                             "--target-datasets NAME=URL [NAME=URL …]")
        if protocol != DATASET_SHIFT and target_datasets:
            raise ValueError(f"target datasets are only used by --protocol dataset-shift, not {protocol!r}; "
                             "pass --protocol dataset-shift or drop them")
        for name in target_datasets or {}:
            _check_name(name, "a target dataset name")
        return target_datasets

    @field_validator("run_name")
    @classmethod
    def _run_name_is_a_name(cls, run_name):
        return run_name if run_name is None else _check_name(run_name, "a run name")

    @property
    def store_url(self) -> str:
        return store_url(self.store)

    @property
    def dataset_label(self) -> str:
        """The dataset's short name (its folder's), as run titles and tags show it."""
        return dataset_label(self.dataset)

    # ---- what each stage is asked to do (tasks.specs)

    def data_spec(self) -> DataSpec:
        return DataSpec(self.dataset, self.store_url, self.holdout, self.split_seed, self.class_policy, self.split,
                        self.dataset_split)

    def embed_spec(self) -> EmbedSpec:
        families = tuple(self.interventions) if self.interventions else FAMILIES
        return EmbedSpec(
            model=self.model, pretrained=self.pretrained, store=self.store_url,
            interventions=InterventionConfig(families, self.intervention_seed, self.intervention_params or {}),
            templates=self.templates, class_names=self.class_names, folder_name_spaces=self.folder_name_spaces,
            text_pairs=self.text_pairs, device=self.device,
            precision=self.precision, batch_size=self.batch_size, num_workers=self.num_workers,
            shard_size=self.shard_size,
        )

    def recipe(self) -> Recipe:
        """How CLIP-ICM fits and predicts; the one place the preset is read (its fields were set when the config
        was built; its zero-shot is the method's on raw images, and its open class tests every target image)."""
        released = self.preset == "released"
        return Recipe(normalize=self.normalize, order=self.order, use_text=self.use_text,
                      zero_shot_normalizes_images=not released, probe=self.probe, probe_c=self.probe_c,
                      test_split=self.test_split, open_class_test_split="all" if released else self.test_split)

    def selection_spec(self) -> SelectionSpec:
        return SelectionSpec(tuple(self.lams), tuple(self.ks) if self.ks else None, self.selection)

    @property
    def name(self) -> str:
        """The run folder's name: given, or derived from everything that decides the results."""
        if self.run_name:
            return self.run_name
        defaults = {name: RunConfig.model_fields[name].default for name in ADDED_FIELDS}
        decisive = {name: value for name, value in self.model_dump(exclude=set(EXECUTION_FIELDS)).items()
                    if not (name in ADDED_FIELDS and value == defaults[name])}
        label = f"{self.dataset_label}-{self.model}-{stable_hash(decisive, 8)}"
        return NOT_IN_NAMES.sub("_", label).lstrip(".")


# a name becomes one folder under STORE/runs: letters, digits, . _ - and no leading dot (no "..", no hidden file)
NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")
NOT_IN_NAMES = re.compile(r"[^A-Za-z0-9._-]")


def _check_name(name: str, what: str) -> str:
    if not NAME.fullmatch(name):
        raise ValueError(f"{name!r} is not {what}: use 1-128 letters, digits, '.', '_' or '-', not starting "
                         "with '.' (no '/', '\\', '..' or absolute paths)")
    return name


def _distinct(values: list) -> list:
    repeated = sorted({value for value in values if values.count(value) > 1}, key=str)
    if repeated:
        raise ValueError(f"{repeated} listed more than once; list each value once")
    return values
