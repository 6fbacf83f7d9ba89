"""The run configuration: every knob of the main job, validated before any work starts."""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field

from tasks.datasets import ROTATED_DIGITS
from tasks.interventions import InterventionConfig
from tasks.models import check_model
from tasks.storage import stable_hash

PROTOCOLS = ("domain-shift", "open-class", "both")
DEFAULT_LAMS = (0.1, 1.0, 10.0, 100.0)
TASK_RUNNERS = ("threads", "dask", "ray")


@dataclass
class RunConfig:
    dataset: str = ROTATED_DIGITS
    model: str = "ViT-B-32"
    pretrained: str = "openai"
    store: str = "./clip-icm-store"
    targets: list[str] | None = None
    protocol: str = "both"
    lams: list[float] = field(default_factory=lambda: list(DEFAULT_LAMS))
    ks: list[int] | None = None  # None: 1/8, 1/4, 1/2 and 3/4 of the embedding dimension
    order: str = "largest"
    use_text: bool = True
    text_pairs: str | None = None
    interventions: list[str] | None = None  # None: all seven families
    intervention_seed: int = 0
    intervention_params: dict | None = None
    holdout: float = 0.2
    split_seed: int = 0
    class_policy: str = "strict"
    device: str = "auto"
    batch_size: int = 64
    num_workers: int | None = None
    task_runner: str = "threads"
    max_workers: int = 4
    run_name: str | None = None

    def validate(self) -> "RunConfig":
        """Raise ValueError naming the field, before anything is embedded."""
        def fail(name, problem):
            raise ValueError(f"config field {name!r}: {problem}")

        if self.protocol not in PROTOCOLS:
            fail("protocol", f"{self.protocol!r} is not one of {PROTOCOLS}")
        if self.order not in ("largest", "released"):
            fail("order", f"{self.order!r} is not 'largest' or 'released'")
        if not self.lams or any(not lam >= 0 for lam in self.lams):
            fail("lams", f"{self.lams} must be a non-empty list of numbers >= 0")
        if self.ks is not None and (not self.ks or any(int(k) != k or k <= 0 for k in self.ks)):
            fail("ks", f"{self.ks} must be a non-empty list of positive integers")
        if not 0 < self.holdout < 1:
            fail("holdout", f"{self.holdout} must be between 0 and 1")
        if self.batch_size <= 0:
            fail("batch_size", f"{self.batch_size} must be positive")
        if self.task_runner not in TASK_RUNNERS:
            fail("task_runner", f"{self.task_runner!r} is not one of {TASK_RUNNERS}")
        if self.class_policy not in ("strict", "intersection"):
            fail("class_policy", f"{self.class_policy!r} is not 'strict' or 'intersection'")
        try:
            self.intervention_config()
        except ValueError as error:
            fail("interventions", str(error))
        try:
            check_model(self.model, self.pretrained)
        except ValueError as error:
            fail("model/pretrained", str(error))
        return self

    def intervention_config(self) -> InterventionConfig:
        families = tuple(self.interventions) if self.interventions else InterventionConfig().families
        return InterventionConfig(families, self.intervention_seed, self.intervention_params or {})

    @property
    def store_url(self) -> str:
        return self.store if "://" in self.store else os.path.abspath(self.store)

    @property
    def name(self) -> str:
        """The run folder's name: given, or derived from everything that decides the results."""
        if self.run_name:
            return self.run_name
        decisive = {k: v for k, v in asdict(self).items() if k not in ("run_name", "device", "batch_size",
                                                                       "num_workers", "task_runner", "max_workers", "store")}
        dataset = self.dataset.rstrip("/").rsplit("/", 1)[-1]
        return f"{dataset}-{self.model}-{stable_hash(decisive, 8)}"
