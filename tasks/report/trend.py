"""A config's trend: one row per execution in its run history, so that a scheduled job's page answers "did anything
move?". The rows are read from the store (STORE/runs/NAME/<entry>/run.json and summary.parquet), so executions made
elsewhere (the CLI, another Prefect server) count too.

The Prefect UI has no reliable way to show a plot here (a markdown artifact's inline images are not rendered
everywhere, and an image artifact needs a URL the browser can reach, which a store is not), so the table ends with a
text sparkline per column.
"""
from __future__ import annotations

import pandas as pd

from tasks.errors import InputError
from tasks.report.run_report import DECIMALS, DELTA, mean_comparison, read_run_table, run_title, table_markdown
from tasks.store.history import entry_time, history, read_record

STARTED, DATA, CODE = "started (UTC)", "data", "code"
LABELS = (STARTED, DATA, CODE)  # the columns before the accuracies
DAMAGED = "damaged"  # the data column of an execution whose run.json or summary cannot be read
BLOCKS = "▁▂▃▄▅▆▇█"
SPARKLINE_RUNS = 30  # the newest executions a sparkline shows, so that its row stays narrow


def code_version(provenance: dict) -> str:
    """'0.1.0 · 1a2b3c4d': the package version and the hash of the sources, from run.json's provenance."""
    return f"{provenance['package_version']} · {provenance['source_hash'][:8]}"


def trend_table(config_folder: str) -> pd.DataFrame:
    """One row per complete execution, oldest first: its UTC start, the dataset's fingerprint, the code version,
    then CLIP, CLIP-ICM and Δ on the mean over targets per protocol and comparison (as the run report's headline).
    An execution whose records are damaged keeps its row, marked, so that one bad night never hides the others."""
    rows = []
    for entry in history(config_folder):
        row = {STARTED: entry_time(entry).strftime("%Y-%m-%d %H:%M:%S")}
        try:
            record = read_record(entry)
            summary = read_run_table(entry, "summary.parquet")
        except InputError:
            rows.append(row | {DATA: DAMAGED})
            continue
        row |= {DATA: record["dataset"]["fingerprint"][:8], CODE: code_version(record["provenance"])}
        for mean in mean_comparison(summary).to_dict("records"):
            series = f"{mean['protocol']} {mean['comparison']}"
            row |= {f"CLIP {series}": mean["CLIP"], f"CLIP-ICM {series}": mean["CLIP-ICM"],
                    f"{DELTA} {series}": mean[DELTA]}
        rows.append(row)
    return pd.DataFrame(rows)


def sparkline(values: pd.Series) -> str:
    """One block per value, from ▁ (the series' lowest) to █ (its highest), at the precision the table shows, so
    that a series that never moved reads ▄ throughout; a space where an execution has no value."""
    shown = values.astype(float).round(DECIMALS)
    low, high, steps = shown.min(), shown.max(), len(BLOCKS) - 1

    def block(value: float) -> str:
        if pd.isna(value):
            return " "
        return BLOCKS[steps // 2 if high == low else round((value - low) / (high - low) * steps)]

    return "".join(map(block, shown))


def trend_markdown(trend: pd.DataFrame, record: dict, config_folder: str) -> str:
    """The trend as markdown: a title naming the run (as its report does), the table, and its sparkline row."""
    recent = trend.tail(SPARKLINE_RUNS)
    sparklines = {STARTED: f"trend, last {len(recent)}", DATA: "", CODE: "",
                  **{column: sparkline(recent[column]) for column in trend.columns if column not in LABELS}}
    return "\n\n".join([
        f"# Trend: {run_title(record)}",
        f"Every execution of `{config_folder}`, oldest first: CLIP and CLIP-ICM accuracy on the mean over "
        f"targets, {DELTA} = CLIP-ICM − CLIP; `data` is the dataset's fingerprint, `code` the package version and "
        "source hash.",
        table_markdown(pd.concat([trend, pd.DataFrame([sparklines])], ignore_index=True), index=False),
    ])
