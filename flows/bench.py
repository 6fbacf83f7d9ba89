"""Flows: a benchmark (models x datasets x trials, one `run` subflow each) and its leaderboard.

Trials vary the split seed and the intervention seed, as DomainBed's trials do: trial t uses
split_seed + t and intervention_seed + t of the base config. A run whose config already has a
complete history entry on the same data (same dataset fingerprint) is not run again: its
entry joins the leaderboard as it is. The runs of a bench are listed in
STORE/benchmarks/NAME/manifest.json, so the leaderboard can be rebuilt at any time.
"""
from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.utilities.annotations import quote

from flows.config.deployment import effective_config
from flows.config.run_config import BENCH_PER_RUN_FIELDS, RunConfig
from flows.config.preflight import preflight
from flows.run import run
from tasks.data.datasets import one_listing_per_dataset
from tasks.data.discover import discover_dataset
from tasks.errors import InputError
from tasks.report.leaderboard import ALL_RUNS
from tasks.report.publish import write_bench_manifest, write_leaderboard
from tasks.store.history import config_url, read_record, relative_to, resolve_run
from tasks.vocabulary import DATASET_SHIFT, carries_weights, model_label


def parse_model(spec: str) -> tuple[str, str]:
    """NAME:PRETRAINED, split at the first ':' (model names hold '-', checkpoint paths may hold ':'); a local-dir:DIR
    or hf-hub:ORG/NAME spec is a model carrying its weights, whole, with --pretrained's default (unused), as a
    `clip-icm run` of it records, so that such a run is found done."""
    if carries_weights(spec):
        return spec, RunConfig.model_fields["pretrained"].default
    name, separator, pretrained = spec.partition(":")
    if not (name and separator and pretrained):
        raise InputError(f"--models {spec!r} is not NAME:PRETRAINED; PRETRAINED is an open_clip tag, "
                         "a local checkpoint file or none, e.g. ViT-B-16:openai or ICM-Tiny:none")
    return name, pretrained


def trial_configs(models: list[str], datasets: dict[str, str], trials: int, config: RunConfig) -> list[tuple[dict, RunConfig]]:
    """(labels, run config) for every model x dataset x trial, checked before any work starts."""
    if trials < 1:
        raise InputError(f"--trials must be at least 1, got {trials}")
    if not models or not datasets:
        raise InputError("a bench needs at least one --models NAME:PRETRAINED and one --datasets NAME=URL")
    for field in ("run_name", "targets", "target_datasets"):
        if getattr(config, field) is not None:
            raise InputError("a bench sets it per run; leave it unset", field)
    if config.protocol == DATASET_SHIFT:
        raise InputError("a bench runs domain-shift, open-class or both; run dataset-shift with `clip-icm run`",
                         "protocol")
    base = config.model_dump(exclude=set(BENCH_PER_RUN_FIELDS))
    runs = []
    for spec in models:
        model, pretrained = parse_model(spec)
        for dataset, url in datasets.items():
            for trial in range(trials):
                labels = {"model": model, "pretrained": pretrained, "dataset": dataset, "trial": trial}
                runs.append((labels, preflight(RunConfig(**{
                    **base, "model": model, "pretrained": pretrained, "dataset": url,
                    "split_seed": config.split_seed + trial, "intervention_seed": config.intervention_seed + trial,
                }))))
    return runs


def completed_run(config: RunConfig, fingerprint: str) -> str | None:
    """The latest history entry of this config if it ran on the same data, else None."""
    try:
        entry = resolve_run(config_url(config.store_url, config.name))
    except InputError:  # never ran
        return None
    return entry if read_record(entry)["dataset"]["fingerprint"] == fingerprint else None


@flow(name="clip-icm-bench", flow_run_name="bench {name}")
def bench(models: list[str], datasets: dict[str, str], trials: int = 3, name: str = "bench",
          config: RunConfig = RunConfig()) -> str:
    """Run every model on every dataset for several trials, then write the leaderboard.

    Args:
        models: NAME:PRETRAINED, e.g. ViT-B-16:openai; PRETRAINED is a tag, a local checkpoint file or none
        datasets: NAME -> dataset URL (or rotated-digits)
        trials: trials per (model, dataset): trial t adds t to the split and intervention seeds
        name: the benchmark's folder, STORE/benchmarks/NAME
        config: every other run option (store, protocol, lams, ks, ...), the same for every run
    """
    config = effective_config(config)
    with one_listing_per_dataset():
        if not name or "/" in name or name == ALL_RUNS:
            raise InputError(f"--name {name!r}: give a folder name (no '/'; {ALL_RUNS!r} is the whole store's leaderboard)")
        runs = trial_configs(models, datasets, trials, config)
        logger = get_run_logger()
        fingerprints = {}
        manifest = []
        for labels, run_config in runs:
            url = run_config.dataset
            if url not in fingerprints:
                fingerprints[url] = discover_dataset(run_config.data_spec()).fingerprint
            entry = completed_run(run_config, fingerprints[url])
            manifest.append({**labels, "config_name": run_config.name, "skipped": entry is not None})
            title = f"{labels['dataset']} {model_label(labels['model'], labels['pretrained'])} trial {labels['trial']}"
            if entry:
                logger.info("skipping %s: done in %s", title, entry)
            else:
                entry = run.with_options(flow_run_name=f"run {title}")(run_config)
            manifest[-1]["run"] = relative_to(config.store_url, entry)
        # quoted: the manifest names the run subflows' results, which a task input must not reference
        write_bench_manifest(config.store_url, name, quote({
            "name": name, "models": models, "datasets": datasets, "trials": trials, "config": config.model_dump(),
            "runs": manifest,
        }))
        return write_leaderboard(config.store_url, name)
