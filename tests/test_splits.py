"""The two split rules: DomainBed's exactly (checked against torchvision's ImageFolder and DomainBed's rules written
out here), the stable one unchanged, and the released preset's prompt and precision."""
import io
import os

import numpy as np
import pytest
from conftest import colourful_image, domainbed_reference
from PIL import Image

from flows.config.run_config import RunConfig
from tasks.data.class_names import class_display_names, class_prompt_name
from tasks.data.datasets import discover
from tasks.data.splits import split_base_novel, stable_split
from tasks.errors import InputError

# awkward on purpose: 0.2 * n is not whole (7, 13, 9), class names whose sorted order differs from the order of their
# joined paths ("cat" < "cat-big", but "cat-big/..." < "cat/..."), an upper-case class (sorted first), numbered
# files ("10.jpg" < "9.jpg"); the second dataset's "solo" domain holds a single image
LAYOUT = {
    "photo": {"Zebra": 2, "cat": 3, "cat-big": 2},
    "art": {"Zebra": 4, "cat": 4, "cat-big": 5},
    "sketch": {"Zebra": 3, "cat": 3, "cat-big": 3},
}
WITH_A_SOLO_DOMAIN = {"solo": {"cat": 1}, "many": {"cat": 6, "dog": 3}}


def write_awkward_dataset(root, layout=LAYOUT) -> str:
    """The layout's images, written in reverse of every sorted order (the listing order never helps)."""
    rng = np.random.default_rng(0)
    for domain, classes in reversed(layout.items()):
        for label, (name, count) in enumerate(reversed(classes.items())):
            os.makedirs(os.path.join(root, domain, name), exist_ok=True)
            for index in reversed(range(count)):
                colourful_image(rng, label, len(domain)).save(os.path.join(root, domain, name, f"{index + 5}.jpg"))
    return str(root)


@pytest.mark.parametrize("trial_seed", [0, 1, 7])
def test_domainbed_split_is_domainbeds_on_awkward_sizes(tmp_path, trial_seed):
    root = write_awkward_dataset(tmp_path / "data")
    data = discover(root, split="domainbed", seed=trial_seed)
    domain_shift, open_class = domainbed_reference(root, trial_seed)
    ours = data.samples.set_index("sample_id")
    assert ours["split"].to_dict() == domain_shift and ours["open_split"].to_dict() == open_class
    assert sum(value == "val" for value in domain_shift.values()) == 1 + 2 + 1  # int(0.2 n): 7, 13, 9 images
    # a domain of one image holds none out; classes the other domains lack still count in a domain's positions
    root = write_awkward_dataset(tmp_path / "solo", WITH_A_SOLO_DOMAIN)
    data = discover(root, split="domainbed", seed=trial_seed, class_policy="intersection")
    domain_shift, _ = domainbed_reference(root, trial_seed)
    ours = data.samples.set_index("sample_id")["split"].to_dict()
    assert ours == {sample_id: domain_shift[sample_id] for sample_id in ours} and ours["solo/cat/5.jpg"] == "train"
    assert len(ours) == 1 + 6 and sum(value == "val" for value in domain_shift.values()) == 1


def test_open_class_base_is_the_first_half_of_the_sorted_classes():
    assert split_base_novel(["b", "a", "c"]) == (["a"], ["b", "c"])
    assert split_base_novel(["d", "c", "b", "a"]) == (["a", "b"], ["c", "d"])


def test_the_stable_split_is_the_seeded_hash_split_of_before(tmp_path):
    data = discover(write_awkward_dataset(tmp_path / "data"))
    for domain, rows in data.samples.groupby("domain"):
        assert (rows["split"] == stable_split(rows["sample_id"], 0.2, 0)).all()
        assert (rows["open_split"] == rows["split"]).all()
        assert (rows["split"] == "val").sum() == round(0.2 * len(rows))


@pytest.mark.parametrize("stray, why", [
    ("art/cat/9.gif", "a GIF: clip-icm counts it, ImageFolder does not"),
    ("art/cat/9.ppm", "a PPM: ImageFolder counts it, clip-icm does not"),
    ("art/cat/.hidden.jpg", "a hidden JPEG: ImageFolder counts it"),
    ("art/cat/more/9.jpg", "a nested JPEG: ImageFolder counts it"),
])
def test_the_domainbed_split_refuses_files_imagefolder_would_count_otherwise(tmp_path, stray, why):
    root = write_awkward_dataset(tmp_path / "data")
    os.makedirs(os.path.dirname(os.path.join(root, stray)), exist_ok=True)
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="PNG")
    with open(os.path.join(root, stray), "wb") as handle:
        handle.write(buffer.getvalue())
    discover(root)  # the stable split does not care
    with pytest.raises(InputError) as error:
        discover(root, split="domainbed")
    assert error.value.field == "split" and stray in str(error.value) and "--split stable" in str(error.value), why


def test_imagefolder_extensions_are_torchvisions():
    from torchvision.datasets.folder import IMG_EXTENSIONS

    from tasks.data.sources.folder import IMAGEFOLDER_EXTENSIONS

    assert sorted(IMAGEFOLDER_EXTENSIONS) == sorted(IMG_EXTENSIONS)


@pytest.mark.parametrize("folder, default, authors", [
    ("t-shirt", "t shirt", "t-shirt"),
    ("teddy_bear", "teddy bear", "teddy bear"),
    ("ice-cream_cone", "ice cream cone", "ice-cream cone"),
])
def test_prompt_names_of_folders(folder, default, authors):
    assert class_prompt_name(folder) == default
    assert class_prompt_name(folder, "underscores") == authors
    assert class_display_names(None, [folder], "d", "underscores") == {folder: authors}


def test_the_released_preset_is_the_authors_split_precision_and_prompt():
    config = RunConfig(preset="released")
    assert (config.split, config.precision, config.folder_name_spaces) == ("domainbed", "fp32", "underscores")
    assert config.data_spec().split == "domainbed" and config.embed_spec().precision == "fp32"
    assert config.recipe().test_split == "out" and config.recipe().open_class_test_split == "all"
    # fields added since names were derived leave an existing config's name alone at their defaults
    assert RunConfig(dataset="/d/PACS").name == RunConfig(dataset="/d/PACS", split="stable").name
    assert RunConfig(dataset="/d/PACS").name != RunConfig(dataset="/d/PACS", split="domainbed").name
