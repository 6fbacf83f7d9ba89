"""The main job: embed, fit, evaluate both protocols, and write the reports of one dataset and model."""
from __future__ import annotations

import time
from dataclasses import replace

import pandas as pd
from prefect import flow
from prefect.utilities.annotations import quote

from flows.config.preflight import preflight
from flows.config.run_config import RunConfig
from flows.dataset_shift import embed_targets, evaluate_dataset_shift
from flows.embed import embed_dataset
from flows.evaluate import evaluate_domain_shift, evaluate_open_class
from tasks import __version__
from tasks.data.datasets import discover_dataset
from tasks.data.prompts import load_templates
from tasks.embed.images import skipped_images
from tasks.embed.models import check_model
from tasks.embed.runners import make_task_runner
from tasks.evaluate.predictions import summarize
from tasks.fit.diagnostics import chosen_diagnostics, write_spectrum_plot
from tasks.report.publish import label_run
from tasks.report.run_report import publish_run_report, run_title, write_plot, write_run_json, write_table
from tasks.store.history import mark_latest, new_entry, provenance
from tasks.vocabulary import DATASET_SHIFT, DOMAIN_SHIFT, OPEN_CLASS, protocols


@flow(name="clip-icm-run", flow_run_name="run {config.dataset} {config.model}")
def run(config: RunConfig = RunConfig()) -> str:
    preflight(config)
    label_run(config.dataset, config.model, config.pretrained)
    timings, started = {}, time.perf_counter()

    data = discover_dataset(config.dataset, config.store_url, config.holdout, config.split_seed, config.class_policy)
    run_url = new_entry(config.store_url, config.name, data.fingerprint)  # history: never overwrite a run

    # 1. interventional data: embed originals, image interventions, class prompts and text pairs
    task_runner = make_task_runner(config.task_runner, config.max_workers)
    index = embed_dataset.with_options(task_runner=task_runner)(
        config.dataset, config.model, config.pretrained, config.store_url, config.intervention_config(),
        config.text_pairs, config.holdout, config.split_seed, config.class_policy,
        config.device, config.batch_size, config.num_workers, config.shard_size, config.precision,
        templates=config.templates, class_names=config.class_names,
    )
    targets = {}
    if config.protocol == DATASET_SHIFT:
        targets = {name: replace(target, normalize=config.normalize)
                   for name, target in embed_targets(config, task_runner).items()}
    index = replace(index, normalize=config.normalize)  # how the catalog reads: raw, or L2-normalised
    timings["embed_s"] = time.perf_counter() - started

    # 2-3. fit the invariant projection on the sources, predict on each held-out target
    grid = {"lams": config.lams, "ks": config.ks, "order": config.order, "use_text": config.use_text,
            "selection": config.selection, "test_split": config.test_split, "preset": config.preset}
    # quote: the index is the embed subflow's result; tasks and subflows must not record it as an input
    evaluations = []
    for protocol in protocols(config.protocol):
        if protocol == DOMAIN_SHIFT:
            evaluations.append(evaluate_domain_shift(quote(index), run_url, config.targets, probe=config.probe,
                                                     probe_c=config.probe_c, **grid))
        elif protocol == OPEN_CLASS:
            evaluations.append(evaluate_open_class(quote(index), run_url, config.targets, **grid))
        else:
            evaluations.append(evaluate_dataset_shift(
                quote(index), run_url, quote(targets), config.class_names, config.lams, config.ks, config.order,
                config.use_text, config.preset, config.probe, config.probe_c))
        timings[f"{protocol}_s"] = time.perf_counter() - started - sum(timings.values())

    # 4. reports: tables, plots and run.json on the store; the run report (headline first) in the UI
    predictions = pd.concat([e.predictions for e in evaluations], ignore_index=True)
    selections = pd.concat([e.selections for e in evaluations], ignore_index=True)
    spectra = pd.concat([e.spectra for e in evaluations], ignore_index=True)
    summary = summarize(predictions, index.classes, config.selection)
    skipped = pd.concat([skipped_images(index), *map(skipped_images, targets.values())], ignore_index=True)
    write_table(predictions, run_url, "predictions.parquet")
    write_table(summary, run_url, "summary.parquet")
    write_table(selections, run_url, "selection.parquet")
    write_table(skipped, run_url, "skipped.parquet")
    write_table(spectra, run_url, "spectrum.parquet")
    timings["total_s"] = time.perf_counter() - started
    record = {
        "config": config.model_dump(), "run_url": run_url, "package_version": __version__,
        "dataset": {"root": index.dataset_root, "fingerprint": index.fingerprint,
                    "domains": list(index.domains), "classes": list(index.classes),
                    "domain_fingerprints": data.domain_fingerprints},
        "provenance": provenance(check_model(config.model, config.pretrained)),
        "model": {"name": config.model, "pretrained": config.pretrained},
        "embeddings": {"shards": index.shards, "text": index.text_url, "embedded_this_run": index.embedded},
        "target_datasets": {name: {"root": target.dataset_root, "fingerprint": target.fingerprint,
                                   "classes": list(target.classes), "shards": target.shards,
                                   "embedded_this_run": target.embedded}
                            for name, target in targets.items()},
        "prompts": {"templates": list(load_templates(config.templates)), "class_names": config.class_names},
        "skipped_images": len(skipped),
        "selection_rule": config.selection,
        "diagnostics": chosen_diagnostics(selections),
        "timings": timings,
    }
    # quoted: the record holds fields of the index, the embed subflow's result
    publish_run_report(summary, selections, quote(record))
    write_plot(summary, run_url, quote(record))
    write_spectrum_plot(spectra, run_url, f"Eigen-spectrum of M: {run_title(record)}")
    write_run_json(run_url, quote(record))
    mark_latest(run_url)
    return run_url
