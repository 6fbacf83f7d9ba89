"""Report tasks: Parquet tables, run.json, a PNG plot beside them, and Prefect artifacts."""
from __future__ import annotations

import io

import pandas as pd
import pyarrow as pa
from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from tasks.evaluate import METHODS
from tasks.errors import InputError
from tasks.storage import filesystem, join, read_parquet, write_bytes, write_json, write_parquet

@task(name="write-table", task_run_name="write {name}", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def write_table(frame: pd.DataFrame, run_url: str, name: str) -> str:
    return write_parquet(pa.Table.from_pandas(frame, preserve_index=False), join(run_url, name))


@task(name="write-run-json", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def write_run_json(run_url: str, record: dict) -> str:
    return write_json(join(run_url, "run.json"), record)


def accuracy_plot_png(summary: pd.DataFrame) -> bytes:
    """Accuracy per target domain, CLIP vs CLIP-ICM, one group of bars per target."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = summary[summary["protocol"] == "domain_shift"].pivot(index="target", columns="method", values="accuracy")
    table = table.reindex(sorted(table.index, key=lambda target: (target == "mean", target)))
    table = table[[method for method in METHODS if method in table]]
    figure, axes = plt.subplots(figsize=(max(6, 1.6 * len(table)), 4))
    table.plot.bar(ax=axes, rot=0)
    axes.set_ylabel("accuracy")
    axes.set_ylim(0, 1)
    axes.set_title("Leave-one-domain-out accuracy: CLIP vs CLIP-ICM")
    axes.legend(fontsize=8)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120)
    plt.close(figure)
    return buffer.getvalue()


@task(name="write-plot", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def write_plot(summary: pd.DataFrame, run_url: str) -> str | None:
    if not (summary["protocol"] == "domain_shift").any():
        return None
    return write_bytes(join(run_url, "accuracy_by_target.png"), accuracy_plot_png(summary))


def summary_markdown(summary: pd.DataFrame, title: str) -> str:
    columns = [c for c in ("protocol", "method", "target", "accuracy", "base_accuracy", "novel_accuracy", "harmonic_mean", "n") if c in summary]
    return f"# {title}\n\n" + summary[columns].to_markdown(index=False, floatfmt=".4f")


@task(name="publish-artifacts", cache_policy=NO_CACHE)
def publish_artifacts(summary: pd.DataFrame, run_url: str, title: str) -> None:
    """A markdown summary and a per-domain comparison table in the Prefect UI."""
    create_markdown_artifact(
        summary_markdown(summary, title) + f"\n\nReports: `{run_url}`", key="clip-icm-summary", description=title
    )
    per_domain = summary[summary["protocol"] == "domain_shift"].pivot(index="target", columns="method", values="accuracy")
    if len(per_domain):
        create_table_artifact(
            per_domain.reset_index().round(4).to_dict("records"), key="clip-icm-per-domain", description=title
        )


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
    return table.to_pandas()


@task(name="publish-sweep-artifact", cache_policy=NO_CACHE)
def publish_sweep_artifact(sweep: pd.DataFrame, run_url: str, title: str) -> None:
    """The whole grid as markdown, the selection rule's pick per target marked."""
    columns = ["target", "lam", "n_components", "val_accuracy", "target_zero_shot_accuracy",
               "target_linear_probe_accuracy", "selected"]
    create_markdown_artifact(
        f"# {title}\n\n" + sweep[columns].to_markdown(index=False, floatfmt=".4f") + f"\n\nTable: `{run_url}/sweep.parquet`",
        key="clip-icm-sweep", description=title,
    )
