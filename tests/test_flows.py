import json
import os
import pickle
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from conftest import TINY_MODEL, catalog_of, make_image_folder, read_embedding_file

import tasks
import tasks.store.catalog
import tasks.embed.models
from clip_icm.cli import main
from flows.config.run_config import RunConfig
from flows.config.preflight import preflight
from flows.evaluate import evaluate_domain_shift, evaluate_open_class
from icm_core import InterventionMoments, harmonic_mean
from tasks.embed.images import IMAGE_SCHEMA, embedding_table
from tasks.data.splits import split_base_novel
from tasks.vocabulary import BASELINES, METHODS
from tasks.store.catalog import EmbeddingCatalog
from tasks.store.contents import METADATA_KEY, Contents, DamagedEmbeddings
from tasks.fit.projections import load_projection
from tasks.specs import Recipe, SelectionSpec
from tasks.store.history import read_record, resolve_run
from tasks.store.storage import join, read_bytes, read_parquet, write_parquet

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSES = ("bird", "cat", "dog", "fish")
LAMS = ["0.1", "1", "10"]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, prefect_api):
    base = tmp_path_factory.mktemp("flows")
    dataset = make_image_folder(str(base / "data"), classes=CLASSES, per_class=6, corrupt=[("photo", "dog")])
    args = ["--dataset", dataset, "--model", TINY_MODEL, "--pretrained", "none", "--store", str(base / "store"),
            "--lams", *LAMS, "--run-name", "first"]
    assert main(["run", *args]) == 0
    config_folder = str(base / "store" / "runs" / "first")
    return {"base": base, "dataset": dataset, "args": args, "config_folder": config_folder, "run": resolve_run(config_folder)}


def table(run, name):
    return read_parquet(join(run, name)).to_pandas()


def test_run_writes_every_report_and_summary_matches_predictions(workspace):
    run = workspace["run"]
    for name in ("predictions.parquet", "summary.parquet", "selection.parquet", "skipped.parquet", "run.json",
                 "accuracy_by_target.png", "projections/domain-shift-art.npz", "projections/open-class-sketch.npz"):
        assert os.path.exists(join(run, name)), name
    predictions, summary = table(run, "predictions.parquet"), table(run, "summary.parquet")
    domain_shift = summary[summary["protocol"] == "domain-shift"]
    assert sorted(domain_shift["method"].unique()) == sorted(METHODS)
    assert sorted(domain_shift["target"].unique()) == ["art", "mean", "photo", "sketch"]
    assert len(domain_shift) == 5 * 4  # 4 targets (the mean one of them) x 5 methods
    recomputed = predictions.groupby(["protocol", "method", "target"])["correct"].mean()
    for row in summary[summary["target"] != "mean"].itertuples():
        assert row.accuracy == pytest.approx(recomputed[(row.protocol, row.method, row.target)])
    means = recomputed.groupby(level=["protocol", "method"]).mean()
    for row in summary[summary["target"] == "mean"].itertuples():
        assert row.accuracy == pytest.approx(means[(row.protocol, row.method)])
    # each CLIP-ICM row's Δ over its CLIP baseline, inside its interval; CLIP's rows compare with nothing
    accuracy = summary.set_index(["protocol", "method", "target"])["accuracy"]
    compared = summary[summary["method"].isin(list(BASELINES))]
    # (3 targets + mean) x (domain shift: both zero-shots and the probe; open class: both zero-shots)
    assert len(compared) == 3 * 4 + 2 * 4
    exported = summary[summary["method"] == "clip_icm_zero_shot_open_clip"]
    assert len(exported) == 2 * 4 and exported["delta"].notna().all()  # over CLIP's zero-shot, as the recipe's
    for row in compared.itertuples():
        assert row.delta == pytest.approx(row.accuracy - accuracy[(row.protocol, BASELINES[row.method], row.target)])
        assert row.ci_low <= row.delta <= row.ci_high and 0 < row.mcnemar_p <= 1
    assert summary.loc[~summary["method"].isin(list(BASELINES)), ["delta", "ci_low", "ci_high", "mcnemar_p"]].isna().all().all()
    assert read_record(run)["uncertainty"]["resamples"] == 10_000
    # one prediction per readable target image per method; the broken file is skipped, and reported
    photo = predictions[(predictions["protocol"] == "domain-shift") & (predictions["target"] == "photo")]
    assert len(photo) == 5 * 24
    assert table(run, "skipped.parquet")["sample_id"].tolist() == ["photo/dog/broken.jpg"]
    record = read_record(run)
    assert record["skipped_images"] == 1 and record["model"]["name"] == TINY_MODEL
    assert record["config"]["lams"] == [0.1, 1.0, 10.0] and len(record["dataset"]["fingerprint"]) == 16
    assert record["package_version"] == record["provenance"]["package_version"] == tasks.__version__ == "0.5.0"
    assert record["timings"]["total_s"] > 0
    assert open(join(run, "accuracy_by_target.png"), "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    projection = load_projection(join(run, "projections/domain-shift-art.npz"))
    chosen = table(run, "selection.parquet").query("selected and protocol == 'domain-shift' and target == 'art'")
    assert (projection.lam, projection.n_components) == (chosen["lam"].item(), chosen["n_components"].item())
    assert projection.metadata_["sources"] == ["photo", "sketch"] and projection.components_.shape[0] == 32
    assert load_projection(join(run, "projections/open-class-art.npz")).metadata_["classes"] == ["bird", "cat"]


def test_second_run_embeds_nothing_and_reproduces_reports(workspace):
    args = [a if a != "first" else "second" for a in workspace["args"]]
    assert main(["run", *args]) == 0
    first, second = workspace["run"], resolve_run(str(workspace["base"] / "store" / "runs" / "second"))
    assert read_record(second)["embeddings"]["embedded_this_run"] == 0
    assert read_record(first)["embeddings"]["embedded_this_run"] > 0
    for name in ("predictions.parquet", "summary.parquet", "selection.parquet"):
        pd.testing.assert_frame_equal(table(first, name), table(second, name))
    for name in ("projections/domain-shift-art.npz", "projections/open-class-photo.npz"):
        assert read_bytes(join(first, name)) == read_bytes(join(second, name))


def load_index(workspace) -> EmbeddingCatalog:
    return catalog_of(workspace["run"])


def corrupted_copy(index, tmp_path, domains, rows_to_corrupt) -> EmbeddingCatalog:
    """A copy of the index whose chosen rows in `domains` have shuffled labels and random embeddings."""
    shards = dict(index.shards)
    rng = np.random.default_rng(0)
    for key, url in index.shards.items():
        if key.split("/")[0] not in domains:
            continue
        rows, embeddings = read_embedding_file(url)
        embeddings = embeddings.copy()  # read_embedding_file is zero-copy, read-only
        chosen = rows_to_corrupt(rows).to_numpy()
        rows.loc[chosen, "label"] = rng.permutation(rows.loc[chosen, "label"].to_numpy(copy=True))
        rows.loc[chosen, "class"] = rows.loc[chosen, "label"].map(dict(enumerate(CLASSES)))
        embeddings[chosen] = rng.normal(size=embeddings[chosen].shape)
        shards[key] = str(tmp_path / key.replace("/", "-")) + ".parquet"
        write_parquet(embedding_table(rows, IMAGE_SCHEMA, embeddings, {}), shards[key])
    return replace(index, shards=shards)


def fits_agree(evaluate, index, corrupted, target, protocol, tmp_path):
    """Run one protocol on the clean and the corrupted index; return whether selection and projection agree."""
    selection = SelectionSpec(tuple(float(lam) for lam in LAMS))
    clean = evaluate(index, str(tmp_path / "clean"), [target], Recipe(), selection)
    dirty = evaluate(corrupted, str(tmp_path / "dirty"), [target], Recipe(), selection)
    pd.testing.assert_frame_equal(clean.selections, dirty.selections)
    projection = f"projections/{protocol}-{target}.npz"
    assert read_bytes(str(tmp_path / "clean" / projection)) == read_bytes(str(tmp_path / "dirty" / projection))
    return clean.predictions, dirty.predictions


def test_selection_and_projection_never_see_the_target(workspace, tmp_path):
    index = load_index(workspace)
    corrupted = corrupted_copy(index, tmp_path, ["sketch"], lambda rows: pd.Series(True, index=rows.index))
    clean, dirty = fits_agree(evaluate_domain_shift, index, corrupted, "sketch", "domain-shift", tmp_path)
    assert not clean["label"].equals(dirty["label"])  # the corruption did reach the target


def test_open_class_split_harmonic_mean_and_no_novel_classes_in_fitting(workspace, tmp_path):
    base, novel = split_base_novel(CLASSES)
    assert (base, novel) == (["bird", "cat"], ["dog", "fish"])
    assert split_base_novel(["b", "a", "c"]) == (["a"], ["b", "c"])

    predictions, summary = table(workspace["run"], "predictions.parquet"), table(workspace["run"], "summary.parquet")
    open_class = summary[(summary["protocol"] == "open-class") & (summary["target"] != "mean")]
    assert sorted(open_class["method"].unique()) == ["clip_icm_zero_shot", "clip_icm_zero_shot_open_clip",
                                                     "clip_zero_shot"]
    for row in open_class.itertuples():
        group = predictions[(predictions["protocol"] == "open-class") & (predictions["method"] == row.method)
                            & (predictions["target"] == row.target)]
        assert row.base_accuracy == pytest.approx(group[group["class"].isin(base)]["correct"].mean())
        assert row.novel_accuracy == pytest.approx(group[group["class"].isin(novel)]["correct"].mean())
        assert row.harmonic_mean == pytest.approx(harmonic_mean(row.base_accuracy, row.novel_accuracy))
        assert set(group["prediction"]) <= set(range(4))

    index = load_index(workspace)
    corrupted = corrupted_copy(index, tmp_path, list(index.domains), lambda rows: rows["class"].isin(novel))
    fits_agree(evaluate_open_class, index, corrupted, "art", "open-class", tmp_path)


def test_each_domain_is_read_once_and_its_moments_accumulated_once_across_folds(workspace, tmp_path, monkeypatch):
    index = load_index(workspace)
    fresh = corrupted_copy(index, tmp_path, list(index.domains), lambda rows: rows["label"] < 0)  # new URLs, same data
    accumulated, reads = [], []
    real_update, real_read = InterventionMoments.update, tasks.store.catalog.read_domain
    monkeypatch.setattr(InterventionMoments, "update", lambda self, Z, *a: accumulated.append(len(Z)) or real_update(self, Z, *a))
    monkeypatch.setattr(tasks.store.catalog, "read_domain", lambda url, *a, **kw: reads.append(url) or real_read(url, *a, **kw))
    evaluate_domain_shift(fresh, str(tmp_path / "run"), None, Recipe(), SelectionSpec(lams=(1.0,)))
    # 3 folds x 2 sources each, yet each domain's originals and interventions are read once, summed once
    assert sorted(reads) == sorted(fresh.shards.values())
    assert sum(accumulated) == sum(len(fresh.load([domain], "train")[1]) for domain in fresh.domains)


def test_catalog_serves_normalised_arrays_split_by_split_and_is_keyed_by_its_shards(workspace):
    catalog = load_index(workspace)
    key = catalog.cache_key
    rows, embeddings = catalog.load(["art"])
    assert embeddings.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1, rtol=1e-5)
    train_rows, train = catalog.load(["art"], "train")
    assert np.shares_memory(train, embeddings)  # a split of one domain is a view, not a copy
    file_rows, file_embeddings = read_embedding_file(catalog.shard("art", "original"))
    by_id = dict(zip(file_rows["sample_id"], file_embeddings / np.linalg.norm(file_embeddings, axis=1, keepdims=True)))
    np.testing.assert_allclose(train, np.stack([by_id[s] for s in train_rows["sample_id"]]), atol=1e-6)
    split_table = read_parquet(catalog.split_url).to_pandas().set_index("sample_id")["split"]
    assert sorted(train_rows["sample_id"]) == sorted(s for s in file_rows["sample_id"] if split_table[s] == "train")
    assert (train_rows["label"].to_numpy() == file_rows.set_index("sample_id").loc[train_rows["sample_id"], "label"]).all()
    both, stacked = catalog.load(["art", "photo"], "val", classes=["cat"])
    assert set(both["class"]) == {"cat"} and set(both["split"]) == {"val"} and len(both) == len(stacked)
    # blocks: one per domain, each a view of the held array, stacking to what load gives
    block_rows, (art_block, photo_block) = catalog.blocks(["art", "photo"], "train")
    assert np.shares_memory(art_block, embeddings) and np.shares_memory(photo_block, catalog.load(["photo"])[1])
    stacked_rows, stacked_train = catalog.load(["art", "photo"], "train")
    np.testing.assert_array_equal(np.concatenate([art_block, photo_block]), stacked_train)
    assert block_rows["sample_id"].tolist() == stacked_rows["sample_id"].tolist()
    # the description, not the arrays held, is the catalog's identity for Prefect and for pickles
    assert catalog.cache_key == key and len(pickle.dumps(catalog)) < 5000
    assert catalog.cache_key != replace(catalog, normalize=False).cache_key
    raw = replace(catalog, normalize=False).load(["art"])[1]
    np.testing.assert_allclose(raw, np.stack([dict(zip(file_rows["sample_id"], file_embeddings))[s] for s in rows["sample_id"]]))
    # class embeddings: normalised mean of normalised templates, in the order asked
    text_rows, text = read_embedding_file(catalog.text_url, {"role": ["class_prompt"]})
    dog = text[(text_rows["class"] == "dog").to_numpy()].astype(float)
    dog = (dog / np.linalg.norm(dog, axis=1, keepdims=True)).mean(axis=0)
    np.testing.assert_allclose(catalog.class_embeddings(["dog", "bird"])[0], dog / np.linalg.norm(dog), atol=1e-6)


def test_catalog_decodes_embeddings_a_batch_at_a_time_into_split_order(tmp_path):
    rng = np.random.default_rng(0)
    n = 11
    frame = pd.DataFrame({"sample_id": [f"d/c/{i:02d}.jpg" for i in range(n)], "path": "x", "domain": "d",
                          "class": rng.choice(["cat", "dog"], n), "label": rng.integers(2, size=n).astype("int32"),
                          "split": rng.choice(["train", "val"], n), "view": rng.choice(["blur", "invert"], n)})
    # the split comes from the split table, in another order than the file's
    shuffled = frame.sample(frac=1, random_state=1)
    splits = (pa.array(shuffled["sample_id"]), pa.array(shuffled["split"]))
    embeddings = rng.normal(size=(n, 8)).astype(np.float32)
    url = str(tmp_path / "d.parquet")
    pq.write_table(embedding_table(frame, IMAGE_SCHEMA, embeddings, {}), url, row_group_size=4)  # 3 row groups
    order = np.argsort(frame["split"].to_numpy(), kind="stable")
    with tasks.store.catalog.parquet_file(url) as source:  # batches of 3 rows cross the row groups' edges
        found = Contents().add_ids(pa.array(frame["sample_id"]))
        np.testing.assert_array_equal(tasks.store.catalog.streamed_embeddings(source, order, found, batch_rows=3),
                                      embeddings[order])
        assert found.fields() == json.loads(source.metadata.metadata[METADATA_KEY]) | found.fields()  # all it says
    held = tasks.store.catalog.read_domain(url, "d", normalize=False, splits=splits)
    np.testing.assert_array_equal(held.embeddings, embeddings[order])
    for name in ("sample_id", "class", "label", "split", "view"):
        assert held.columns[name].tolist() == frame[name].to_numpy()[order].tolist()
    n_train = int((frame["split"] == "train").sum())
    assert held.splits == {"train": slice(0, n_train), "val": slice(n_train, n)}
    with pytest.raises(FileNotFoundError, match="missing.parquet does not exist"):
        tasks.store.catalog.read_domain(str(tmp_path / "missing.parquet"), "d", normalize=False, splits=splits)
    with pytest.raises(ValueError, match="that its split table lacks"):
        tasks.store.catalog.read_domain(url, "d", normalize=False, splits=(splits[0][1:], splits[1][1:]))


def test_the_catalogs_one_read_is_the_check_of_what_a_file_holds(tmp_path):
    """Files whose footer is right but whose embeddings or ids are not what it says are refused by the read that
    decodes them, naming the file and what is wrong."""
    frame = pd.DataFrame({"sample_id": [f"d/c/{i}.jpg" for i in range(6)], "path": "x", "domain": "d", "class": "cat",
                          "label": np.int32(0), "split": ["train", "val"] * 3, "view": "original"})
    splits = (pa.array(frame["sample_id"]), pa.array(frame["split"]))
    embeddings = np.arange(48, dtype=np.float32).reshape(6, 8)
    honest = embedding_table(frame, IMAGE_SCHEMA, embeddings, {})
    said = honest.schema.metadata
    lying = {  # the footer of `honest` over other contents
        "embeddings": embedding_table(frame, IMAGE_SCHEMA, embeddings + np.float32(0.5), {}),
        "ids": embedding_table(frame.assign(sample_id=frame["sample_id"][::-1].to_numpy()), IMAGE_SCHEMA, embeddings, {}),
    }
    url = str(tmp_path / "honest.parquet")
    write_parquet(honest, url)
    assert tasks.store.catalog.read_domain(url, "d", normalize=False, splits=splits).embeddings.shape == (6, 8)
    for wrong, table in lying.items():
        url = str(tmp_path / f"{wrong}.parquet")
        write_parquet(table.replace_schema_metadata(said), url)
        with pytest.raises(DamagedEmbeddings, match=f"{url} are damaged: its (ids|checksum) are not what") as raised:
            tasks.store.catalog.read_domain(url, "d", normalize=False, splits=splits)
        assert raised.value.field == "store" and raised.value.problem == {
            "embeddings": "its checksum are not what the file says (damaged)",
            "ids": "its ids are not what the file says (damaged)"}[wrong]


def test_a_damaged_byte_in_any_column_is_refused_or_harmless(tmp_path):
    """The catalog's read leaves the embeddings' pages to the CRC-32 of their values and checks the other columns'
    page CRCs: whichever byte of the row group's pages is damaged, the read refuses the file, or (a byte that
    decoding never uses, such as a page header's statistics) serves exactly what the whole file holds."""
    rng = np.random.default_rng(0)
    n = 40
    frame = pd.DataFrame({"sample_id": [f"d/c/{i:02d}.jpg" for i in range(n)], "path": "x", "domain": "d",
                          "class": rng.choice(["cat", "dog"], n), "label": rng.integers(2, size=n).astype("int32"),
                          "split": rng.choice(["train", "val"], n), "view": rng.choice(["blur", "invert"], n)})
    splits = (pa.array(frame["sample_id"]), pa.array(frame["split"]))
    whole = str(tmp_path / "whole.parquet")
    write_parquet(embedding_table(frame, IMAGE_SCHEMA, rng.normal(size=(n, 16)).astype(np.float32), {}), whole)
    expected = tasks.store.catalog.read_domain(whole, "d", normalize=True, splits=splits)
    chunks = pq.ParquetFile(whole).metadata.row_group(0)
    starts = [min(o for o in (chunks.column(i).dictionary_page_offset, chunks.column(i).data_page_offset) if o)
              for i in range(chunks.num_columns)]
    end = max(start + chunks.column(i).total_compressed_size for i, start in enumerate(starts))
    data = read_bytes(whole)
    refused = 0
    for position in range(min(starts), end):
        damaged = str(tmp_path / "damaged.parquet")
        with open(damaged, "wb") as handle:
            handle.write(data[:position] + bytes([data[position] ^ 0xFF]) + data[position + 1:])
        try:
            held = tasks.store.catalog.read_domain(damaged, "d", normalize=True, splits=splits)
        except DamagedEmbeddings:
            refused += 1
            continue
        np.testing.assert_array_equal(held.embeddings, expected.embeddings, err_msg=f"byte {position} passed")
        assert all(held.columns[name].tolist() == expected.columns[name].tolist() for name in expected.columns)
    assert refused > (end - min(starts)) * 0.9  # nearly every byte matters, and each damaged one was refused


def test_sweep_reads_cache_only_and_marks_the_selection(workspace, monkeypatch):
    def no_model(*args, **kwargs):
        raise AssertionError("the sweep must not load a model")

    monkeypatch.setattr(tasks.embed.models, "load_model", no_model)
    monkeypatch.setattr(tasks.embed.models.open_clip, "create_model_and_transforms", no_model)
    assert main(["sweep", *workspace["args"]]) == 0
    sweep = table(workspace["config_folder"], "sweep.parquet")
    assert len(sweep) == 3 * 3 * 4  # targets x lambdas x ks (d=32: 4, 8, 16, 24)
    assert sweep.groupby("target")["selected"].sum().tolist() == [1, 1, 1]
    selection = table(workspace["run"], "selection.parquet")
    picked = selection[selection["selected"] & (selection["protocol"] == "domain-shift")]
    chosen = sweep[sweep["selected"]]
    assert sorted(zip(chosen["target"], chosen["lam"], chosen["n_components"])) == sorted(
        zip(picked["target"], picked["lam"], picked["n_components"]))
    assert sweep["target_zero_shot_accuracy"].between(0, 1).all()
    # the run's own pick scores as the run did: the same Δ over CLIP, interval and p, on the same images
    summary = table(workspace["run"], "summary.parquet").set_index(["protocol", "method", "target"])
    for row in chosen.itertuples():
        for method, name in (("clip_icm_zero_shot", "zero_shot"), ("clip_icm_linear_probe", "linear_probe")):
            run_row = summary.loc[("domain-shift", method, row.target)]
            assert [getattr(row, f"target_{name}_{column}") for column in ("delta", "ci_low", "ci_high", "mcnemar_p")] \
                == pytest.approx(run_row[["delta", "ci_low", "ci_high", "mcnemar_p"]].tolist()), (row.target, method)


def test_sweep_without_cache_names_the_missing_embeddings(workspace, tmp_path, capsys):
    args = [a if a != str(workspace["base"] / "store") else str(tmp_path / "empty") for a in workspace["args"]]
    assert main(["sweep", *args]) == 2
    assert "run `clip-icm run`" in capsys.readouterr().err


@pytest.mark.parametrize(
    "extra, field",
    [
        (["--model", "ViT-B-31"], "model"),
        (["--pretrained", "no-such-tag"], "pretrained"),
        (["--holdout", "1.5"], "holdout"),
        (["--lams", "-1"], "lams"),
        (["--ks", "0"], "ks"),
        (["--interventions", "invert", "--intervention-params", '{"invert": {"amount": 1}}'], "intervention_params"),
    ],
)
def test_bad_config_fails_before_any_embedding_naming_the_field(extra, field, tmp_path, capsys):
    store = tmp_path / "store"
    assert main(["run", "--dataset", "rotated-digits", "--model", TINY_MODEL, "--pretrained", "none",
                 "--store", str(store), *extra]) == 2
    assert f"config field {field!r}" in capsys.readouterr().err
    assert not store.exists()


def test_unknown_target_fails_before_any_embedding(workspace, tmp_path, capsys):
    store = tmp_path / "store"
    args = [a if a != str(workspace["base"] / "store") else str(store) for a in workspace["args"]]
    assert main(["run", *args, "--targets", "art", "cartoon"]) == 2
    assert "config field 'targets' (--targets): ['cartoon'] are not domains" in capsys.readouterr().err
    assert not (store / "embeddings").exists()


def test_report_prints_the_summary(workspace, capsys):
    assert main(["report", workspace["run"]]) == 0
    out = capsys.readouterr().out
    assert out.startswith("> **SMOKE RUN**") and "CLIP-ICM linear probe" in out and "| sketch" in out
    assert out.count(workspace["run"]) == 1
    assert main(["report", workspace["config_folder"]]) == 0  # a config folder: its latest run
    assert workspace["run"] in capsys.readouterr().out
    assert main(["report", workspace["run"] + "-missing"]) == 2
    assert "is neither a run (no run.json) nor a config folder" in capsys.readouterr().err


def test_cli_help_lists_every_command():
    result = subprocess.run([sys.executable, "-m", "clip_icm", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0 and all(
        c in result.stdout for c in ("run", "sweep", "report", "bench", "leaderboard", "reproduce"))
    result = subprocess.run([sys.executable, "-m", "clip_icm", "run", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert "--pretrained" in result.stdout and "--task-runner" in result.stdout


def test_prefect_yaml_deployments_register_against_a_local_api(prefect_api, tmp_path, monkeypatch):
    spec = yaml.safe_load(open(os.path.join(ROOT, "prefect.yaml")))
    names = {d["name"]: d for d in spec["deployments"]}
    assert set(names) == {"nightly", "gpu", "sweep", "benchmark"}
    assert names["nightly"]["schedules"][0]["cron"] == "0 2 * * *"
    from flows.bench import bench, trial_configs
    from flows.run import run
    from flows.sweep import sweep

    flows = {"flows/run.py:run": run, "flows/sweep.py:sweep": sweep, "flows/bench.py:bench": bench}
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)  # as on the GPU workers
    monkeypatch.setattr("torch.cuda.device_count", lambda: 1)
    for deployment in spec["deployments"]:  # every deployment's parameters make a valid RunConfig
        parameters = flows[deployment["entrypoint"]].validate_parameters(deployment["parameters"])
        assert isinstance(parameters["config"], RunConfig)
        preflight(parameters["config"].model_copy(update={"store": str(tmp_path / "store")}))
    assert flows["flows/run.py:run"].validate_parameters(names["gpu"]["parameters"])["config"].device == "cuda"
    benchmark = bench.validate_parameters(names["benchmark"]["parameters"])
    assert len(trial_configs(benchmark["models"], benchmark["datasets"], benchmark["trials"], benchmark["config"])) == 3
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    prefect = [sys.executable, "-m", "prefect"]
    for pool in ("clip-icm-local", "clip-icm-gpu"):
        subprocess.run([*prefect, "work-pool", "create", pool, "--type", "process"], env=env, cwd=ROOT, check=True,
                       capture_output=True)
    deploy = subprocess.run([*prefect, "--no-prompt", "deploy", "--all"], env=env, cwd=ROOT, capture_output=True, text=True)
    assert deploy.returncode == 0, deploy.stdout + deploy.stderr
    listed = subprocess.run([*prefect, "deployment", "ls"], env=env, cwd=ROOT, capture_output=True, text=True).stdout
    for name in ("clip-icm-run/nightly", "clip-icm-run/gpu", "clip-icm-sweep/sweep", "clip-icm-bench/benchmark"):
        assert name in listed, listed


def test_the_run_flow_called_alone_lists_its_dataset_once(tmp_path, prefect_api, monkeypatch):
    """As a deployment's worker calls it, without the CLI around it: its checks, its listing and its embedding
    subflow share one listing."""
    import tasks.data.datasets
    from flows.run import run

    dataset = make_image_folder(str(tmp_path / "data"), classes=CLASSES[:2], per_class=3)
    listed, list_files = [], tasks.data.datasets._list_files
    monkeypatch.setattr(tasks.data.datasets, "_list_files", lambda fs, base: listed.append(base) or list_files(fs, base))
    run(RunConfig(dataset=dataset, model=TINY_MODEL, pretrained="none", store=str(tmp_path / "store"), lams=[1.0],
                  ks=[4], protocol="domain-shift"))
    assert listed == [dataset]
