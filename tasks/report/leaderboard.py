"""The leaderboard of a benchmark: trials aggregated to mean ± standard error, the CLIP-ICM gain
over the matching CLIP baseline, a paper-style table (Markdown and LaTeX) and a gain plot.

Input: one row per (run, protocol, method) holding the run's mean accuracy over its targets
(the `mean` rows of summary.parquet) with the run's labels (model, pretrained, dataset,
seeds). Everything here except `read_trials` and `write_leaderboard` is pure.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.store.storage import join, read_json, write_bytes, write_parquet
from tasks.errors import InputError
from tasks.report.figures import figure_png, pyplot
from tasks.report.run_report import read_summary
from tasks.vocabulary import BASELINES, METHODS, dataset_label, model_label

GROUP = ["model", "pretrained", "dataset", "protocol", "method"]
TRIAL_COLUMNS = ["model", "pretrained", "dataset", "split_seed", "intervention_seed", "run", "protocol", "method",
                 "accuracy"]


def run_labels(record: dict, dataset: str | None = None) -> dict:
    """A run's leaderboard labels from its run.json; the dataset label defaults to the folder's name."""
    config = record["config"]
    return {"model": record["model"]["name"], "pretrained": record["model"]["pretrained"],
            "dataset": dataset or dataset_label(config["dataset"]),
            "split_seed": config["split_seed"], "intervention_seed": config["intervention_seed"]}


@task(name="read-trials", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def read_trials(runs: list[dict]) -> pd.DataFrame:
    """One row per run x protocol x method: the run's accuracy averaged over its targets.

    `runs` items name a history entry (`run`) and may set the `dataset` label (a bench's NAME=URL).
    """
    frames = []
    for item in runs:
        labels = run_labels(read_json(join(item["run"], "run.json")), item.get("dataset"))
        summary = read_summary(item["run"])
        means = summary.loc[summary["target"] == "mean", ["protocol", "method", "accuracy"]]
        frames.append(means.assign(**labels, run=item["run"]))
    if not frames:
        raise InputError("no runs to aggregate: run `clip-icm bench` or `clip-icm run` into this store first")
    return pd.concat(frames, ignore_index=True)[TRIAL_COLUMNS]


def standard_error(values: pd.Series) -> float:
    """Standard error of the mean over trials: std (ddof=1) / sqrt(n); NaN for a single trial."""
    return values.std(ddof=1) / np.sqrt(len(values))


def aggregate(trials: pd.DataFrame) -> pd.DataFrame:
    """One row per model x pretrained x dataset x protocol x method: mean, se and n over trials, and
    for CLIP-ICM methods the difference from the matching CLIP baseline (paired over trials)."""
    board = (trials.groupby(GROUP, sort=False)["accuracy"]
             .agg(mean="mean", se=standard_error, n_trials="count").reset_index())
    board["baseline"] = board["method"].map(BASELINES)
    pairs = _paired(trials)
    gains = (pairs.assign(gain=pairs["accuracy"] - pairs["baseline_accuracy"])
             .groupby(GROUP, sort=False)["gain"].agg(delta="mean", delta_se=standard_error).reset_index())
    board = board.merge(gains, on=GROUP, how="left")
    order = {method: position for position, method in enumerate(METHODS)}
    board = board.sort_values(["protocol", "model", "pretrained", "dataset", "method"],
                              key=lambda column: column.map(order) if column.name == "method" else column)
    return board.reset_index(drop=True)[[*GROUP, "mean", "se", "n_trials", "baseline", "delta", "delta_se"]]


def _paired(trials: pd.DataFrame) -> pd.DataFrame:
    """Each CLIP-ICM row of a run beside its baseline's accuracy in the same run."""
    icm = trials[trials["method"].isin(list(BASELINES))].assign(baseline=lambda f: f["method"].map(BASELINES))
    baseline = trials.rename(columns={"method": "baseline", "accuracy": "baseline_accuracy"})
    return icm.merge(baseline[["run", "protocol", "baseline", "baseline_accuracy"]], on=["run", "protocol", "baseline"])


def cell(mean: float, se: float) -> str:
    """`mean ± se` in percent; the mean alone for a single trial."""
    return f"{100 * mean:.1f}" if np.isnan(se) else f"{100 * mean:.1f} ± {100 * se:.1f}"


def paper_tables(board: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Per protocol: rows are methods per model, columns datasets + Avg (mean of the dataset means)."""
    tables = {}
    for protocol, rows in board.groupby("protocol", sort=True):
        datasets = list(dict.fromkeys(rows["dataset"]))
        records = []
        for (model, pretrained), group in rows.groupby(["model", "pretrained"], sort=False):
            for method, method_rows in group.groupby("method", sort=False):
                by_dataset = method_rows.set_index("dataset")
                record = {"Model": model_label(model, pretrained), "Method": method}
                for dataset in datasets:
                    record[dataset] = cell(by_dataset.at[dataset, "mean"], by_dataset.at[dataset, "se"]) \
                        if dataset in by_dataset.index else "–"
                complete = len(by_dataset) == len(datasets)
                record["Avg"] = f"{100 * by_dataset['mean'].mean():.1f}" if complete else "–"
                records.append(record)
        tables[protocol] = pd.DataFrame(records)
    return tables


def leaderboard_markdown(board: pd.DataFrame, title: str) -> str:
    sections = [f"# {title}", "Accuracy (%) averaged over each dataset's held-out targets: mean ± standard error "
                "over trials; Avg is the mean over datasets."]
    for protocol, table in paper_tables(board).items():
        sections += [f"## {protocol}", table.to_markdown(index=False, disable_numparse=True)]
    return "\n\n".join(sections) + "\n"


LATEX_SPECIALS = {c: "\\" + c for c in "&%$#_{}"} | {"\\": r"\textbackslash{}", "~": r"\textasciitilde{}",
                                                  "^": r"\textasciicircum{}", "±": r"$\pm$", "–": "--"}


def latex_text(text: str) -> str:
    return "".join(LATEX_SPECIALS.get(character, character) for character in str(text))


def leaderboard_latex(board: pd.DataFrame, title: str) -> str:
    parts = [f"% {latex_text(title)}: accuracy (%), mean $\\pm$ standard error over trials"]
    for protocol, table in paper_tables(board).items():
        rows = [" & ".join(latex_text(column) for column in table.columns) + r" \\"]
        rows += [" & ".join(latex_text(value) for value in record) + r" \\" for record in table.itertuples(index=False)]
        parts.append("\n".join([
            f"% {latex_text(protocol)}", r"\begin{tabular}{ll" + "r" * (table.shape[1] - 2) + "}", r"\toprule",
            rows[0], r"\midrule", *rows[1:], r"\bottomrule", r"\end{tabular}", "",
        ]))
    return "\n".join(parts)


def gain_plot_png(board: pd.DataFrame, title: str) -> bytes:
    """CLIP-ICM − CLIP (percentage points) per dataset, one bar per model and CLIP-ICM method."""
    plt = pyplot()

    gains = board[board["method"].isin(list(BASELINES))]
    protocols = sorted(gains["protocol"].unique())
    figure, axes = plt.subplots(1, max(1, len(protocols)), figsize=(6 * max(1, len(protocols)), 4), squeeze=False)
    for axis, protocol in zip(axes[0], protocols):
        rows = gains[gains["protocol"] == protocol].assign(
            series=lambda f: [f"{model_label(m, p)} {method.removeprefix('clip_icm_')}"
                              for m, p, method in zip(f["model"], f["pretrained"], f["method"])])
        means = rows.pivot(index="dataset", columns="series", values="delta") * 100
        errors = rows.pivot(index="dataset", columns="series", values="delta_se").fillna(0) * 100
        means.plot.bar(ax=axis, yerr=errors, rot=0, capsize=3)
        axis.axhline(0, color="black", linewidth=0.8)
        axis.set_ylabel("CLIP-ICM − CLIP (points)")
        axis.set_title(protocol)
        axis.legend(fontsize=7)
    figure.suptitle(title)
    figure.tight_layout()
    return figure_png(figure)


@task(name="write-leaderboard", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def write_leaderboard(trials: pd.DataFrame, folder: str, title: str) -> pd.DataFrame:
    """trials.parquet (the inputs), leaderboard.parquet/.md/.tex and leaderboard_gain.png under `folder`."""
    board = aggregate(trials)
    write_parquet(pa.Table.from_pandas(trials, preserve_index=False), join(folder, "trials.parquet"))
    write_parquet(pa.Table.from_pandas(board, preserve_index=False), join(folder, "leaderboard.parquet"))
    write_bytes(join(folder, "leaderboard.md"), leaderboard_markdown(board, title).encode())
    write_bytes(join(folder, "leaderboard.tex"), leaderboard_latex(board, title).encode())
    write_bytes(join(folder, "leaderboard_gain.png"), gain_plot_png(board, title))
    return board
