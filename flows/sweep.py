"""Flow: re-evaluate a lambda x k grid from cached embeddings alone; no model is loaded."""
from __future__ import annotations

from dataclasses import replace

import pandas as pd
import pyarrow as pa
from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from flows.config import RunConfig
from flows.labels import label_run
from flows.preflight import preflight
from flows.embed_dataset import cached_index, discover_dataset, text_inputs
from flows.fit_projection import domain_moments
from icm_core import LinearProbe, accuracy, zero_shot_predict
from tasks.store.catalog import EmbeddingCatalog
from tasks.report.run_report import artifact_key, publish_sweep_artifact
from tasks.fit.selection import select_by_rule
from tasks.store.storage import join, write_parquet


@task(name="sweep-target", task_run_name="sweep target {target}", cache_policy=NO_CACHE)
def sweep_target(catalog: EmbeddingCatalog, per_domain: dict, text, target: str, lams, ks, order: str, use_text: bool,
                 probe: str = "torch", probe_c: float = 0.316) -> pd.DataFrame:
    sources = [domain for domain in catalog.domains if domain != target]
    # the run's own training-domain selection, so the sweep marks the pick the run makes
    selection = select_by_rule.fn(catalog, per_domain, text, sources, target, None, lams, ks, order, use_text)
    train_rows, train = catalog.blocks(sources, "train")
    target_rows, test = catalog.load([target])
    classes = catalog.class_embeddings()
    # every cell's torch probe starts where the run's CLIP-ICM probe does: at the CLIP probe's solution
    clip_probe = LinearProbe(C=probe_c, solver=probe).fit(train, train_rows["label"]) if probe == "torch" else None
    rows = []
    for row in selection.grid:
        projection = selection.projections[(row["lam"], row["n_components"])]
        linear_probe = LinearProbe(projection, C=probe_c, solver=probe, start_from=clip_probe).fit(
            train, train_rows["label"])
        rows.append({
            **row, "target": target,
            "target_zero_shot_accuracy": accuracy(target_rows["label"], zero_shot_predict(test, classes, projection)),
            "target_linear_probe_accuracy": accuracy(target_rows["label"], linear_probe.predict(test)),
            "retained_intervention": projection.retained_intervention_,
        })
    return pd.DataFrame(rows)


@flow(name="clip-icm-sweep", flow_run_name="sweep {config.dataset} {config.model}")
def sweep(config: RunConfig = RunConfig()) -> str:
    """Leave-one-domain-out: val accuracy (the selection rule) and target accuracy for every (lambda, k)."""
    preflight(config, cached=True)
    label_run(config)
    data = discover_dataset(config.dataset, config.store_url, config.holdout, config.split_seed, config.class_policy)
    catalog = cached_index(data, config.model, config.pretrained, config.store_url, config.intervention_config(),
                           text_inputs(data, config.text_pairs, config.templates, config.class_names))
    catalog = replace(catalog, normalize=config.normalize)
    frames = []
    for target in config.targets or catalog.domains:
        sources = [domain for domain in catalog.domains if domain != target]
        per_domain, text = domain_moments(catalog, sources, use_text=config.use_text)
        frames.append(sweep_target(catalog, per_domain, text, target, config.lams, config.ks, config.order,
                                   config.use_text, config.probe, config.probe_c))
    table = pd.concat(frames, ignore_index=True)
    run_url = join(config.store_url, "runs", config.name)
    write_parquet(pa.Table.from_pandas(table, preserve_index=False), join(run_url, "sweep.parquet"))
    publish_sweep_artifact(table, run_url, f"CLIP-ICM sweep: {config.name}",
                           artifact_key("sweep", config.dataset, config.model, config.pretrained))
    return join(run_url, "sweep.parquet")
