"""Selection rules, test splits, metrics, diagnostics and the released preset, end to end with the tiny model."""
import os
from unittest import mock

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from conftest import TINY_MODEL, catalog_of, domainbed_reference, make_image_folder, read_embedding_file
from prefect.client.orchestration import get_client
from sklearn.linear_model import LogisticRegression

from clip_icm.cli import main
from flows.config.run_config import RELEASED_PRESET, RunConfig
from flows.evaluate import evaluate_domain_shift, evaluate_open_class
import icm_core.predict
from icm_core import movement_kept
from tasks.evaluate.predictions import evaluate_open_class_target, evaluate_target
from tasks.store.catalog import EmbeddingCatalog
from tasks.fit.projections import load_projection
from tasks.report.plots import accuracy_plot_png
from tasks.store.storage import join, read_parquet, write_parquet
from tasks.embed.images import IMAGE_SCHEMA, embedding_table
from tasks.specs import Recipe, SelectionSpec
from tasks.store.history import read_record, resolve_run
from tasks.report.run_report import read_run, run_report

CLASSES = ("ant", "bee", "cat", "dog", "eel", "fox")  # six, so top-5 is defined
LAMS = [0.1, 10.0]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, prefect_api):
    base = tmp_path_factory.mktemp("evaluation")
    dataset = make_image_folder(str(base / "data"), classes=CLASSES, per_class=5)
    args = ["--dataset", dataset, "--model", TINY_MODEL, "--pretrained", "none", "--store", str(base / "store"),
            "--lams", *map(str, LAMS)]
    assert main(["run", *args, "--run-name", "default"]) == 0
    return {"base": base, "args": args, "run": resolve_run(str(base / "store" / "runs" / "default"))}


def table(run, name):
    return read_parquet(join(run, name)).to_pandas()


def load_index(run) -> EmbeddingCatalog:
    return catalog_of(run)


def with_corrupted_domain(index, tmp_path, domain) -> EmbeddingCatalog:
    """A copy whose `domain` has shuffled labels and random embeddings (both views)."""
    shards, rng = dict(index.shards), np.random.default_rng(0)
    for key, url in index.shards.items():
        if key.startswith(domain + "/"):
            rows, embeddings = read_embedding_file(url)
            rows["label"] = rng.permutation(rows["label"].to_numpy(copy=True))
            rows["class"] = rows["label"].map(dict(enumerate(CLASSES)))
            shards[key] = str(tmp_path / key.replace("/", "-")) + ".parquet"
            write_parquet(embedding_table(rows, IMAGE_SCHEMA, rng.normal(size=embeddings.shape), {}), shards[key])
    return replace(index, shards=shards)


def test_summary_has_top5_and_balanced_accuracy_and_the_rule(workspace):
    predictions, summary = table(workspace["run"], "predictions.parquet"), table(workspace["run"], "summary.parquet")
    assert predictions["top5_correct"].notna().all()  # six classes scored, probe included
    per_target = summary[summary["target"] != "mean"]
    for row in per_target.itertuples():
        group = predictions[(predictions["protocol"] == row.protocol) & (predictions["method"] == row.method)
                            & (predictions["target"] == row.target)]
        recalls = (group["prediction"] == group["label"]).groupby(group["label"]).mean()
        assert row.balanced_accuracy == pytest.approx(recalls.mean())
        assert row.top5_accuracy == pytest.approx(group["top5_correct"].astype(bool).mean())
        assert row.top5_accuracy >= row.accuracy
    assert (summary["selection"] == "training-domain").all()
    assert read_record(workspace["run"])["selection_rule"] == "training-domain"


def test_diagnostics_in_selection_and_run_json_and_spectrum_plot(workspace):
    run = workspace["run"]
    selection, record = table(run, "selection.parquet"), read_record(run)
    chosen = selection[selection["selected"]]
    assert len(chosen) == 2 * 3 and chosen[["variance_kept", "eigengap", "movement_kept_val"]].notna().all().all()
    assert selection.loc[~selection["selected"], "variance_kept"].isna().all()
    families = [c.removeprefix("movement_kept_val_") for c in selection if c.startswith("movement_kept_val_")]
    shares = chosen[[f"movement_kept_val_{f}" for f in families]]  # NaN: no pair of that family in the fold
    assert len(families) >= 3 and (shares.isna() | shares.apply(lambda c: c.between(0, 1))).all().all()
    assert chosen["positive_eigenvalues"].between(0, 32).all() and chosen["variance_kept"].between(0, 1).all()
    assert sorted((d["protocol"], d["target"]) for d in record["diagnostics"]) == sorted(zip(chosen["protocol"], chosen["target"]))
    # recompute one: movement kept on the sources' held-out validation pairs, through the stored projection
    index, row = load_index(run), chosen[(chosen["protocol"] == "domain-shift") & (chosen["target"] == "art")].iloc[0]
    originals, Z = index.load(["photo", "sketch"], "val", None, "original")
    twins, Z_twin = index.load(["photo", "sketch"], "val", None, "intervened")
    twin = Z_twin[pd.Series(range(len(twins)), index=twins["sample_id"])[originals["sample_id"]].to_numpy()]
    projection = load_projection(join(run, "projections/domain-shift-art.npz"))
    assert row["movement_kept_val"] == pytest.approx(movement_kept(Z, twin, projection.components_))
    order = pd.Series(range(len(twins)), index=twins["sample_id"])[originals["sample_id"]].to_numpy()
    for family in families:
        of_family = (twins["view"].to_numpy()[order] == family)
        expected = movement_kept(Z[of_family], twin[of_family], projection.components_) if of_family.any() else np.nan
        assert row[f"movement_kept_val_{family}"] == pytest.approx(expected, nan_ok=True), family
    spectrum = table(run, "spectrum.parquet").query("protocol == 'domain-shift' and target == 'art'")
    assert len(spectrum) == 32 and spectrum["kept"].sum() == row["n_components"]
    assert spectrum["eigenvalue"].is_monotonic_decreasing  # largest order: kept first
    assert open(join(run, "eigen_spectrum.png"), "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_no_task_takes_a_subflow_result_and_subflows_name_protocol_and_target(workspace):
    with get_client(sync_client=True) as client:
        task_runs, offset = [], 0
        while batch := client.read_task_runs(limit=200, offset=offset):
            task_runs += batch
            offset += len(batch)
        flow_names = {run.name for run in client.read_flow_runs(limit=200)}
    inputs = [(run.name, name, item.input_type) for run in task_runs for name, items in run.task_inputs.items()
              for item in items]
    assert inputs and any(kind == "task_run" for *_, kind in inputs)  # dependencies between tasks are kept
    assert [i for i in inputs if i[2] == "flow_run"] == []  # the classic UI's Task Runs tab cannot show these
    assert {"fit domain-shift, hold out art", "fit open-class, hold out sketch"} <= flow_names


@pytest.mark.parametrize("evaluate", [evaluate_domain_shift, evaluate_open_class])
def test_only_the_oracle_rule_reads_the_target(workspace, tmp_path, evaluate):
    index = load_index(workspace["run"])
    corrupted = with_corrupted_domain(index, tmp_path, "sketch")
    grids = {}
    for rule in ("training-domain", "leave-one-domain-out", "oracle"):
        for name, which in (("clean", index), ("dirty", corrupted)):
            result = evaluate(which, str(tmp_path / f"{rule}-{name}"), ["sketch"], Recipe(), SelectionSpec(tuple(LAMS), rule=rule))
            grids[rule, name] = result.selections
            assert (result.selections["selection"] == rule).all()
    for rule in ("training-domain", "leave-one-domain-out"):
        pd.testing.assert_frame_equal(grids[rule, "clean"], grids[rule, "dirty"])
    assert not np.allclose(grids["oracle", "clean"]["val_accuracy"], grids["oracle", "dirty"]["val_accuracy"])
    # leave-one-domain-out scores each held-out source with a fit on the other: not the training-domain scores
    assert not np.allclose(grids["leave-one-domain-out", "clean"]["val_accuracy"],
                           grids["training-domain", "clean"]["val_accuracy"])


def test_each_test_split_row_count(workspace):
    index = load_index(workspace["run"])
    projection = join(workspace["run"], "projections/domain-shift-art.npz")
    counts = {split: len(index.load(["art"], split)[0]) for split in ("train", "val")}
    assert counts == {"train": 24, "val": 6}  # 30 images, 20% held out
    expected = {"all": 30, "in": counts["train"], "out": counts["val"]}
    for test_split, n in expected.items():
        rows = evaluate_target.fn(index, ["photo", "sketch"], "art", projection, Recipe(test_split=test_split))
        assert rows.groupby("method").size().tolist() == [n] * 5  # the zero-shot in both orders (k < d)
        open_rows = evaluate_open_class_target.fn(index, "art", projection, Recipe(open_class_test_split=test_split))
        assert len(open_rows) == 3 * n
    inside = evaluate_target.fn(index, ["photo", "sketch"], "art", projection, Recipe(test_split="in"))
    outside = evaluate_target.fn(index, ["photo", "sketch"], "art", projection, Recipe(test_split="out"))
    assert not set(inside["sample_id"]) & set(outside["sample_id"])


def named_run(workspace, name: str) -> str:
    """The latest execution of the run named `name` in the workspace's store."""
    return resolve_run(join(os.path.dirname(os.path.dirname(workspace["run"])), name))


def test_oracle_run_is_marked_in_reports(workspace):
    assert main(["run", *workspace["args"], "--run-name", "oracle", "--selection", "oracle",
                 "--protocol", "domain-shift"]) == 0
    run = named_run(workspace, "oracle")
    assert (table(run, "summary.parquet")["selection"] == "oracle").all()
    assert (table(run, "selection.parquet")["selection"] == "oracle").all()
    record = read_record(run)
    assert record["selection_rule"] == "oracle"
    with mock.patch("matplotlib.figure.Figure.suptitle") as suptitle:
        accuracy_plot_png(table(run, "summary.parquet"), record)
    assert "oracle" in suptitle.call_args.args[0]
    assert "oracle" in run_report(*read_run(run)).split("\n\n")[1]  # the headline names the rule


def test_released_preset_sets_its_fields_and_refuses_contradictions():
    config = RunConfig(preset="released")
    assert {name: getattr(config, name) for name in RELEASED_PRESET} == RELEASED_PRESET
    assert (config.normalize, config.order, config.test_split, config.use_text) == (False, "released", "out", False)
    assert RunConfig(**config.model_dump()) == config
    with pytest.raises(ValueError, match="drop \\{'order': 'largest'\\}"):
        RunConfig(preset="released", order="largest")
    assert RunConfig().order == "largest" and RunConfig().normalize


def released_reference(catalog, split, sources, target, lam, k, classes=None):
    """The authors' released recipe in plain numpy + scikit-learn, from the cached Parquet files and a split
    ({sample_id: train|val}): fit on the sources' train rows (of `classes`, if given) and their intervened twins,
    keep the eigenvectors of the SMALLEST eigenvalues, test raw embeddings against L2-normalised prompts."""
    def read(domain, view):
        rows, embeddings = read_embedding_file(catalog.shards[f"{domain}/{view}"])
        return rows.set_index("sample_id"), embeddings.astype(np.float64)

    train_rows, Z, Z_twin = [], [], []
    for domain in sources:
        rows, embeddings = read(domain, "original")
        twins, twin_embeddings = read(domain, "intervened")
        keep = (rows.index.map(split) == "train") & (rows["class"].isin(classes or catalog.classes))
        train_rows.append(rows[keep])
        Z.append(embeddings[keep])
        Z_twin.append(twin_embeddings[twins.index.get_indexer(rows.index[keep])])
    Z, Z_twin, y = np.concatenate(Z), np.concatenate(Z_twin), pd.concat(train_rows)["label"].to_numpy()
    D = Z - Z_twin
    M = Z.T @ Z / len(Z) - lam * D.T @ D / len(D)
    A = np.linalg.eigh(M)[1][:, :k]  # the smallest eigenvalues
    text_rows, text = read_embedding_file(catalog.text_url, {"role": ["class_prompt"]})
    T = text.astype(np.float64)[np.argsort(text_rows["label"].to_numpy())]
    T = T / np.linalg.norm(T, axis=1, keepdims=True)
    rows, X = read(target, "original")
    probe = dict(C=0.316, max_iter=1000, random_state=0)
    return rows.index, X, {
        "clip_zero_shot": lambda X: (100 * X @ T.T).argmax(axis=1),
        "clip_icm_zero_shot": lambda X: (100 * (X @ A) @ (T @ A).T).argmax(axis=1),
        "clip_linear_probe": LogisticRegression(**probe).fit(Z, y).predict,
        "clip_icm_linear_probe": lambda X, probe=LogisticRegression(**probe).fit(Z @ A, y): probe.predict(X @ A),
    }


def test_released_preset_predicts_what_the_authors_recipe_predicts_on_domainbeds_split(workspace):
    assert main(["run", *workspace["args"], "--run-name", "released", "--preset", "released", "--lams", "3",
                 "--ks", "8"]) == 0
    run = named_run(workspace, "released")
    record = read_record(run)
    assert record["config"]["preset"] == "released" and record["config"]["split"] == "domainbed"
    assert record["split"]["rule"] == "domainbed" and record["config"]["precision"] == "fp32"
    predictions, catalog = table(run, "predictions.parquet"), load_index(run)
    domain_shift_split, open_class_split = domainbed_reference(str(workspace["base"] / "data"), trial_seed=0)
    base = sorted(catalog.classes)[: len(catalog.classes) // 2]
    for target in catalog.domains:
        sources = [domain for domain in catalog.domains if domain != target]
        # domain shift: train on the sources' in splits, test on the target's out split
        ids, X, methods = released_reference(catalog, domain_shift_split, sources, target, 3.0, 8)
        tested = ids.map(domain_shift_split) == "val"
        for method, predict in methods.items():
            got = predictions[(predictions["protocol"] == "domain-shift") & (predictions["target"] == target)
                              & (predictions["method"] == method)]
            assert sorted(got["sample_id"]) == sorted(ids[tested]), (target, method)  # the target's out split only
            np.testing.assert_array_equal(got.set_index("sample_id").loc[ids[tested], "prediction"].to_numpy(),
                                          predict(X[tested]), err_msg=f"{target} {method}")
        # open class: fit on the sources' base in splits; zero-shot every image of the target, base and novel
        ids, X, methods = released_reference(catalog, open_class_split, sources, target, 3.0, 8, classes=base)
        for method in ("clip_zero_shot", "clip_icm_zero_shot"):
            got = predictions[(predictions["protocol"] == "open-class") & (predictions["target"] == target)
                              & (predictions["method"] == method)]
            assert sorted(got["sample_id"]) == sorted(ids), (target, method)  # every image of the target
            np.testing.assert_array_equal(got.set_index("sample_id").loc[ids, "prediction"].to_numpy(),
                                          methods[method](X), err_msg=f"{target} {method}")


def test_leave_one_domain_out_with_too_few_domains_fails_before_embedding(tmp_path, capsys):
    dataset = make_image_folder(str(tmp_path / "data"), domains=("art", "photo"), classes=CLASSES[:2], per_class=2)
    store = tmp_path / "store"
    assert main(["run", "--dataset", dataset, "--model", TINY_MODEL, "--pretrained", "none", "--store", str(store),
                 "--selection", "leave-one-domain-out"]) == 2
    err = capsys.readouterr().err
    assert "config field 'selection'" in err and "at least three domains" in err and "use training-domain" in err
    assert not (store / "embeddings").exists()


def test_probes_read_the_held_arrays_in_place_and_the_icm_probe_starts_from_clip(workspace, monkeypatch):
    index = load_index(workspace["run"])
    fits = []  # (X, keyword arguments, result) of each torch fit

    def recorded(X, *args, **kwargs):
        fits.append((X, kwargs, real_fit(X, *args, **kwargs)))
        return fits[-1][2]

    real_fit = icm_core.predict.fit_logistic
    monkeypatch.setattr(icm_core.predict, "fit_logistic", recorded)
    projection_url = join(workspace["run"], "projections", "domain-shift-art.npz")
    predictions = evaluate_target.fn(index, ["photo", "sketch"], "art", projection_url, Recipe())
    (clip_blocks, clip_options, clip_fit), (icm_blocks, icm_options, _) = fits
    held = [index.load([domain])[1] for domain in ("photo", "sketch")]
    for blocks in (clip_blocks, icm_blocks):  # one block per source, no stacked copy of the training set
        assert len(blocks) == 2 and all(np.shares_memory(block, whole) for block, whole in zip(blocks, held))
    assert clip_options["init"] is None and clip_options["projection"] is None
    # the CLIP-ICM probe starts at (A^T W, b): the CLIP probe's solution carried into the subspace
    components = load_projection(projection_url).components_
    np.testing.assert_array_equal(icm_options["projection"], components)
    np.testing.assert_allclose(icm_options["init"][0], components.T @ clip_fit.weight)
    np.testing.assert_array_equal(icm_options["init"][1], clip_fit.bias)
    assert set(predictions["method"]) == {"clip_zero_shot", "clip_linear_probe", "clip_icm_zero_shot",
                                          "clip_icm_zero_shot_open_clip", "clip_icm_linear_probe"}
