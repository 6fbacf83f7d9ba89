"""Flow: re-evaluate a lambda x k grid from cached embeddings alone; no model is loaded."""
from __future__ import annotations

from dataclasses import replace

import pandas as pd
from prefect import flow

from flows.config.deployment import effective_config
from flows.config.preflight import preflight
from flows.config.run_config import RunConfig
from flows.fit import domain_moments
from tasks.data.datasets import one_listing_per_dataset
from tasks.data.discover import discover_dataset, store_split_table
from tasks.data.prompts import text_inputs
from tasks.embed.plan import cached_catalog
from tasks.evaluate.sweep import sweep_target
from tasks.report.publish import label_run, publish_sweep_artifact, write_table
from tasks.store.history import config_url
from tasks.vocabulary import artifact_key


@flow(name="clip-icm-sweep", flow_run_name="sweep {config.dataset_label} {config.model}")
def sweep(config: RunConfig = RunConfig()) -> str:
    """Leave-one-domain-out: val accuracy (the selection rule) and target accuracy for every (lambda, k)."""
    config = effective_config(config)
    with one_listing_per_dataset():
        preflight(config, cached=True)
        label_run(config.dataset, config.model, config.pretrained)
        embedding, recipe = config.embed_spec(), config.recipe()
        dataset = discover_dataset(config.data_spec())
        catalog = replace(cached_catalog(dataset, embedding, text_inputs(dataset, embedding),
                                         store_split_table(dataset, config.store_url)), normalize=recipe.normalize)
        frames = []
        for target in config.targets or catalog.domains:
            sources = [domain for domain in catalog.domains if domain != target]
            per_domain, text = domain_moments(catalog, sources, use_text=recipe.use_text)
            frames.append(sweep_target(catalog, per_domain, text, target, recipe, config.selection_spec()))
        table = pd.concat(frames, ignore_index=True)
        folder = config_url(config.store_url, config.name)
        url = write_table(table, folder, "sweep.parquet")
        publish_sweep_artifact(table, folder, f"CLIP-ICM sweep: {config.name}",
                               artifact_key("sweep", config.dataset, config.model, config.pretrained))
        return url
