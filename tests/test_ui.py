"""What a run shows in the Prefect UI and the terminal: the run report (headline first), its
targets x methods tables, the plot, the headline on the run page, the config's trend, titles, tags, artifact keys,
the smoke-run warning and the deployment form."""
import contextlib
import io
import logging
import os
import re
import typing
from html.parser import HTMLParser

import pandas as pd
import pyarrow as pa
import pytest
import yaml
from conftest import (
    TINY_MODEL, hand_made_record, hand_made_selection, hand_made_summary, make_image_folder, write_hand_made_run,
)
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import ArtifactCreate
from prefect.client.schemas.filters import (
    ArtifactFilter, ArtifactFilterFlowRunId, FlowRunFilter, FlowRunFilterName, LogFilter, LogFilterFlowRunId, LogFilterLevel,
)
from prefect.client.schemas.sorting import ArtifactSort
from prefect.flows import load_flow_from_entrypoint
from prefect.logging.handlers import APILogHandler
from prefect.utilities.callables import parameter_schema

from tasks.store.history import resolve_run
from clip_icm.cli import main
from flows.config.run_config import DEFAULT_LAMS, RunConfig
from tasks.report.leaderboard import run_labels
from tasks.report.plots import accuracy_figure
from tasks.report.run_report import (
    DELTA, MISSING, SMOKE_BANNER, chosen_hyperparameters, mean_comparison, method_table,
    open_class_table, read_run, read_run_table, run_headline, run_report, table_markdown,
)
from tasks.report.trend import trend_markdown, trend_table
from tasks.store.storage import join, read_json, write_bytes, write_parquet
from tasks.vocabulary import artifact_key, run_tags, trend_key

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSES = ("bird", "cat", "dog", "fish")
NUMBER = re.compile(r"[+-]?\d+\.\d+")

def test_targets_by_methods_with_the_difference_and_the_mean_last():
    table = method_table(hand_made_summary(), "domain-shift")
    assert list(table.index) == ["art", "photo", "mean"]
    assert list(table.columns) == [
        "CLIP zero-shot", "CLIP-ICM zero-shot", f"{DELTA} zero-shot",
        "CLIP linear probe", "CLIP-ICM linear probe", f"{DELTA} linear probe",
    ]
    assert table[f"{DELTA} zero-shot"].tolist() == pytest.approx([0.25, 0.25, 0.25])
    assert table[f"{DELTA} linear probe"].tolist() == pytest.approx([-0.1, 0.05, -0.025])
    assert table.loc["photo", "CLIP linear probe"] == 0.4 and not table.isna().any().any()
    # open-class has no linear probe: no empty columns for it
    assert list(method_table(hand_made_summary(), "open-class").columns) == [
        "CLIP zero-shot", "CLIP-ICM zero-shot", f"{DELTA} zero-shot"]


def test_open_class_table_and_markdown_have_no_nan_and_one_rounding():
    table = open_class_table(hand_made_summary())
    assert list(table.columns) == ["CLIP base", "CLIP novel", "CLIP HM", "CLIP-ICM base", "CLIP-ICM novel",
                                   "CLIP-ICM HM", f"{DELTA} HM"]
    assert table.loc["art", f"{DELTA} HM"] == pytest.approx(0.18)
    assert table.loc["mean", f"{DELTA} HM"] == pytest.approx(0.2019)
    markdown = table_markdown(table)
    assert "nan" not in markdown.lower()
    photo = next(line for line in markdown.splitlines() if line.startswith("| photo"))
    assert [cell.strip() for cell in photo.strip("|").split("|")] == [
        "photo", "0.500", MISSING, MISSING, "0.700", MISSING, MISSING, MISSING]
    assert "| art      |       0.600 |        0.200 |     0.300 |" in markdown
    assert "+0.180" in markdown and "+0.202" in markdown
    every_number = NUMBER.findall(table_markdown(method_table(hand_made_summary(), "domain-shift")))
    assert len(every_number) == 18 and all(len(number.split(".")[1]) == 3 for number in every_number)
    assert "-0.100" in table_markdown(method_table(hand_made_summary(), "domain-shift"))


def test_mean_comparison_per_protocol():
    comparison = mean_comparison(hand_made_summary())
    assert comparison[["protocol", "comparison"]].values.tolist() == [
        ["domain shift", "zero-shot"], ["domain shift", "linear probe"],
        ["open class", "zero-shot"], ["open class", "zero-shot HM (base, novel)"]]
    assert comparison[DELTA].tolist() == pytest.approx([0.25, -0.025, 0.125, 0.2019])
    assert comparison["CLIP"].tolist() == pytest.approx([0.375, 0.5, 0.35, 0.2933])


def test_headline_first_then_tables_choices_timings_and_the_folder_once():
    report = run_report(hand_made_summary(), hand_made_selection(), hand_made_record("none"))
    lines = report.splitlines()
    assert lines[0] == SMOKE_BANNER
    assert lines[2] == "# CLIP vs CLIP-ICM: Office_Home · ViT-B-16 (none)"
    assert lines[4] == ("**CLIP-ICM − CLIP**, mean over targets: domain shift: zero-shot +0.250, linear probe -0.025; "
                        "open class: zero-shot +0.125, zero-shot HM (base, novel) +0.202")
    assert lines[6].startswith("model `ViT-B-16` · weights `none` · dataset `/data/Office_Home` (2 domains, 4 classes)")
    assert "| domain shift | linear probe               |  0.500 |      0.475 | -0.025 |" in report
    assert "| domain shift | art      |  10 |   8 |                 0.875 |" in report
    assert report.count("| 10 |") == 0 and report.count("|  10 |") == 4  # the selected row per target only
    assert "domain shift 2.0 s · embed 10.3 s · open class 1.0 s · total 13.3 s" in report
    assert lines[-1] == "Reports: `/store/runs/Office_Home-ViT-B-16-abc`" and report.count("/store/runs/") == 1
    assert "nan" not in report.lower()
    real = run_report(hand_made_summary(), hand_made_selection(), hand_made_record("openai"))
    assert "SMOKE" not in real and real.startswith("# CLIP vs CLIP-ICM: Office_Home · ViT-B-16 (openai)")


def test_chosen_hyperparameters_keep_the_selected_cell_per_target():
    chosen = chosen_hyperparameters(hand_made_selection())
    assert chosen[["target", "λ", "k"]].values.tolist() == [["art", "10", 8], ["photo", "10", 8]] * 2


def test_run_headline_is_one_line_with_both_means_the_difference_and_the_chosen_cells():
    selection = hand_made_selection()
    photo = (selection["protocol"] == "domain-shift") & (selection["target"] == "photo")
    selection.loc[photo, "selected"] = (selection["lam"] == 0.1) & (selection["n_components"] == 4)  # another cell
    assert run_headline(hand_made_summary(), selection, hand_made_record("none")) == (
        "Office_Home · ViT-B-16 (none) · SMOKE RUN (random weights) · CLIP → CLIP-ICM, mean over targets: "
        "domain shift: zero-shot 0.375 → 0.625 (Δ +0.250), linear probe 0.500 → 0.475 (Δ -0.025), "
        "(λ, k) = (10, 8) on 1 target, (0.1, 4) on 1 target; "
        "open class: zero-shot 0.350 → 0.475 (Δ +0.125), zero-shot HM (base, novel) 0.293 → 0.495 (Δ +0.202), "
        "(λ, k) = (10, 8) on 2 targets")
    assert run_headline(hand_made_summary(), hand_made_selection(), hand_made_record("openai")).startswith(
        "Office_Home · ViT-B-16 (openai) · CLIP → CLIP-ICM")


# trend (protocol, comparison) -> (protocol, CLIP method, CLIP-ICM method, metric) of a summary's mean rows
TREND_SERIES = {
    ("domain shift", "zero-shot"): ("domain-shift", "clip_zero_shot", "clip_icm_zero_shot", "accuracy"),
    ("domain shift", "linear probe"): ("domain-shift", "clip_linear_probe", "clip_icm_linear_probe", "accuracy"),
    ("open class", "zero-shot"): ("open-class", "clip_zero_shot", "clip_icm_zero_shot", "accuracy"),
    ("open class", "zero-shot HM (base, novel)"): ("open-class", "clip_zero_shot", "clip_icm_zero_shot", "harmonic_mean"),
}


def expected_trend_values(summary: pd.DataFrame) -> list[list]:
    """An execution's trend rows, [protocol, comparison, CLIP, CLIP-ICM, Δ] each, read off the summary's mean rows."""
    means = summary[summary["target"] == "mean"].set_index(["protocol", "method"])
    rows = []
    for series, (protocol, clip, icm, metric) in TREND_SERIES.items():
        before, after = means.at[(protocol, clip), metric], means.at[(protocol, icm), metric]
        rows.append([*series, before, after, after - before])
    return rows


def markdown_rows(markdown: str, table: int = -1) -> list[dict]:
    """The rows of a pipe table in `markdown` (the last by default), as header -> cell text."""
    tables = [[line for line in block.splitlines() if line.startswith("|")] for block in markdown.split("\n\n")]
    lines = [block for block in tables if block][table]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    return [dict(zip(header, (cell.strip() for cell in line.strip("|").split("|")))) for line in lines[2:]]


def test_trend_has_a_row_per_execution_and_comparison_oldest_first_and_a_sparkline_per_comparison(memory_root):
    better = hand_made_summary()
    better.loc[better["method"] == "clip_icm_zero_shot", "accuracy"] += 0.125  # CLIP-ICM zero-shot moved up
    folder = f"{memory_root}/runs/office"
    write_hand_made_run(memory_root, entry="20261202T020000Z-01234567-second", summary=better)
    write_hand_made_run(memory_root, entry="20261201T020000Z-01234567-first")
    write_bytes(f"{folder}/20261203T020000Z-01234567-killed/summary.parquet", b"")  # no run.json: never finished
    write_bytes(f"{folder}/20261201T120000Z-01234567-cut/run.json", b'{"config": {"data')  # cut short: damaged
    trend = trend_table(folder)
    assert trend["started (UTC)"].tolist() == ["2026-12-01 02:00:00"] * 4 + ["2026-12-01 12:00:00"] + ["2026-12-02 02:00:00"] * 4
    assert trend["data"].tolist() == ["01234567"] * 4 + ["damaged"] + ["01234567"] * 4
    assert trend["code"].tolist()[::5] == ["0.1.0 · fedcba98"] * 2
    columns = ["protocol", "comparison", "CLIP", "CLIP-ICM", DELTA]
    for rows, summary in ((trend.iloc[:4], hand_made_summary()), (trend.iloc[5:], better)):
        values = rows[columns].values.tolist()
        for row, expected in zip(values, expected_trend_values(summary), strict=True):
            assert row[:2] == expected[:2] and row[2:] == pytest.approx(expected[2:])
    assert trend[["ci_low", "ci_high", "mcnemar_p"]].isna().all().all()  # runs written before the intervals
    markdown = trend_markdown(trend, hand_made_record("openai"), folder)
    rows = markdown_rows(markdown, 0)
    assert [row["started (UTC)"] for row in rows] == ["2026-12-01 02:00:00", "", "", "", "2026-12-01 12:00:00",
                                                      "2026-12-02 02:00:00", "", "", ""]
    assert (rows[5]["comparison"], rows[5]["CLIP-ICM"], rows[5][DELTA], rows[5]["95% CI"]) == (
        "zero-shot", "0.750", "+0.375", MISSING)
    assert max(len(line) for line in markdown.splitlines() if line.startswith("|")) < 160  # fits the artifact page
    sparklines = {(row["protocol"], row["comparison"]): row for row in markdown_rows(markdown)}
    assert len(sparklines) == 4  # the damaged night has no value: a gap
    assert sparklines["domain shift", "zero-shot"]["CLIP-ICM"] == sparklines["open class", "zero-shot"][DELTA] == "▁ █"
    assert sparklines["domain shift", "zero-shot"]["CLIP"] == sparklines["domain shift", "linear probe"][DELTA] == "▄ ▄"
    assert "## Trend, last 3 executions" in markdown


def test_artifact_keys_and_tags_name_dataset_model_and_weights():
    key = artifact_key("run", "s3://bucket/Office_Home/", "ViT-B-16", "/ckpt/My Model.pt")
    assert key == "clip-icm-run-office-home-vit-b-16-my-model-pt"
    ArtifactCreate(key=key, type="markdown", data="")  # Prefect's own key check
    assert artifact_key("run", "rotated-digits", "ViT-B-32", "openai") != artifact_key(
        "run", "rotated-digits", "ViT-B-32", "none")
    assert run_tags("/data/PACS", "ViT-B-16", "laion2b_s34b_b79k") == [
        "model:ViT-B-16", "pretrained:laion2b_s34b_b79k", "dataset:PACS"]
    assert run_tags("/data/PACS", "ViT-B-16", "none")[-1] == "smoke"


def test_a_model_carrying_its_weights_is_named_by_them_never_by_pretrained_nor_as_a_smoke_run():
    folder, digest = "local-dir:/exports/pacs-icm", "file-sha256:0123456789abcdef"
    record = hand_made_record("none")  # --pretrained none, which open_clip ignores for a model folder
    record["config"]["model"] = record["model"]["name"] = folder
    record["provenance"]["weights_id"] = digest
    lines = run_report(hand_made_summary(), hand_made_selection(), record).splitlines()
    assert lines[0] == f"# CLIP vs CLIP-ICM: Office_Home · {folder}"
    assert lines[4].startswith(f"model `{folder}` · weights `{digest}` · dataset")
    assert run_headline(hand_made_summary(), hand_made_selection(), record).startswith(
        f"Office_Home · {folder} · CLIP → CLIP-ICM")
    assert run_labels(record)["pretrained"] == digest  # the leaderboard groups by the folder's weights
    assert run_tags("/data/PACS", folder, "none") == [f"model:{folder}", "dataset:PACS"]
    assert run_tags("/data/PACS", "hf-hub:org/name", "openai") == ["model:hf-hub:org/name", "dataset:PACS"]
    assert artifact_key("run", "/data/PACS", folder, "none") == artifact_key("run", "/data/PACS", folder, "openai")


def test_runs_written_before_0_3_read_with_todays_protocol_names(memory_root):
    old = hand_made_summary().assign(protocol=lambda f: f["protocol"].str.replace("-", "_"))
    write_parquet(pa.Table.from_pandas(old, preserve_index=False), f"{memory_root}/run/summary.parquet")
    assert set(old["protocol"]) == {"domain_shift", "open_class"}
    assert set(read_run_table(f"{memory_root}/run", "summary.parquet")["protocol"]) == {"domain-shift", "open-class"}
    assert "domain shift 2.0 s · embed 10.3 s" in run_report(hand_made_summary(), hand_made_selection(), {
        **hand_made_record("openai"), "timings": {"domain_shift_s": 2.0, "embed_s": 10.3}})


def test_plot_names_the_run_draws_chance_pairs_colours_labels_values_and_has_an_open_class_panel():
    import matplotlib.pyplot as plt

    figure = accuracy_figure(hand_made_summary(), hand_made_record("none"))
    try:
        assert figure._suptitle.get_text() == "CLIP vs CLIP-ICM: Office_Home · ViT-B-16 (none) · SMOKE RUN (random weights)"
        domain_shift, open_class = figure.axes
        paired = plt.get_cmap("Paired").colors
        for axes in (domain_shift, open_class):
            chance = [line for line in axes.get_lines() if line.get_linestyle() == "--"]
            assert [tuple(line.get_ydata()) for line in chance] == [(0.25, 0.25)]
        colours = {container.get_label(): container.patches[0].get_facecolor()[:3] for container in domain_shift.containers}
        assert colours == {"CLIP zero-shot": paired[0], "CLIP-ICM zero-shot": paired[1],
                           "CLIP linear probe": paired[2], "CLIP-ICM linear probe": paired[3]}
        heights = [patch.get_height() for patch in domain_shift.containers[1].patches]
        assert heights == pytest.approx([0.75, 0.5, 0.625])  # CLIP-ICM zero-shot over art, photo, mean
        assert {"0.750", "0.625", "0.475"} <= {text.get_text() for text in domain_shift.texts}
        assert [label.get_text() for label in open_class.get_xticklabels()] == ["base", "novel", "HM"]
        assert [patch.get_height() for patch in open_class.containers[1].patches] == pytest.approx([0.65, 0.4, 0.4952])
    finally:
        plt.close(figure)


# ---- the deployment form


def enums(schema: dict) -> list:
    """Every enum in a property's schema (direct, in list items, or in an anyOf)."""
    found = list(schema.get("enum", []))
    for nested in ([schema["items"]] if "items" in schema else []) + schema.get("anyOf", []):
        found += enums(nested)
    return found


def literal_choices(annotation) -> tuple:
    if typing.get_origin(annotation) is typing.Literal:
        return typing.get_args(annotation)
    return tuple(choice for arg in typing.get_args(annotation) for choice in literal_choices(arg))


def test_deployment_parameter_schema_has_choices_defaults_and_help():
    spec = yaml.safe_load(open(os.path.join(ROOT, "prefect.yaml")))
    for deployment in spec["deployments"]:
        # what `prefect deploy` sends as the deployment's parameter_openapi_schema
        schema = parameter_schema(load_flow_from_entrypoint(deployment["entrypoint"])).model_dump()
        fields = schema["definitions"]["RunConfig"]["properties"]
        assert set(fields) == set(RunConfig.model_fields)
        with_choices = {name: literal_choices(info.annotation) for name, info in RunConfig.model_fields.items()}
        with_choices = {name: choices for name, choices in with_choices.items() if choices}
        assert {"protocol", "selection", "test_split", "preset", "probe", "precision", "task_runner", "order",
                "class_policy", "interventions"} <= set(with_choices)
        for name, choices in with_choices.items():
            assert enums(fields[name]) == list(choices), name
        assert fields["lams"]["default"] == DEFAULT_LAMS == [0.1, 1.0, 10.0, 100.0]
        assert schema["properties"]["config"]["default"]["lams"] == DEFAULT_LAMS
        assert all(field.get("description") for field in fields.values())


class TextOfHtml(HTMLParser):
    """The text a browser shows of an HTML fragment: tags and entities are not text."""

    def __init__(self, fragment: str):
        super().__init__(convert_charrefs=True)
        self.text = ""
        self.feed(fragment)
        self.close()

    def handle_data(self, data):
        self.text += data


def descriptions(schema) -> list[str]:
    """Every description in a JSON schema, however deep."""
    if isinstance(schema, list):
        return [text for item in schema for text in descriptions(item)]
    if not isinstance(schema, dict):
        return []
    own = [schema["description"]] if isinstance(schema.get("description"), str) else []
    return own + [text for value in schema.values() for text in descriptions(value)]


def test_every_help_text_of_the_deployment_form_survives_html():
    assert TextOfHtml("ROOT/<domain>/<class>/<image> &amp; more").text == "ROOT/// & more"  # what the UI did
    spec = yaml.safe_load(open(os.path.join(ROOT, "prefect.yaml")))
    for entrypoint in {deployment["entrypoint"] for deployment in spec["deployments"]}:
        texts = descriptions(parameter_schema(load_flow_from_entrypoint(entrypoint)).model_dump())
        assert {info.description for info in RunConfig.model_fields.values()} <= set(texts)
        for text in texts:
            assert TextOfHtml(text).text == text, f"{entrypoint}: {text!r}"


# ---- a random-weights run against the test's Prefect server


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, prefect_api):
    base = tmp_path_factory.mktemp("ui")
    dataset = make_image_folder(str(base / "Painted_Digits"), domains=("art", "photo"), classes=CLASSES, per_class=3)
    # an earlier execution of the same config, run elsewhere (not on this Prefect server): the trend has it too
    elsewhere = write_hand_made_run(str(base / "store"), "smoke", "20200101T000000Z-01234567-elsewhere")
    args = ["run", "--dataset", dataset, "--model", TINY_MODEL, "--pretrained", "none", "--store", str(base / "store"),
            "--lams", "1", "--run-name", "smoke"]
    terminal = io.StringIO()
    with contextlib.redirect_stdout(terminal):
        assert main(args) == 0
    APILogHandler().flush()  # the run's logs reach the API in batches
    with get_client(sync_client=True) as client:  # the session's server: this run is the one named after its dataset
        (flow_run,) = client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(
            any_=[f"run Painted_Digits {TINY_MODEL}"])))
        subflows = client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(
            any_=[f"embed Painted_Digits with {TINY_MODEL}"])))
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run.id])),
            sort=ArtifactSort.CREATED_DESC)
        warnings = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run.id]),
                                              level=LogFilterLevel(ge_=logging.WARNING)))
    return {"run": resolve_run(str(base / "store" / "runs" / "smoke")), "elsewhere": elsewhere, "dataset": dataset,
            "terminal": terminal.getvalue(), "flow_run": flow_run, "subflows": subflows, "artifacts": artifacts[::-1],
            "warnings": warnings}


def test_smoke_run_is_tagged_in_the_api_and_titled_with_the_short_dataset_name(smoke_run):
    assert {"model:ICM-Tiny", "pretrained:none", "dataset:Painted_Digits", "smoke"} <= set(smoke_run["flow_run"].tags)
    # the fixture found the run and its embedding subflow by their titles: the dataset folder's name, not its path
    assert len(smoke_run["subflows"]) == 1


def test_smoke_run_page_shows_the_headline_and_the_reports_belong_to_the_flow_run(smoke_run):
    flow_run = smoke_run["flow_run"]
    assert flow_run.state.is_completed()
    assert flow_run.state.message == run_headline(*read_run(smoke_run["run"]))
    assert "SMOKE RUN" in flow_run.state.message and "\n" not in flow_run.state.message
    owners = [(artifact.flow_run_id, artifact.task_run_id) for artifact in smoke_run["artifacts"]]
    assert owners == [(flow_run.id, None)] * 2  # the run report and the trend, no task run's


def test_smoke_run_publishes_its_configs_trend_with_the_execution_from_elsewhere(smoke_run):
    trend = smoke_run["artifacts"][1]
    config_name = smoke_run["run"].rstrip("/").rsplit("/", 2)[-2]  # STORE/runs/NAME/ENTRY
    assert trend.type == "markdown" and trend.key == trend_key(config_name) == f"clip-icm-trend-{config_name.lower()}"
    executions, sparklines = markdown_rows(trend.data, 0), markdown_rows(trend.data)
    assert "## Trend, last 2 executions" in trend.data and len(sparklines) == 4
    firsts = [position for position, row in enumerate(executions) if row["started (UTC)"]]
    assert executions[0]["started (UTC)"] == "2020-01-01 00:00:00"
    for first, entry in zip(firsts, (smoke_run["elsewhere"], smoke_run["run"]), strict=True):
        record = read_json(join(entry, "run.json"))
        provenance = record["provenance"]
        assert (executions[first]["data"], executions[first]["code"]) == (
            record["dataset"]["fingerprint"][:8], f"{provenance['package_version']} · {provenance['source_hash'][:8]}")
        expected = expected_trend_values(pd.read_parquet(join(entry, "summary.parquet")))
        shown = executions[first:first + len(expected)]
        assert [[row[column] for column in ("protocol", "comparison", "CLIP", "CLIP-ICM", DELTA)] for row in shown] == [
            [protocol, comparison, f"{before:.3f}", f"{after:.3f}", f"{difference:+.3f}"]
            for protocol, comparison, before, after, difference in expected]
    # the run made now records its intervals (not the HM's); the one from elsewhere was written before them
    assert {row["95% CI"] for row in executions[:firsts[1]]} == {MISSING}
    assert [row["95% CI"] == MISSING for row in executions[firsts[1]:]] == [False, False, False, True]


def test_smoke_run_headline_artifact_first_with_banner_and_difference(smoke_run):
    headline = smoke_run["artifacts"][0]
    assert headline.type == "markdown" and headline.key == "clip-icm-run-painted-digits-icm-tiny-none"
    first_lines = headline.data.splitlines()[:5]
    assert first_lines[0] == SMOKE_BANNER
    means = read_run(smoke_run["run"])[0].set_index(["protocol", "method", "target"]).xs(("domain-shift", "mean"),
                                                                                         level=("protocol", "target"))

    def difference(icm, clip):  # as the headline writes it, from the summary's mean rows
        low, high, p = means.loc[icm, ["ci_low", "ci_high", "mcnemar_p"]]
        low, high = (f"{round(value, 3) + 0.0:+.3f}" for value in (low, high))
        delta = round(means.at[icm, "accuracy"] - means.at[clip, "accuracy"], 3) + 0.0  # no -0.000
        return (f"{delta:+.3f} (95% CI [{low}, {high}], "
                f"McNemar p {'< 0.001' if p < 0.001 else f'= {p:.3f}'})")

    assert first_lines[4].startswith(
        f"**CLIP-ICM − CLIP**, mean over targets: domain shift: zero-shot {difference('clip_icm_zero_shot', 'clip_zero_shot')}, "
        f"linear probe {difference('clip_icm_linear_probe', 'clip_linear_probe')}; open class: zero-shot ")
    assert headline.data == run_report(*read_run(smoke_run["run"]))


def test_smoke_run_warns_of_random_weights_in_the_run_log(smoke_run):
    assert any("random weights" in log.message.lower() and log.level == logging.WARNING for log in smoke_run["warnings"])


def test_terminal_prints_the_report_and_the_folder_once(smoke_run):
    terminal = smoke_run["terminal"]
    assert terminal == run_report(*read_run(smoke_run["run"])) + "\n"
    assert terminal.count(smoke_run["run"]) == 1 and terminal.rstrip().endswith(f"Reports: `{smoke_run['run']}`")
    assert "| mean     |" in terminal and "nan" not in terminal.lower()
