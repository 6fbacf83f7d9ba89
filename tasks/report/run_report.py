"""The run report: a run's tables read back, and rendered as markdown (the headline, targets x methods, the chosen
(lambda, k), the timings).

Every view of a run's results (the Prefect UI's artifact, the terminal at the end of `clip-icm run`,
`clip-icm report`, the plot) is rendered from the same three things, all on the store: the summary,
the selection grid and the run.json record. So the UI and the terminal never disagree. Nothing here
needs Prefect, torch or matplotlib: `clip-icm report` answers at once.
"""
from __future__ import annotations


import numpy as np
import pandas as pd
import pyarrow as pa

from tasks.errors import InputError
from tasks.report.numbers import fixed
from tasks.store.history import read_record
from tasks.store.storage import filesystem, join, read_parquet
from tasks.vocabulary import (
    CLIP_ICM_ZERO_SHOT_OPEN_CLIP, LEGACY_PROTOCOLS, METHOD_PAIRS, OPEN_CLASS, STABLE, protocol_title, random_weights,
    named_weights, run_label,
)

DECIMALS = 3  # every accuracy and difference in every report
MISSING = "—"  # a cell with no value (a method or class group a target lacks), never "nan"
DELTA = "Δ"  # CLIP-ICM − CLIP
CI, MCNEMAR = "95% CI", "McNemar p"  # Δ's paired bootstrap interval (icm_core.uncertainty.LEVEL) and McNemar's test
UNCERTAINTY_COLUMNS = ["ci_low", "ci_high", "mcnemar_p"]  # summary.parquet's, on each CLIP-ICM row (not in older runs)
OPEN_CLASS_METRICS = {"base": "base_accuracy", "novel": "novel_accuracy", "HM": "harmonic_mean"}
SMOKE_BANNER = ("> **SMOKE RUN**: random weights (`--pretrained none`). These numbers test the pipeline, "
                "not the method.")


def read_run(run_url: str) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """What every report is rendered from: summary, selection grid, run.json."""
    return read_summary(run_url), read_run_table(run_url, "selection.parquet"), read_record(run_url)


def read_run_table(run_url: str, name: str) -> pd.DataFrame:
    """One of a run's tables; protocols as spelled today, also in runs written before 0.3 (domain_shift)."""
    url = join(run_url, name)
    try:
        table = read_parquet(url)
    except (OSError, pa.ArrowException) as error:
        raise InputError(f"{url} cannot be read ({type(error).__name__}: {str(error).splitlines()[0]}): the run's "
                         "reports are damaged or incomplete; pass another entry of the config, or run it again") from error
    return _current_protocols(table.to_pandas())


def _current_protocols(frame: pd.DataFrame) -> pd.DataFrame:
    if "protocol" in frame:
        frame["protocol"] = frame["protocol"].replace(LEGACY_PROTOCOLS)
    return frame


def run_weights(record: dict) -> str:
    """The weights a run embedded with (tasks.vocabulary.named_weights), as its run.json records them."""
    model = record["model"]
    return named_weights(model["name"], model["pretrained"], record.get("provenance", {}).get("weights_id", "unrecorded"))


def run_title(record: dict) -> str:
    """Dataset, model and weights of a run, marked when random weights or oracle selection make it no result."""
    model, config = record["model"], record["config"]
    smoke = " · SMOKE RUN (random weights)" if random_weights(model["name"], model["pretrained"]) else ""
    oracle = " · [oracle selection]" if config.get("selection") == "oracle" else ""
    return f"{run_label(config['dataset'], model['name'], model['pretrained'])}{smoke}{oracle}"


# ---- tables: targets x methods, the mean last


EXPORTED_ZERO_SHOT = "exported zero-shot (open_clip order)"  # what CLIP_benchmark prints for `clip-icm export`'s model
# each compared CLIP-ICM method (tasks.vocabulary.BASELINES) as the Δ tables name it
COMPARISONS = {icm: pair for pair, (_, icm) in METHOD_PAIRS.items()} | {CLIP_ICM_ZERO_SHOT_OPEN_CLIP: EXPORTED_ZERO_SHOT}


def _by_target(frame: pd.DataFrame) -> pd.DataFrame:
    targets = sorted(frame.index, key=lambda target: (target == "mean", target))
    return frame.reindex(targets).rename_axis("target")


def method_table(summary: pd.DataFrame, protocol: str) -> pd.DataFrame:
    """One protocol's accuracy, targets x methods: CLIP, CLIP-ICM and their difference per method pair, and the
    exported model's zero-shot in open_clip's order where the run reports it (`clip-icm export`).

    Only pairs whose two methods were both evaluated appear (open-class has no linear probe)."""
    accuracy = summary[summary["protocol"] == protocol].pivot(index="target", columns="method", values="accuracy")
    columns = {}
    for pair, (clip, icm) in METHOD_PAIRS.items():
        if clip in accuracy and icm in accuracy:
            columns[f"CLIP {pair}"] = accuracy[clip]
            columns[f"CLIP-ICM {pair}"] = accuracy[icm]
            columns[f"{DELTA} {pair}"] = accuracy[icm] - accuracy[clip]
    if CLIP_ICM_ZERO_SHOT_OPEN_CLIP in accuracy:
        columns[EXPORTED_ZERO_SHOT] = accuracy[CLIP_ICM_ZERO_SHOT_OPEN_CLIP]
    return _by_target(pd.DataFrame(columns, index=accuracy.index))


def open_class_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Open-class zero-shot, targets x (base, novel, harmonic mean) for CLIP and CLIP-ICM, and the HM difference."""
    rows = summary[summary["protocol"] == OPEN_CLASS]
    if rows.empty:
        return pd.DataFrame()
    columns = {}
    for who, method in zip(("CLIP", "CLIP-ICM"), METHOD_PAIRS["zero-shot"]):
        chosen = rows[rows["method"] == method].set_index("target")
        for label, metric in OPEN_CLASS_METRICS.items():
            columns[f"{who} {label}"] = chosen[metric]
    columns[f"{DELTA} HM"] = columns["CLIP-ICM HM"] - columns["CLIP HM"]
    return _by_target(pd.DataFrame(columns))


def has_uncertainty(summary: pd.DataFrame) -> bool:
    """Whether the run's summary carries each Δ's interval and McNemar p (runs written before them do not)."""
    return all(column in summary for column in UNCERTAINTY_COLUMNS)


def mean_comparison(summary: pd.DataFrame) -> pd.DataFrame:
    """CLIP vs CLIP-ICM on the mean over targets, one row per protocol x method pair (and open-class HM); with
    ci_low, ci_high and mcnemar_p of each accuracy Δ where the summary has them (none for HM)."""
    intervals = UNCERTAINTY_COLUMNS if has_uncertainty(summary) else []
    rows = []
    for protocol in summary["protocol"].unique():
        means = summary[(summary["protocol"] == protocol) & (summary["target"] == "mean")].set_index("method")
        comparisons = [(pair, methods, "accuracy") for pair, methods in METHOD_PAIRS.items()]
        if protocol == OPEN_CLASS:
            comparisons.append(("zero-shot HM (base, novel)", METHOD_PAIRS["zero-shot"], "harmonic_mean"))
        for label, (clip, icm), metric in comparisons:
            if clip in means.index and icm in means.index:
                rows.append({"protocol": protocol_title(protocol), "comparison": label,
                             "CLIP": means.at[clip, metric], "CLIP-ICM": means.at[icm, metric],
                             DELTA: means.at[icm, metric] - means.at[clip, metric],
                             **{column: means.at[icm, column] if metric == "accuracy" else np.nan
                                for column in intervals}})
    return pd.DataFrame(rows, columns=["protocol", "comparison", "CLIP", "CLIP-ICM", DELTA, *intervals])


def excludes_zero(low, high):
    """Whether an interval lies wholly on one side of 0: a CLIP-ICM gain (or loss) the images' sampling alone does not
    explain. Elementwise on Series; False where there is no interval (NaN)."""
    return (low > 0) | (high < 0)


def uncertainty_table(summary: pd.DataFrame, protocol: str) -> pd.DataFrame:
    """Each accuracy Δ of a protocol, per target (the mean last) and comparison, with its interval and McNemar p;
    empty for a run written before them."""
    if not has_uncertainty(summary):
        return pd.DataFrame()
    rows = summary[(summary["protocol"] == protocol) & summary["method"].isin(list(COMPARISONS))]
    table = pd.DataFrame({"target": rows["target"], "comparison": rows["method"].map(COMPARISONS),
                          DELTA: rows["delta"], **{column: rows[column] for column in UNCERTAINTY_COLUMNS}})
    order = {comparison: position for position, comparison in enumerate(COMPARISONS.values())}
    table = table.sort_values(["target", "comparison"], key=lambda column: (
        column.map(order) if column.name == "comparison" else column.map(lambda target: (target == "mean", target))))
    return with_uncertainty_cells(table.reset_index(drop=True))


LABEL_COLUMNS = ("protocol", "comparison", "target")  # left-aligned; every other column holds numbers


def _cell(value, signed: bool = False) -> str:
    """Accuracies at DECIMALS places, differences signed, MISSING for no value; text and integers as they are."""
    if pd.api.types.is_scalar(value) and pd.isna(value):
        return MISSING
    if isinstance(value, (float, np.floating)):
        return fixed(value, DECIMALS, signed)
    return str(value)


def signed_text(value: float) -> str:
    """A difference at DECIMALS places with its sign; one that rounds to zero reads +0.000, never -0.000."""
    return fixed(value, DECIMALS, signed=True)


def interval_text(low: float, high: float) -> str:
    """'[+0.013, +0.029]'; MISSING where there is no interval."""
    return MISSING if pd.isna(low) or pd.isna(high) else f"[{signed_text(low)}, {signed_text(high)}]"


def p_text(p: float) -> str:
    """McNemar's p at DECIMALS places, '< 0.001' below them; MISSING where there is no test."""
    if pd.isna(p):
        return MISSING
    smallest = 10.0 ** -DECIMALS
    return f"< {smallest:.{DECIMALS}f}" if p < smallest else f"{p:.{DECIMALS}f}"


def with_uncertainty_cells(table: pd.DataFrame) -> pd.DataFrame:
    """ci_low, ci_high and mcnemar_p shown as two text columns: CI ('[+0.013, +0.029]') and MCNEMAR ('< 0.001')."""
    if not all(column in table for column in UNCERTAINTY_COLUMNS):
        return table
    return table.drop(columns=UNCERTAINTY_COLUMNS).assign(**{
        CI: [interval_text(low, high) for low, high in zip(table["ci_low"], table["ci_high"])],
        MCNEMAR: table["mcnemar_p"].map(p_text)})


def uncertainty_text(row) -> str:
    """A Δ's uncertainty as the headline writes it, '95% CI [+0.013, +0.029], McNemar p < 0.001'; '' where unknown."""
    if pd.isna(row.get("ci_low", np.nan)):
        return ""
    p = p_text(row["mcnemar_p"])
    return f"{CI} {interval_text(row['ci_low'], row['ci_high'])}, {MCNEMAR} {p if p.startswith('<') else '= ' + p}"


def table_markdown(table: pd.DataFrame, index: bool = True) -> str:
    """A pipe table; differences are the columns whose name starts with DELTA."""
    frame = table.reset_index() if index else table
    cells = frame.apply(lambda column: column.map(lambda value: _cell(value, str(column.name).startswith(DELTA))))
    return cells.to_markdown(index=False, disable_numparse=True,
                             colalign=["left" if column in LABEL_COLUMNS else "right" for column in frame])


# ---- the run report: the headline first, then the tables, the choices, the timings, the folder


def _per_protocol(comparison: pd.DataFrame, describe) -> dict[str, str]:
    """Protocol title -> its comparisons (rows of `mean_comparison`), each described by `describe(row)`."""
    return {protocol: ", ".join(describe(row) for _, row in rows.iterrows())
            for protocol, rows in comparison.groupby("protocol", sort=False)}


def _difference_line(comparison: pd.DataFrame) -> str:
    def described(row) -> str:
        uncertainty = uncertainty_text(row)
        return f"{row.comparison} {signed_text(row[DELTA])}" + (f" ({uncertainty})" if uncertainty else "")

    per_protocol = _per_protocol(comparison, described)
    listed = "; ".join(f"{protocol}: {text}" for protocol, text in per_protocol.items())
    return f"**CLIP-ICM − CLIP**, mean over targets: {listed or 'nothing evaluated'}"


def _facts_line(record: dict) -> str:
    config, dataset = record["config"], record["dataset"]
    selection = config.get("selection", "training-domain")
    if selection == "oracle":
        selection += " (the target's validation split: an upper bound, not a result)"
    return (f"model `{record['model']['name']}` · weights `{run_weights(record)}` · "
            f"dataset `{config['dataset']}` ({len(dataset['domains'])} domains, {len(dataset['classes'])} classes) · "
            f"protocol `{config['protocol']}` · split {config.get('split', STABLE)} · selection {selection}")


def chosen_hyperparameters(selection: pd.DataFrame) -> pd.DataFrame:
    """The (λ, k) the selection rule picked, per protocol and target, with its score where the grid has one."""
    chosen = selection[selection["selected"]]
    table = pd.DataFrame({
        "protocol": chosen["protocol"].map(protocol_title), "target": chosen["target"],
        "λ": chosen["lam"].map("{:g}".format), "k": chosen["n_components"].astype(int),
    })
    return table.assign(**{"source-val accuracy": chosen["val_accuracy"]}) if "val_accuracy" in chosen else table


def _timings_line(timings: dict) -> str:
    """Seconds per stage, the total last (run.json stores them in name order)."""
    names = sorted(timings, key=lambda name: (name == "total_s", name))
    # stages are embed, total and the protocols (domain_shift_s in runs written before 0.3)
    return " · ".join(f"{name.removesuffix('_s').replace('_', ' ').replace('-', ' ')} {timings[name]:.1f} s"
                      for name in names)


def headline_markdown(summary: pd.DataFrame, record: dict) -> str:
    """What ran and whether CLIP-ICM won: the first lines of every report."""
    model, comparison = record["model"], mean_comparison(summary)
    lines = [SMOKE_BANNER, ""] if random_weights(model["name"], model["pretrained"]) else []
    lines += [
        f"# CLIP vs CLIP-ICM: {run_label(record['config']['dataset'], model['name'], model['pretrained'])}"
        + (" · [oracle selection]" if record["config"].get("selection") == "oracle" else ""), "",
        _difference_line(comparison), "",
        _facts_line(record), "",
        table_markdown(with_uncertainty_cells(comparison), index=False),
    ]
    return "\n".join(lines)


def _chosen_cells(chosen: pd.DataFrame) -> str:
    """The distinct (λ, k) chosen over a protocol's targets, the most frequent first: '(10, 8) on 2 targets'."""
    counts = chosen.groupby(["λ", "k"], sort=False).size().sort_values(ascending=False, kind="stable")
    return ", ".join(f"({lam}, {k}) on {count} target{'s' * (count > 1)}" for (lam, k), count in counts.items())


def run_headline(summary: pd.DataFrame, selection: pd.DataFrame, record: dict) -> str:
    """The headline in one plain line, for the flow run's state message (the run page): the run (SMOKE RUN for
    random weights), then per protocol CLIP → CLIP-ICM on the mean over targets with Δ, and the chosen (λ, k)."""
    per_protocol = _per_protocol(mean_comparison(summary), lambda row: (
        f"{row.comparison} {_cell(row.CLIP)} → {_cell(row['CLIP-ICM'])} "
        f"({', '.join(filter(None, [f'{DELTA} {signed_text(row[DELTA])}', uncertainty_text(row)]))})"))
    chosen = chosen_hyperparameters(selection)
    protocols = [f"{protocol}: {text}, (λ, k) = {_chosen_cells(chosen[chosen['protocol'] == protocol])}"
                 for protocol, text in per_protocol.items()]
    return f"{run_title(record)} · CLIP → CLIP-ICM, mean over targets: {'; '.join(protocols) or 'nothing evaluated'}"


def run_report(summary: pd.DataFrame, selection: pd.DataFrame, record: dict) -> str:
    """The whole report, in markdown: the headline, the pivoted tables, the chosen (λ, k), timings, the folder."""
    sections = [headline_markdown(summary, record)]
    for protocol in summary["protocol"].unique():
        table = method_table(summary, protocol)
        sections.append(f"## {protocol_title(protocol)}: accuracy per target ({DELTA} = CLIP-ICM − CLIP)\n\n"
                        + table_markdown(table))
        uncertainty = uncertainty_table(summary, protocol)
        if not uncertainty.empty:
            sections.append(f"## {protocol_title(protocol)}: {DELTA} per target, its {CI} (paired bootstrap over the "
                            f"images) and {MCNEMAR}\n\n" + table_markdown(uncertainty, index=False))
        if protocol == OPEN_CLASS:
            sections.append("## open class: base, novel and harmonic mean (zero-shot over base + novel names)\n\n"
                            + table_markdown(open_class_table(summary)))
    sections.append("## chosen (λ, k) per target\n\n" + table_markdown(chosen_hyperparameters(selection), index=False))
    sections.append("## timings\n\n" + _timings_line(record["timings"]))
    sections.append(f"Reports: `{record['run_url']}`")
    return "\n\n".join(sections)


def _is_text(kind: pa.DataType) -> bool:
    return pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind)


# the columns `clip-icm report` needs, and the kind of values each holds (runs may add columns)
SUMMARY_COLUMNS = {"protocol": _is_text, "method": _is_text, "target": _is_text,
                   "accuracy": pa.types.is_floating, "n": pa.types.is_integer}


def read_summary(run_url: str) -> pd.DataFrame:
    """A run's summary table; InputError unless the file is one, written by a run."""
    url = join(run_url, "summary.parquet")
    fix = "pass a run folder STORE/runs/NAME written by `clip-icm run`"
    try:
        fs, path = filesystem(url)
        kind = fs.info(path)["type"] if fs.exists(path) else None
    except (ValueError, ImportError, OSError) as error:
        raise InputError(f"cannot open {url} ({type(error).__name__}: {error}); {fix}") from error
    if kind != "file":
        raise InputError(f"{url} {'does not exist' if kind is None else 'is a folder, not a table'}; {fix}")
    try:
        table = read_parquet(url)
    except (pa.ArrowException, OSError) as error:
        raise InputError(f"{url} is not a readable Parquet file ({type(error).__name__}: {error}); {fix}") from error
    schema = table.schema
    problems = [f"column {name!r} holds {schema.field(name).type}" if name in schema.names else f"no column {name!r}"
                for name, holds in SUMMARY_COLUMNS.items() if name not in schema.names or not holds(schema.field(name).type)]
    if problems or table.num_rows == 0:
        raise InputError(f"{url} is not a clip-icm summary ({'; '.join(problems) or 'no rows'}); {fix}")
    return _current_protocols(table.to_pandas())
