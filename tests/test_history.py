"""A store's history read from outside: damaged records and dangling LATEST files are one `clip-icm:` line naming the
file, and a moved or copied store (this version's, or one written before 0.3 with absolute paths) reads its own files."""
import json
import os
import shutil

from conftest import write_hand_made_run

from clip_icm.cli import main
from tasks.report.leaderboard import bench_runs
from tasks.store.history import read_record, relative_to, stored
from tasks.store.storage import write_json


def one_line(capsys, *argv) -> str:
    """The error a command printed: exit 2, one `clip-icm:` line and nothing else on stderr."""
    assert main(list(argv)) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("clip-icm: ")
    return line


def test_a_damaged_run_record_is_one_line_naming_it(tmp_path, capsys):
    entry = write_hand_made_run(str(tmp_path / "store"))
    record = os.path.join(entry, "run.json")
    text = open(record).read()
    for damage in (text[: len(text) // 2], "[1, 2]", ""):
        with open(record, "w") as handle:
            handle.write(damage)
        for argv in (["report", entry], ["report", os.path.dirname(entry)], ["leaderboard", str(tmp_path / "store")]):
            line = one_line(capsys, *argv)
            assert record in line, (damage, argv, line)


def test_a_latest_file_naming_a_deleted_entry_is_one_line_naming_both(tmp_path, capsys):
    entry = write_hand_made_run(str(tmp_path / "store"))
    shutil.rmtree(entry)
    line = one_line(capsys, "report", os.path.dirname(entry))
    assert os.path.join(os.path.dirname(entry), "LATEST") in line and entry in line and "deleted or moved" in line


def test_a_copied_store_reads_its_own_files_whatever_version_wrote_its_records(tmp_path):
    original = str(tmp_path / "original")
    entry = write_hand_made_run(original)
    shards = {"art/original": f"{original}/embeddings/a.parquet", "photo/original": f"{original}/embeddings/b.parquet"}
    shared = "s3://shared/embeddings/c.parquet"  # outside the store: left as it is
    current = {**json.load(open(f"{entry}/run.json")), "embeddings": {"shards": shards, "text": shared}}
    for version, record, run in (("0.3", stored(current, original), relative_to(original, entry)),
                                 ("0.2", current, entry)):  # 0.2 wrote absolute paths
        write_json(f"{entry}/run.json", record)
        write_json(f"{original}/benchmarks/tiny/manifest.json", {"runs": [{"run": run, "dataset": "office"}]})
        copy = str(tmp_path / f"copy-{version}")
        shutil.copytree(original, copy)
        moved_entry = entry.replace(original, copy)
        read = read_record(moved_entry)
        assert read["run_url"] == moved_entry
        assert read["embeddings"]["shards"] == {key: path.replace(original, copy) for key, path in shards.items()}
        assert read["embeddings"]["text"] == shared
        assert bench_runs(copy, "tiny") == [{"run": moved_entry, "dataset": "office"}]


def test_runs_written_before_the_intervals_render_beside_runs_with_them(tmp_path, capsys):
    from test_uncertainty_reports import summary_with_uncertainty

    store = str(tmp_path / "store")
    old = write_hand_made_run(store, "old", "20261201T000000Z-abc-old")
    new = write_hand_made_run(store, "new", "20261202T000000Z-abc-new", summary=summary_with_uncertainty())
    assert main(["report", old]) == 0
    old_report = capsys.readouterr().out
    assert "95% CI" not in old_report and "zero-shot +0.250, linear probe -0.025;" in old_report
    assert main(["report", new]) == 0
    assert "zero-shot +0.250 (95% CI [+0.120, +0.380], McNemar p < 0.001)" in capsys.readouterr().out
    assert main(["leaderboard", store]) == 0
    board = open(os.path.join(store, "benchmarks", "all", "leaderboard.md")).read()
    # two trials of one config: the new run's intervals count, the old run (none recorded) does not
    assert "| clip_icm_zero_shot    | 62.5 ± 0.0 (1/1) |" in board and "| clip_icm_linear_probe | 47.5 ± 0.0 (0/1) |" in board
