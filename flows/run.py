"""The main job: embed, fit, evaluate both protocols, and write the reports of one dataset and model."""
from __future__ import annotations

import time
from dataclasses import replace

import pandas as pd
from prefect import flow, get_run_logger

from flows.config import RunConfig
from flows.preflight import preflight
from flows.embed_dataset import discover_dataset, embed_dataset
from flows.evaluate import evaluate_domain_shift, evaluate_open_class
from tasks import __version__
from tasks.embed import skipped_url
from tasks.evaluate import summarize
from tasks.reports import publish_artifacts, summary_markdown, write_plot, write_run_json, write_table
from tasks.storage import join, read_parquet


def make_task_runner(name: str, max_workers: int):
    """Threads on one machine by default; Dask or Ray (Prefect integrations) to scale out."""
    if name == "threads":
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=max_workers)
    try:
        if name == "dask":
            from prefect_dask import DaskTaskRunner

            return DaskTaskRunner(cluster_kwargs={"n_workers": max_workers})
        from prefect_ray import RayTaskRunner

        return RayTaskRunner()
    except ImportError as error:
        raise ValueError(f"task_runner {name!r} needs its integration: pip install 'clip-icm[{name}]' ({error})") from None


def skipped_images(index) -> pd.DataFrame:
    """Unreadable images, once each (the original and intervened shards skip the same files)."""
    tables = [read_parquet(skipped_url(url)).to_pandas() for key, url in index.shards.items() if key.endswith("/original")]
    return pd.concat(tables, ignore_index=True)


@flow(name="clip-icm-run", flow_run_name="run {config.dataset} {config.model}")
def run(config: RunConfig = RunConfig()) -> str:
    preflight(config)
    run_url = join(config.store_url, "runs", config.name)
    timings, started = {}, time.perf_counter()

    # 0. the dataset must hold every requested target before anything is embedded
    data = discover_dataset(config.dataset, config.store_url, config.holdout, config.split_seed, config.class_policy)
    unknown = sorted(set(config.targets or []) - set(data.domains))
    if unknown:
        raise ValueError(f"config field 'targets': {unknown} are not domains of the dataset {list(data.domains)}")

    # 1. interventional data: embed originals, image interventions, class prompts and text pairs
    index = embed_dataset.with_options(task_runner=make_task_runner(config.task_runner, config.max_workers))(
        config.dataset, config.model, config.pretrained, config.store_url, config.intervention_config(),
        config.text_pairs, config.holdout, config.split_seed, config.class_policy,
        config.device, config.batch_size, config.num_workers,
    )
    index = replace(index, normalize=config.normalize)  # how the catalog reads: raw, or L2-normalised
    timings["embed_s"] = time.perf_counter() - started

    # 2-3. fit the invariant projection on the sources, predict on each held-out target
    grid = {"lams": config.lams, "ks": config.ks, "order": config.order, "use_text": config.use_text}
    predictions, selections = [], []
    if config.protocol in ("domain-shift", "both"):
        domain_predictions, domain_selections = evaluate_domain_shift(
            index, run_url, config.targets, **grid, probe=config.probe, probe_c=config.probe_c)
        predictions.append(domain_predictions)
        selections.append(domain_selections)
    timings["domain_shift_s"] = time.perf_counter() - started - sum(timings.values())
    if config.protocol in ("open-class", "both"):
        class_predictions, class_selections = evaluate_open_class(index, run_url, config.targets, **grid)
        predictions.append(class_predictions)
        selections.append(class_selections)
    timings["open_class_s"] = time.perf_counter() - started - sum(timings.values())

    # 4. reports
    predictions = pd.concat(predictions, ignore_index=True)
    summary = summarize(predictions, index.classes)
    skipped = skipped_images(index)
    write_table(predictions, run_url, "predictions.parquet")
    write_table(summary, run_url, "summary.parquet")
    write_table(pd.concat(selections, ignore_index=True), run_url, "selection.parquet")
    write_table(skipped, run_url, "skipped.parquet")
    write_plot(summary, run_url)
    title = f"CLIP-ICM: {config.name}"
    publish_artifacts(summary, run_url, title)
    timings["total_s"] = time.perf_counter() - started
    write_run_json(run_url, {
        "config": config.model_dump(), "run_url": run_url, "package_version": __version__,
        "dataset": {"root": index.dataset_root, "fingerprint": index.fingerprint,
                    "domains": list(index.domains), "classes": list(index.classes)},
        "model": {"name": config.model, "pretrained": config.pretrained},
        "embeddings": {"shards": index.shards, "text": index.text_url, "embedded_this_run": index.embedded},
        "skipped_images": len(skipped),
        "timings": timings,
    })
    get_run_logger().info("%s\n\nreports in %s", summary_markdown(summary, title), run_url)
    return run_url
