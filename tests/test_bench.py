"""bench -> leaderboard, run history, reproduce: on ICM-Tiny (random and a local checkpoint) and tiny
generated datasets, with one (lambda, k) and the domain-shift protocol only, to stay fast."""
import errno
import os
import shutil
from importlib.metadata import version
from pathlib import Path

import fsspec.implementations.local
import numpy as np
import open_clip
import pandas as pd
import pytest
import torch
from conftest import (
    TINY_MODEL, colourful_image, make_image_folder, read_embedding_file, swap_bytes_keeping_stamps_a_user_can_set,
)

import tasks.embed.models
from flows.bench import parse_model
from clip_icm.cli import main
from tasks.store.history import LATEST, RUN_RECORD, read_record, resolve_run
from tasks.report.leaderboard import BASELINES, aggregate, cell, paper_tables
from tasks.store.storage import TEMPORARY, exists, filesystem, join, read_bytes, read_json, read_parquet
from tasks.store.names import stable_hash

FAST = ["--protocol", "domain-shift", "--lams", "1", "--ks", "4"]


def history(config_folder: str) -> list[str]:
    """Every complete entry of a config, oldest first."""
    fs, path = filesystem(config_folder)
    if not fs.isdir(path):
        return []
    names = sorted(entry.rstrip("/").rsplit("/", 1)[-1] for entry in fs.ls(path, detail=False) if fs.isdir(entry))
    return [join(config_folder, name) for name in names if exists(join(config_folder, name, RUN_RECORD))]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, prefect_api):
    base = tmp_path_factory.mktemp("bench")
    tiny = dict(domains=("art", "photo"), classes=("cat", "dog"), per_class=4, extra_files=False)
    datasets = {"shapes": make_image_folder(str(base / "shapes"), seed=0, **tiny),
                "colours": make_image_folder(str(base / "colours"), seed=1, **tiny)}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        checkpoint = str(base / "tiny-seed1.pt")
        torch.save(open_clip.create_model(TINY_MODEL).state_dict(), checkpoint)
    store = str(base / "store")
    args = ["bench", "--models", f"{TINY_MODEL}:none", f"{TINY_MODEL}:{checkpoint}",
            "--datasets", *(f"{name}={url}" for name, url in datasets.items()),
            "--trials", "2", "--store", store, "--name", "tiny", *FAST]
    assert main(args) == 0
    return {"base": base, "store": store, "datasets": datasets, "checkpoint": checkpoint, "args": args,
            "folder": join(store, "benchmarks", "tiny")}


def board_of(folder) -> pd.DataFrame:
    return read_parquet(join(folder, "leaderboard.parquet")).to_pandas()


def test_bench_leaderboard_equals_the_runs_summaries(workspace):
    manifest = read_json(join(workspace["folder"], "manifest.json"))
    runs = [{**item, "run": join(workspace["store"], item["run"])} for item in manifest["runs"]]  # relative to the store
    assert len(runs) == 2 * 2 * 2 and len({item["run"] for item in runs}) == 8
    assert not any(item["skipped"] for item in runs)
    for item in runs:  # trial t: split and intervention seeds t
        config = read_record(item["run"])["config"]
        assert (config["split_seed"], config["intervention_seed"]) == (item["trial"], item["trial"])
        assert (config["model"], config["pretrained"], config["dataset"]) == (
            item["model"], item["pretrained"], workspace["datasets"][item["dataset"]])

    rows = []
    for item in runs:
        summary = read_parquet(join(item["run"], "summary.parquet")).to_pandas()
        for row in summary[summary["target"] == "mean"].itertuples():
            rows.append({**item, "method": row.method, "accuracy": row.accuracy,
                         "excludes_zero": row.ci_low > 0 or row.ci_high < 0})  # False for CLIP's rows (NaN)
    expected = pd.DataFrame(rows).groupby(["model", "pretrained", "dataset", "method"])
    excluded = expected["excludes_zero"]
    expected = expected["accuracy"]
    board = board_of(workspace["folder"])
    # models x datasets x methods (five: the zero-shot in both orders, k < d)
    assert len(board) == 2 * 2 * 5 and set(board["protocol"]) == {"domain-shift"}
    for row in board.itertuples():
        accuracies = expected.get_group((row.model, row.pretrained, row.dataset, row.method)).to_numpy()
        assert row.n_trials == 2
        assert row.mean == pytest.approx(accuracies.mean())
        assert row.se == pytest.approx(accuracies.std(ddof=1) / np.sqrt(2))
        if row.method in BASELINES:
            baseline = expected.get_group((row.model, row.pretrained, row.dataset, BASELINES[row.method])).to_numpy()
            assert row.delta == pytest.approx(accuracies.mean() - baseline.mean())
            # every trial records its interval; the mark counts those that exclude 0
            assert (row.n_intervals, row.ci_excludes_zero) == (
                2, excluded.get_group((row.model, row.pretrained, row.dataset, row.method)).sum())
        else:
            assert np.isnan(row.delta) and (row.n_intervals, row.ci_excludes_zero) == (0, 0)
    assert (board["se"] > 0).any()  # the trials did differ
    # the two weights give different embeddings, so different numbers
    by_weights = board.pivot_table(index=["dataset", "method"], columns="pretrained", values="mean")
    assert not np.allclose(by_weights["none"], by_weights[workspace["checkpoint"]])

    markdown = read_bytes(join(workspace["folder"], "leaderboard.md")).decode()
    first = board.iloc[0]
    assert cell(first["mean"], first["se"]) in markdown and "| Avg " in markdown
    assert f"{TINY_MODEL} (tiny-seed1.pt)" in markdown and f"{TINY_MODEL} (none)" in markdown
    assert r"$\pm$" in read_bytes(join(workspace["folder"], "leaderboard.tex")).decode()
    assert read_bytes(join(workspace["folder"], "leaderboard_gain.png"))[:8] == b"\x89PNG\r\n\x1a\n"


def test_second_bench_runs_and_embeds_nothing(workspace, monkeypatch):
    def no_model(*args, **kwargs):
        raise AssertionError("a second bench must not load a model")

    monkeypatch.setattr(tasks.embed.models, "load_model", no_model)
    before = board_of(workspace["folder"])
    config_folders = {os.path.dirname(item["run"]) for item in read_json(join(workspace["folder"], "manifest.json"))["runs"]}
    entries = {folder: history(folder) for folder in config_folders}
    assert main(workspace["args"]) == 0
    assert {folder: history(folder) for folder in config_folders} == entries
    assert all(item["skipped"] for item in read_json(join(workspace["folder"], "manifest.json"))["runs"])
    pd.testing.assert_frame_equal(board_of(workspace["folder"]), before)


def test_leaderboard_command_rebuilds_from_the_store(workspace, capsys):
    before = board_of(workspace["folder"])
    assert main(["leaderboard", workspace["store"], "--name", "tiny"]) == 0
    pd.testing.assert_frame_equal(board_of(workspace["folder"]), before)
    assert "leaderboard in" in capsys.readouterr().out
    # every latest run of the store; the dataset folders carry the bench's names, so the same board
    assert main(["leaderboard", workspace["store"]]) == 0
    pd.testing.assert_frame_equal(board_of(join(workspace["store"], "benchmarks", "all")), before)
    assert main(["leaderboard", workspace["store"], "--name", "missing"]) == 2
    assert "run `clip-icm bench --name missing` first" in capsys.readouterr().err


def test_two_executions_keep_two_folders_and_latest_points_at_the_second(workspace, capsys):
    dataset = make_image_folder(str(workspace["base"] / "history"), domains=("art", "photo"), classes=("cat", "dog"),
                                per_class=4, extra_files=False, seed=2)
    args = ["run", "--dataset", dataset, "--model", TINY_MODEL, "--pretrained", "none",
            "--store", workspace["store"], "--run-name", "history", *FAST]
    assert main(args) == 0
    assert main(args) == 0
    folder = join(workspace["store"], "runs", "history")
    first, second = history(folder)
    assert read_bytes(join(folder, LATEST)).decode() == os.path.basename(second)
    assert resolve_run(folder) == second
    for entry in (first, second):  # the first execution's reports are still there, untouched
        # recorded relative to the store, which can move; read as where it is now
        assert read_json(join(entry, RUN_RECORD))["run_url"] == entry.removeprefix(workspace["store"] + "/")
        assert read_record(entry)["run_url"] == entry
        assert os.path.exists(join(entry, "summary.parquet"))
    capsys.readouterr()
    assert main(["report", folder]) == 0 and second in capsys.readouterr().out
    assert main(["report", first]) == 0 and first in capsys.readouterr().out


def test_reproduce_says_identical_then_names_the_changed_domain(workspace, capsys):
    dataset = make_image_folder(str(workspace["base"] / "reproduce"), domains=("art", "photo"), classes=("cat", "dog"),
                                per_class=4, extra_files=False, seed=3)
    assert main(["run", "--dataset", dataset, "--model", TINY_MODEL, "--pretrained", "none",
                 "--store", workspace["store"], "--run-name", "reproduce", *FAST]) == 0
    folder = join(workspace["store"], "runs", "reproduce")
    original = resolve_run(folder)
    record = read_record(original)
    assert set(record["dataset"]["domain_fingerprints"]) == {"art", "photo"}
    assert record["provenance"]["weights_id"] == "none" and record["provenance"]["libraries"]["torch"] == version("torch")

    assert main(["reproduce", original]) == 0
    assert "**Verdict: identical" in capsys.readouterr().out
    same = resolve_run(folder)
    assert same != original and history(folder) == [original, same]
    changes = read_parquet(join(same, "reproduce.parquet")).to_pandas()
    assert len(changes) == 2 * 5 + 5  # targets x methods, and a mean row per method
    assert (changes["difference"] == 0).all() and (changes["changed_predictions"] == 0).all()
    pd.testing.assert_frame_equal(read_parquet(join(original, "predictions.parquet")).to_pandas(),
                                  read_parquet(join(same, "predictions.parquet")).to_pandas())

    replaced = os.path.join(dataset, "photo", "dog", "000.jpg")
    size = os.path.getsize(replaced)
    colourful_image(np.random.default_rng(99), label=0, domain_index=2, size=40).save(replaced, format="JPEG")
    assert os.path.getsize(replaced) != size
    assert main(["reproduce", folder, "--store", workspace["store"]]) == 0  # a config folder: its latest entry
    out = capsys.readouterr().out
    verdict = next(line for line in out.splitlines() if line.startswith("**Verdict"))
    assert verdict.startswith("**Verdict: differs: dataset fingerprint")
    assert "domains whose files changed: photo)" in verdict and "art" not in verdict
    changed = resolve_run(folder)
    assert changed not in (original, same)
    assert read_bytes(join(changed, "reproduce.md")).decode().count("Verdict: differs") == 1


def test_a_same_size_byte_swap_is_reported_by_reproduce_and_re_embedded(workspace, capsys):
    dataset = make_image_folder(str(workspace["base"] / "swap"), domains=("art", "photo"), classes=("cat", "dog"),
                                per_class=3, extra_files=False, seed=4)
    rng = np.random.default_rng(6)
    for name in ("000", "001"):  # two BMPs of one size, different pixels
        os.remove(os.path.join(dataset, "photo", "cat", f"{name}.jpg"))
        colourful_image(rng, 0, 1).save(os.path.join(dataset, "photo", "cat", f"{name}.bmp"))
    assert main(["run", "--dataset", dataset, "--model", TINY_MODEL, "--pretrained", "none",
                 "--store", workspace["store"], "--run-name", "swap", *FAST]) == 0
    folder = join(workspace["store"], "runs", "swap")
    original = resolve_run(folder)
    swap_bytes_keeping_stamps_a_user_can_set(os.path.join(dataset, "photo", "cat", "000.bmp"),
                                             os.path.join(dataset, "photo", "cat", "001.bmp"))
    assert main(["reproduce", original]) == 0
    verdict = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("**Verdict"))
    assert verdict.startswith("**Verdict: differs: dataset fingerprint") and "domains whose files changed: photo)" in verdict
    old, new = (read_record(entry) for entry in (original, resolve_run(folder)))
    shards = {key: (old["embeddings"]["shards"][key], new["embeddings"]["shards"][key]) for key in new["embeddings"]["shards"]}
    assert all(before != after for key, (before, after) in shards.items() if key.startswith("photo/"))
    assert all(before == after for key, (before, after) in shards.items() if key.startswith("art/"))
    assert new["embeddings"]["embedded_this_run"] > 0  # photo's shards were embedded again, from the new bytes
    (old_rows, old_embeddings), (new_rows, new_embeddings) = (
        read_embedding_file(record["embeddings"]["shards"]["photo/original"]) for record in (old, new))
    position = {name: {sample_id: i for i, sample_id in enumerate(rows["sample_id"])}
                for name, rows in (("old", old_rows), ("new", new_rows))}
    np.testing.assert_array_equal(new_embeddings[position["new"]["photo/cat/000.bmp"]],
                                  old_embeddings[position["old"]["photo/cat/001.bmp"]])


@pytest.mark.parametrize("models, message", [
    (["ICM-Tiny"], "'ICM-Tiny' is not NAME:PRETRAINED"),
    (["ICM-Tiny:/no/such/checkpoint.pt"], "config field 'pretrained'"),
])
def test_bad_bench_fails_before_any_work(workspace, tmp_path, capsys, models, message):
    store = tmp_path / "store"
    assert main(["bench", "--models", *models, "--datasets", f"shapes={workspace['datasets']['shapes']}",
                 "--store", str(store), *FAST]) == 2
    assert message in capsys.readouterr().err
    assert not store.exists()


def test_model_specs_split_at_the_first_colon():
    assert parse_model("ViT-B-16:openai") == ("ViT-B-16", "openai")
    assert parse_model("ICM-Tiny:/ckpt/run:3/epoch_1.pt") == ("ICM-Tiny", "/ckpt/run:3/epoch_1.pt")
    assert parse_model("local-dir:/exports/pacs") == ("local-dir:/exports/pacs", "openai")  # its own weights
    assert parse_model("hf-hub:org/name") == ("hf-hub:org/name", "openai")
    with pytest.raises(ValueError, match="is not NAME:PRETRAINED"):
        parse_model("ViT-B-16")


def test_one_trial_has_no_standard_error_and_the_table_shows_the_mean_alone():
    trials = pd.DataFrame({
        "model": "M", "pretrained": "none", "dataset": "D", "split": "stable", "split_seed": 0, "intervention_seed": 0, "run": "r",
        "protocol": "domain-shift", "method": ["clip_zero_shot", "clip_icm_zero_shot"], "accuracy": [0.5, 0.625]})
    board = aggregate(trials)
    assert board["n_trials"].tolist() == [1, 1] and board["se"].isna().all()
    assert board.set_index("method").at["clip_icm_zero_shot", "delta"] == pytest.approx(0.125)
    table = paper_tables(board)["domain-shift", "stable"]
    assert table["D"].tolist() == ["50.0", "62.5"] and table["Avg"].tolist() == ["50.0", "62.5"]


def test_the_exported_models_zero_shot_gains_over_clips_zero_shot_on_the_leaderboard():
    trials = pd.DataFrame({
        "model": "M", "pretrained": "none", "dataset": "D", "split": "stable", "split_seed": 0, "intervention_seed": 0, "run": "r",
        "protocol": "domain-shift", "method": ["clip_zero_shot", "clip_icm_zero_shot", "clip_icm_zero_shot_open_clip"],
        "accuracy": [0.5, 0.625, 0.75], "ci_low": [np.nan, 0.05, 0.1], "ci_high": [np.nan, 0.2, 0.4]})
    board = aggregate(trials).set_index("method")
    assert board.at["clip_icm_zero_shot_open_clip", "baseline"] == "clip_zero_shot"
    assert board.at["clip_icm_zero_shot_open_clip", "delta"] == pytest.approx(0.25)
    assert board.at["clip_icm_zero_shot_open_clip", "ci_excludes_zero"] == 1
    assert paper_tables(aggregate(trials))["domain-shift", "stable"]["D"].tolist() == ["50.0", "62.5*", "75.0*"]


def test_verdict_names_code_weights_and_library_changes():
    from tasks.report.reproduce import verdict, what_changed

    def record(source="abc", weights="file-sha256:1", torch_version="2.14.1", photo="p1"):
        return {"dataset": {"fingerprint": stable_hash(photo), "domain_fingerprints": {"art": "a1", "photo": photo}},
                "provenance": {"package_version": "0.1.0", "source_hash": source, "weights_id": weights,
                               "libraries": {"torch": torch_version, "numpy": "2.3.0"}}}

    same = pd.DataFrame({"protocol": "domain-shift", "target": ["art", "mean"], "method": "clip_zero_shot",
                         "old_accuracy": 0.5, "new_accuracy": 0.5, "difference": 0.0, "changed_predictions": 0})
    assert what_changed(record(), record()) == []
    assert verdict(same, []).startswith("identical")
    changes = what_changed(record(), record(source="def", weights="file-sha256:2", torch_version="2.15.0", photo="p2"))
    assert [change.split(" ")[0] for change in changes] == ["dataset", "code", "weights", "library"]
    assert "(domains whose files changed: photo)" in changes[0]
    assert changes[1] == "code version 0.1.0/abc → 0.1.0/def" and changes[2] == "weights hash file-sha256:1 → file-sha256:2"
    assert changes[3] == "library versions torch 2.14.1 → 2.15.0"
    line = verdict(same, changes)
    assert line.startswith("differs: dataset fingerprint") and line.endswith("every prediction is the same")
    moved = same.assign(new_accuracy=[0.75, 0.75], difference=[0.25, 0.25], changed_predictions=[2, 2])
    assert verdict(moved, []) == ("differs: no recorded input changed (non-determinism: device kernels, threads); "
                                  "2 prediction(s) changed, largest accuracy difference 0.2500")


def test_a_copied_store_reads_only_itself(workspace, tmp_path, capsys):
    """The original is out of reach while the copy is used: any path into it would fail."""
    board = board_of(workspace["folder"])
    copy, hidden = str(tmp_path / "copy"), workspace["store"] + ".hidden"
    shutil.copytree(workspace["store"], copy)
    entry = join(copy, read_json(join(copy, "benchmarks", "tiny", "manifest.json"))["runs"][0]["run"])
    os.rename(workspace["store"], hidden)
    try:
        assert main(["leaderboard", copy, "--name", "tiny"]) == 0
        pd.testing.assert_frame_equal(board_of(join(copy, "benchmarks", "tiny")), board)
        assert main(["report", entry]) == 0
        assert main(["reproduce", entry]) == 0
        assert "**Verdict: identical" in capsys.readouterr().out
        new = read_record(resolve_run(os.path.dirname(entry)))
        assert new["embeddings"]["embedded_this_run"] == 0  # the copy's cache
        assert all(path.startswith(copy) for path in new["embeddings"]["shards"].values())
    finally:
        os.rename(hidden, workspace["store"])


def test_reproduce_refuses_a_damaged_run_before_running_anything(workspace, tmp_path, capsys):
    copy = str(tmp_path / "copy")
    shutil.copytree(workspace["store"], copy)
    entry = join(copy, read_json(join(copy, "benchmarks", "tiny", "manifest.json"))["runs"][0]["run"])
    predictions = join(entry, "predictions.parquet")
    with open(predictions, "r+b") as handle:
        handle.truncate(os.path.getsize(predictions) // 2)
    before = history(os.path.dirname(entry))
    capsys.readouterr()
    assert main(["reproduce", entry]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("clip-icm: ") and predictions in line
    assert history(os.path.dirname(entry)) == before  # no new entry: nothing ran


def test_a_full_store_is_one_line_naming_the_file_and_leaves_no_temporary_file(workspace, monkeypatch, capsys):
    real_open = fsspec.implementations.local.LocalFileSystem.open

    def full_for_reports(self, path, mode="rb", *args, **kwargs):
        if "w" in mode and "summary.parquet" in str(path):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_open(self, path, mode, *args, **kwargs)

    monkeypatch.setattr(fsspec.implementations.local.LocalFileSystem, "open", full_for_reports)
    capsys.readouterr()
    assert main(["run", "--dataset", workspace["datasets"]["shapes"], "--model", TINY_MODEL, "--pretrained", "none",
                 "--store", workspace["store"], "--run-name", "full", *FAST]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "clip-icm:" in line or "Traceback" in line]
    assert len(lines) == 1 and "Traceback" not in err
    assert "summary.parquet" in lines[0] and "No space left on device" in lines[0] and "--store" in lines[0]
    assert not [path for path in Path(workspace["store"]).rglob(f"*{TEMPORARY}*")]


def test_bench_names_the_flag_the_user_typed(workspace, tmp_path, capsys):
    assert main(["bench", "--models", f"{TINY_MODEL}:none", "--datasets", f"shapes={tmp_path / 'nothing'}",
                 "--store", str(tmp_path / "store"), *FAST]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "(--datasets)" in line and str(tmp_path / "nothing") in line
