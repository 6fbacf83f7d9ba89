"""Datasets in three layouts (tasks/data/sources): one folder tree written as CLIP_benchmark's shards and as Hugging
Face Parquet lists as the same samples, splits the same way, reads back the same bytes, and plans its embedding by
the data's own files; bad input answers in one line before anything is embedded."""
import os
import tarfile

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import (
    folder_to_parquet, folder_to_webdataset, huggingface_metadata, make_image_folder, make_imagefolder, tar_member,
    tiny_embedding,
)

from tasks.data.datasets import discover, one_listing_per_dataset
from tasks.data.sources import read_samples
from tasks.data.sources.reading import ImageTooLarge, NotRegularFile
from tasks.embed.images import plan_shard
from tasks.errors import InputError
from tasks.vocabulary import DOMAINBED, METHODS, ORIGINAL, STABLE

SAME = ["sample_id", "domain", "class", "file", "label", "split", "open_split"]


@pytest.fixture(scope="module")
def layouts(tmp_path_factory):
    base = tmp_path_factory.mktemp("layouts")
    folder = make_image_folder(str(base / "folder"), domains=("art", "photo"), classes=("cat", "dog", "fish"),
                               per_class=4, extra_files=False)
    return {"folder": folder, "webdataset": folder_to_webdataset(folder, str(base / "wds"), per_shard=5),
            "parquet": folder_to_parquet(folder, str(base / "parquet"), files=2, row_group_size=5)}


@pytest.mark.parametrize("layout", ["webdataset", "parquet"])
@pytest.mark.parametrize("rule", [STABLE, DOMAINBED])
def test_a_tree_in_another_layout_lists_the_same_samples_and_splits(layouts, layout, rule):
    folder = discover(layouts["folder"], split=rule, seed=3)
    other = discover(layouts[layout], split=rule, seed=3)
    assert (folder.format, other.format) == ("folder", layout)
    assert (other.domains, other.classes) == (folder.domains, folder.classes) == (("art", "photo"), ("cat", "dog", "fish"))
    pd.testing.assert_frame_equal(other.samples[SAME], folder.samples[SAME])
    assert (other.samples["split"] == "val").sum() == 4  # 20% of each domain's 12: the split is not trivial
    assert other.class_names == {"cat": "cat", "dog": "dog", "fish": "fish"}
    assert other.fingerprint != folder.fingerprint  # other files: other embeddings' keys, never a stale cache


def test_every_sample_reads_back_the_bytes_of_its_image(layouts):
    folder = discover(layouts["folder"]).samples.set_index("sample_id")
    for layout in ("webdataset", "parquet"):
        rows = discover(layouts[layout]).samples.sort_values(["path", "position"]).reset_index(drop=True)
        read = dict(read_samples(rows, 2**20))
        assert len(read) == len(rows) == 24
        for position, row in rows.iterrows():
            with open(folder.loc[row["sample_id"], "path"], "rb") as handle:
                assert read[position] == handle.read(), (layout, row["sample_id"])


def sized(index, data):
    return index, data if isinstance(data, Exception) else len(data)


def test_loader_workers_read_contiguous_slices_of_a_part_each_sample_once(layouts):
    import torch

    from tasks.embed.cpu_images import SampleStream

    rows = discover(layouts["webdataset"]).samples.sort_values(["path", "position"]).reset_index(drop=True)
    loader = torch.utils.data.DataLoader(SampleStream(rows, sized), batch_size=4, num_workers=2, collate_fn=list)
    seen = [item for batch in loader for item in batch]
    assert sorted(index for index, _ in seen) == list(range(len(rows)))
    assert [size for _, size in sorted(seen)] == rows["size"].tolist()


def test_shard_templates_and_the_split_a_user_chooses(layouts, tmp_path):
    data = discover(layouts["webdataset"])
    assert data.templates == ("a photo of a {}.",)
    with pytest.raises(InputError, match=r"no shards of split 'train'.*--dataset-split") as error:
        discover(layouts["webdataset"], dataset_split="train")
    assert error.value.field == "dataset_split"
    single = folder_to_webdataset(make_imagefolder(str(tmp_path / "one"), ("a", "b"), per_class=3),
                                  str(tmp_path / "shards"), split="validation", one_domain=True)
    assert os.path.exists(os.path.join(single, "validation", "0.tar"))
    data = discover(single, dataset_split="validation")
    assert data.domains == ("all",) and data.samples["sample_id"].iat[0] == "a/000.jpg"


def test_an_unchanged_shard_set_is_listed_again_without_reading_a_shard(layouts, tmp_path, monkeypatch):
    import shutil

    import tasks.data.sources.webdataset as webdataset

    root, store = shutil.copytree(layouts["webdataset"], tmp_path / "wds"), str(tmp_path / "store")
    first = discover(str(root), store=store)
    indexed = []
    index = webdataset._index
    monkeypatch.setattr(webdataset, "_index", lambda tree, relative: indexed.append(relative) or index(tree, relative))
    again = discover(str(root), store=store)
    assert indexed == []
    pd.testing.assert_frame_equal(again.samples, first.samples)
    shard = root / "art" / "test" / "1.tar"
    with tarfile.open(shard, "a") as archive:  # a sample more: the shard's stamp changes, it alone is indexed again
        tar_member(archive, "cat/extra.jpg", (root / ".." / "wds" / "classnames.txt").read_bytes())
        tar_member(archive, "cat/extra.cls", b"0")
    changed = discover(str(root), store=store)
    assert indexed == ["art/test/1.tar"] and len(changed.samples) == len(first.samples) + 1
    assert "art/cat/extra.jpg" in set(changed.samples["sample_id"])


def test_the_hubs_blob_id_is_a_files_checksum():
    from tasks.data.fingerprints import store_checksum

    # what HfFileSystem lists of an LFS file: no modification time to stamp it by, a blob id that names its content
    info = {"name": "datasets/x/data/train-0.parquet", "size": 10, "type": "file", "blob_id": "5e1f",
            "lfs": {"size": 10, "sha256": "ab12", "pointer_size": 130}}
    assert store_checksum(info) == "blob_id:5e1f"


def test_the_embedding_plan_follows_the_files(layouts):
    embedding = tiny_embedding("memory://unused", shard_size=4)
    shards = plan_shard(discover(layouts["webdataset"]), "art", ORIGINAL, embedding)
    # 12 images of art in shards of 5, 5, 2: a part never spans two shards, and reads its shard in file order
    assert [len(rows) for rows in shards.parts] == [4, 1, 4, 1, 2]
    assert [rows["path"].nunique() for rows in shards.parts] == [1] * 5
    offsets = [int(locator.split(":")[1]) for locator in shards.parts[0]["locator"]]
    assert offsets == sorted(offsets)
    groups = plan_shard(discover(layouts["parquet"]), "art", ORIGINAL, embedding)
    assert sum(len(rows) for rows in groups.parts) == 12 and all(rows["path"].nunique() == 1 for rows in groups.parts)
    folder = plan_shard(discover(layouts["folder"]), "art", ORIGINAL, embedding)
    assert [len(rows) for rows in folder.parts] == [4, 4, 4]  # images that are files bundle as before


# ---- bad input: one line naming the file (and member or row) and the fix


def shard_set(tmp_path, members, nshards=None, classes=("cat", "dog")):
    """A one-domain shard set ROOT/test/0.tar holding `members` [(name, bytes)]."""
    root = tmp_path / "set"
    (root / "test").mkdir(parents=True)
    (root / "classnames.txt").write_text("\n".join(classes) + "\n")
    with tarfile.open(root / "test" / "0.tar", "w") as archive:
        for name, data in members:
            tar_member(archive, name, data)
    (root / "test" / "nshards.txt").write_text(f"{1 if nshards is None else nshards}\n")
    return root


def png() -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("members, nshards, message", [
    ([("s0.png", png())], None, r"0\.tar'?: sample 's0' has no \.cls member"),
    ([("s0.cls", b"1")], None, r"sample 's0' has a label but no image member"),
    ([("s0.png", png()), ("s0.cls", b"7")], None, r"label 7, outside the 2 class names of .*classnames\.txt"),
    ([("s0.png", png()), ("s0.cls", b"cat")], None, r"member 's0\.cls' holds 'cat', not an integer label"),
    ([("s0.png", png()), ("s0.cls", b"0")], 2, r"nshards\.txt' says 2 shard\(s\) but .* holds 1; missing .*1\.tar"),
])
def test_a_bad_shard_set_is_one_line_naming_the_shard_and_the_sample(tmp_path, members, nshards, message):
    with pytest.raises(InputError, match=message):
        discover(str(shard_set(tmp_path, members, nshards)))


def test_two_labels_sharing_a_name_stay_two_classes_prompted_by_that_name(tmp_path):
    # CLIP's curated ImageNet names, CLIP_benchmark's classnames.txt, hold 'missile' and 'sunglasses' twice
    root = shard_set(tmp_path, [("s0.png", png()), ("s0.cls", b"0"), ("s1.png", png()), ("s1.cls", b"2"),
                                ("s2.png", png()), ("s2.cls", b"1")], classes=("missile", "cat", "missile"))
    data = discover(str(root))
    assert data.classes == ("cat", "missile (0)", "missile (2)")
    assert data.class_names == {"cat": "cat", "missile (0)": "missile", "missile (2)": "missile"}
    assert dict(zip(data.samples["sample_id"], data.samples["class"])) == {
        "cat/s2.png": "cat", "missile (0)/s0.png": "missile (0)", "missile (2)/s1.png": "missile (2)"}


def test_a_template_without_its_class_is_named_by_line(tmp_path):
    root = shard_set(tmp_path, [("s0.png", png()), ("s0.cls", b"0")])
    (root / "zeroshot_classification_templates.txt").write_text("a photo of a {c}.\n\na photo.\n")
    with pytest.raises(InputError, match=r"templates\.txt' line 3 \('a photo\.'\) must hold \{c\} exactly once"):
        discover(str(root))


def test_a_truncated_or_foreign_shard_is_named(tmp_path):
    root = shard_set(tmp_path, [("s0.png", png() * 4), ("s0.cls", b"0"), ("s1.png", png()), ("s1.cls", b"1")])
    shard = root / "test" / "0.tar"
    shard.write_bytes(shard.read_bytes()[:1200])
    with pytest.raises(InputError, match=r"shard '.*0\.tar' is not a complete tar file"):
        discover(str(root))
    shard.write_bytes(b"PK\x03\x04 a zip, not a tar" * 40)
    with pytest.raises(InputError, match=r"shard '.*0\.tar' is not a complete tar file .*re-export"):
        discover(str(root))


def test_a_folder_of_tar_files_is_one_line_not_a_traceback(tmp_path):
    (tmp_path / "shards").mkdir()
    for number in range(2):
        with tarfile.open(tmp_path / "shards" / f"{number}.tar", "w") as archive:
            tar_member(archive, "s0.png", png())
    with pytest.raises(InputError, match=r"no shards of split 'test' \(ROOT/test/N\.tar\); its shards are in \['shards'\]"):
        discover(str(tmp_path))
    (tmp_path / "shards").rename(tmp_path / "test")
    with pytest.raises(InputError, match=r"classnames\.txt' is missing: a shard set names its classes there"):
        discover(str(tmp_path))
    (tmp_path / "classnames.txt").write_text("cat\n")
    with pytest.raises(InputError, match=r"test/nshards\.txt' is missing: .* write 2 into it"):
        discover(str(tmp_path))
    (tmp_path / "test").rename(tmp_path / "shards")
    (tmp_path / "shards" / "more").mkdir()
    os.rename(tmp_path / "shards" / "0.tar", tmp_path / "shards" / "more" / "0.tar")
    with pytest.raises(InputError, match=r"shards outside CLIP_benchmark's layout, e.g. 'shards/more/0\.tar'"):
        discover(str(tmp_path))


def test_a_mixed_layout_and_an_empty_domain_are_named(tmp_path, layouts):
    folder = make_image_folder(str(tmp_path / "mixed"), domains=("art", "photo"), classes=("a", "b"), per_class=2)
    with tarfile.open(tmp_path / "mixed" / "art" / "stray.tar", "w") as archive:
        tar_member(archive, "s0.png", png())
    with pytest.raises(InputError, match=r"mixes layouts \(webdataset: 'art/stray\.tar'; folder: "):
        discover(folder)
    wds = folder_to_webdataset(layouts["folder"], str(tmp_path / "wds"))
    os.makedirs(os.path.join(wds, "empty", "test"))
    with pytest.raises(InputError, match=r"domain folder 'empty' under .* holds no shards"):
        discover(wds)


def parquet_file(path, table):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pq.write_table(table, path)
    return os.path.dirname(path)


IMAGE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


@pytest.mark.parametrize("columns, metadata, message", [
    ({"picture": pa.array([b"x"]), "label": pa.array([0])}, True,
     r"data\.parquet' has no 'image' column of encoded images"),
    ({"image": pa.array([{"bytes": png(), "path": "a.png"}], IMAGE), "label": pa.array([0])}, False,
     r"data\.parquet': its labels have no names .*ClassLabel"),
    ({"image": pa.array([{"bytes": png(), "path": "a.png"}], IMAGE), "label": pa.array([3])}, True,
     r"data\.parquet' row 0 has label 3, outside its 2 class names"),
    ({"image": pa.array([{"bytes": png(), "path": "a.png"}] * 2, IMAGE), "label": pa.array([0, 1]),
      "domain": pa.array(["art", ""])}, True, r"data\.parquet' row 1 has an empty domain"),
    ({"image": pa.array([{"bytes": None, "path": "a.png"}], IMAGE), "label": pa.array([0])}, True,
     r"data\.parquet': row group 0 holds 1 row\(s\) without image bytes"),
])
def test_bad_parquet_is_one_line_naming_the_file_and_row(tmp_path, columns, metadata, message):
    table = pa.table(columns)
    if metadata:
        table = table.replace_schema_metadata(huggingface_metadata(["cat", "dog"]))
    with pytest.raises(InputError, match=message):
        discover(parquet_file(str(tmp_path / "hf" / "data.parquet"), table))


# ---- untrusted input: only regular files are read, bytes per image bounded


def test_a_pipe_or_a_device_among_the_images_is_refused_by_name_without_reading(tmp_path):
    import time

    folder = make_image_folder(str(tmp_path / "data"), domains=("art", "photo"), classes=("a", "b"), per_class=2)
    os.mkfifo(tmp_path / "data" / "art" / "a" / "pipe.jpg")
    os.symlink("/dev/zero", tmp_path / "data" / "photo" / "b" / "zero.jpg")
    os.symlink(tmp_path / "data" / "art" / "a" / "000.jpg", tmp_path / "data" / "photo" / "b" / "linked.jpg")
    started = time.monotonic()
    with pytest.raises(InputError, match=r"holds 2 entries that are not a regular file, e\.g\. 'art/a/pipe\.jpg' "
                                         r"\(a named pipe\), 'photo/b/zero\.jpg' \(a character device\)"):
        discover(folder)
    assert time.monotonic() - started < 10
    os.remove(tmp_path / "data" / "art" / "a" / "pipe.jpg")
    os.remove(tmp_path / "data" / "photo" / "b" / "zero.jpg")
    assert "photo/b/linked.jpg" in set(discover(folder).samples["sample_id"])  # a link to a regular file is read


def test_a_pipe_swapped_in_after_the_listing_is_skipped_not_waited_on(tmp_path):
    folder = make_image_folder(str(tmp_path / "data"), domains=("art", "photo"), classes=("a", "b"), per_class=2)
    rows = discover(folder).samples.reset_index(drop=True)
    os.remove(rows["path"].iat[0])
    os.mkfifo(rows["path"].iat[0])  # no writer: a blocking open would wait forever
    read = dict(read_samples(rows[["path", "locator"]], 2**20))
    assert isinstance(read[0], NotRegularFile) and "is not a regular file (a named pipe)" in str(read[0])
    assert all(isinstance(read[position], bytes) for position in range(1, len(rows)))


def test_the_cli_answers_a_hostile_folder_in_one_line(tmp_path, capsys):
    from clip_icm.cli import main

    folder = make_image_folder(str(tmp_path / "data"), domains=("art", "photo"), classes=("a", "b"), per_class=2)
    os.mkfifo(tmp_path / "data" / "art" / "a" / "pipe.jpg")
    os.symlink("/dev/zero", tmp_path / "data" / "photo" / "b" / "zero.jpg")
    assert main(["run", "--dataset", folder, "--model", "ICM-Tiny", "--pretrained", "none",
                 "--store", str(tmp_path / "store")]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("clip-icm: ")
    assert "'art/a/pipe.jpg' (a named pipe)" in error and "--dataset" in error


def test_an_image_over_the_byte_limit_is_skipped_before_it_is_read(tmp_path, monkeypatch):
    big = png() + b"\0" * 5000
    root = shard_set(tmp_path, [("s0.png", png()), ("s0.cls", b"0"), ("s1.png", big), ("s1.cls", b"1")])
    monkeypatch.setenv("CLIP_ICM_MAX_IMAGE_BYTES", "4096")
    rows = discover(str(root)).samples.sort_values("position").reset_index(drop=True)
    read = dict(read_samples(rows, 4096))
    assert read[0] == png()
    assert isinstance(read[1], ImageTooLarge) and "over the limit of 4096 bytes per image" in str(read[1])
    folder = make_image_folder(str(tmp_path / "data"), domains=("art", "photo"), classes=("a", "b"), per_class=2)
    (tmp_path / "data" / "art" / "a" / "huge.png").write_bytes(big)
    with one_listing_per_dataset():
        data = discover(folder)
    huge = data.samples.set_index("sample_id").loc["art/a/huge.png"]
    assert huge["digest"].startswith("unread:")  # never hashed
    assert isinstance(dict(read_samples(data.samples[data.samples["sample_id"] == "art/a/huge.png"]
                                        .reset_index(drop=True), 4096))[0], ImageTooLarge)
    monkeypatch.setenv("CLIP_ICM_MAX_IMAGE_BYTES", "lots")
    with pytest.raises(InputError, match="CLIP_ICM_MAX_IMAGE_BYTES='lots' must be a positive number of bytes"):
        discover(folder)


# ---- same images, same report: the main job on one tree in each layout


def test_the_main_job_on_one_tree_in_each_layout_gives_the_same_report(tmp_path, prefect_api, monkeypatch):
    from clip_icm.cli import main
    from conftest import TINY_MODEL

    from tasks.store.history import read_record, resolve_run
    from tasks.store.storage import read_parquet

    folder = make_image_folder(str(tmp_path / "folder"), domains=("art", "photo"), classes=("bird", "cat", "dog", "fish"),
                               per_class=3, corrupt=[("photo", "dog")], extra_files=False)
    with open(f"{folder}/art/cat/000.jpg", "rb") as handle:  # a good image, padded over the byte limit
        (tmp_path / "folder" / "art" / "cat" / "huge.jpg").write_bytes(handle.read() + b"\0" * 30000)
    monkeypatch.setenv("CLIP_ICM_MAX_IMAGE_BYTES", "20000")
    roots = {"folder": folder, "webdataset": folder_to_webdataset(folder, str(tmp_path / "wds"), per_shard=5),
             "parquet": folder_to_parquet(folder, str(tmp_path / "parquet"), files=2, row_group_size=4)}
    reports = {}
    for layout, root in roots.items():
        assert main(["run", "--dataset", root, "--model", TINY_MODEL, "--pretrained", "none", "--store",
                     str(tmp_path / "store"), "--lams", "1", "--ks", "4", "--split", "domainbed",
                     "--run-name", layout]) == 0
        run = resolve_run(str(tmp_path / "store" / "runs" / layout))
        reports[layout] = {name: read_parquet(f"{run}/{name}.parquet").to_pandas()
                           for name in ("predictions", "summary", "skipped")}
        reports[layout]["record"] = read_record(run)
    keys = ["protocol", "method", "target", "sample_id"]
    folder_report = reports["folder"]
    assert len(folder_report["predictions"]) > 0 and folder_report["record"]["dataset"]["format"] == "folder"
    for layout in ("webdataset", "parquet"):
        report = reports[layout]
        assert report["record"]["dataset"]["format"] == layout
        assert report["record"]["dataset"]["max_image_bytes"] == 20000
        assert report["record"]["dataset"]["fingerprint"] != folder_report["record"]["dataset"]["fingerprint"]
        predictions = report["predictions"].sort_values(keys).reset_index(drop=True)
        expected = folder_report["predictions"].sort_values(keys).reset_index(drop=True)
        columns = [column for column in expected.columns if column != "path"]
        pd.testing.assert_frame_equal(predictions[columns], expected[columns], check_exact=False, atol=1e-5)
        pd.testing.assert_frame_equal(report["summary"], folder_report["summary"], check_exact=False, atol=1e-9)
        # the broken image and the one over the byte limit are skipped in every layout, under the ids of the tree
        assert report["skipped"]["sample_id"].tolist() == folder_report["skipped"]["sample_id"].tolist() == [
            "art/cat/huge.jpg", "photo/dog/broken.jpg"]
        assert "over the limit of 20000 bytes per image" in report["skipped"]["reason"].iat[0]


def test_the_split_of_a_shard_set_is_a_folder_name_never_a_path():
    from pydantic import ValidationError

    from flows.config.run_config import RunConfig

    assert RunConfig(dataset_split="validation").data_spec().dataset_split == "validation"
    assert RunConfig().data_spec().dataset_split == "test"
    for bad in ("../x", "a/b", ".."):
        with pytest.raises(ValidationError, match="is not a split folder's name"):
            RunConfig(dataset_split=bad)


def test_dataset_shift_from_one_shard_set_to_another_holding_half_the_classes(tmp_path, prefect_api):
    from clip_icm.cli import main
    from conftest import TINY_MODEL

    from tasks.store.history import read_record, resolve_run
    from tasks.store.storage import read_parquet

    classes = ("bird", "cat", "dog", "fish")
    source = folder_to_webdataset(make_imagefolder(str(tmp_path / "source"), classes, per_class=5),
                                  str(tmp_path / "wds-source"), one_domain=True)
    target = folder_to_webdataset(make_imagefolder(str(tmp_path / "target"), classes[1::2], per_class=3, style=1,
                                                   patterns=[1, 3], seed=1),
                                  str(tmp_path / "wds-target"), one_domain=True)
    assert main(["run", "--protocol", "dataset-shift", "--dataset", source, "--target-datasets", f"half={target}",
                 "--model", TINY_MODEL, "--pretrained", "none", "--store", str(tmp_path / "store"),
                 "--lams", "1", "--ks", "4", "--run-name", "shift"]) == 0
    run = resolve_run(str(tmp_path / "store" / "runs" / "shift"))
    predictions = read_parquet(f"{run}/predictions.parquet").to_pandas()
    assert set(predictions["target"]) == {"half"} and len(predictions) == len(METHODS) * 6  # every method, six images
    # the target's labels index its own two-line classnames.txt; its classes match the source's by name
    assert set(predictions["class"]) == {"cat", "fish"}
    assert (predictions["label"] == predictions["class"].map({name: i for i, name in enumerate(classes)})).all()
    record = read_record(run)
    assert record["dataset"]["format"] == "webdataset" and record["target_datasets"]["half"]["classes"] == ["cat", "fish"]
    assert record["target_datasets"]["half"]["format"] == "webdataset"
