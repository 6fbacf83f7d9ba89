"""The leaderboard of a benchmark: trials aggregated to mean ± standard error, the CLIP-ICM gain
over the matching CLIP baseline, a paper-style table (Markdown and LaTeX) and a gain plot.

Input: one row per (run, protocol, method) holding the run's mean accuracy over its targets
(the `mean` rows of summary.parquet) and, on CLIP-ICM rows, the paired 95% interval of its Δ over
CLIP on the run's images, with the run's labels (model, pretrained, dataset, seeds), read from the
runs a bench's manifest lists, or from the latest run of every config in a store. A CLIP-ICM cell
is marked where that interval excludes 0: `*` for one trial, `(k/n)` for k of n trials. Nothing
here needs Prefect or torch: `clip-icm leaderboard` answers at once.

    STORE/benchmarks/NAME/manifest.json            the bench's parameters and its runs
    STORE/benchmarks/NAME/trials.parquet           the inputs
    STORE/benchmarks/NAME/leaderboard.{parquet,md,tex}, leaderboard_gain.png
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from tasks.errors import InputError
from tasks.report.run_report import excludes_zero, read_summary, run_weights
from tasks.store.history import entry_in_store, latest_runs, read_record
from tasks.store.names import store_url
from tasks.store.storage import exists, join, read_json, read_parquet, write_bytes, write_parquet
from tasks.vocabulary import BASELINES, METHODS, STABLE, dataset_label, model_label, protocol_title

GROUP = ["model", "pretrained", "dataset", "split", "protocol", "method"]
TRIAL_COLUMNS = ["model", "pretrained", "dataset", "split", "split_seed", "intervention_seed", "run", "protocol",
                 "method", "accuracy", "ci_low", "ci_high"]


def run_labels(record: dict, dataset: str | None = None) -> dict:
    """A run's leaderboard labels from its run.json; the dataset label defaults to the folder's name."""
    config = record["config"]
    return {"model": record["model"]["name"], "pretrained": run_weights(record),
            "dataset": dataset or dataset_label(config["dataset"]), "split": config.get("split", STABLE),
            "split_seed": config["split_seed"], "intervention_seed": config["intervention_seed"]}


ALL_RUNS = "all"  # the leaderboard of every latest run in a store: STORE/benchmarks/all


def benchmark_url(store: str, name: str) -> str:
    return join(store, "benchmarks", name)


def bench_runs(store: str, name: str | None) -> list[dict]:
    """The runs of the bench NAME (with its dataset labels), or the latest run of every config in the store."""
    if not name:
        return [{"run": entry} for entry in latest_runs(store)]
    manifest = join(benchmark_url(store, name), "manifest.json")
    if not exists(manifest):
        raise InputError(f"{manifest} does not exist: run `clip-icm bench --name {name}` first, "
                         "or leave out --name for the leaderboard of every run in the store")
    # runs are recorded relative to the store: a moved or copied store reads its own
    return [{"run": entry_in_store(store, item["run"]), "dataset": item["dataset"]} for item in read_json(manifest)["runs"]]


def read_trials(runs: list[dict]) -> pd.DataFrame:
    """One row per run x protocol x method: the run's accuracy averaged over its targets, and on CLIP-ICM rows the
    interval of its Δ over CLIP (NaN on CLIP's rows and in runs written before the intervals).

    `runs` items name a history entry (`run`) and may set the `dataset` label (a bench's NAME=URL).
    """
    frames = []
    for item in runs:
        labels = run_labels(read_record(item["run"]), item.get("dataset"))
        summary = read_summary(item["run"])
        means = summary.loc[summary["target"] == "mean"].reindex(columns=["protocol", "method", "accuracy", "ci_low",
                                                                            "ci_high"])
        frames.append(means.assign(**labels, run=item["run"]))
    if not frames:
        raise InputError("no runs to aggregate: run `clip-icm bench` or `clip-icm run` into this store first")
    return pd.concat(frames, ignore_index=True)[TRIAL_COLUMNS]


def standard_error(values: pd.Series) -> float:
    """Standard error of the mean over trials: std (ddof=1) / sqrt(n); NaN for a single trial."""
    return values.std(ddof=1) / np.sqrt(len(values))


def aggregate(trials: pd.DataFrame) -> pd.DataFrame:
    """One row per model x pretrained x dataset x protocol x method: mean, se and n over trials, and
    for CLIP-ICM methods the difference from the matching CLIP baseline (paired over trials) and in how many of the
    trials with an interval (n_intervals) that interval excluded 0 (ci_excludes_zero)."""
    low, high = (trials[column] if column in trials else pd.Series(np.nan, index=trials.index)
                 for column in ("ci_low", "ci_high"))
    known = low.notna() & high.notna()
    trials = trials.assign(n_intervals=known, ci_excludes_zero=excludes_zero(low, high))
    board = (trials.groupby(GROUP, sort=False)
             .agg(mean=("accuracy", "mean"), se=("accuracy", standard_error), n_trials=("accuracy", "count"),
                  n_intervals=("n_intervals", "sum"), ci_excludes_zero=("ci_excludes_zero", "sum")).reset_index())
    board["baseline"] = board["method"].map(BASELINES)
    pairs = _paired(trials)
    gains = (pairs.assign(gain=pairs["accuracy"] - pairs["baseline_accuracy"])
             .groupby(GROUP, sort=False)["gain"].agg(delta="mean", delta_se=standard_error).reset_index())
    board = board.merge(gains, on=GROUP, how="left")
    order = {method: position for position, method in enumerate(METHODS)}
    board = board.sort_values(["protocol", "split", "model", "pretrained", "dataset", "method"],
                              key=lambda column: column.map(order) if column.name == "method" else column)
    return board.reset_index(drop=True)[[*GROUP, "mean", "se", "n_trials", "baseline", "delta", "delta_se",
                                         "ci_excludes_zero", "n_intervals"]]


def _paired(trials: pd.DataFrame) -> pd.DataFrame:
    """Each CLIP-ICM row of a run beside its baseline's accuracy in the same run."""
    icm = trials[trials["method"].isin(list(BASELINES))].assign(baseline=lambda f: f["method"].map(BASELINES))
    baseline = trials.rename(columns={"method": "baseline", "accuracy": "baseline_accuracy"})
    return icm.merge(baseline[["run", "protocol", "baseline", "baseline_accuracy"]], on=["run", "protocol", "baseline"])


def cell(mean: float, se: float, excluded: int = 0, intervals: int = 0) -> str:
    """`mean ± se` in percent, the mean alone for a single trial; marked where the paired interval of Δ excluded 0:
    `*` for a single trial, `(k/n)` for k of the n trials that record one (nothing when none does)."""
    text = f"{100 * mean:.1f}" if np.isnan(se) else f"{100 * mean:.1f} ± {100 * se:.1f}"
    if not intervals:
        return text
    return (text + "*" * bool(excluded)) if np.isnan(se) else f"{text} ({int(excluded)}/{int(intervals)})"


LEGEND = ("* (one trial): the paired 95% bootstrap interval of CLIP-ICM minus CLIP on the run's test images excludes 0; "
          "(k/n): it did in k of the n trials that record one")


def paper_tables(board: pd.DataFrame) -> dict[tuple[str, str], pd.DataFrame]:
    """Per protocol and split: rows are methods per model, columns datasets + Avg (mean of the dataset means)."""
    tables = {}
    for (protocol, split), rows in board.groupby(["protocol", "split"], sort=True):
        datasets = list(dict.fromkeys(rows["dataset"]))
        records = []
        for (model, pretrained), group in rows.groupby(["model", "pretrained"], sort=False):
            for method, method_rows in group.groupby("method", sort=False):
                by_dataset = method_rows.set_index("dataset")
                record = {"Model": model_label(model, pretrained), "Method": method}
                for dataset in datasets:
                    record[dataset] = cell(*by_dataset.loc[dataset, ["mean", "se", "ci_excludes_zero", "n_intervals"]]) \
                        if dataset in by_dataset.index else "–"
                complete = len(by_dataset) == len(datasets)
                record["Avg"] = f"{100 * by_dataset['mean'].mean():.1f}" if complete else "–"
                records.append(record)
        tables[protocol, split] = pd.DataFrame(records)
    return tables


def table_title(protocol: str, split: str) -> str:
    return f"{protocol_title(protocol)}, {split} split"


def leaderboard_markdown(board: pd.DataFrame, title: str) -> str:
    sections = [f"# {title}", "Accuracy (%) averaged over each dataset's held-out targets: mean ± standard error "
                f"over trials; Avg is the mean over datasets. {LEGEND}."]
    for (protocol, split), table in paper_tables(board).items():
        sections += [f"## {table_title(protocol, split)}", table.to_markdown(index=False, disable_numparse=True)]
    return "\n\n".join(sections) + "\n"


LATEX_SPECIALS = {c: "\\" + c for c in "&%$#_{}"} | {"\\": r"\textbackslash{}", "~": r"\textasciitilde{}",
                                                  "^": r"\textasciicircum{}", "±": r"$\pm$", "–": "--"}


def latex_text(text: str) -> str:
    return "".join(LATEX_SPECIALS.get(character, character) for character in str(text))


def leaderboard_latex(board: pd.DataFrame, title: str) -> str:
    parts = [f"% {latex_text(title)}: accuracy (%), mean $\\pm$ standard error over trials", f"% {latex_text(LEGEND)}"]
    for (protocol, split), table in paper_tables(board).items():
        rows = [" & ".join(latex_text(column) for column in table.columns) + r" \\"]
        rows += [" & ".join(latex_text(value) for value in record) + r" \\" for record in table.itertuples(index=False)]
        parts.append("\n".join([
            f"% {latex_text(table_title(protocol, split))}", r"\begin{tabular}{ll" + "r" * (table.shape[1] - 2) + "}", r"\toprule",
            rows[0], r"\midrule", *rows[1:], r"\bottomrule", r"\end{tabular}", "",
        ]))
    return "\n".join(parts)


def write_leaderboard(trials: pd.DataFrame, folder: str, title: str) -> pd.DataFrame:
    """trials.parquet (the inputs), leaderboard.parquet/.md/.tex and leaderboard_gain.png under `folder`;
    nothing is rewritten when the trials and the title are those already there."""
    from tasks.report.plots import gain_plot_png  # matplotlib, only when there is something new to draw

    board = aggregate(trials)
    markdown = leaderboard_markdown(board, title)
    if _written(folder, trials, markdown):
        return board
    write_parquet(pa.Table.from_pandas(trials, preserve_index=False), join(folder, "trials.parquet"))
    write_parquet(pa.Table.from_pandas(board, preserve_index=False), join(folder, "leaderboard.parquet"))
    write_bytes(join(folder, "leaderboard.tex"), leaderboard_latex(board, title).encode())
    write_bytes(join(folder, "leaderboard_gain.png"), gain_plot_png(board, title))
    write_bytes(join(folder, "leaderboard.md"), markdown.encode())  # last: it marks the folder complete
    return board


def _written(folder: str, trials: pd.DataFrame, markdown: str) -> bool:
    names = ("trials.parquet", "leaderboard.parquet", "leaderboard.tex", "leaderboard_gain.png", "leaderboard.md")
    if not all(exists(join(folder, name)) for name in names):
        return False
    from tasks.store.storage import read_bytes

    return (read_bytes(join(folder, "leaderboard.md")).decode() == markdown
            and read_parquet(join(folder, "trials.parquet")).to_pandas().equals(trials))


def rebuild_leaderboard(store: str, name: str | None = None) -> str:
    """STORE/benchmarks/NAME from the bench NAME's runs, or STORE/benchmarks/all from the latest run of every
    config in the store; returns the folder."""
    store = store_url(store)
    folder = benchmark_url(store, name or ALL_RUNS)
    write_leaderboard(read_trials(bench_runs(store, name)), folder,
                      f"CLIP-ICM leaderboard: {name or 'every run in ' + store}")
    return folder
