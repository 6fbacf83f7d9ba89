"""The main job: embed, fit, evaluate every protocol, and write the reports of one dataset and model."""
from __future__ import annotations

from dataclasses import replace

from prefect import flow
from prefect.runtime import flow_run
from prefect.states import Completed, State
from prefect.utilities.annotations import quote

from flows.config.deployment import effective_config
from flows.config.preflight import preflight
from flows.config.run_config import RunConfig
from flows.dataset_shift import embed_targets, evaluate_dataset_shift
from flows.embed import embed_and_read
from flows.evaluate import evaluate_domain_shift, evaluate_open_class
from flows.fit import fit_final
from tasks.data.datasets import one_listing_per_dataset
from tasks.data.discover import discover_dataset
from tasks.data.prompts import run_templates
from tasks.data.splits import split_column
from tasks.embed.models import check_model
from tasks.embed.runners import make_task_runner
from tasks.report.publish import (
    label_run, publish_run_report, publish_trend, write_plot, write_run_json, write_spectrum_plot, write_table,
)
from tasks.report.record import RunTables, Stopwatch, run_record
from tasks.report.run_report import run_headline, run_title
from tasks.store.history import config_url, mark_latest, new_entry, provenance
from tasks.vocabulary import DATASET_SHIFT, DOMAIN_SHIFT, FINAL, OPEN_CLASS, protocols


@flow(name="clip-icm-run", flow_run_name="run {config.dataset_label} {config.model}")
def run(config: RunConfig = RunConfig()) -> State[str]:
    """Embed, fit, evaluate and report one dataset and model. Calling the flow returns the run folder (the final
    state's data); the run page shows the headline (its message)."""
    config = effective_config(config)
    with one_listing_per_dataset():  # the checks, the run and its embedding share one listing
        preflight(config)
        label_run(config.dataset, config.model, config.pretrained)
        data, embedding = config.data_spec(), config.embed_spec()
        recipe, selection = config.recipe(), config.selection_spec()
        clock = Stopwatch()
        dataset = discover_dataset(data)
        run_url = new_entry(data.store, config.name, dataset.fingerprint, flow_run.id)  # history: never overwrite a run

        # 1. interventional data: embed originals, image interventions, class prompts and caption pairs; each file
        # then read once, raw or L2-normalised as the recipe says, and checked as it is read
        task_runner = make_task_runner(config.task_runner, config.max_workers)
        catalog = embed_and_read(data, embedding, task_runner, recipe.normalize)
        targets, target_data = {}, {}
        if config.protocol == DATASET_SHIFT:
            targets = embed_targets(config.target_datasets, data, embedding, task_runner, recipe.normalize)
            # listed once: the embedding's listing; quoted, as its url is also the target catalog's dataset_root, which
            # Prefect would record as an input from the embedding subflow's result
            target_data = {name: discover_dataset(quote(replace(data, dataset=url)))
                           for name, url in config.target_datasets.items()}
        clock.lap("embed")

        # 2-3. per protocol: fit the invariant projection on the sources, predict on each held-out target
        # (quoted: the catalogs are the embed subflow's results; tasks and subflows must not record them as inputs)
        evaluations = []
        for protocol in protocols(config.protocol):
            split = catalog.with_split(split_column(protocol, data.split))  # the split this protocol trains and tests by
            if protocol == DOMAIN_SHIFT:
                evaluations.append(evaluate_domain_shift(quote(split), run_url, config.targets, recipe, selection))
            elif protocol == OPEN_CLASS:
                evaluations.append(evaluate_open_class(quote(split), run_url, config.targets, recipe, selection))
            else:
                evaluations.append(evaluate_dataset_shift(quote(split), run_url, quote(targets), embedding.class_names,
                                                          recipe, selection))
            clock.lap(protocol)
        final = None
        if config.protocol != DATASET_SHIFT:  # what a user deploys, fitted on every domain (dataset-shift's one is)
            final = fit_final(quote(catalog.with_split(split_column(DOMAIN_SHIFT, data.split))), run_url, recipe,
                              selection)
            clock.lap(FINAL)

        # 4. reports: tables, plots and run.json on the store; the run report (headline first) and the trend in the UI
        tables = RunTables.gather(evaluations, catalog, targets, selection.rule, data.split)
        for name, table in tables.files().items():
            write_table(table, run_url, name)
        record = run_record(config.model_dump(), run_url, catalog, dataset, targets, target_data, tables,
                            run_templates(dataset, embedding.templates),
                            provenance(check_model(config.model, config.pretrained)), clock.stop())
        if final:
            record[FINAL] = final
        publish_run_report(tables.summary, tables.selections, record)
        # quoted: the record holds fields of the catalog, the embed subflow's result
        write_plot(tables.summary, run_url, quote(record))
        write_spectrum_plot(tables.spectra, run_url, f"Eigen-spectrum of M: {run_title(record)}")
        write_run_json(run_url, quote(record))
        mark_latest(run_url)
        publish_trend(config_url(data.store, config.name), record)  # every execution of this config, this one last
        return Completed(message=run_headline(tables.summary, tables.selections, record), data=run_url)
