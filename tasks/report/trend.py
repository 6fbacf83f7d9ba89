"""A config's trend: one row per execution in its run history, so that a scheduled job's page answers "did anything
move?". The rows are read from the store (STORE/runs/NAME/<entry>/run.json and summary.parquet), so executions made
elsewhere (the CLI, another Prefect server) count too.

A row per execution and comparison keeps the table as narrow as the artifact page (a column per number did not fit
once every Δ carried its interval). The Prefect UI has no reliable way to show a plot here (a markdown artifact's
inline images are not rendered everywhere, and an image artifact needs a URL the browser can reach, which a store is
not), so a second table gives each comparison a text sparkline per number and how often its interval excluded 0.
"""
from __future__ import annotations

import pandas as pd

from tasks.errors import InputError
from tasks.report.run_report import (
    CI, DECIMALS, DELTA, MCNEMAR, MISSING, UNCERTAINTY_COLUMNS, excludes_zero, mean_comparison, read_run_table,
    run_title, table_markdown, with_uncertainty_cells,
)
from tasks.store.history import entry_time, history, read_record

STARTED, DATA, CODE = "started (UTC)", "data", "code"
EXECUTION = "execution"  # the execution's position, oldest first: its rows share it (not shown)
SERIES = ["protocol", "comparison"]
NUMBERS = ["CLIP", "CLIP-ICM", DELTA]  # what a sparkline follows
DAMAGED = "damaged"  # the data column of an execution whose run.json or summary cannot be read
BLOCKS = "▁▂▃▄▅▆▇█"
SPARKLINE_RUNS = 30  # the newest executions a sparkline shows, so that its row stays narrow


def code_version(provenance: dict) -> str:
    """'0.1.0 · 1a2b3c4d': the package version and the hash of the sources, from run.json's provenance."""
    return f"{provenance['package_version']} · {provenance['source_hash'][:8]}"


def trend_table(config_folder: str) -> pd.DataFrame:
    """One row per complete execution and comparison, oldest first: the execution's UTC start, the dataset's
    fingerprint, the code version, then the protocol and comparison with CLIP, CLIP-ICM, Δ and Δ's interval and
    McNemar p on the mean over targets (as the run report's headline; NaN for runs written before them). An execution
    whose records are damaged keeps one row, marked, so that one bad night never hides the others."""
    rows = []
    for position, entry in enumerate(history(config_folder)):
        execution = {EXECUTION: position, STARTED: entry_time(entry).strftime("%Y-%m-%d %H:%M:%S")}
        try:
            record = read_record(entry)
            summary = read_run_table(entry, "summary.parquet")
        except InputError:
            rows.append(execution | {DATA: DAMAGED})
            continue
        execution |= {DATA: record["dataset"]["fingerprint"][:8], CODE: code_version(record["provenance"])}
        rows += [execution | mean for mean in mean_comparison(summary).to_dict("records")]
    return pd.DataFrame(rows, columns=[EXECUTION, STARTED, DATA, CODE, *SERIES, *NUMBERS, *UNCERTAINTY_COLUMNS])


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


def sparklines(trend: pd.DataFrame) -> pd.DataFrame:
    """One row per comparison: a sparkline of CLIP, CLIP-ICM and Δ over the newest SPARKLINE_RUNS executions (a gap
    where one has no value), and in how many of those with an interval it excluded 0."""
    recent = trend[trend[EXECUTION] >= trend[EXECUTION].max() - SPARKLINE_RUNS + 1]
    executions = recent[EXECUTION].unique()
    rows = []
    for (protocol, comparison), series in recent.dropna(subset=SERIES).groupby(SERIES, sort=False):
        per_execution = series.set_index(EXECUTION).reindex(executions)
        known = per_execution.dropna(subset=["ci_low", "ci_high"])
        excluded = excludes_zero(known["ci_low"], known["ci_high"]).sum()
        rows.append({"protocol": protocol, "comparison": comparison,
                     **{number: sparkline(per_execution[number]) for number in NUMBERS},
                     f"{CI} excludes 0": f"{excluded} of {len(known)}" if len(known) else MISSING})
    return pd.DataFrame(rows)


def trend_markdown(trend: pd.DataFrame, record: dict, config_folder: str) -> str:
    """The trend as markdown: a title naming the run (as its report does), the table (an execution's start, data
    and code on its first row only), and a sparkline per comparison and number."""
    shown = with_uncertainty_cells(trend.drop(columns=EXECUTION)).astype(object)
    repeated = trend[EXECUTION].duplicated().to_numpy()
    shown.loc[repeated, [STARTED, DATA, CODE]] = ""
    recent = min(SPARKLINE_RUNS, trend[EXECUTION].nunique())
    return "\n\n".join([
        f"# Trend: {run_title(record)}",
        f"Every execution of `{config_folder}`, oldest first, a row per comparison: CLIP and CLIP-ICM accuracy on the "
        f"mean over targets, {DELTA} = CLIP-ICM − CLIP with its {CI} (paired bootstrap over the test images) and "
        f"{MCNEMAR}; `data` is the dataset's fingerprint, `code` the package version and source hash.",
        table_markdown(shown, index=False),
        f"## Trend, last {recent} executions (▁ lowest to █ highest)",
        table_markdown(sparklines(trend), index=False),
    ])
