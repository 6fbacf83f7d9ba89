"""A damaged cache is never trusted: each cached file says what it holds, its footer is checked before it is used and its
contents by the one read that decodes it, and a damaged one is named in one line and embedded again before anything is
evaluated (refused where nothing can embed it); NaN embeddings are never cached."""
import logging
import os
import shutil

import open_clip
import pyarrow.parquet as pq
import pytest
import torch
from conftest import TINY_MODEL, catalog_of, make_image_folder

import tasks.embed.models  # noqa: F401  (registers ICM-Tiny with open_clip)
import tasks.store.catalog
from clip_icm.cli import main
from tasks.embed.cache import metadata_of, problem_with
from tasks.embed.images import key_of
from tasks.store.contents import Contents, DamagedEmbeddings
from tasks.store.history import read_record, resolve_run
from tasks.store.storage import join, read_parquet


@pytest.fixture(scope="module")
def cached(tmp_path_factory, prefect_api):
    base = tmp_path_factory.mktemp("cache")
    dataset = make_image_folder(str(base / "data"), domains=("art", "photo"), classes=("cat", "dog"), per_class=4,
                                extra_files=False)
    args = ["--dataset", dataset, "--model", TINY_MODEL, "--pretrained", "none", "--store", str(base / "store"),
            "--protocol", "domain-shift", "--lams", "1", "--ks", "4"]
    assert main(["run", *args, "--run-name", "first"]) == 0
    run = resolve_run(str(base / "store" / "runs" / "first"))
    return {"base": base, "args": args, "run": run, "record": read_record(run)}


def rerun(cached, name, caplog) -> tuple[dict, list[str], str]:
    """Run the same config again; (its run.json, the warnings that name damaged cached files, its run folder)."""
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="tasks.embed.cache"):
        assert main(["run", *cached["args"], "--run-name", name]) == 0
    run = resolve_run(str(cached["base"] / "store" / "runs" / name))
    return read_record(run), [r.getMessage() for r in caplog.records if r.name == "tasks.embed.cache"], run


def predictions(record) -> list:
    return read_parquet(join(record["run_url"], "predictions.parquet")).to_pandas().sort_values(
        ["method", "sample_id"])["prediction"].tolist()


def test_every_cached_file_says_what_it_holds(cached):
    for url in [*cached["record"]["embeddings"]["shards"].values(), cached["record"]["embeddings"]["text"]]:
        said = metadata_of(url)
        assert said["key"] == key_of(url) and said["rows"] > 0 and len(said["ids"]) == 32
        assert said["checksum"].startswith("crc32:") and len(said["checksum"]) == 14
        assert problem_with(url, key_of(url)) is None
        assert "not 'other'" in problem_with(url, "other")


def test_a_cached_run_decodes_each_embedding_file_once(cached, caplog, monkeypatch):
    """The embedding stage reads footers only; the catalog's one read per file is the check of its contents."""
    decoded, real_read_domain = [], tasks.store.catalog.read_domain
    monkeypatch.setattr(tasks.store.catalog, "read_domain", lambda url, *a, **kw: decoded.append(url) or real_read_domain(url, *a, **kw))
    monkeypatch.setattr(Contents, "add_embeddings", lambda self, embeddings, real=Contents.add_embeddings: (
        decoded.append("embeddings") or real(self, embeddings)))
    record, warnings, _ = rerun(cached, "cached", caplog)
    assert record["embeddings"]["embedded_this_run"] == 0 and warnings == []
    shards = record["embeddings"]["shards"]
    # every (domain, view) file read once, each checked once as it decoded (one batch each here), and the text table
    assert sorted(url for url in decoded if url != "embeddings") == sorted(shards.values())
    assert decoded.count("embeddings") == len(shards) + 1


@pytest.mark.parametrize("damage", ["cut short", "another file copied over it", "a flipped byte"])
def test_a_damaged_cached_file_is_named_and_embedded_again(cached, caplog, damage):
    shards = cached["record"]["embeddings"]["shards"]
    victim = shards["photo/original"]
    if damage == "cut short":
        with open(victim, "r+b") as handle:
            handle.truncate(os.path.getsize(victim) // 2)
    elif damage == "another file copied over it":
        shutil.copyfile(shards["art/original"], victim)
    else:  # bit rot in the middle of the embeddings' pages
        source = pq.ParquetFile(victim)
        chunk = source.metadata.row_group(0).column(source.schema_arrow.names.index("embedding"))
        start = min(offset for offset in (chunk.dictionary_page_offset, chunk.data_page_offset) if offset is not None)
        with open(victim, "r+b") as handle:
            handle.seek(start + chunk.total_compressed_size // 2)
            byte = handle.read(1)
            handle.seek(-1, os.SEEK_CUR)
            handle.write(bytes([byte[0] ^ 0xFF]))
    if damage == "a flipped byte":  # the footer is whole: only the read that decodes the file can tell
        assert problem_with(victim, key_of(victim)) is None
        with pytest.raises(DamagedEmbeddings, match=victim):
            catalog_of(cached["run"]).read_all()
    else:  # the footer tells, before the file is used
        assert problem_with(victim, key_of(victim)) is not None
    record, warnings, run = rerun(cached, "again-" + damage.replace(" ", "-"), caplog)
    assert len(warnings) == 1 and victim in warnings[0] and "embedding them again" in warnings[0]
    assert record["embeddings"]["embedded_this_run"] > 0 and problem_with(victim, key_of(victim)) is None
    catalog_of(run).read_all()  # whole again
    assert predictions(record) == predictions(cached["record"])  # the report is the clean one


def test_a_sweep_refuses_a_damaged_file_in_one_line(cached, capsys):
    text = cached["record"]["embeddings"]["text"]
    with open(text, "r+b") as handle:
        handle.truncate(100)
    assert main(["sweep", *cached["args"]]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("clip-icm: config field 'store'") and text in err and "damaged" in err
    assert len(err.splitlines()) == 1


def test_weights_that_give_nan_are_refused_naming_the_checkpoint_and_nothing_is_cached(tmp_path, prefect_api, capsys):
    state = {name: torch.full_like(value, float("nan")) if value.is_floating_point() else value
             for name, value in open_clip.create_model(TINY_MODEL).state_dict().items()}
    checkpoint = str(tmp_path / "diverged.pt")
    torch.save(state, checkpoint)
    dataset = make_image_folder(str(tmp_path / "data"), domains=("art", "photo"), classes=("cat", "dog"), per_class=2,
                                extra_files=False)
    store = tmp_path / "store"
    assert main(["run", "--dataset", dataset, "--model", TINY_MODEL, "--pretrained", checkpoint, "--store", str(store),
                 "--protocol", "domain-shift", "--lams", "1", "--ks", "4", "--holdout", "0.5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("clip-icm: config field 'pretrained'") and checkpoint in err and "NaN" in err
    cached = [path for path in store.rglob("*.parquet") if "embeddings" in path.parts and "split" not in path.name]
    assert cached == [], cached
