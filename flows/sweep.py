"""Flow: re-evaluate a lambda x k grid from cached embeddings alone; no model is loaded."""
from __future__ import annotations

from dataclasses import replace

import pandas as pd
import pyarrow as pa
from prefect import flow

from flows.config.preflight import preflight
from flows.config.run_config import RunConfig
from flows.fit import domain_moments
from tasks.data.datasets import discover_dataset
from tasks.data.prompts import text_inputs
from tasks.embed.plan import cached_index
from tasks.evaluate.sweep import sweep_target
from tasks.report.publish import label_run
from tasks.report.run_report import publish_sweep_artifact
from tasks.store.storage import join, write_parquet
from tasks.vocabulary import artifact_key


@flow(name="clip-icm-sweep", flow_run_name="sweep {config.dataset} {config.model}")
def sweep(config: RunConfig = RunConfig()) -> str:
    """Leave-one-domain-out: val accuracy (the selection rule) and target accuracy for every (lambda, k)."""
    preflight(config, cached=True)
    label_run(config.dataset, config.model, config.pretrained)
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
