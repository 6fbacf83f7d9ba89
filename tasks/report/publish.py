"""The report stage's tasks: a run's tables, run.json and plots written to the store; the run report, the config's
trend, the sweep and the run's tags in the Prefect UI (and the smoke-run warning in its own log: a plain logger's
warning never reaches the UI); a leaderboard and a reproduction written. What they write is rendered by the modules
beside this one.

The run report and the trend are published from the flow itself, not from a task, so that they are the flow run's
artifacts (inside a task an artifact also belongs to that task run)."""
from __future__ import annotations

import pandas as pd
import pyarrow as pa
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.context import FlowRunContext

from tasks.report.leaderboard import benchmark_url, rebuild_leaderboard
from tasks.report.plots import accuracy_plot_png, spectrum_plot_png
from tasks.report.run_report import DELTA, interval_text, run_report, signed_text
from tasks.store.history import RUN_RECORD, store_of, stored
from tasks.report.trend import trend_markdown, trend_table
from tasks.store.storage import join, write_bytes, write_json, write_parquet
from tasks.vocabulary import DOMAIN_SHIFT, OPEN_CLASS, artifact_key, random_weights, run_label, run_tags, trend_key


def label_run(dataset: str, model: str, pretrained: str) -> None:
    """Add the run's tags to the current flow run (keeping a deployment's own) and warn of random weights."""
    flow_run = FlowRunContext.get().flow_run
    with get_client(sync_client=True) as client:
        client.update_flow_run(flow_run.id, tags=sorted(set(flow_run.tags) | set(run_tags(dataset, model, pretrained))))
    if random_weights(model, pretrained):
        get_run_logger().warning(
            "SMOKE RUN: random weights for %s (--pretrained none): the numbers test the pipeline, not the method", model)


@task(name="write-table", task_run_name="write {name}", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def write_table(frame: pd.DataFrame, run_url: str, name: str) -> str:
    return write_parquet(pa.Table.from_pandas(frame, preserve_index=False), join(run_url, name))


@task(name="write-run-json", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def write_run_json(run_url: str, record: dict) -> str:
    """run.json, every path into the store written relative to it (tasks.store.history.stored)."""
    return write_json(join(run_url, RUN_RECORD), stored(record, store_of(run_url)))


def publish_run_report(summary: pd.DataFrame, selection: pd.DataFrame, record: dict) -> None:
    """The run report as a markdown artifact, keyed per dataset, model and weights."""
    config = record["config"]
    create_markdown_artifact(
        run_report(summary, selection, record),
        key=artifact_key("run", config["dataset"], config["model"], config["pretrained"]),
        description=f"CLIP vs CLIP-ICM: {run_label(config['dataset'], config['model'], config['pretrained'])}",
    )


def publish_trend(config_folder: str, record: dict) -> None:
    """Every execution of the run's config (STORE/runs/NAME), one row each, as a markdown artifact keyed by the
    config; call it once the run's own entry is complete, so that it is the last row."""
    config = record["config"]
    create_markdown_artifact(
        trend_markdown(trend_table(config_folder), record, config_folder),
        key=trend_key(config_folder.rstrip("/").rsplit("/", 1)[-1]),
        description=f"Trend: {run_label(config['dataset'], config['model'], config['pretrained'])}",
    )


@task(name="write-plot", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def write_plot(summary: pd.DataFrame, run_url: str, record: dict) -> str | None:
    if not summary["protocol"].isin([DOMAIN_SHIFT, OPEN_CLASS]).any():
        return None
    return write_bytes(join(run_url, "accuracy_by_target.png"), accuracy_plot_png(summary, record))


@task(name="write-spectrum-plot", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def write_spectrum_plot(spectra: pd.DataFrame, run_url: str, title: str) -> str:
    return write_bytes(join(run_url, "eigen_spectrum.png"), spectrum_plot_png(spectra, title))


@task(name="publish-sweep-artifact", cache_policy=NO_CACHE)
def publish_sweep_artifact(sweep: pd.DataFrame, run_url: str, title: str, key: str) -> None:
    """The whole grid as markdown, the selection rule's pick per target marked, each target accuracy's Δ over CLIP
    with its 95% interval; `key` from `artifact_key`."""
    create_markdown_artifact(
        f"# {title}\n\n" + sweep_markdown(sweep) + f"\n\nTable: `{run_url}/sweep.parquet`",
        key=key, description=title,
    )


def sweep_markdown(sweep: pd.DataFrame) -> str:
    """The sweep's grid as a pipe table: per target and (λ, k) the source-val and target accuracies, and per way of
    predicting 'Δ [95% CI]' over CLIP on the target's images ('+0.021 [+0.013, +0.029]')."""
    table = sweep[["target", "lam", "n_components", "val_accuracy"]].copy()
    for name, label in (("zero_shot", "zero-shot"), ("linear_probe", "linear probe")):
        table[f"target {label}"] = sweep[f"target_{name}_accuracy"]
        table[f"{DELTA} {label} [95% CI]"] = [
            f"{signed_text(delta)} {interval_text(low, high)}" for delta, low, high in
            zip(*(sweep[f"target_{name}_{column}"] for column in ("delta", "ci_low", "ci_high")))]
    return table.assign(selected=sweep["selected"]).to_markdown(index=False, floatfmt=".4f")


@task(name="write-bench-manifest", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def write_bench_manifest(store: str, name: str, manifest: dict) -> str:
    """STORE/benchmarks/NAME/manifest.json: the bench's parameters and its runs, from which its leaderboard is built."""
    return write_json(join(benchmark_url(store, name), "manifest.json"), manifest)


@task(name="write-leaderboard", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def write_leaderboard(store: str, name: str) -> str:
    """STORE/benchmarks/NAME rebuilt from the bench's runs; returns the folder."""
    return rebuild_leaderboard(store, name)


@task(name="write-reproduction", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def write_reproduction(changes: pd.DataFrame, markdown: str, folder: str) -> str:
    write_parquet(pa.Table.from_pandas(changes, preserve_index=False), join(folder, "reproduce.parquet"))
    return write_bytes(join(folder, "reproduce.md"), markdown.encode())
