"""Bad input fails before any model is loaded or image embedded: exit 2, one line naming the field
or file, no traceback. No Prefect server starts here: failing before the flow is the point."""
import os
import pathlib
import pickle
import re
import subprocess
import sys

import fsspec
import open_clip
import pandas as pd
import pyarrow as pa
import pytest
import torch
from conftest import TINY_MODEL, make_image_folder
from fsspec.implementations.memory import MemoryFileSystem

import flows.config.preflight
import flows.run
import flows.sweep
import tasks.embed.images
import tasks.embed.models
from clip_icm.cli import describe, main
from clip_icm.process import startup_timeout
from flows.config.run_config import NAME, RunConfig
from flows.config.preflight import preflight
from flows.run import run as run_flow
from flows.sweep import sweep as sweep_flow
from tasks.embed.checkpoints import check_checkpoint, meta_model
from tasks.errors import InputError
from tasks.report.run_report import read_summary
from tasks.specs import DEFAULT_PARAMS, InterventionConfig
from tasks.store.storage import join, write_parquet

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MARKER = "reduce-payload-ran"


class Payload:
    """A pickle that would create a marker file if it were ever unpickled."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


class ReadOnlyMemory(MemoryFileSystem):
    """A store that lists and reads but refuses writes, as a read-only bucket or mount does."""

    protocol = "readonly"

    def _open(self, path, mode="rb", **kwargs):
        if "r" not in mode:
            raise PermissionError(f"read-only file system: {path}")
        return super()._open(path, mode, **kwargs)


fsspec.register_implementation("readonly", ReadOnlyMemory, clobber=True)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Datasets and files, good and bad, shared by the cases below."""
    base = tmp_path_factory.mktemp("preflight")
    paths = {
        "tmp": str(base),
        "data": make_image_folder(str(base / "data"), per_class=6),
        "small": make_image_folder(str(base / "small"), per_class=2),
        "one": make_image_folder(str(base / "one"), domains=("photo",), per_class=5),
        "two": make_image_folder(str(base / "two"), domains=("art", "photo"), per_class=5),
        "oneclass": make_image_folder(str(base / "oneclass"), classes=("cat",), per_class=5),
    }
    make_image_folder(str(base / "uneven"), domains=("photo", "sketch"), per_class=6)
    paths["uneven"] = make_image_folder(str(base / "uneven"), domains=("art",), per_class=1, extra_files=False)
    (base / "a-file").write_text("not a folder")
    paths["file"] = str(base / "a-file")
    shapes = {key: torch.zeros(value.shape) for key, value in meta_model(TINY_MODEL).state_dict().items()}
    torch.save(shapes, base / "good.pt")
    checkpoints = {
        "text.pt": b"just some text\n",
        "empty.pt": b"",
        "truncated.pt": (base / "good.pt").read_bytes()[:2000],
        "payload.pkl": pickle.dumps(Payload(str(base / MARKER))),
        "plain.pkl": pickle.dumps(shapes),
        "garbage.safetensors": b"\x00\x01 not safetensors",
    }
    for name, content in checkpoints.items():
        (base / name).write_bytes(content)
    torch.save({"weights": Payload(str(base / MARKER))}, base / "payload.pt")
    torch.save({**shapes, "visual.conv1.weight": torch.zeros(5, 3, 4, 4)}, base / "shapes.pt")
    torch.save({key: value for key, value in shapes.items() if not key.startswith("visual.")}, base / "keys.pt")
    torch.save({"model": shapes, "epoch": 3}, base / "wrapped.pt")
    torch.save([1, 2, 3], base / "list.pt")
    (base / "folder.pt").mkdir()
    pairs = {
        "pairs-columns.csv": "class,caption\nbird,a bird\n",
        "pairs-classes.csv": "class,text_a,text_b\nunicorn,a photo of a unicorn.,a sketch of a unicorn.\n",
        "pairs-empty.csv": "class,text_a,text_b\n",
        "pairs-blank.csv": "class,text_a,text_b\nbird,a photo of a bird.,\n",
    }
    for name, content in pairs.items():
        (base / name).write_text(content)
    (base / "pairs-binary.csv").write_bytes(b"\xff\xfe\x00\x81" * 50)
    (base / "pairs-folder.csv").mkdir()
    return paths


def command(files, extra, subcommand="run"):
    args = [subcommand, "--dataset", files["data"], "--model", TINY_MODEL, "--pretrained", "none",
            "--store", f"{files['tmp']}/store", *[fill(arg, files) for arg in extra]]
    return args


def fill(arg: str, files) -> str:
    for key, path in files.items():
        arg = arg.replace("{" + key + "}", path)
    return arg


@pytest.fixture(autouse=True)
def nothing_may_load_or_embed(monkeypatch):
    """Any model load, image embedding or flow start fails the test."""
    def forbidden(*args, **kwargs):
        raise AssertionError("a model was loaded, an image embedded or a flow started")

    for module, name in [(tasks.embed.models, "load_model"), (tasks.embed.models, "_load_model"), (tasks.embed.images, "load_model"),
                         (open_clip, "create_model_and_transforms"), (flows.run, "run"), (flows.sweep, "sweep")]:
        monkeypatch.setattr(module, name, forbidden)
    monkeypatch.setattr(flows.config.preflight, "_PASSED", set())


def assert_input_error(capsys, args, *expected):
    try:
        code = main(args)
    except SystemExit as exit:  # argparse's own checks (types, choices) exit from inside
        code = exit.code
    assert code == 2
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("clip-icm") and "Traceback" not in err
    for fragment in expected:
        assert fragment in lines[0], lines[0]
    return lines[0]


FIELD_CASES = {
    "k wider than the model": (["--ks", "8", "33"], "config field 'ks' (--ks)", "embedding width 32"),
    "lambda inf": (["--lams", "1", "inf"], "config field 'lams' (--lams)", "finite"),
    "lambda overflowing": (["--lams", "1e300"], "config field 'lams' (--lams)", "from 0 to 1e+12"),
    "lambda nan": (["--lams", "nan"], "config field 'lams' (--lams)", "finite"),
    "lambda negative": (["--lams", "-1"], "config field 'lams'"),
    "lambda twice": (["--lams", "1", "1.0"], "config field 'lams'", "more than once"),
    "k twice": (["--ks", "4", "4"], "config field 'ks'", "more than once"),
    "k zero": (["--ks", "0"], "config field 'ks'"),
    "k not an integer": (["--ks", "2.5"], "argument --ks"),
    "target twice": (["--targets", "art", "art"], "config field 'targets' (--targets)", "more than once"),
    "unknown target": (["--targets", "art", "cartoon"], "config field 'targets'", "['cartoon'] are not domains"),
    "holdout too small": (["--dataset", "{small}", "--holdout", "0.05"], "config field 'holdout' (--holdout)",
                          "without a validation image", "raise --holdout to at least"),
    "holdout too large": (["--dataset", "{small}", "--holdout", "0.95"], "config field 'holdout'",
                          "without a training image", "lower --holdout"),
    "holdout out of range": (["--holdout", "1.5"], "config field 'holdout'"),
    "nothing left to test": (["--dataset", "{uneven}", "--holdout", "0.1", "--test-split", "out", "--targets", "art",
                              "--protocol", "domain-shift"], "config field 'test_split' (--test-split)", "['art']"),
    "one domain, both protocols": (["--dataset", "{one}"], "config field 'dataset' (--dataset)", "one domain"),
    "one domain, domain shift": (["--dataset", "{one}", "--protocol", "domain-shift"], "config field 'dataset'",
                                 "one domain"),
    "one domain, open class": (["--dataset", "{one}", "--protocol", "open-class"], "config field 'dataset'"),
    "one class": (["--dataset", "{oneclass}"], "config field 'dataset'", "one class"),
    "missing dataset": (["--dataset", "{tmp}/nowhere"], "config field 'dataset'", "does not exist"),
    "dataset with an unknown scheme": (["--dataset", "nope://data"], "config field 'dataset'"),
    "leave-one-domain-out on two domains": (["--dataset", "{two}", "--selection", "leave-one-domain-out"],
                                            "config field 'selection'", "at least three domains"),
    "workers -1": (["--num-workers", "-1"], "config field 'num_workers' (--num-workers)"),
    "batch size 0": (["--batch-size", "0"], "config field 'batch_size'"),
    "max workers 0": (["--max-workers", "0"], "config field 'max_workers'"),
    "shard size 0": (["--shard-size", "0"], "config field 'shard_size'"),
    "probe C inf": (["--probe-c", "inf"], "config field 'probe_c'"),
    "unknown model": (["--model", "ViT-B-31"], "config field 'model' (--model)", "ViT-B-32"),
    "unknown tag": (["--pretrained", "no-such-tag"], "config field 'pretrained' (--pretrained)"),
    "unknown choice": (["--protocol", "sideways"], "argument --protocol"),
    "intervention seed negative": (["--intervention-seed", "-1"], "config field 'intervention_seed'"),
    "family twice": (["--interventions", "invert", "invert"], "config field 'interventions'", "more than once"),
    "missing text pairs": (["--text-pairs", "{tmp}/none.csv"], "config field 'text_pairs' (--text-pairs)",
                           "none.csv", "does not exist"),
    "text pairs without a column": (["--text-pairs", "{tmp}/pairs-columns.csv"], "config field 'text_pairs'",
                                    "pairs-columns.csv", "lacks column(s) ['text_a', 'text_b']"),
    "text pairs of unknown classes": (["--text-pairs", "{tmp}/pairs-classes.csv"], "pairs-classes.csv", "unicorn"),
    "text pairs with no rows": (["--text-pairs", "{tmp}/pairs-empty.csv"], "pairs-empty.csv", "no pairs"),
    "text pairs with a blank cell": (["--text-pairs", "{tmp}/pairs-blank.csv"], "pairs-blank.csv", "empty cells"),
    "text pairs not text": (["--text-pairs", "{tmp}/pairs-binary.csv"], "pairs-binary.csv", "cannot be read"),
    "text pairs a folder": (["--text-pairs", "{tmp}/pairs-folder.csv"], "pairs-folder.csv", "cannot be read"),
    "text pairs with --no-text": (["--text-pairs", "{tmp}/pairs-empty.csv", "--no-text"], "config field 'text_pairs'",
                                  "--no-text"),
    "missing templates file": (["--templates", "{tmp}/templates.txt"], "config field 'templates'", "templates.txt"),
    "missing class names file": (["--class-names", "{tmp}/names.csv"], "config field 'class_names'", "names.csv"),
    "misspelt template set": (["--templates", "openai"], "config field 'templates'", "neither a built-in"),
    "misspelt class names": (["--class-names", "imagenet1k"], "config field 'class_names'", "does not exist"),
    "target dataset twice": (["--protocol", "dataset-shift", "--target-datasets", "v2={data}", "v2={one}"],
                             "config field 'target_datasets'", "'v2' given twice"),
    "dataset shift without targets": (["--protocol", "dataset-shift"], "config field 'target_datasets'"),
    "dataset shift target missing": (["--protocol", "dataset-shift", "--target-datasets", "v2={tmp}/nowhere"],
                                     "config field 'target_datasets'", "v2=", "does not exist"),
    "target datasets without dataset shift": (["--target-datasets", "v2={data}"], "config field 'target_datasets'",
                                              "--protocol dataset-shift"),
    "target dataset named like a path": (["--protocol", "dataset-shift", "--target-datasets", "../v2={data}"],
                                         "config field 'target_datasets'"),
}

INTERVENTION_CASES = {
    "a number instead of a mapping": '{"gaussian_blur": 3}',
    "non-numeric sigma": '{"gaussian_blur": {"sigma": ["a", "b"]}}',
    "sigma a single number": '{"gaussian_blur": {"sigma": 1.5}}',
    "even blur kernel": '{"gaussian_blur": {"kernel_size": 4}}',
    "zero blur kernel": '{"gaussian_blur": {"kernel_size": 0}}',
    "negative blur kernel": '{"gaussian_blur": {"kernel_size": -3}}',
    "blur kernel wider than images": '{"gaussian_blur": {"kernel_size": 65}}',
    "reversed sigma range": '{"gaussian_blur": {"sigma": [3.0, 1.0]}}',
    "bits out of range": '{"posterize": {"bits": [0, 9]}}',
    "bits not integers": '{"posterize": {"bits": [2.5, 4]}}',
    "threshold out of range": '{"solarize": {"threshold": [0, 300]}}',
    "hue out of range": '{"color_jitter": {"hue": 0.7}}',
    "brightness a string": '{"color_jitter": {"brightness": "lots"}}',
    "brightness a boolean": '{"color_jitter": {"brightness": true}}',
    "unknown parameter": '{"invert": {"amount": 1}}',
    "unknown family": '{"blur": {"sigma": [1, 2]}}',
}

CHECKPOINT_CASES = {
    "text.pt": "is a text file, not a PyTorch checkpoint",
    "empty.pt": "is empty",
    "truncated.pt": "truncated or corrupt",
    "payload.pkl": "not a weights-only checkpoint",
    "payload.pt": "not a weights-only checkpoint",
    "plain.pkl": "not a weights-only checkpoint",
    "shapes.pt": "visual.conv1.weight [5, 3, 4, 4] vs [64, 3, 8, 8]",
    "keys.pt": "missing keys (e.g. visual.",
    "wrapped.pt": "under the key 'model'",
    "list.pt": "holds list",
    "folder.pt": "is a folder",
    "garbage.safetensors": "not a readable safetensors file",
}


@pytest.mark.parametrize("case", FIELD_CASES, ids=list(FIELD_CASES))
def test_bad_input_fails_before_work_in_one_line(case, files, capsys):
    extra, *expected = FIELD_CASES[case]
    assert_input_error(capsys, command(files, extra), *expected)
    assert not os.path.exists(f"{files['tmp']}/store")  # nothing written, not even the store folder


@pytest.mark.parametrize("case", INTERVENTION_CASES, ids=list(INTERVENTION_CASES))
def test_bad_intervention_parameters_fail_before_work(case, files, capsys):
    line = assert_input_error(capsys, command(files, ["--intervention-params", INTERVENTION_CASES[case]]),
                              "config field 'intervention_params")
    family = next(name for name in ("gaussian_blur", "posterize", "solarize", "color_jitter", "invert", "blur")
                  if name in INTERVENTION_CASES[case])
    assert family in line


def test_intervention_parameters_only_for_families_in_use(files, capsys):
    assert_input_error(capsys, command(files, ["--interventions", "invert", "--intervention-params",
                                               '{"gaussian_blur": {"sigma": [1, 2]}}']),
                       "config field 'intervention_params'", "not among the families used")


@pytest.mark.parametrize("params", [
    {"gaussian_blur": {"kernel_size": 3, "sigma": [0.5, 0.5]}, "posterize": {"bits": [1, 8]}},
    {"solarize": {"threshold": [0, 255]}, "color_jitter": {"hue": 0.5, "brightness": 0}},
    {"gaussian_blur": {"kernel_size": [3, 63]}},
])
def test_valid_intervention_parameters_pass_and_are_used(params):
    config = InterventionConfig(params=params)
    for family, overrides in params.items():
        assert config.parameters(family) == {**DEFAULT_PARAMS[family], **overrides}


@pytest.mark.parametrize("kwargs, field", [
    ({"seed": -1}, "intervention_seed"), ({"seed": 1.5}, "intervention_seed"), ({"seed": True}, "intervention_seed"),
    ({"families": ()}, "interventions"), ({"families": ("invert", "invert")}, "interventions"),
    ({"families": ("fog",)}, "interventions"),
    ({"params": {"invert": 3}}, "intervention_params"), ({"params": [("invert", {})]}, "intervention_params"),
])
def test_intervention_config_validates_itself(kwargs, field):
    """Flows that build an InterventionConfig directly (the embed-dataset deployment) get the same checks."""
    with pytest.raises(InputError) as error:
        InterventionConfig(**kwargs)
    assert error.value.field == field


@pytest.mark.parametrize("name", list(CHECKPOINT_CASES))
def test_bad_checkpoint_fails_naming_the_file_before_any_load(name, files, capsys):
    path = f"{files['tmp']}/{name}"
    assert_input_error(capsys, command(files, ["--pretrained", path]), "config field 'pretrained' (--pretrained)",
                       f"checkpoint file {path!r}", CHECKPOINT_CASES[name])
    assert not os.path.exists(f"{files['tmp']}/{MARKER}")


def test_a_pickle_payload_never_runs(files, tmp_path):
    """Weights-only loading refuses the pickle before its __reduce__ can run, and says so."""
    marker = tmp_path / "ran"
    (tmp_path / "evil.pt").write_bytes(pickle.dumps(Payload(str(marker))))
    with pytest.raises(InputError, match="not a weights-only checkpoint.*none of its code ran"):
        check_checkpoint(str(tmp_path / "evil.pt"), TINY_MODEL)
    assert not marker.exists()
    pickle.loads(pickle.dumps(Payload(str(marker))))  # the payload is real: unpickling creates the marker
    assert marker.exists()


@pytest.mark.parametrize("save", ["torch", "torch-state_dict", "safetensors"])
def test_good_checkpoints_pass(files, tmp_path, save):
    shapes = {key: torch.zeros(value.shape) for key, value in meta_model(TINY_MODEL).state_dict().items()}
    path = str(tmp_path / ("weights.safetensors" if save == "safetensors" else "weights.pt"))
    if save == "safetensors":
        from safetensors.torch import save_file

        save_file(shapes, path)
    else:
        torch.save({"state_dict": shapes} if save == "torch-state_dict" else shapes, path)
    check_checkpoint(path, TINY_MODEL)
    preflight(RunConfig(dataset=files["data"], model=TINY_MODEL, pretrained=path, store=str(tmp_path / "store")))


@pytest.mark.parametrize("device, count, expected", [
    ("bogus", 0, "'bogus' is not a device"),
    ("CUDA", 0, "is not a device"),
    ("cuda:-1", 0, "is not a device"),
    ("meta", 0, "is not a device"),
    ("cuda", 0, "no usable CUDA GPU"),
    ("cuda:0", 0, "no usable CUDA GPU"),
    ("cuda:7", 2, "has 2 CUDA GPU(s), cuda:0 to cuda:1"),
])
def test_bad_device_fails_naming_device(device, count, expected, files, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    assert_input_error(capsys, command(files, ["--device", device]), "config field 'device' (--device)", expected)


def test_existing_gpu_passes(files, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    config = RunConfig(dataset=files["data"], model=TINY_MODEL, pretrained="none", store=str(tmp_path / "s"),
                       device="cuda:1")
    assert preflight(config) is config


@pytest.mark.parametrize("store, expected", [
    ("{file}/store", "NotADirectoryError"),
    ("{file}", "FileExistsError"),
    ("nope://bucket/store", "Protocol not known: nope"),
    ("readonly://bucket/store", "PermissionError"),
])
def test_bad_store_fails_naming_store(store, expected, files, capsys):
    args = command(files, []) + ["--store", fill(store, files)]
    assert_input_error(capsys, args, "config field 'store' (--store)", expected)


def test_store_probe_leaves_nothing_behind(files, tmp_path):
    store = tmp_path / "new" / "deeper" / "store"
    preflight(RunConfig(dataset=files["data"], model=TINY_MODEL, pretrained="none", store=str(store)))
    assert not (tmp_path / "new").exists()
    store.mkdir(parents=True)
    preflight(RunConfig(dataset=files["data"], model=TINY_MODEL, pretrained="none", store=str(store), lams=[1.0]))
    assert os.listdir(store) == []


def test_missing_task_runner_integration(files, capsys, monkeypatch):
    monkeypatch.setitem(flows.config.preflight.RUNNER_PACKAGES, "ray", "no_such_prefect_integration")
    assert_input_error(capsys, command(files, ["--task-runner", "ray"]), "config field 'task_runner'",
                       "pip install 'clip-icm[ray]'")


@pytest.mark.parametrize("subcommand", ["run", "sweep"])
@pytest.mark.parametrize("name", ["../x", "..", ".", "a/b", "/abs", "", "a\\b", "../../../x", "~", ".hidden", "x" * 129])
def test_run_name_is_a_name(subcommand, name, files, capsys):
    assert_input_error(capsys, command(files, ["--run-name", name], subcommand), "config field 'run_name' (--run-name)")
    assert not os.path.exists(f"{files['tmp']}/store")


@pytest.mark.parametrize("dataset", ["/data/..", "/data/my set/", "s3://bucket/a b/c?d", "/", "..\\..\\x"])
def test_derived_run_names_stay_under_store_runs(dataset, tmp_path):
    name = RunConfig(dataset=dataset).name
    assert NAME.fullmatch(name), name
    runs = os.path.realpath(tmp_path / "runs")
    assert os.path.dirname(os.path.realpath(join(str(tmp_path), "runs", name))) == runs


@pytest.mark.parametrize("flow", [run_flow, sweep_flow], ids=["run", "sweep"])
def test_the_flows_check_too(flow, files, tmp_path):
    """Deployments start the flows without the CLI: their first step is the same pass."""
    config = RunConfig(dataset=files["data"], model=TINY_MODEL, pretrained="none", store=str(tmp_path / "s"), ks=[33])
    with pytest.raises(InputError, match="config field 'ks'"):
        flow.fn(config)


def test_dataset_shift_allows_one_domain(files, tmp_path):
    config = RunConfig(dataset=files["one"], model=TINY_MODEL, pretrained="none", store=str(tmp_path / "s"),
                       protocol="dataset-shift", target_datasets={"v2": files["data"]})
    assert preflight(config) is config


def test_sweep_without_cached_embeddings_names_the_store(files, capsys):
    assert_input_error(capsys, command(files, [], "sweep"), "config field 'store' (--store)", "run `clip-icm run`")


def test_valid_config_passes(files, tmp_path):
    """The control: a good config passes every check (so the failures above are not the checks failing on everything)."""
    config = RunConfig(dataset=files["data"], model=TINY_MODEL, pretrained="none", store=str(tmp_path / "s"),
                       ks=[4, 32], lams=[0, 1], targets=["art"], holdout=0.2, text_pairs=None)
    assert preflight(config) is config


def test_debug_prints_the_traceback(files, capsys):
    assert main(command(files, ["--ks", "33", "--debug"])) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "InputError" in err
    assert err.splitlines()[-1].startswith("clip-icm: config field 'ks'")


def test_whoever_finds_bad_input_names_the_field_and_the_cli_alone_adds_its_flag():
    assert describe(InputError("pick k between 1 and 512", "ks")) == "config field 'ks' (--ks): pick k between 1 and 512"
    assert describe(InputError("x", "normalize")) == "config field 'normalize' (--no-normalize): x"
    assert describe(InputError("x", "use_text")) == "config field 'use_text' (--no-text): x"
    assert str(InputError("x", "ks")) == "config field 'ks': x" and str(InputError("no field")) == "no field"
    # nothing else spells out the wording
    sources = [path for package in ("tasks", "flows", "icm_core", "clip_icm") for path in pathlib.Path(ROOT, package).rglob("*.py")]
    spelled = {str(path.relative_to(ROOT)) for path in sources if re.search(r"config field ['{]", path.read_text())}
    assert spelled == {"clip_icm/cli.py", "tasks/errors.py"}


@pytest.mark.pipeline  # the run command starts a Prefect server before the flow it calls
def test_internal_errors_keep_their_traceback(files, monkeypatch):
    def bug(config):
        raise RuntimeError("a bug in clip-icm")

    monkeypatch.setattr(flows.run, "run", bug)
    with pytest.raises(RuntimeError, match="a bug in clip-icm"):
        main(command(files, []))


@pytest.mark.pipeline  # a whole process: imports torch and Prefect, then fails
def test_a_real_process_prints_one_line_and_exits_2(files):
    """The console entry point as a user runs it: a pickle payload as --pretrained."""
    result = subprocess.run([sys.executable, "-m", "clip_icm", *command(files, ["--pretrained", "{tmp}/payload.pkl"])],
                            capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "config field 'pretrained' (--pretrained)" in result.stderr and "not a weights-only checkpoint" in result.stderr
    assert not os.path.exists(f"{files['tmp']}/{MARKER}")


def summary_frame():
    return pd.DataFrame({"protocol": ["domain-shift"], "method": ["clip_zero_shot"], "target": ["art"],
                         "accuracy": [0.5], "n": [10]})


@pytest.mark.parametrize("make, expected", [
    (lambda run: os.makedirs(f"{run}/summary.parquet/part-0"), "is a folder"),
    (lambda run: write_parquet(pa.table({"sample_id": ["a"], "embedding": [1.0]}), f"{run}/summary.parquet"),
     "no column 'protocol'"),
    (lambda run: write_parquet(pa.Table.from_pandas(summary_frame().astype({"accuracy": str})),
                               f"{run}/summary.parquet"), "column 'accuracy' holds large_string"),
    (lambda run: write_parquet(pa.Table.from_pandas(summary_frame().iloc[:0]), f"{run}/summary.parquet"), "no rows"),
    (lambda run: open(f"{run}/summary.parquet", "wb").write(b"not parquet at all"), "not a readable Parquet file"),
    (lambda run: None, "does not exist"),
])
def test_report_validates_the_summary(make, expected, tmp_path, capsys):
    run = tmp_path / "runs" / "r"
    run.mkdir(parents=True)
    (run / "run.json").write_text("{}")  # a history entry, whose summary is broken
    make(str(run))
    assert_input_error(capsys, ["report", str(run)], "summary.parquet", expected, "STORE/runs/NAME")


def test_report_on_an_unknown_scheme(capsys):
    assert_input_error(capsys, ["report", "nope://runs/r"], "cannot open", "STORE/runs/NAME")


def test_a_config_is_checked_once_per_process_and_again_when_it_changes(files, tmp_path, monkeypatch):
    listings = []
    discover = flows.config.preflight.list_dataset
    monkeypatch.setattr(flows.config.preflight, "list_dataset", lambda *args: listings.append(args) or discover(*args))
    config = RunConfig(dataset=files["data"], model=TINY_MODEL, pretrained="none", store=str(tmp_path / "s"))
    preflight(config)
    preflight(config)  # as the flow does after the CLI
    assert len(listings) == 1
    with pytest.raises(InputError, match="config field 'holdout'"):
        preflight(config.model_copy(update={"holdout": 0.01}))
    assert len(listings) == 2


def test_a_valid_summary_passes_the_check(tmp_path):
    write_parquet(pa.Table.from_pandas(summary_frame()), f"{tmp_path}/summary.parquet")
    pd.testing.assert_frame_equal(read_summary(str(tmp_path)), summary_frame())


@pytest.mark.parametrize("chosen, expected", [(20, 180), (45, 45)])
def test_cli_gives_the_temporary_server_time_to_start(chosen, expected):
    from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS, temporary_settings

    with temporary_settings(updates={PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS: chosen}):
        assert startup_timeout() == expected


@pytest.mark.parametrize("extra, field", [
    (["--preset", "released"], "preset"),
    (["--selection", "oracle"], "selection"),
])
def test_the_sweep_refuses_what_it_would_ignore(extra, field, files, capsys):
    assert main(command(files, extra, "sweep")) == 2
    err = capsys.readouterr().err
    assert f"config field {field!r}" in err and "clip-icm run" in err and err.count("\n") == 1
