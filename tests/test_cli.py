"""The command line answers at once: commands that only print never load torch, open_clip or Prefect."""
import json
import subprocess
import sys

from conftest import write_hand_made_run

HEAVY = ("torch", "open_clip", "prefect", "torchvision", "sklearn")
# run the CLI in this interpreter, then say which heavy modules it loaded
PROBE = """
import json, runpy, sys
sys.argv = ["clip-icm", *sys.argv[1:]]
try:
    runpy.run_module("clip_icm", run_name="__main__")
except SystemExit as stop:
    code = stop.code
print(json.dumps({"code": code, "loaded": sorted(m for m in %r if m in sys.modules)}), file=sys.stderr)
""" % (HEAVY,)


def cli(*argv) -> tuple[dict, str]:
    result = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, timeout=120)
    return json.loads(result.stderr.strip().splitlines()[-1]), result.stdout


def test_help_report_and_leaderboard_load_neither_torch_open_clip_nor_prefect(tmp_path):
    store = str(tmp_path / "store")
    run = write_hand_made_run(store)
    for argv, printed in [(["--help"], "reproduce"), (["run", "--help"], "--task-runner"),
                          (["report", f"{store}/runs/office"], "# CLIP vs CLIP-ICM: Office_Home · ViT-B-16 (openai)"),
                          (["report", run], "Reports: `"),
                          (["leaderboard", store], "## domain shift"),
                          (["leaderboard", store], f"leaderboard in {store}/benchmarks/all")]:  # again: up to date
        outcome, stdout = cli(*argv)
        assert outcome == {"code": 0, "loaded": []}, argv
        assert printed in stdout, argv
    assert (tmp_path / "store" / "benchmarks" / "all" / "leaderboard_gain.png").stat().st_size > 1000


def test_a_bad_run_folder_is_one_line_without_loading_the_pipeline(tmp_path):
    outcome, _ = cli("report", str(tmp_path / "nothing"))
    assert outcome == {"code": 2, "loaded": []}
