"""Every benchmark under bench/ still runs: each at its smoke size, in its own process, writing its table to a temporary
folder (never over bench/results/). The numbers are not checked here: a benchmark is not a test, but a claim that
can no longer be re-run is a broken one."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(path.name for path in (ROOT / "bench").glob("*.py") if path.name != "harness.py")


def test_every_script_is_here():
    assert {"cache_read.py", "embed_throughput.py", "embed_vs_clip_benchmark.py", "eval_scaling.py",
            "fingerprint_cost.py", "fit_scaling.py", "presets_synthetic.py", "shards_vs_folders.py",
            "uncertainty_cost.py"} <= set(SCRIPTS)


@pytest.mark.pipeline
@pytest.mark.parametrize("script", SCRIPTS)
def test_a_benchmark_runs_at_its_smoke_size_and_writes_its_table(script, tmp_path):
    results = tmp_path / "results"
    before = {path: path.stat().st_mtime_ns for path in (ROOT / "bench" / "results").glob("*")}
    completed = subprocess.run([sys.executable, str(ROOT / "bench" / script), "--smoke", "--results", str(results)],
                               capture_output=True, text=True, cwd=tmp_path, timeout=300,
                               env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert completed.returncode == 0, completed.stderr[-3000:]
    tables = list(results.glob("*.md"))
    assert len(tables) == 1, tables
    text = tables[0].read_text()
    assert "|---" in text and str(tables[0]) in completed.stdout  # a markdown table, and the script says where it is
    assert {path: path.stat().st_mtime_ns for path in (ROOT / "bench" / "results").glob("*")} == before
