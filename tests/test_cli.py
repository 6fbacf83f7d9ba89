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


def test_bad_input_to_run_is_answered_before_torch_open_clip_or_prefect_load(tmp_path):
    """Everything that needs no model (the dataset, the store, options, option files) is checked first, by code
    that loads none of the heavy modules: a bad path is one line in about a second, not after torch's import."""
    from conftest import make_image_folder

    dataset = make_image_folder(str(tmp_path / "data"))
    (tmp_path / "a-file").write_text("not a folder")
    model = ["--model", "ViT-B-32", "--pretrained", "none", "--store", str(tmp_path / "store")]
    cases = [
        (["--dataset", str(tmp_path / "nothing"), *model], "config field 'dataset' (--dataset)"),
        (["--dataset", dataset, *model[:4], "--store", str(tmp_path / "a-file" / "store")], "config field 'store' (--store)"),
        (["--dataset", dataset, *model, "--lams", "-1"], "config field 'lams' (--lams)"),
        (["--dataset", dataset, *model, "--templates", str(tmp_path / "no-templates.txt")], "config field 'templates'"),
        (["--dataset", dataset, *model, "--class-names", str(tmp_path / "no-names.csv")], "config field 'class_names'"),
        (["--dataset", dataset, *model, "--text-pairs", str(tmp_path / "no-pairs.csv")], "config field 'text_pairs'"),
    ]
    for argv, named in cases:
        result = subprocess.run([sys.executable, "-c", PROBE, "run", *argv], capture_output=True, text=True, timeout=120)
        *lines, outcome = result.stderr.strip().splitlines()
        assert json.loads(outcome) == {"code": 2, "loaded": []}, (argv, result.stderr)
        assert len(lines) == 1 and lines[0].startswith(f"clip-icm: {named}"), (argv, lines)
    assert not (tmp_path / "store").exists()  # nothing written by a refused run


def test_the_model_checks_still_run_after_the_others_pass(tmp_path):
    """A good dataset and store with a misspelt model: the model check (which loads open_clip) names it."""
    from conftest import make_image_folder

    dataset = make_image_folder(str(tmp_path / "data"))
    result = subprocess.run([sys.executable, "-c", PROBE, "run", "--dataset", dataset, "--model", "ViT-B-3",
                             "--pretrained", "none", "--store", str(tmp_path / "store")],
                            capture_output=True, text=True, timeout=120)
    line, outcome = result.stderr.strip().splitlines()[-2:]
    assert line.startswith("clip-icm: config field 'model' (--model): unknown open_clip model 'ViT-B-3'"), line
    assert json.loads(outcome)["code"] == 2 and "open_clip" in json.loads(outcome)["loaded"]
