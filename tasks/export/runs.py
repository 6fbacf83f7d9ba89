"""`clip-icm export`: a run's fitted projection and its base model as an open_clip model folder with a model card.

A run fits one projection per held-out target (RUN/projections/<protocol>-<target>.npz), and one on every
domain, what a user deploys (RUN/projections/final.npz; dataset-shift's one projection is fitted on every
domain of its source already). Without `--target` the export is that one; `--target` picks a held-out fold.
"""
from __future__ import annotations

import string
from pathlib import Path

import pandas as pd

from tasks.embed.models import check_model, load_model
from tasks.errors import InputError
from tasks.export.fold import heads
from tasks.export.model import export_projection, load_exported
from tasks.fit.projections import load_projection, projection_url
from tasks.report.run_report import read_run_table
from tasks.store.history import read_record, resolve_run
from tasks.store.storage import exists, join
from tasks.vocabulary import (
    CLIP_ICM_ZERO_SHOT, CLIP_ICM_ZERO_SHOT_OPEN_CLIP, DATASET_SHIFT, DOMAIN_SHIFT, FINAL, OPEN_CLASS, model_label,
    protocols, random_weights, weights_of,
)

CARD_TEMPLATE = Path(__file__).with_name("model_card.md")
EVERY_DOMAIN = "none (fitted on every domain)"
SCORE_COLUMNS = {"accuracy": "top-1", "top5_accuracy": "top-5", "balanced_accuracy": "balanced", "n": "images"}


def run_projection(entry: str, record: dict, target: str | None) -> tuple[str, str, str]:
    """(projection URL, protocol, target) of a run: without a target, the one fitted on every domain; else its
    domain-shift projection for `target` (open-class where the run fitted only that)."""
    config = record["config"]
    fitted = protocols(config["protocol"])
    if target is None and FINAL in record:
        return join(entry, record[FINAL]["projection"]), FINAL, EVERY_DOMAIN
    if DATASET_SHIFT in fitted:
        if target:
            raise InputError(f"{entry} is a dataset-shift run: one projection serves every target dataset; "
                             "leave --target out", "target")
        return projection_url(entry, DATASET_SHIFT), DATASET_SHIFT, ", ".join(record.get("target_datasets", {}))
    protocol = DOMAIN_SHIFT if DOMAIN_SHIFT in fitted else OPEN_CLASS
    domains = list(config.get("targets") or record["dataset"]["domains"])
    if target is None and len(domains) == 1:
        target = domains[0]
    if target is None:
        raise InputError(f"{entry} fitted one projection per held-out target: pass --target, one of {domains}",
                         "target")
    url = projection_url(entry, protocol, target)
    if target not in domains or not exists(url):
        raise InputError(f"{entry} has no projection for target {target!r} ({url}); pass one of {domains}", "target")
    return url, protocol, target


def _scores(entry: str, protocol: str, target: str) -> str:
    """The run's numbers on the target, as a markdown table (method rows); for the projection fitted on every
    domain, the run's means over its held-out targets: what a new domain can expect."""
    summary = read_run_table(entry, "summary.parquet")
    if protocol == FINAL:  # no target of its own: what a held-out domain scored
        protocol = DOMAIN_SHIFT if (summary["protocol"] == DOMAIN_SHIFT).any() else summary["protocol"].iloc[0]
        target = "mean"
    elif protocol == DATASET_SHIFT:  # one projection for every target dataset
        target = "mean"
    rows = summary[(summary["protocol"] == protocol) & (summary["target"] == target)]
    columns = [column for column in SCORE_COLUMNS if column in rows]
    lines = ["| method | " + " | ".join(SCORE_COLUMNS[c] for c in columns) + " |",
             "|---" * (len(columns) + 1) + "|"]
    for row in rows.itertuples(index=False):
        values = [str(int(getattr(row, c))) if c == "n" else "n/a" if pd.isna(getattr(row, c))
                  else f"{getattr(row, c):.4f}" for c in columns]
        lines.append(f"| {row.method} | " + " | ".join(values) + " |")
    where = (f"held-out target {target}" if target != "mean" else "the mean over the run's target datasets"
             if protocol == DATASET_SHIFT else "the mean over the run's held-out targets, each fitted without it")
    return f"{protocol}, {where}, from the run's summary.parquet:\n\n" + "\n".join(lines)


def _convention(components) -> str:
    d, k = components.shape
    if k == d:
        return (f"k = d = {d}: the projection is a rotation, so normalising before or after it gives the same "
                f"predictions: CLIP_benchmark prints the `{CLIP_ICM_ZERO_SHOT}` number.")
    return (f"open_clip's users (CLIP_benchmark among them) project, then normalise: per prompt template, then the "
            f"class mean. The recipe's zero-shot (`{CLIP_ICM_ZERO_SHOT}`) normalises the class embeddings before "
            f"the projection, as the paper does. With k = {k} < d = {d} the two can differ: CLIP_benchmark prints "
            f"the `{CLIP_ICM_ZERO_SHOT_OPEN_CLIP}` number (same images, class names and templates).")


def model_card(folder: Path, record: dict, entry: str, projection, protocol: str, target: str, head_paths) -> str:
    metadata = getattr(projection, "metadata_", {})
    config, provenance = record["config"], record.get("provenance", {})
    val_accuracy = metadata.get("val_accuracy")
    fields = {
        "smoke": ("\n**Random base weights (`--pretrained none`): a smoke run that tests the pipeline, not a model to "
                  "use.**\n" if random_weights(config["model"], config["pretrained"]) else ""),
        "title": f"CLIP-ICM {model_label(config['model'], config['pretrained'])}, {Path(config['dataset']).name}",
        "folder": folder, "d": projection.n_features_in_, "k": projection.n_components,
        "model": config["model"], "pretrained": weights_of(config["model"], config["pretrained"]) or "the model's own",
        "weights_id": provenance.get("weights_id", "unrecorded"), "heads": ", ".join(f"`{p}`" for p in head_paths),
        "dataset": config["dataset"], "sources": ", ".join(metadata.get("sources", [])),
        "n_classes": len(metadata.get("classes", record["dataset"]["classes"])),
        "fingerprint": metadata.get("dataset_fingerprint", record["dataset"]["fingerprint"]),
        "protocol": protocol, "target": target, "lam": projection.lam, "order": projection.order,
        "selection": metadata.get("selection", config.get("selection")),
        "val_accuracy": "unrecorded" if val_accuracy is None else f"{val_accuracy:.4f}",
        "run": entry, "package_version": record.get("package_version", "?"),
        "source_hash": provenance.get("source_hash", "?"),
        "scores": _scores(entry, protocol, target), "convention": _convention(projection.components_),
    }
    return string.Formatter().vformat(CARD_TEMPLATE.read_text(), (), fields)


def export_run(run: str, out: str, target: str | None = None) -> Path:
    """Write `out`: the run's projection (for `target`) folded into the run's base model; return the folder."""
    entry = resolve_run(run)
    record = read_record(entry)
    url, protocol, target = run_projection(entry, record, target)
    projection = load_projection(url)
    model, pretrained = record["config"]["model"], record["config"]["pretrained"]
    recorded = record.get("provenance", {}).get("weights_id")
    if recorded and check_model(model, pretrained) != recorded:
        raise InputError(f"the weights {pretrained!r} are not those the run {entry} embedded with (it recorded "
                         f"{recorded}); restore them, or export a run of these weights", "pretrained")
    head_paths = [head.path for head in heads(load_model(model, pretrained, "cpu").model).values()]
    folder = Path(out).absolute()
    provenance = {"run": entry, "protocol": protocol, "target": target, "projection": url,
                  "base_model": model, "base_pretrained": pretrained, "weights_id": recorded,
                  "dataset_fingerprint": record["dataset"]["fingerprint"], **projection.get_params()}
    return export_projection(model, pretrained, projection.components_, out, provenance=provenance,
                             card=model_card(folder, record, entry, projection, protocol, target, head_paths))


def export_model(run: str, out: str, target: str | None = None, device: str = "cpu"):
    """Export a run (see `export_run`) and return open_clip's triple (model, preprocess, tokenizer) of the folder."""
    return load_exported(str(export_run(run, out, target)), device)
