"""What a run leaves behind: its tables gathered from the protocols' evaluations, and its run.json record."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import pandas as pd

from tasks.data.datasets import Dataset
from tasks.data.sources.reading import max_image_bytes
from tasks.embed.images import skipped_images
from tasks.evaluate.comparisons import UNCERTAINTY
from tasks.evaluate.summary import Evaluation, summarize
from tasks.fit.diagnostics import chosen_diagnostics
from tasks.store.catalog import EmbeddingCatalog


@dataclass
class Stopwatch:
    """Seconds per stage of a run, as run.json records them: {"embed_s": …, "domain-shift_s": …, "total_s": …}."""

    started: float = field(default_factory=time.perf_counter)
    timings: dict = field(default_factory=dict)

    def lap(self, stage: str) -> None:
        self.timings[f"{stage}_s"] = time.perf_counter() - self.started - sum(self.timings.values())

    def stop(self) -> dict:
        self.timings["total_s"] = time.perf_counter() - self.started
        return self.timings


@dataclass
class RunTables:
    """Every table a run writes, gathered over its protocols."""

    predictions: pd.DataFrame
    summary: pd.DataFrame
    selections: pd.DataFrame
    spectra: pd.DataFrame
    skipped: pd.DataFrame

    @classmethod
    def gather(cls, evaluations: list[Evaluation], catalog: EmbeddingCatalog, targets: dict[str, EmbeddingCatalog],
               rule: str, split_rule: str) -> "RunTables":
        predictions = pd.concat([e.predictions for e in evaluations], ignore_index=True)
        return cls(
            predictions=predictions,
            summary=summarize(predictions, catalog.classes, rule, split_rule),
            selections=pd.concat([e.selections for e in evaluations], ignore_index=True),
            spectra=pd.concat([e.spectra for e in evaluations], ignore_index=True),
            skipped=pd.concat([skipped_images(catalog), *map(skipped_images, targets.values())], ignore_index=True),
        )

    def files(self) -> dict[str, pd.DataFrame]:
        """File name -> table, as the run folder holds them."""
        return {"predictions.parquet": self.predictions, "summary.parquet": self.summary,
                "selection.parquet": self.selections, "skipped.parquet": self.skipped,
                "spectrum.parquet": self.spectra}


def read_as(dataset: Dataset) -> dict:
    """How a dataset's images were read, as run.json records it for the dataset and for each target dataset: the
    layout it was listed from (tasks.data.sources) and the byte limit per image."""
    return {"format": dataset.format, "max_image_bytes": max_image_bytes()}


def run_record(config: dict, run_url: str, catalog: EmbeddingCatalog, dataset: Dataset,
               targets: dict[str, EmbeddingCatalog], target_data: dict[str, Dataset], tables: RunTables, templates,
               provenance: dict, timings: dict) -> dict:
    """run.json: the config, the data (each dataset as listed: `dataset` the source's, `target_data` each target's),
    the model, the embeddings, what decided the numbers, how their uncertainty was computed, and the timings."""
    return {
        "config": config, "run_url": run_url, "package_version": provenance["package_version"],
        "dataset": {"root": catalog.dataset_root, "fingerprint": catalog.fingerprint,
                    "domains": list(catalog.domains), "classes": list(catalog.classes),
                    "domain_fingerprints": dataset.domain_fingerprints, **read_as(dataset)},
        "provenance": provenance,
        "model": {"name": config["model"], "pretrained": config["pretrained"]},
        "embeddings": {"shards": catalog.shards, "text": catalog.text_url, "embedded_this_run": catalog.embedded},
        "target_datasets": {name: {"root": target.dataset_root, "fingerprint": target.fingerprint,
                                   "classes": list(target.classes), "shards": target.shards,
                                   "embedded_this_run": target.embedded, **read_as(target_data[name])}
                            for name, target in targets.items()},
        "prompts": {"templates": list(templates), "class_names": config["class_names"],
                    "folder_name_spaces": config["folder_name_spaces"]},
        "split": {"rule": config["split"], "holdout": config["holdout"], "seed": config["split_seed"],
                  "table": catalog.split_url},
        "skipped_images": len(tables.skipped),
        "selection_rule": config["selection"],
        "diagnostics": chosen_diagnostics(tables.selections),
        "uncertainty": UNCERTAINTY,  # how summary.parquet's ci_low, ci_high and mcnemar_p were computed
        "timings": timings,
    }
