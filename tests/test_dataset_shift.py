"""--protocol dataset-shift end to end: an ImageFolder source and two ImageFolder targets, one holding
half of the classes, one named by class index (ImageNet-V2's folders)."""
import os

import numpy as np
import pytest
from conftest import TINY_MODEL, make_imagefolder, read_embedding_file

import tasks.data.datasets
import tasks.data.fingerprints
from clip_icm.cli import main
from tasks.evaluate.dataset_shift import probe_scorer_among
from icm_core import LinearProbe
from tasks.data.class_names import imagenet_synsets
from tasks.vocabulary import METHODS
from tasks.fit.projections import load_projection
from tasks.store.storage import join, read_parquet
from tasks.store.history import read_record, resolve_run

# four ImageNet classes, by WordNet id, and their class indices (ImageNet-V2's folder names)
INDICES = (1, 6, 11, 13)
SYNSETS = tuple(imagenet_synsets()[i] for i in INDICES)  # goldfish, stingray, goldfinch, junco
PER_CLASS = {"source": 6, "imagenet-v2": 3, "imagenet-a": 4}


@pytest.fixture(scope="module")
def shift(tmp_path_factory, prefect_api):
    base = tmp_path_factory.mktemp("shift")
    source = make_imagefolder(str(base / "imagenet"), SYNSETS, per_class=PER_CLASS["source"])
    v2 = make_imagefolder(str(base / "imagenetv2"), [str(i) for i in INDICES], per_class=PER_CLASS["imagenet-v2"],
                          style=1, seed=1)
    # ImageNet-A-like: two of the four classes (stingray, junco), drawn like the source's
    a = make_imagefolder(str(base / "imagenet-a"), SYNSETS[1::2], per_class=PER_CLASS["imagenet-a"], style=2,
                         patterns=[1, 3], seed=2)
    store = str(base / "store")
    args = ["--protocol", "dataset-shift", "--dataset", source, "--target-datasets", f"imagenet-v2={v2}",
            f"imagenet-a={a}", "--class-names", "imagenet", "--templates", "openai-imagenet",
            "--model", TINY_MODEL, "--pretrained", "none", "--store", store, "--lams", "1", "100", "--ks", "4", "8"]
    listed, hashed = [], []
    with pytest.MonkeyPatch.context() as patch:  # what the run lists and reads to fingerprint
        list_files, hash_bytes = tasks.data.datasets._list_files, tasks.data.fingerprints._hash_bytes
        patch.setattr(tasks.data.datasets, "_list_files", lambda fs, base: listed.append(base) or list_files(fs, base))
        patch.setattr(tasks.data.fingerprints, "_hash_bytes", lambda fs, path: hashed.append(path) or hash_bytes(fs, path))
        assert main(["run", *args, "--run-name", "shift"]) == 0
    return {"base": base, "store": store, "args": args, "run": resolve_run(join(store, "runs", "shift")),
            "source": source, "v2": v2, "a": a, "listed": listed, "hashed": hashed}


def test_a_run_lists_each_dataset_once_and_reads_each_image_once_to_fingerprint_it(shift):
    """The checks before the run, the run and its embedding subflows share one listing per dataset."""
    roots = [shift["source"], shift["v2"], shift["a"]]
    assert sorted(shift["listed"]) == sorted(roots)
    images = sum(PER_CLASS[name] * count for name, count in [("source", 4), ("imagenet-v2", 4), ("imagenet-a", 2)])
    assert len(shift["hashed"]) == len(set(shift["hashed"])) == images


def table(run, name):
    return read_parquet(join(run, name)).to_pandas()


def test_rows_targets_and_label_space_per_target(shift):
    predictions = table(shift["run"], "predictions.parquet")
    assert set(predictions["protocol"]) == {"dataset-shift"}
    assert set(predictions["target"]) == {"imagenet-v2", "imagenet-a"}
    counts = predictions.groupby(["target", "method"]).size()
    for method in METHODS:
        assert counts[("imagenet-v2", method)] == 4 * PER_CLASS["imagenet-v2"]
        assert counts[("imagenet-a", method)] == 2 * PER_CLASS["imagenet-a"]
    # classes are the source's ids (V2's numeric folders became synsets), labels the source's label space
    source_label = {synset: label for label, synset in enumerate(sorted(SYNSETS))}
    assert set(predictions["class"]) == set(SYNSETS)
    assert (predictions["label"] == predictions["class"].map(source_label)).all()
    v2 = predictions[predictions["target"] == "imagenet-v2"]
    assert (v2["sample_id"].str.split("/").str[0].astype(int).map(dict(zip(INDICES, SYNSETS))) == v2["class"]).all()
    # imagenet-a holds two classes: every method predicts among those two only
    a = predictions[predictions["target"] == "imagenet-a"]
    a_labels = {source_label[SYNSETS[1]], source_label[SYNSETS[3]]}
    assert set(a["label"]) == a_labels
    for method, group in a.groupby("method"):
        assert set(group["prediction"]) <= a_labels, method
    assert (predictions["correct"] == (predictions["label"] == predictions["prediction"])).all()


def test_summary_selection_projection_and_run_json(shift):
    run = shift["run"]
    summary = table(run, "summary.parquet")
    assert set(summary["protocol"]) == {"dataset-shift"} and len(summary) == 5 * 3
    assert sorted(summary["target"].unique()) == ["imagenet-a", "imagenet-v2", "mean"]
    a = summary[summary["target"] == "imagenet-a"].set_index("method")
    assert (a["n"] == 2 * PER_CLASS["imagenet-a"]).all()
    predictions = table(run, "predictions.parquet")
    expected = predictions[predictions["target"] == "imagenet-a"].groupby("method")["correct"].mean()
    np.testing.assert_allclose(a.loc[expected.index, "accuracy"], expected)

    selection = table(run, "selection.parquet")
    assert set(selection["protocol"]) == {"dataset-shift"}
    assert selection.groupby("target")["selected"].sum().to_dict() == {"imagenet-a": 1, "imagenet-v2": 1}
    assert len(selection) == 2 * 2 * 2  # (lambda, k) grid, reported for each target
    projection = load_projection(join(run, "projections", "dataset-shift.npz"))
    assert projection.metadata_["sources"] == ["all"]
    assert projection.metadata_["classes"] == sorted(SYNSETS)

    record = read_record(run)
    assert record["config"]["protocol"] == "dataset-shift"
    assert record["config"]["templates"] == "openai-imagenet" and record["config"]["class_names"] == "imagenet"
    assert len(record["prompts"]["templates"]) == 80 and record["prompts"]["class_names"] == "imagenet"
    assert record["dataset"]["domains"] == ["all"]
    assert record["target_datasets"]["imagenet-v2"]["classes"] == sorted(str(i) for i in INDICES)
    assert set(record["target_datasets"]["imagenet-a"]["shards"]) == {"all/original"}  # no interventions
    assert record["target_datasets"]["imagenet-a"]["embedded_this_run"] == 2 * PER_CLASS["imagenet-a"]
    for name in ("imagenet-v2", "imagenet-a"):  # each read as the source was: its layout, the byte limit per image
        target = record["target_datasets"][name]
        assert (target["format"], target["max_image_bytes"]) == ("folder", record["dataset"]["max_image_bytes"]), name
    # the source's text table: 80 prompts per class, named with CLIP's ImageNet names
    rows, _ = read_embedding_file(record["embeddings"]["text"], {"role": ["class_prompt"]})
    assert rows.groupby("class").size().to_dict() == {synset: 80 for synset in SYNSETS}
    assert "a bad photo of a stingray." in set(rows.loc[rows["class"] == SYNSETS[1], "text"])


def test_target_class_the_source_lacks_fails_before_embedding(shift, capsys):
    extra = make_imagefolder(str(shift["base"] / "sketch"), [*SYNSETS, "n15075141"], per_class=1)
    store = shift["base"] / "store-extra"
    args = [str(store) if a == shift["store"] else a for a in shift["args"]]
    assert main(["run", *args, "--target-datasets", f"imagenet-sketch={extra}"]) == 2
    err = capsys.readouterr().err
    assert "target dataset 'imagenet-sketch' has 1 class folder(s) that the source dataset lacks" in err
    assert "['n15075141']" in err
    assert not (store / "embeddings").exists()

    # without --class-names imagenet, V2's class indices match nothing and the error says so
    no_names = [a for a in args if a not in ("--class-names", "imagenet")]
    assert main(["run", *no_names]) == 2
    assert "pass --class-names imagenet" in capsys.readouterr().err
    assert not (store / "embeddings").exists()


def test_one_domain_dataset_needs_dataset_shift(shift, capsys):
    store = shift["base"] / "store-lodo"
    assert main(["run", "--dataset", shift["source"], "--model", TINY_MODEL, "--pretrained", "none",
                 "--store", str(store)]) == 2
    err = capsys.readouterr().err
    assert "config field 'dataset'" in err and "has one domain ('all')" in err and "--protocol dataset-shift" in err
    assert not os.path.exists(store / "embeddings")


def test_probe_predicts_among_the_allowed_classes_only():
    rng = np.random.default_rng(0)
    X = np.concatenate([centre + rng.normal(size=(30, 4)) for centre in np.eye(4) * 6])
    probe = LinearProbe().fit(X, np.repeat([0, 1, 2, 3], 30))
    near_class_0 = X[:30]
    assert (probe.predict(near_class_0) == 0).mean() > 0.9
    scores_of, columns = probe_scorer_among(probe, np.array([3, 2]))
    scores = scores_of(near_class_0)
    np.testing.assert_array_equal(columns, [2, 3])
    np.testing.assert_array_equal(scores, probe.decision_function(near_class_0)[:, [2, 3]])
    assert set(columns[scores.argmax(axis=1)]) <= {2, 3}


@pytest.mark.parametrize("option, value, message", [
    ("--templates", "templates.txt", "line 1 ('a photo') must hold {} exactly once"),
    ("--class-names", "names.csv", "names.csv' does not match the class folders: 3 folder(s) of dataset"),
])
def test_bad_templates_or_class_names_fail_before_embedding(shift, option, value, message, capsys):
    (shift["base"] / "templates.txt").write_text("a photo\n")
    (shift["base"] / "names.csv").write_text(f"folder,name\n{SYNSETS[0]},goldfish\n")
    store = shift["base"] / f"store-{value}"
    assert main(["run", "--dataset", shift["source"], "--protocol", "dataset-shift", "--target-datasets",
                 f"imagenet-a={shift['a']}", option, str(shift["base"] / value), "--model", TINY_MODEL,
                 "--pretrained", "none", "--store", str(store)]) == 2
    assert message in capsys.readouterr().err
    assert not (store / "embeddings").exists()


@pytest.mark.parametrize("change, message", [
    (["--selection", "oracle"], "config field 'selection' (--selection): dataset-shift selects (lambda, k) on the source's"),
    (["--test-split", "out"], "config field 'test_split' (--test-split): dataset-shift tests every image"),
    (["--targets", "all"], "config field 'targets' (--targets): target domains apply to domain-shift"),
    (["--target-datasets", "mean=/data/x"], "config field 'target_datasets' (--target-datasets): 'mean' names the summary's mean rows"),
])
def test_dataset_shift_options_fail_before_embedding_naming_the_field(shift, change, message, capsys):
    store = shift["base"] / "store-options"
    args = [str(store) if a == shift["store"] else a for a in shift["args"]]
    assert main(["run", *args, *change]) == 2
    assert message in capsys.readouterr().err
    assert not (store / "embeddings").exists()
