"""ImageFolder discovery, ImageNet and CSV class names, prompt templates and the raw text table."""
import pkgutil

import fsspec
import numpy as np
import pytest
import torch
from conftest import TINY_MODEL, embedding_file_metadata, make_image_folder, make_imagefolder, read_embedding_file, tiny_embedding

from icm_core import LinearProbe, l2_normalize
from tasks.data.class_names import (
    class_display_names,
    class_identity,
    imagenet_class_names,
    imagenet_synsets,
    match_classes,
    read_class_names_csv,
)
from tasks.data.datasets import discover
from tasks.data.sources.base import IMAGEFOLDER_DOMAIN
from tasks.embed.images import embedding_table
from tasks.embed.text import TEXT_SCHEMA, embed_text
from tasks.store.catalog import EmbeddingCatalog
from tasks.data.prompts import prompt_bank_pairs
from tasks.embed.models import load_model
from tasks.data.prompts import class_prompts, load_templates
from tasks.store.storage import join, write_parquet


def timm_synsets(name):
    return pkgutil.get_data("timm.data", f"_info/{name}.txt").decode().split()


def test_imagefolder_is_one_domain_and_domainbed_keeps_its_domains(memory_root):
    root = make_imagefolder(f"{memory_root}/imagenet", ("n01440764", "n01443537"), per_class=10)
    fs = fsspec.filesystem("memory")
    fs.pipe(f"{root}/README.txt", b"not an image")                    # depth one: ignored
    fs.pipe(f"{root}/n01440764/labels.csv", b"not an image either")   # depth two, not an image: ignored
    data = discover(root)
    assert data.domains == (IMAGEFOLDER_DOMAIN,) == ("all",)
    assert data.classes == ("n01440764", "n01443537")
    assert len(data.samples) == 20 and data.samples["sample_id"].iloc[0] == "n01440764/000.jpg"
    assert data.samples["path"].iloc[0] == f"{root}/n01440764/000.jpg"
    assert (data.samples["split"] == "val").sum() == 4  # 20% of the one domain
    assert data.rows(classes=["n01443537"])["label"].eq(1).all()

    domainbed = discover(make_image_folder(f"{memory_root}/pacs", domains=("art", "photo"), per_class=2))
    assert domainbed.domains == ("art", "photo") and domainbed.samples["sample_id"].iloc[0] == "art/bird/000.jpg"


def test_mixed_layouts_and_empty_class_folders_fail_naming_examples(memory_root):
    root = make_image_folder(f"{memory_root}/mixed", domains=("art", "photo"), classes=("cat", "dog"), per_class=1)
    fsspec.filesystem("memory").pipe(f"{root}/art/stray.jpg", fsspec.filesystem("memory").cat_file(f"{root}/art/cat/000.jpg"))
    with pytest.raises(ValueError, match=r"mixes two layouts.*'art/stray.jpg'.*'art/cat/000.jpg'"):
        discover(root)
    root = make_imagefolder(f"{memory_root}/folder", ("cat", "dog"), per_class=2)
    fsspec.filesystem("memory").pipe(f"{root}/empty/notes.txt", b"no image")
    with pytest.raises(ValueError, match=r"class folder\(s\) \['empty'\].*contain no images.*<class>/<image>"):
        discover(root)


def test_imagenet_name_map_from_open_clip_and_timm():
    names = imagenet_class_names()
    assert len(names) == 1000 and names["n01440764"] == "tench" and names["n15075141"] == "toilet paper"
    assert imagenet_synsets()[0] == "n01440764" and imagenet_synsets()[999] == "n15075141"
    # ImageNet-V2's numeric folders are class indices: the same classes, by identity and by name
    folders = ["n01440764", "0", "1", "999"]
    assert class_display_names("imagenet", folders, "v2") == {
        "n01440764": "tench", "0": "tench", "1": "goldfish", "999": "toilet paper"}
    assert [class_identity("imagenet", f) for f in folders] == ["n01440764", "n01440764", "n01443537", "n15075141"]
    assert class_identity(None, "0") == "0"
    assert match_classes("imagenet", ("n01443537", "n15075141"), ("1", "999"), "v2") == {
        "1": "n01443537", "999": "n15075141"}
    # ImageNet-A and -R: timm's 200-synset lists, all among the 1000, and stingray is A's first
    for variant in ("imagenet_a_synsets", "imagenet_r_synsets"):
        synsets = timm_synsets(variant)
        assert len(synsets) == 200 and set(synsets) <= set(names)
    assert names[timm_synsets("imagenet_a_synsets")[0]] == "stingray"
    indices = [int(i) for i in timm_synsets("imagenet_a_indices")]
    assert [imagenet_synsets()[i] for i in indices] == timm_synsets("imagenet_a_synsets")


def test_unknown_folders_and_unmatched_classes_fail_naming_the_fix():
    with pytest.raises(ValueError, match=r"imagenet: 2 class folder\(s\) of v2 .*\['1000', 'cat'\].*--class-names FILE"):
        class_display_names("imagenet", ["0", "1000", "cat"], "v2")
    with pytest.raises(ValueError, match=r"target dataset 'v2' has 2 class folder\(s\) that the source dataset lacks.*"
                                         r"\['0', '1'\].*pass --class-names imagenet"):
        match_classes(None, ("n01440764", "n01443537"), ("0", "1"), "v2")
    with pytest.raises(ValueError, match=r"'imagenet-a' .* \['n01443537'\].*Remove those folders"):
        match_classes("imagenet", ("n01440764",), ("n01440764", "n01443537"), "imagenet-a")
    assert class_display_names(None, ["golden_retriever", "t-shirt"], "d") == {
        "golden_retriever": "golden retriever", "t-shirt": "t shirt"}


@pytest.mark.parametrize("content, message", [
    ("class,label\ncat,a cat\n", r"has columns \['class', 'label'\]; it needs exactly \['folder', 'name'\]"),
    ("folder,name\ncat,kitty\ncat,feline\ndog,puppy\n", r"names folder\(s\) \['cat'\] more than once"),
    ("folder,name\ncat,kitty\n", r"1 folder\(s\) of the data are not named, e.g. \['dog'\]"),
    ("folder,name\ncat,kitty\ndog,puppy\nfox,fox\n", r"1 named folder\(s\) are not in the data, e.g. \['fox'\]"),
    ("folder,name\ncat,kitty\ndog, \n", r"gives folder\(s\) \['dog'\] an empty name"),
])
def test_class_names_csv_is_validated_naming_the_file(tmp_path, content, message):
    path = tmp_path / "names.csv"
    path.write_text(content)
    with pytest.raises(ValueError, match=f"names.csv.*{message}"):
        class_display_names(str(path), ["cat", "dog"], "the data")


def test_class_names_csv_names_prompts_and_pairs(tmp_path):
    path = tmp_path / "names.csv"
    path.write_text("folder,name\n001,black-footed albatross\n002,Laysan albatross\n")
    assert read_class_names_csv(str(path)) == {"001": "black-footed albatross", "002": "Laysan albatross"}
    names = class_display_names(str(path), ["001", "002"], "cub")
    prompts = class_prompts(["001", "002"], names, load_templates("simple"))
    assert prompts.to_dict("records") == [{"class": "001", "text": "a photo of a black-footed albatross."},
                                          {"class": "002", "text": "a photo of a Laysan albatross."}]
    pairs = prompt_bank_pairs(["001"], names=names)
    assert pairs["class"].eq("001").all() and pairs["text_b"].iloc[0] == "a sketch of a black-footed albatross."
    with pytest.raises(ValueError, match="class names file .*nowhere.csv.* does not exist"):
        class_display_names(str(tmp_path / "nowhere.csv"), ["001"], "cub")


def test_templates_builtin_and_from_a_file(tmp_path):
    assert load_templates("simple") == ("a photo of a {}.",)
    openai = load_templates("openai-imagenet")
    assert len(openai) == 80 and openai[0] == "a bad photo of a {}." and all(t.count("{}") == 1 for t in openai)
    path = tmp_path / "templates.txt"
    path.write_text("a photo of a {}.\n\nart of the {}.\na photo of a {}.\n")
    assert load_templates(str(path)) == ("a photo of a {}.", "art of the {}.")
    prompts = class_prompts(["cat", "dog"], {"cat": "cat", "dog": "dog {x}"}, load_templates(str(path)))
    assert prompts["text"].tolist() == ["a photo of a cat.", "art of the cat.", "a photo of a dog {x}.", "art of the dog {x}."]
    path.write_text("a photo of a {}.\na photo without a placeholder\n")
    with pytest.raises(ValueError, match=r"templates.txt.* line 2 .*must hold \{\} exactly once"):
        load_templates(str(path))
    with pytest.raises(ValueError, match=r"'sketchy' is neither a built-in set \['openai-imagenet', 'simple'\]"):
        load_templates("sketchy")


def test_text_table_is_raw_has_every_template_per_class_and_keys_on_prompts(memory_root):
    classes = ("bird", "cat")
    names = class_display_names(None, classes, "d")
    pairs = prompt_bank_pairs(classes, names=names)
    prompts = class_prompts(classes, names, load_templates("openai-imagenet"))
    exact = tiny_embedding(memory_root, precision="fp32")  # compared below with open_clip's float32 output
    result = embed_text.fn(classes, prompts, pairs, exact)
    rows, embeddings = read_embedding_file(result["url"])
    assert result["embedded"] == len(rows) == 2 * 80 + 2 * 32
    class_rows = rows[rows["role"] == "class_prompt"]
    assert class_rows.groupby("class")["text"].nunique().to_dict() == {"bird": 80, "cat": 80}
    assert (class_rows["label"] == class_rows["class"].map({"bird": 0, "cat": 1})).all()
    assert embedding_file_metadata(result["url"])["normalized"] is False
    # raw: the encoder's output before normalisation, which normalises to what CLIP compares
    loaded = load_model(TINY_MODEL, "none")
    with torch.inference_mode():
        normalised = loaded.model.encode_text(loaded.tokenizer(rows["text"].tolist()), normalize=True).numpy()
    np.testing.assert_allclose(l2_normalize(embeddings), normalised, atol=1e-5)
    assert not np.allclose(np.linalg.norm(embeddings, axis=1), 1, atol=1e-3)
    assert embed_text.fn(classes, prompts, pairs, exact)["embedded"] == 0
    simple = class_prompts(classes, names, load_templates("simple"))
    assert embed_text.fn(classes, simple, pairs, exact)["url"] != result["url"]
    renamed = class_prompts(classes, {"bird": "sparrow", "cat": "cat"}, load_templates("simple"))
    assert embed_text.fn(classes, renamed, pairs, exact)["url"] != result["url"]


def test_class_embedding_is_the_normalised_mean_of_normalised_templates(memory_root):
    import pandas as pd

    frame = pd.DataFrame({"class": ["a", "a", "b", "a", "a"], "label": [0, 0, 1, 0, 0],
                          "role": ["class_prompt"] * 3 + ["pair_a", "pair_b"], "pair_id": [-1, -1, -1, 0, 0],
                          "text": ["t1", "t2", "t3", "p", "q"]})
    raw = np.array([[3.0, 0.0], [0.0, 1.0], [0.0, -5.0], [1.0, 1.0], [2.0, 0.0]])
    url = write_parquet(embedding_table(frame, TEXT_SCHEMA, raw, {"normalized": False}), join(memory_root, "text.parquet"))
    index = EmbeddingCatalog("root", "fp", ("all",), ("a", "b"), {}, url, split_url="unused")
    # mean of unit vectors [1, 0] and [0, 1], normalised; the raw mean [1.5, 0.5] would point elsewhere
    np.testing.assert_allclose(index.class_embeddings(), [[0.5 ** 0.5, 0.5 ** 0.5], [0.0, -1.0]], atol=1e-7)
    np.testing.assert_allclose(index.class_embeddings(["b"]), [[0.0, -1.0]], atol=1e-7)


def test_probe_decision_function_columns_follow_classes():
    rng = np.random.default_rng(0)
    centres = np.eye(4) * 6
    X = np.concatenate([centre + rng.normal(size=(30, 4)) for centre in centres])
    y = np.repeat([0, 1, 2, 3], 30)
    probe = LinearProbe().fit(X, y)
    scores = probe.decision_function(X)
    assert scores.shape == (120, 4)
    np.testing.assert_array_equal(probe.classes_[scores.argmax(axis=1)], probe.predict(X))
    binary = LinearProbe().fit(X[:60], y[:60])
    np.testing.assert_array_equal(binary.classes_[binary.decision_function(X[:60]).argmax(axis=1)], binary.predict(X[:60]))
