import io

import fsspec
import numpy as np
import open_clip
import pandas as pd
import pyarrow as pa
import pytest
import torch
from conftest import TINY_MODEL, colourful_image, embedding_file_metadata, make_image_folder, read_embedding_file, tiny_embedding
from PIL import Image

from tasks.embed import models
from tasks.data.datasets import ROTATED_DIGITS_ANGLES, discover, materialize_rotated_digits
from tasks.data.splits import stable_split
from tasks.embed.images import (
    key_of,
    embed_image_shard,
    skipped_url,
)
from tasks.vocabulary import INTERVENED, ORIGINAL
from tasks.embed.text import embed_text
from tasks.specs import FAMILIES, InterventionConfig
from tasks.data.prompts import load_text_pairs, prompt_bank_pairs
from tasks.embed.intervene import intervene
from tasks.embed.models import check_model, load_model
from tasks.store.storage import read_parquet

pytestmark = pytest.mark.pipeline  # whole embedding passes with the tiny model

embed = embed_image_shard  # parts then merge, in this process


def all_files(url):
    fs, path = fsspec.core.url_to_fs(url)
    return fs.find(path) if fs.exists(path) else []


def test_discovery_counts_and_split_are_stable(memory_root):
    root = make_image_folder(memory_root, per_class=10, corrupt=[("art", "cat")])
    data = discover(root)
    assert data.domains == ("art", "photo", "sketch")
    assert data.classes == ("bird", "cat", "dog", "fish")
    counts = data.samples.groupby(["domain", "class"]).size()
    assert counts[("art", "cat")] == 11 and counts[("photo", "dog")] == 10 and len(data.samples) == 121
    assert not data.samples["sample_id"].str.endswith(".txt").any()
    # exactly 20% of each domain, rounded
    assert data.samples.groupby("domain")["split"].apply(lambda s: (s == "val").sum()).to_dict() == {
        "art": 8, "photo": 8, "sketch": 8}
    assert data.samples["path"].str.startswith(memory_root).all()

    ids = data.rows(domains=["art"])["sample_id"]
    shuffled = ids.sample(frac=1, random_state=3)
    by_order = dict(zip(ids, stable_split(ids, 0.2, seed=0)))
    assert dict(zip(shuffled, stable_split(shuffled, 0.2, seed=0))) == by_order
    assert dict(zip(ids, stable_split(ids, 0.2, seed=1))) != by_order


def test_listing_order_does_not_change_split_or_fingerprint(memory_root):
    forward = make_image_folder(f"{memory_root}/a", domains=("d1", "d2"), classes=("x", "y"), per_class=6)
    fs = fsspec.filesystem("memory")
    files = sorted(fs.find(f"{memory_root}/a"))
    for path in reversed(files):  # same content written in reverse order: a different listing order
        fs.pipe(path.replace("/a/", "/b/"), fs.cat_file(path))
    one, two = discover(forward), discover(f"{memory_root}/b")
    assert one.fingerprint == two.fingerprint
    # the stamps say when each copy was written; everything else is the same
    pd.testing.assert_frame_equal(one.samples.drop(columns=["path", "stamp"]), two.samples.drop(columns=["path", "stamp"]))
    assert discover(forward, seed=5).samples["split"].tolist() != one.samples["split"].tolist()
    fs.pipe(f"{memory_root}/b/d1/x/000.jpg", b"changed")
    assert discover(f"{memory_root}/b").fingerprint != one.fingerprint


def test_embedding_parquet_schema_rows_and_skipped(memory_root):
    root = make_image_folder(f"{memory_root}/data", per_class=3, corrupt=[("art", "cat")])
    data = discover(root)
    store = f"{memory_root}/store"
    result = embed(data, "art", INTERVENED, tiny_embedding(store, batch_size=4))
    assert (result["images"], result["embedded"], result["skipped"]) == (13, 12, 1)
    table = read_parquet(result["url"])
    assert table.schema.field("embedding").type == pa.list_(pa.float32(), 32)
    assert table.schema.names == ["sample_id", "path", "domain", "class", "label", "view", "embedding"]
    rows, embeddings = read_embedding_file(result["url"])
    assert len(rows) == 12 and set(rows["view"]) <= set(FAMILIES) and len(set(rows["view"])) > 1
    metadata = embedding_file_metadata(result["url"])
    # raw model output at rest: what open_clip's encode_image returns unnormalised
    assert metadata["normalized"] is False and metadata["format"] == "raw-v3"
    assert np.abs(np.linalg.norm(embeddings, axis=1) - 1).max() > 1e-2
    assert metadata["model"] == TINY_MODEL and metadata["pretrained"] == "none"
    assert metadata["images_fingerprint"] == data.domain_fingerprints["art"] and "Normalize" in metadata["preprocess"]
    assert metadata["precision"] == models.effective_precision("cpu") and metadata["key"] == key_of(result["url"]) and metadata["rows"] == 12
    assert metadata["code_version"] and metadata["interventions"]["seed"] == 0
    skipped = read_parquet(skipped_url(result["url"])).to_pylist()
    assert [(s["sample_id"], s["reason"].split(":")[0]) for s in skipped] == [("art/cat/broken.jpg", "UnidentifiedImageError")]


@pytest.mark.parametrize("native_bf16", [True, False])
def test_auto_precision_is_the_half_precision_the_hardware_runs_natively(monkeypatch, native_bf16):
    monkeypatch.setattr(models, "cpu_has_bf16", lambda: native_bf16)
    assert models.effective_precision("cpu") == ("bf16" if native_bf16 else "fp32")
    assert models.effective_precision("mps") == "fp32"  # no native bf16 there: as before
    assert models.effective_precision("cpu", "fp32") == "fp32" and models.effective_precision("cpu", "fp16") == "fp16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: not native_bf16)
    assert models.effective_precision("cuda") == ("fp16" if native_bf16 else "bf16")


def test_cpu_bf16_embeddings_are_float32_near_the_float32_ones():
    loaded = load_model(TINY_MODEL, "none", "cpu")
    pixels = torch.rand(4, 3, 32, 32)
    full, half = loaded.encode_images(pixels, "fp32"), loaded.encode_images(pixels, "bf16")
    assert half.dtype == np.float32 and not np.array_equal(half, full)  # bf16 ran, and came back as float32
    cosine = (full * half).sum(1) / np.linalg.norm(full, axis=1) / np.linalg.norm(half, axis=1)
    assert cosine.min() > 0.99


def test_second_identical_call_embeds_nothing_and_seed_changes_only_intervened(memory_root):
    data = discover(make_image_folder(f"{memory_root}/data", per_class=3))
    store = f"{memory_root}/store"
    first = {view: embed(data, "photo", view, tiny_embedding(store)) for view in (ORIGINAL, INTERVENED)}
    again = {view: embed(data, "photo", view, tiny_embedding(store)) for view in (ORIGINAL, INTERVENED)}
    assert [r["embedded"] for r in first.values()] == [12, 12]
    assert [r["embedded"] for r in again.values()] == [0, 0]
    assert read_parquet(first[INTERVENED]["url"]).equals(read_parquet(again[INTERVENED]["url"]))

    reseeded = InterventionConfig(seed=1)
    other_original = embed(data, "photo", ORIGINAL, tiny_embedding(store, interventions=reseeded))
    other_intervened = embed(data, "photo", INTERVENED, tiny_embedding(store, interventions=reseeded))
    assert other_original["embedded"] == 0 and other_original["url"] == first[ORIGINAL]["url"]
    assert other_intervened["embedded"] == 12 and other_intervened["url"] != first[INTERVENED]["url"]
    _, seed0 = read_embedding_file(first[INTERVENED]["url"])
    _, seed1 = read_embedding_file(other_intervened["url"])
    assert np.abs(seed0 - seed1).max() > 1e-3


@pytest.mark.parametrize("family", FAMILIES)
def test_each_intervention_changes_the_image_and_is_reproducible(family):
    image = colourful_image(np.random.default_rng(0), label=2, domain_index=1)
    config = InterventionConfig()
    name, changed = intervene(config, image, "d/c/img.jpg", family=family)
    assert name == family
    assert np.abs(np.asarray(changed, float) - np.asarray(image, float)).max() > 0
    _, again = intervene(config, image, "d/c/img.jpg", family=family)
    assert np.array_equal(np.asarray(changed), np.asarray(again))


def test_intervention_draw_depends_on_sample_not_batching(memory_root):
    data = discover(make_image_folder(f"{memory_root}/data", per_class=4))
    small = embed(data, "art", INTERVENED, tiny_embedding(f"{memory_root}/s1", batch_size=2))
    large = embed(data, "art", INTERVENED, tiny_embedding(f"{memory_root}/s2", batch_size=7, shard_size=5))
    rows_small, emb_small = read_embedding_file(small["url"])
    rows_large, emb_large = read_embedding_file(large["url"])
    assert rows_small["view"].tolist() == rows_large["view"].tolist()
    np.testing.assert_allclose(emb_small, emb_large, atol=1e-5)


def test_intervention_config_rejects_unknown_names():
    with pytest.raises(ValueError, match="unknown or no intervention families \\['sepia'\\]"):
        InterventionConfig(families=("sepia",))
    with pytest.raises(ValueError, match="'gaussian_blur' has no parameter"):
        InterventionConfig(params={"gaussian_blur": {"radius": 3}})
    blur = InterventionConfig(params={"gaussian_blur": {"sigma": (0.1, 0.2)}})
    assert blur.parameters("gaussian_blur") == {"kernel_size": 9, "sigma": (0.1, 0.2)}
    assert blur.key != InterventionConfig().key


def test_killed_run_resumes_with_missing_parts_only(memory_root, monkeypatch):
    data = discover(make_image_folder(f"{memory_root}/data", per_class=3))
    reference = embed(data, "sketch", INTERVENED, tiny_embedding(f"{memory_root}/ref", batch_size=2, shard_size=4))
    store = f"{memory_root}/store"
    real_encode, calls = models.LoadedModel.encode_images, []

    def failing_encode(self, pixels, precision="auto"):
        calls.append(len(pixels))
        if len(calls) == 5:
            raise RuntimeError("worker killed")
        return real_encode(self, pixels, precision)

    monkeypatch.setattr(models.LoadedModel, "encode_images", failing_encode)
    with pytest.raises(RuntimeError, match="worker killed"):
        embed(data, "sketch", INTERVENED, tiny_embedding(store, batch_size=2, shard_size=4))
    files = all_files(store)
    assert not any(".tmp-" in f for f in files)
    assert not any(f.endswith(".parquet") and "parts" not in f for f in files)  # no final file yet
    parts = [f for f in files if "/part-" in f and "skipped" not in f]
    assert len(parts) == 2  # 4 batches of 2 = 2 parts of 4 done

    monkeypatch.setattr(models.LoadedModel, "encode_images", real_encode)
    resumed = embed(data, "sketch", INTERVENED, tiny_embedding(store, batch_size=2, shard_size=4))
    assert resumed["embedded"] == 12 - 8
    assert read_parquet(resumed["url"]).equals(read_parquet(reference["url"]))
    leftovers = [f for f in all_files(store) if ".parts" in f or ".tmp-" in f]
    assert not leftovers


def test_works_on_a_local_path(tmp_path):
    data = discover(make_image_folder(str(tmp_path / "data"), per_class=2))
    result = embed(data, "art", ORIGINAL, tiny_embedding(str(tmp_path / "store")))
    rows, embeddings = read_embedding_file(result["url"])
    assert result["url"].startswith(str(tmp_path)) and embeddings.shape == (8, 32)
    assert rows["path"].map(lambda p: (tmp_path / "data").as_posix() in p).all()


def test_text_embeddings_of_prompts_and_pairs(memory_root, tmp_path):
    classes = ("bird", "cat")
    pairs = prompt_bank_pairs(classes)
    assert len(pairs) == 2 * 16 and set(pairs["class"]) == set(classes)
    assert (pairs["text_a"] != pairs["text_b"]).all() and pairs["text_b"].str.contains("cat").sum() == 16
    prompts = pd.DataFrame({"class": classes, "text": ["a photo of a bird.", "a photo of a cat."]})
    result = embed_text.fn(classes, prompts, pairs, tiny_embedding(memory_root))
    rows, embeddings = read_embedding_file(result["url"])
    assert result["embedded"] == len(rows) == 2 + 2 * 32
    assert set(rows["role"]) == {"class_prompt", "pair_a", "pair_b"}
    assert embed_text.fn(classes, prompts, pairs, tiny_embedding(memory_root))["embedded"] == 0

    user = tmp_path / "pairs.csv"
    user.write_text("class,text_a,text_b\ncat,a photo of a cat,a cat drawn in crayon\n")
    assert load_text_pairs(str(user), classes).iloc[0]["text_b"] == "a cat drawn in crayon"
    (tmp_path / "bad.csv").write_text("label,caption\ncat,x\n")
    with pytest.raises(ValueError, match=r"bad.csv.*lacks column\(s\) \['class', 'text_a', 'text_b'\]"):
        load_text_pairs(str(tmp_path / "bad.csv"), classes)


def test_bad_datasets_fail_with_messages_that_name_the_fix(memory_root):
    with pytest.raises(ValueError, match="nowhere.*does not exist.*ROOT/<domain>/<class>/<image>"):
        discover(f"{memory_root}/nowhere")
    root = make_image_folder(f"{memory_root}/a", domains=("d1", "d2"), classes=("x", "y"), per_class=2)
    fsspec.filesystem("memory").pipe(f"{root}/d3/x/readme.txt", b"no images here")
    with pytest.raises(ValueError, match=r"domain folder\(s\) \['d3'\].*contain no images"):
        discover(root)
    root = make_image_folder(f"{memory_root}/b", domains=("d1",), classes=("x", "y"), per_class=2)
    make_image_folder(root, domains=("d2",), classes=("x", "z"), per_class=2)
    with pytest.raises(ValueError, match=r"d1 lacks \['z'\]; d2 lacks \['y'\].*class_policy='intersection'"):
        discover(root)
    assert discover(root, class_policy="intersection").classes == ("x",)


def test_unknown_model_or_tag_fails_before_work_listing_close_names():
    with pytest.raises(ValueError, match=r"unknown open_clip model 'ViT-B-31'.*ViT-B-32"):
        check_model("ViT-B-31", "openai")
    with pytest.raises(ValueError, match=r"pretrained 'opnai'.*'openai'.*local file path"):
        check_model("ViT-B-32", "opnai")


def test_weights_from_a_local_checkpoint_and_a_clear_error_when_a_tag_cannot_be_fetched(tmp_path, monkeypatch):
    random_model = load_model(TINY_MODEL, "none", "cpu")
    checkpoint = tmp_path / "tiny.pt"
    state = {k: v + 0.01 for k, v in random_model.model.state_dict().items()}
    torch.save(state, checkpoint)
    loaded = load_model(TINY_MODEL, str(checkpoint), "cpu")
    assert loaded.weights_id.startswith("file-sha256:")
    torch.testing.assert_close(loaded.model.state_dict()["text_projection"], state["text_projection"])

    monkeypatch.setattr(models, "check_model", lambda name, pretrained: pretrained)
    monkeypatch.setattr(open_clip, "create_model_and_transforms",
                        lambda *a, **k: (_ for _ in ()).throw(RuntimeError("Failed to download weights for tag 'openai'")))
    with pytest.raises(RuntimeError, match="'openai' for model 'ViT-B-32'.*--pretrained /path/to/file"):
        models._load_model.__wrapped__("ViT-B-32", "openai", "cpu")


def test_rotated_digits_materialise_offline(tmp_path):
    root = materialize_rotated_digits(str(tmp_path))
    data = discover(root)
    assert data.domains == tuple(f"rotated_{a:02d}" for a in ROTATED_DIGITS_ANGLES)
    assert len(data.classes) == 10 and "seven" in data.classes
    per_domain = data.samples.groupby("domain").size()
    assert per_domain.sum() == 1797 and per_domain.min() >= 299
    assert data.samples.groupby("domain")["class"].nunique().min() == 10
    first = Image.open(io.BytesIO(fsspec.open(data.samples["path"].iloc[0], "rb").open().read()))
    assert first.size == (32, 32)
    marker_time = (tmp_path / "rotated-digits-32px" / ".complete").stat().st_mtime
    assert materialize_rotated_digits(str(tmp_path)) == root
    assert (tmp_path / "rotated-digits-32px" / ".complete").stat().st_mtime == marker_time


def test_concurrent_shard_threads_share_one_model():
    from concurrent.futures import ThreadPoolExecutor

    models._load_model.cache_clear()
    with ThreadPoolExecutor(4) as pool:
        loaded = list(pool.map(lambda _: load_model(TINY_MODEL, "none", "cpu"), range(4)))
    assert all(m is loaded[0] for m in loaded)
    assert models._load_model.cache_info().misses == 1
