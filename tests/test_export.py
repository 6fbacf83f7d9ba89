"""The fitted CLIP-ICM as an open_clip model: folded, written, and reloaded by open_clip alone."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import open_clip
import pandas as pd
import pytest
import torch
from PIL import Image

from tasks.embed.models import load_model
from tasks.errors import InputError
from tasks.export.fold import CannotFold
from tasks.export.model import PROBE_TEXTS, export_projection, probe_inputs
from conftest import TINY_MODEL, catalog_of, make_image_folder

# tiny architectures with random weights: a ModifiedResNet (vision layers as a list) and a ViT whose attentional
# pooler is sized by the embedding width (which refuses the projection)
CLASSES = ("bird", "cat", "dog", "fish", "frog", "owl")
TINY_CONFIGS = {
    "ICM-Tiny-RN": {"embed_dim": 32, "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 8,
                                                    "head_width": 16},
                    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1}},
    # timm image towers: open_clip's linear projection after the trunk, or (no projection) the trunk's classifier
    "ICM-Tiny-timm": {"embed_dim": 32, "vision_cfg": {"timm_model_name": "test_convnext", "timm_pool": "avg",
                                                      "timm_model_pretrained": False, "timm_proj": "linear",
                                                      "image_size": 64},
                      "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1}},
    "ICM-Tiny-timm-head": {"embed_dim": 32, "vision_cfg": {"timm_model_name": "test_vit", "timm_pool": "token",
                                                           "timm_model_pretrained": False, "timm_proj": None,
                                                           "image_size": 64},
                           "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2,
                                        "layers": 1}},
    "ICM-Tiny-AttnPool": {"embed_dim": 32, "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "head_width": 32,
                                                          "patch_size": 8, "attentional_pool": True,
                                                          "attn_pooler_heads": 2},
                          "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2,
                                       "layers": 1}},
}

# run by a fresh interpreter that never imports clip-icm: open_clip alone loads each folder
RELOAD = textwrap.dedent("""
    import sys, numpy as np, open_clip, torch
    for folder, inputs, outputs in zip(*[iter(sys.argv[1:])] * 3):
        model, _, preprocess = open_clip.create_model_and_transforms("local-dir:" + folder)
        tokenizer = open_clip.get_tokenizer("local-dir:" + folder)
        given = np.load(inputs)
        with torch.inference_mode():
            image = model.eval().encode_image(torch.from_numpy(given["pixels"]))
            text = model.encode_text(tokenizer(["a photo of a dog.", "a sketch of a house in the snow."]))
        np.savez(outputs, image=image.double().numpy(), text=text.double().numpy(),
                 size=preprocess.transforms[0].size)
    assert not any(name.split(".")[0] in ("tasks", "flows", "icm_core", "clip_icm") for name in sys.modules)
""")
# what `clip_benchmark eval --model local-dir:DIR --model_type open_clip --dataset imagenet_sketch --dataset_root ROOT
# --custom_classname_file … --custom_template_file … --no_amp` runs, step by step, in a clean interpreter. One
# function is replaced: clip_benchmark 1.6.2's accuracy() calls float() on a one-element array, which NumPy >= 2.4
# refuses (TypeError); the replacement takes the same sums with .item()
CLIP_BENCHMARK = textwrap.dedent("""
    import json, sys, torch
    from clip_benchmark.datasets.builder import build_dataset
    from clip_benchmark.metrics import zeroshot_classification
    from clip_benchmark.models import load_clip

    def accuracy(output, target, topk=(1,)):
        pred = output.topk(max(topk), 1, True, True)[1].t()
        correct = pred.eq(target.view(1, -1).expand_as(pred))
        return [correct[:k].reshape(-1).float().sum().item() / len(target) for k in topk]

    zeroshot_classification.accuracy = accuracy
    model_name, root, work = sys.argv[1:]
    model, transform, tokenizer = load_clip(model_type="open_clip", model_name=model_name, pretrained="laion400m_e32",
                                            cache_dir=None, device="cpu")
    dataset = build_dataset("imagenet_sketch", root=root, transform=transform, split="test",
                            custom_classname_file=work + "/classnames.json",
                            custom_template_file=work + "/templates.json")
    loader = torch.utils.data.DataLoader(dataset, batch_size=8, shuffle=False, num_workers=0)
    metrics = zeroshot_classification.evaluate(model.eval(), loader, tokenizer, dataset.classes, dataset.templates,
                                               "cpu", amp=False)
    json.dump(metrics, open(work + "/result.json", "w"))
    # the logits behind them, from the two functions evaluate() calls
    classifier = zeroshot_classification.zero_shot_classifier(model, tokenizer, dataset.classes, dataset.templates,
                                                              "cpu", amp=False)
    logits, _ = zeroshot_classification.run_classification(model, classifier, loader, "cpu", amp=False)
    torch.save(logits, work + "/logits.pt")
""")
FOLDED = {TINY_MODEL: 5, "ICM-Tiny-RN": 7}  # a ViT and a ModifiedResNet, folded to k dimensions


@pytest.fixture(scope="module", autouse=True)
def tiny_configs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model_configs")
    for name, config in TINY_CONFIGS.items():
        (folder / f"{name}.json").write_text(json.dumps(config))
    open_clip.add_model_config(folder)


def random_basis(d: int, k: int, seed: int = 0) -> np.ndarray:
    return np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))[0][:, :k]


@pytest.fixture(scope="module")
def reloaded(tmp_path_factory, tiny_configs):
    """Each of FOLDED exported with a random basis, and reloaded by open_clip in one clean interpreter on other
    inputs than the export's own check: {name: (folder, components, pixels, the reloaded outputs)}."""
    base = tmp_path_factory.mktemp("exported")
    exported, arguments = {}, []
    for name, k in FOLDED.items():
        components = random_basis(32, k)
        folder = export_projection(name, "none", components, str(base / name), provenance={"run": "test"},
                                   card="# a card\n")
        loaded = load_model(name, "none", "cpu")
        pixels = probe_inputs(loaded.model, loaded.tokenizer)[0] + 0.5
        np.savez(base / f"{name}-inputs.npz", pixels=pixels.numpy())
        arguments += [str(folder), str(base / f"{name}-inputs.npz"), str(base / f"{name}-outputs.npz")]
        exported[name] = (folder, components, pixels)
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    subprocess.run([sys.executable, "-I", "-c", RELOAD, *arguments], check=True, cwd=base, env=environment,
                   timeout=300)
    return {name: (*exported[name], dict(np.load(base / f"{name}-outputs.npz"))) for name in FOLDED}


@pytest.mark.parametrize("name", FOLDED)
def test_exported_model_is_the_base_model_times_the_projection(reloaded, name):
    folder, components, pixels, got = reloaded[name]
    k = FOLDED[name]
    config = json.loads((folder / "open_clip_config.json").read_text())
    assert config["model_cfg"]["embed_dim"] == k and config["clip_icm"] == {"run": "test"}
    assert not list(folder.parent.glob(f".{name}.tmp-*"))  # no staging folder left

    base = load_model(name, "none", "cpu")
    with torch.inference_mode():
        want_image = base.model.encode_image(pixels).double().numpy() @ components
        want_text = base.model.encode_text(base.tokenizer(list(PROBE_TEXTS))).double().numpy() @ components
    assert got["image"].shape == (2, k) and got["text"].shape == (2, k)
    np.testing.assert_allclose(got["image"], want_image, rtol=1e-4, atol=1e-5 * np.abs(want_image).max())
    np.testing.assert_allclose(got["text"], want_text, rtol=1e-4, atol=1e-5 * np.abs(want_text).max())
    assert np.abs(want_image).max() > 1e-3  # a real signal, not zeros on both sides
    assert np.array_equal(got["size"], base.preprocess.transforms[0].size)  # the preprocess travels


@pytest.mark.parametrize("name, head", [("ICM-Tiny-timm", "visual.head.proj"),
                                        ("ICM-Tiny-timm-head", "visual.trunk.head")])
def test_timm_image_towers_fold_into_their_last_linear_layer(tmp_path, name, head):
    from tasks.export.fold import heads
    from tasks.export.model import load_exported

    base = load_model(name, "none", "cpu")
    assert heads(base.model)["image"].path == head
    components = random_basis(32, 6)
    folder = export_projection(name, "none", components, str(tmp_path / "out"), provenance={}, card="")
    exported, _, _ = load_exported(str(folder))
    pixels = probe_inputs(base.model, base.tokenizer)[0] * 2  # other inputs than the export's own check
    with torch.inference_mode():
        want = base.model.encode_image(pixels).double().numpy() @ components
        np.testing.assert_allclose(exported.encode_image(pixels).double().numpy(), want, rtol=1e-4,
                                   atol=1e-5 * np.abs(want).max())


def test_an_architecture_that_cannot_take_the_projection_is_refused_and_nothing_is_written(tmp_path):
    with pytest.raises(CannotFold, match="attentional pooler"):
        export_projection("ICM-Tiny-AttnPool", "none", random_basis(32, 4), str(tmp_path / "out"), provenance={},
                          card="")
    assert list(tmp_path.iterdir()) == []


def test_a_projection_of_another_width_and_a_used_folder_are_refused(tmp_path):
    with pytest.raises(InputError, match="48-dim embeddings, but 'ICM-Tiny' embeds into 32"):
        export_projection(TINY_MODEL, "none", random_basis(48, 4), str(tmp_path / "out"), provenance={}, card="")
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "file").write_text("x")
    with pytest.raises(InputError, match="not an empty folder") as refused:
        export_projection(TINY_MODEL, "none", random_basis(32, 4), str(tmp_path / "used"), provenance={}, card="")
    assert refused.value.field == "out"


# ---- from a run: `clip-icm export`, and the exported model through the pipeline again


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, prefect_api):
    from clip_icm.cli import main
    from tasks.store.history import read_record, resolve_run

    base = tmp_path_factory.mktemp("run")
    dataset = make_image_folder(str(base / "data"), domains=("art", "photo"), classes=CLASSES, per_class=3,
                                extra_files=False)
    args = ["--dataset", dataset, "--model", TINY_MODEL, "--pretrained", "none", "--store", str(base / "store"),
            "--protocol", "domain-shift", "--lams", "1", "--ks", "4",
            "--precision", "fp32"]  # the references below (base times P, CLIP_benchmark --no_amp) are float32
    assert main(["run", *args, "--run-name", "tiny"]) == 0
    entry = resolve_run(str(base / "store" / "runs" / "tiny"))
    return {"base": base, "dataset": dataset, "entry": entry, "record": read_record(entry)}


def test_cli_exports_a_run_target_as_an_open_clip_model(tiny_run, tmp_path, capsys):
    from clip_icm.cli import main
    from tasks.export.model import load_exported
    from tasks.fit.projections import load_projection, projection_url

    out = tmp_path / "exported"
    assert main(["export", str(tiny_run["base"] / "store" / "runs" / "tiny"), "--target", "photo",
                 "--out", str(out)]) == 0
    assert f"local-dir:{out}" in capsys.readouterr().out
    components = load_projection(projection_url(tiny_run["entry"], "domain-shift", "photo")).components_
    assert components.shape == (32, 4)
    model, preprocess, tokenizer = load_exported(str(out))
    base = load_model(TINY_MODEL, "none", "cpu")
    pixels, tokens = probe_inputs(base.model, base.tokenizer)
    with torch.inference_mode():
        np.testing.assert_allclose(model.encode_image(pixels).double().numpy(),
                                   base.model.encode_image(pixels).double().numpy() @ components, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(model.encode_text(tokenizer(["a cat"])).double().numpy(),
                                   base.model.encode_text(base.tokenizer(["a cat"])).double().numpy() @ components,
                                   rtol=1e-4, atol=1e-5)
    card = (out / "README.md").read_text()
    config = json.loads((out / "open_clip_config.json").read_text())["clip_icm"]
    assert config["target"] == "photo" and config["n_components"] == 4 and config["lam"] == 1.0
    assert config["dataset_fingerprint"] == tiny_run["record"]["dataset"]["fingerprint"]
    assert "| lambda, k | 1.0, 4" in card and "training-domain" in card and "clip_icm_zero_shot_open_clip" in card
    assert f"local-dir:{out}" in card and "`visual.proj`, `text_projection`" in card
    assert "| clip_icm_zero_shot |" in card  # the run's numbers on the target


def test_without_a_target_the_projection_fitted_on_every_domain_is_exported(tiny_run, tmp_path, capsys):
    from clip_icm.cli import main
    from tasks.fit.projections import load_projection

    final = tiny_run["record"]["final"]
    assert final == {"projection": "projections/final.npz", "domains": ["art", "photo"], "selection": "training-domain",
                     "lam": 1.0, "n_components": 4, "val_accuracy": final["val_accuracy"]}
    projection = load_projection(os.path.join(tiny_run["entry"], final["projection"]))
    assert projection.metadata_["sources"] == ["art", "photo"] and projection.metadata_["classes"] == list(CLASSES)
    assert "final_s" in tiny_run["record"]["timings"]

    out = tmp_path / "deployed"
    assert main(["export", str(tiny_run["base"] / "store" / "runs" / "tiny"), "--out", str(out)]) == 0
    provenance = json.loads((out / "open_clip_config.json").read_text())["clip_icm"]
    assert provenance["protocol"] == "final" and provenance["projection"].endswith("projections/final.npz")
    card = (out / "README.md").read_text()
    assert "fitted on every domain" in card and "the mean over the run's held-out targets" in card

    from tasks.export.runs import export_model

    model, preprocess, tokenizer = export_model(tiny_run["entry"], str(tmp_path / "in-python"))  # open_clip's triple
    with torch.inference_mode():
        assert model.encode_text(tokenizer(["a photo of a cat."])).shape == (1, 4)
        assert model.encode_image(preprocess(Image.new("RGB", (50, 40))).unsqueeze(0)).shape == (1, 4)


def test_export_names_the_missing_choice_in_one_line(tiny_run, tmp_path, capsys):
    from clip_icm.cli import main
    from tasks.export.runs import run_projection

    run = str(tiny_run["base"] / "store" / "runs" / "tiny")
    assert main(["export", run, "--target", "sketch", "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.strip() == (
        f"clip-icm: --target: {tiny_run['entry']} has no projection for target 'sketch' "
        f"({tiny_run['entry']}/projections/domain-shift-sketch.npz); pass one of ['art', 'photo']")
    assert not (tmp_path / "out").exists()
    before_final = {key: value for key, value in tiny_run["record"].items() if key != "final"}  # runs before 0.x
    with pytest.raises(InputError, match=r"fitted one projection per held-out target: pass --target, one of "
                                         r"\['art', 'photo'\]"):
        run_projection(tiny_run["entry"], before_final, None)


def test_an_exported_model_runs_through_the_pipeline_again(tiny_run, tmp_path):
    """A run's config with --model local-dir:EXPORTED passes every check, and its embedding step gives the base
    model's embeddings times P (the whole main job with it takes 10 s more; this is the part that differs)."""
    from conftest import read_embedding_file

    from flows.config.preflight import preflight
    from flows.config.run_config import RunConfig
    from tasks.data.datasets import discover
    from tasks.embed.images import embed_image_shard
    from tasks.export.runs import export_run
    from tasks.fit.projections import load_projection

    folder = export_run(tiny_run["entry"], str(tmp_path / "exported"), "art")
    config = RunConfig(dataset=tiny_run["dataset"], model=f"local-dir:{folder}", store=str(tmp_path / "store"),
                       protocol="domain-shift", lams=[1.0], ks=[4], precision="fp32")
    preflight(config)  # the folder's own weights and width (k = 4 fits it); no network, no tag
    with pytest.raises(InputError, match="exceeds the embedding width 4"):
        preflight(config.model_copy(update={"ks": [5]}))
    result = embed_image_shard(discover(tiny_run["dataset"]), "art", "original", config.embed_spec())
    assert "/embeddings/local-dir_" in result["url"]  # one folder of the store, whatever the path
    rows, exported = read_embedding_file(result["url"])
    base_rows, base = read_embedding_file(tiny_run["record"]["embeddings"]["shards"]["art/original"])
    order = base_rows.reset_index().set_index("sample_id").loc[rows["sample_id"], "index"].to_numpy()
    projection = load_projection(json.loads((folder / "open_clip_config.json").read_text())["clip_icm"]["projection"])
    np.testing.assert_allclose(exported, base[order] @ projection.components_, rtol=1e-3, atol=1e-4)


def test_clip_benchmark_scores_the_exported_model_as_the_run_reported(tiny_run, tmp_path):
    """LAION's CLIP_benchmark (its loader, dataset builder and zero-shot evaluation, in a clean interpreter) on the
    exported folder and the target's images with the run's class names and templates: its top-1, top-5 and mean
    per-class recall are the run's clip_icm_zero_shot_open_clip numbers on that target."""
    from tasks.data.class_names import class_display_names
    from tasks.data.prompts import PLACEHOLDER
    from tasks.embed.models import folder_config
    from tasks.evaluate.predictions import zero_shot_scorers
    from tasks.export.runs import export_run
    from tasks.fit.projections import load_projection
    from tasks.specs import Recipe

    record, config = tiny_run["record"], tiny_run["record"]["config"]
    folder = export_run(tiny_run["entry"], str(tmp_path / "exported"), "photo")
    names = class_display_names(config["class_names"], record["dataset"]["classes"], "the run's dataset",
                                config["folder_name_spaces"])
    # CLIP_benchmark reads an ImageFolder's classes in sorted folder order, as the run labels them
    (tmp_path / "classnames.json").write_text(json.dumps({"imagenet_sketch": [names[c] for c in sorted(names)]}))
    templates = [template.replace(PLACEHOLDER, "{c}") for template in record["prompts"]["templates"]]
    (tmp_path / "templates.json").write_text(json.dumps({"imagenet_sketch": templates}))
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-I", "-c", CLIP_BENCHMARK, f"local-dir:{folder}",
                           os.path.join(tiny_run["dataset"], "photo"), str(tmp_path)],
                          cwd=tmp_path, env=environment, timeout=300, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((tmp_path / "result.json").read_text())

    # image by image, CLIP_benchmark's logits are the run's open_clip-order scores (ImageFolder reads the images in
    # sorted order); the recipe's order scores others
    catalog = catalog_of(tiny_run["entry"])
    rows, embeddings = catalog.load(["photo"])
    order = np.argsort(rows["sample_id"].to_numpy())
    scorers = zero_shot_scorers(Recipe(), catalog, load_projection(folder_config(folder)["clip_icm"]["projection"]))
    logits = torch.load(tmp_path / "logits.pt").double().numpy()
    ours = scorers["clip_icm_zero_shot_open_clip"][0](embeddings[order])
    np.testing.assert_allclose(logits, ours, atol=1e-3)  # logits are 100 x cosines
    assert np.abs(scorers["clip_icm_zero_shot"][0](embeddings[order]) - ours).max() > 0.1
    predictions = pd.read_parquet(os.path.join(tiny_run["entry"], "predictions.parquet"))
    predictions = predictions[(predictions["target"] == "photo")
                              & (predictions["method"] == "clip_icm_zero_shot_open_clip")].sort_values("sample_id")
    np.testing.assert_array_equal(logits.argmax(axis=1), predictions["prediction"].to_numpy())

    summary = pd.read_parquet(os.path.join(tiny_run["entry"], "summary.parquet"))
    reported = summary[(summary["protocol"] == "domain-shift") & (summary["target"] == "photo")].set_index("method")
    exported = reported.loc["clip_icm_zero_shot_open_clip"]
    assert exported["n"] == 3 * len(CLASSES)
    assert metrics["acc1"] == pytest.approx(exported["accuracy"], abs=1e-9)
    assert metrics["acc5"] == pytest.approx(exported["top5_accuracy"], abs=1e-9)
    assert metrics["mean_per_class_recall"] == pytest.approx(exported["balanced_accuracy"], abs=1e-9)


# ---- what the exported model scores: open_clip's order (project, then normalise) beside the recipe's


def test_prompt_ensemble_in_open_clip_order_differs_from_the_recipe_unless_k_is_d():
    from icm_core import InvariantProjection, prompt_ensemble, zero_shot_logits

    rng = np.random.default_rng(1)
    prompts, groups = rng.normal(size=(12, 6)), np.repeat(np.arange(4), 3)
    images = rng.normal(size=(50, 6))

    def fitted(k):
        projection = InvariantProjection(k)
        projection.components_, projection.n_features_in_ = np.linalg.qr(rng.normal(size=(6, 6)))[0][:, :k], 6
        return projection

    narrow = fitted(2)
    by_hand = prompts @ narrow.components_
    by_hand /= np.linalg.norm(by_hand, axis=1, keepdims=True)
    by_hand = np.stack([by_hand[groups == g].mean(axis=0) for g in range(4)])
    np.testing.assert_allclose(prompt_ensemble(prompts, groups, 4, narrow),
                               by_hand / np.linalg.norm(by_hand, axis=1, keepdims=True))
    recipe = zero_shot_logits(images, prompt_ensemble(prompts, groups, 4), narrow)
    exported = zero_shot_logits(narrow.transform(images), prompt_ensemble(prompts, groups, 4, narrow))
    assert (recipe.argmax(axis=1) != exported.argmax(axis=1)).any()  # k < d: the two orders disagree somewhere

    rotation = fitted(6)  # k = d: a rotation keeps every norm, so both orders give the same logits
    exported = zero_shot_logits(rotation.transform(images), prompt_ensemble(prompts, groups, 4, rotation))
    np.testing.assert_allclose(exported, zero_shot_logits(images, prompt_ensemble(prompts, groups, 4), rotation),
                               atol=1e-9)


def test_a_protocol_reports_the_open_clip_order_for_every_target_or_none():
    from tasks.evaluate.predictions import open_clip_rows_everywhere

    frame = pd.DataFrame({"target": ["a", "a", "a", "b", "b"], "sample_id": ["1", "1", "1", "2", "2"],
                          "method": ["clip_zero_shot", "clip_icm_zero_shot", "clip_icm_zero_shot_open_clip",
                                     "clip_zero_shot", "clip_icm_zero_shot"], "prediction": [0, 1, 2, 3, 4]})
    filled = open_clip_rows_everywhere(frame)
    exported = filled[filled["method"] == "clip_icm_zero_shot_open_clip"].set_index("target")["prediction"]
    assert exported.to_dict() == {"a": 2, "b": 4}  # b's k = d: the recipe's predictions, copied
    no_row = frame[frame["method"] != "clip_icm_zero_shot_open_clip"]
    pd.testing.assert_frame_equal(open_clip_rows_everywhere(no_row), no_row)


def test_the_run_report_shows_the_exported_models_zero_shot_where_the_run_reports_it():
    from conftest import hand_made_summary

    from tasks.report.run_report import EXPORTED_ZERO_SHOT, method_table

    summary = hand_made_summary()
    assert EXPORTED_ZERO_SHOT not in method_table(summary, "domain-shift")
    exported = summary[summary["method"] == "clip_icm_zero_shot"].assign(method="clip_icm_zero_shot_open_clip",
                                                                         accuracy=lambda f: f["accuracy"] - 0.25)
    table = method_table(pd.concat([summary, exported]), "domain-shift")
    assert table[EXPORTED_ZERO_SHOT].to_dict() == {"art": 0.5, "photo": 0.25, "mean": 0.375}
    assert list(table.columns)[-1] == EXPORTED_ZERO_SHOT  # after the CLIP / CLIP-ICM pairs


# ---- --model local-dir:DIR and hf-hub:ORG/NAME: checked before any work, in one line


def test_model_folders_and_hub_names_are_checked_in_one_line(tmp_path, monkeypatch):
    from flows.config.preflight import check_weights
    from tasks.embed.models import check_model

    import huggingface_hub.constants

    # what a machine without the hub sees, at once
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    cases = {
        f"local-dir:{tmp_path / 'missing'}": "no such folder",
        f"local-dir:{tmp_path}": "holds no open_clip_config.json, so it is not an open_clip model folder",
        "hf-hub:just-a-name": "is not hf-hub:ORG/NAME",
        "hf-hub:some-org/no-such-model-here": "cannot read its open_clip_config.json from the Hugging Face hub",
    }
    for name, problem in cases.items():
        with pytest.raises(InputError, match=problem) as refused:
            check_weights(name, "openai")
        assert refused.value.field == "model" and "\n" not in refused.value.message
    (tmp_path / "open_clip_config.json").write_text(json.dumps({"preprocess_cfg": {}}))
    with pytest.raises(InputError, match="has no model_cfg object"):
        check_model(f"local-dir:{tmp_path}", "openai")
    (tmp_path / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_CONFIGS["ICM-Tiny-RN"]}))
    with pytest.raises(InputError, match="holds no weights"):
        check_model(f"local-dir:{tmp_path}", "openai")
    (tmp_path / "open_clip_model.safetensors").write_bytes(b"weights")
    assert check_model(f"local-dir:{tmp_path}", "none").startswith("file-sha256:")  # its weights, whatever --pretrained


def test_a_dataset_shift_run_exports_its_one_projection_and_refuses_a_target():
    from tasks.export.runs import run_projection

    record = {"config": {"protocol": "dataset-shift"}, "target_datasets": {"imagenet-v2": {}, "imagenet-a": {}}}
    assert run_projection("/store/runs/shift/entry", record, None) == (
        "/store/runs/shift/entry/projections/dataset-shift.npz", "dataset-shift", "imagenet-v2, imagenet-a")
    with pytest.raises(InputError, match="one projection serves every target dataset; leave --target out"):
        run_projection("/store/runs/shift/entry", record, "imagenet-a")
