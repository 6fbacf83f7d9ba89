"""Flow: re-execute a recorded run against the data and code as they are now, and say what changed."""
from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.utilities.annotations import quote

from flows.config.run_config import RunConfig
from flows.run import run
from tasks.store.history import read_record, resolve_run, store_of
from tasks.store.names import store_url
from tasks.report.publish import write_reproduction
from tasks.report.reproduce import accuracy_changes, reproduce_markdown, verdict, what_changed
from tasks.report.run_report import read_run_table, read_summary


@flow(name="clip-icm-reproduce", flow_run_name="reproduce {run_dir}")
def reproduce(run_dir: str, store: str | None = None) -> str:
    """Run the config recorded in RUN_DIR/run.json again (same model, weights, seeds, grid, selection
    rule) into a new history entry of the same config, and write reproduce.md and reproduce.parquet
    there: old vs new accuracy per target and method, and the verdict. Returns the new entry.

    Args:
        run_dir: a history entry STORE/runs/NAME/ENTRY, or STORE/runs/NAME for its latest entry
        store: where the new entry goes (default: the store that holds run_dir)
    """
    old_url = resolve_run(run_dir)
    # the old run is read whole before anything runs: a damaged one fails at once, naming the file
    old, old_summary, old_predictions = read_record(old_url), read_summary(old_url), read_run_table(old_url, "predictions.parquet")
    config = RunConfig(**{**old["config"], "store": store_url(store) if store else store_of(old_url)})
    new_url = run(config)
    new = read_record(new_url)
    changes = accuracy_changes(old_summary, read_summary(new_url), old_predictions, read_run_table(new_url, "predictions.parquet"))
    line = verdict(changes, what_changed(old, new))
    # quoted: the new entry is the run subflow's result, which a task input must not reference
    write_reproduction(changes, reproduce_markdown(changes, line, old_url, new_url), quote(new_url))
    get_run_logger().info("reproduction of %s: %s (report in %s)", old_url, line, new_url)
    return new_url
