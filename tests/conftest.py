import io
import json
import os
import tempfile

import fsspec
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from PIL import Image

from tasks.specs import EmbedSpec
from tasks.store.history import read_record
from tasks.store.storage import read_parquet, write_bytes

TINY_MODEL = "ICM-Tiny"


def tiny_embedding(store: str, **fields) -> EmbedSpec:
    """What the tests embed: the tiny architecture with random weights, into `store`."""
    return EmbedSpec(TINY_MODEL, "none", store, **fields)

# before any test module imports prefect: its own home (results cache, database), no telemetry
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="clip-icm-prefect-"))
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# the temporary server's start-up wait: Prefect's 20 s is not enough on a loaded 2-core machine
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")


def colourful_image(rng, label: int, domain_index: int, size: int = 32) -> Image.Image:
    """A class-dependent pattern under a domain-dependent colour cast, with noise."""
    y, x = np.mgrid[0:size, 0:size] / size
    pattern = np.sin((label + 1) * 3 * x + (label % 3) * 2 * y)
    cast = np.array([[1.0, 0.4, 0.2], [0.2, 1.0, 0.4], [0.4, 0.2, 1.0]])[domain_index % 3]
    pixels = 0.5 + 0.4 * pattern[..., None] * cast + 0.1 * rng.normal(size=(size, size, 3))
    return Image.fromarray((np.clip(pixels, 0, 1) * 255).astype(np.uint8))


def make_image_folder(root: str, domains=("art", "photo", "sketch"), classes=("bird", "cat", "dog", "fish"),
                      per_class: int = 5, corrupt=(), extra_files=True, seed: int = 0) -> str:
    """ROOT/<domain>/<class>/<image>.jpg; `corrupt` names (domain, class) folders that get a broken file."""
    rng = np.random.default_rng(seed)
    for domain_index, domain in enumerate(domains):
        for label, name in enumerate(classes):
            for index in range(per_class):
                buffer = io.BytesIO()
                colourful_image(rng, label, domain_index).save(buffer, format="JPEG", quality=95)
                write_bytes(f"{root}/{domain}/{name}/{index:03d}.jpg", buffer.getvalue())
    for domain, name in corrupt:
        write_bytes(f"{root}/{domain}/{name}/broken.jpg", b"\xff\xd8 this is not a jpeg")
    if extra_files:
        write_bytes(f"{root}/README.txt", b"not an image")
        write_bytes(f"{root}/{domains[0]}/{classes[0]}/notes.txt", b"not an image either")
    return root


def make_imagefolder(root: str, classes, per_class: int = 5, style: int = 0, patterns=None, seed: int = 0) -> str:
    """ROOT/<class>/<image>.jpg (ImageNet's layout). `patterns[i]` picks class i's image pattern (default: i),
    so datasets that name one class differently (a synset, a class index) can still draw it alike; `style`
    is the colour cast, the dataset's "domain"."""
    rng = np.random.default_rng(seed)
    for position, name in enumerate(classes):
        pattern = position if patterns is None else patterns[position]
        for index in range(per_class):
            buffer = io.BytesIO()
            colourful_image(rng, pattern, style).save(buffer, format="JPEG", quality=95)
            write_bytes(f"{root}/{name}/{index:03d}.jpg", buffer.getvalue())
    return root


# ---- a run's reports, made by hand: what the report and leaderboard readers are tested on


def hand_made_summary() -> pd.DataFrame:
    """Two targets and the mean, both protocols; photo has no novel-class image (no novel accuracy, no HM)."""
    domain_shift = {  # method: (art, photo, mean)
        "clip_zero_shot": (0.5, 0.25, 0.375), "clip_icm_zero_shot": (0.75, 0.5, 0.625),
        "clip_linear_probe": (0.6, 0.4, 0.5), "clip_icm_linear_probe": (0.5, 0.45, 0.475),
    }
    open_class = {  # method: {target: (accuracy, base, novel, HM)}
        "clip_zero_shot": {"art": (0.4, 0.6, 0.2, 0.3), "photo": (0.3, 0.5, np.nan, np.nan),
                           "mean": (0.35, 0.55, 0.2, 0.2933)},
        "clip_icm_zero_shot": {"art": (0.5, 0.6, 0.4, 0.48), "photo": (0.45, 0.7, np.nan, np.nan),
                               "mean": (0.475, 0.65, 0.4, 0.4952)},
    }
    rows = [{"protocol": "domain-shift", "method": method, "target": target, "accuracy": value, "n": 8}
            for method, values in domain_shift.items() for target, value in zip(("art", "photo", "mean"), values)]
    rows += [{"protocol": "open-class", "method": method, "target": target, "accuracy": a, "n": 8,
              "base_accuracy": b, "novel_accuracy": n, "harmonic_mean": hm}
             for method, targets in open_class.items() for target, (a, b, n, hm) in targets.items()]
    summary = pd.DataFrame(rows)
    # columns other helpers add: the pivots must ignore them
    return summary.assign(top5_accuracy=1.0, balanced_accuracy=summary["accuracy"], selection="training-domain")


def hand_made_selection() -> pd.DataFrame:
    grid = [(protocol, target, lam, k, lam == 10 and k == 8)
            for protocol in ("domain-shift", "open-class") for target in ("art", "photo")
            for lam in (0.1, 10.0) for k in (4, 8)]
    frame = pd.DataFrame(grid, columns=["protocol", "target", "lam", "n_components", "selected"])
    return frame.assign(val_accuracy=np.where(frame["selected"], 0.875, 0.5))


def hand_made_record(pretrained="none") -> dict:
    return {
        "config": {"dataset": "/data/Office_Home", "model": "ViT-B-16", "pretrained": pretrained, "protocol": "both",
                   "selection": "training-domain", "split_seed": 0, "intervention_seed": 0},
        "model": {"name": "ViT-B-16", "pretrained": pretrained},
        "dataset": {"root": "/data/Office_Home", "domains": ["art", "photo"], "classes": ["bird", "cat", "dog", "fish"],
                    "fingerprint": "0123456789abcdef"},
        "provenance": {"package_version": "0.1.0", "source_hash": "fedcba9876543210"},
        "timings": {"domain-shift_s": 2.0, "embed_s": 10.3, "open-class_s": 1.0, "total_s": 13.3},
        "run_url": "/store/runs/Office_Home-ViT-B-16-abc",
    }


def write_hand_made_run(store: str, name: str = "office", entry: str = "20261201T000000Z-abc-def",
                        summary: pd.DataFrame | None = None) -> str:
    """STORE/runs/NAME/ENTRY holding the hand-made summary (or `summary`), selection and run.json, and LATEST naming it."""
    import pyarrow as pa

    from tasks.store.storage import write_json, write_parquet

    url = f"{store}/runs/{name}/{entry}"
    summary = hand_made_summary() if summary is None else summary
    write_parquet(pa.Table.from_pandas(summary, preserve_index=False), f"{url}/summary.parquet")
    write_parquet(pa.Table.from_pandas(hand_made_selection(), preserve_index=False), f"{url}/selection.parquet")
    write_json(f"{url}/run.json", {**hand_made_record("openai"), "run_url": url})
    write_bytes(f"{store}/runs/{name}/LATEST", entry.encode())
    return url


def read_embedding_file(url: str, filters=None) -> tuple[pd.DataFrame, np.ndarray]:
    """(metadata columns, n x d float32 embeddings) of an embedding Parquet file, read with pyarrow alone (not
    through the project's catalog, which the tests check against it); `filters` keeps rows by column values."""
    table = read_parquet(url)
    if filters:
        mask = np.ones(table.num_rows, bool)
        for column, values in filters.items():
            mask &= table.column(column).to_pandas().isin(list(values)).to_numpy()
        table = table.filter(pa.array(mask))
    column = table.column("embedding").combine_chunks()
    width = column.type.list_size
    embeddings = column.flatten().to_numpy(zero_copy_only=False).reshape(-1, width)
    return table.drop_columns(["embedding"]).to_pandas(), embeddings


def embedding_file_metadata(url: str) -> dict:
    """The clip-icm metadata an embedding Parquet file carries in its schema."""
    import pyarrow.parquet as pq

    fs, path = fsspec.core.url_to_fs(url)
    with fs.open(path, "rb") as handle:  # the footer's key-value metadata: a merged shard writes it last
        return json.loads(pq.ParquetFile(handle).metadata.metadata[b"clip_icm"])


def pytest_collection_modifyitems(items):
    """A test that needs the Prefect server is a pipeline test: `-m "not pipeline"` runs the fast layer alone."""
    for item in items:
        if "prefect_api" in item.fixturenames:
            item.add_marker(pytest.mark.pipeline)


def domainbed_reference(root: str, trial_seed: int, holdout: float = 0.2, open_ratio: float = 0.5) -> tuple[dict, dict]:
    """DomainBed's split of a local dataset written from its rules alone, with torchvision's own ImageFolder for the
    order (not the project's code): ({sample_id: "train" (in) | "val" (out)} for domain shift, the same for open class)."""
    import hashlib

    from torchvision.datasets import ImageFolder

    def seed_hash(*args):
        return int(hashlib.md5(str(args).encode("utf-8")).hexdigest(), 16) % (2 ** 31)

    def split(ids, seed):  # misc.split_dataset: the first int(n * holdout) shuffled keys are "out"
        keys = list(range(len(ids)))
        np.random.RandomState(seed).shuffle(keys)
        out = set(keys[: int(len(ids) * holdout)])
        return {sample_id: "val" if i in out else "train" for i, sample_id in enumerate(ids)}

    domain_shift, open_class = {}, {}
    for env_i, domain in enumerate(sorted(entry.name for entry in os.scandir(root) if entry.is_dir())):
        folder = ImageFolder(os.path.join(root, domain))
        ids = [os.path.relpath(path, root) for path, _ in folder.samples]
        domain_shift.update(split(ids, seed_hash(trial_seed, env_i)))
        n_base = int((1 - open_ratio) * len(folder.classes))  # class indices follow the sorted class names
        base = [sample_id for sample_id, (_, label) in zip(ids, folder.samples) if label < n_base]
        novel = [sample_id for sample_id, (_, label) in zip(ids, folder.samples) if label >= n_base]
        open_class.update(split(base, seed_hash(trial_seed, env_i, "base")))
        open_class.update(split(novel, seed_hash(trial_seed, env_i, "open")))
    return domain_shift, open_class


def swap_bytes_keeping_stamps_a_user_can_set(first: str, second: str) -> None:
    """Exchange two files' bytes, then put their sizes and modification times back (a careless copy, or a hostile one)."""
    stats = [os.stat(first), os.stat(second)]
    assert stats[0].st_size == stats[1].st_size
    contents = [open(first, "rb").read(), open(second, "rb").read()]
    assert contents[0] != contents[1]
    for path, content, stat in zip((first, second), reversed(contents), stats):
        with open(path, "wb") as handle:
            handle.write(content)
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def catalog_of(run: str):
    """The embedding catalog a run used, from its run.json."""
    from tasks.store.catalog import EmbeddingCatalog
    record = read_record(run)
    return EmbeddingCatalog(
        dataset_root=record["dataset"]["root"], fingerprint=record["dataset"]["fingerprint"],
        domains=tuple(record["dataset"]["domains"]), classes=tuple(record["dataset"]["classes"]),
        shards=record["embeddings"]["shards"], text_url=record["embeddings"]["text"], split_url=record["split"]["table"],
    )


@pytest.fixture(scope="session")
def prefect_api():
    """One temporary Prefect server for the whole test session, with the start-up wait set above."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=None):
        yield


@pytest.fixture
def memory_root(request):
    import fsspec

    root = f"memory://{request.node.name}"
    yield root
    fs = fsspec.filesystem("memory")
    if fs.exists(root):
        fs.rm(root, recursive=True)


# ---- one folder tree in the other layouts, keeping its file names (what a user's conversion script would write)


def folder_images(folder: str, one_domain: bool = False) -> dict[str | None, list[tuple[str, str, bytes]]]:
    """{domain: [(class, file name, bytes)]} of a ROOT/<domain>/<class>/<image> tree, sorted; of a
    ROOT/<class>/<image> tree (one_domain), {None: [...]}."""
    images = {}
    domains = [None] if one_domain else sorted(entry for entry in os.listdir(folder)
                                               if os.path.isdir(os.path.join(folder, entry)))
    for domain in domains:
        top = folder if domain is None else os.path.join(folder, domain)
        for name in sorted(os.listdir(top)):
            for file in sorted(os.listdir(os.path.join(top, name))):
                if file.endswith((".jpg", ".png")):
                    with open(os.path.join(top, name, file), "rb") as handle:
                        images.setdefault(domain, []).append((name, file, handle.read()))
    return images


def tar_member(archive, name: str, data: bytes) -> None:
    import tarfile

    info = tarfile.TarInfo(name)
    info.size, info.mtime = len(data), 0
    archive.addfile(info, io.BytesIO(data))


def folder_to_webdataset(folder: str, root: str, per_shard: int = 7, split: str = "test",
                         templates=("a photo of a {c}.",), one_domain: bool = False) -> str:
    """CLIP_benchmark's layout, one folder per domain: ROOT/<domain>/<split>/N.tar with nshards.txt, each sample a
    <class>/<stem> key (the file name kept) with its image and .cls members, as webdataset's ShardWriter writes
    them; ROOT/classnames.txt (the class folders, sorted) and the templates file. From a ROOT/<class>/<image> tree
    (one_domain), ROOT/<split>/N.tar."""
    import tarfile

    images = folder_images(folder, one_domain)
    classes = sorted({name for samples in images.values() for name, _, _ in samples})
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, "classnames.txt"), "w") as handle:
        handle.write("\n".join(classes) + "\n")
    with open(os.path.join(root, "zeroshot_classification_templates.txt"), "w") as handle:
        handle.write("\n".join(templates) + "\n")
    for domain, samples in images.items():
        shards = [samples[start : start + per_shard] for start in range(0, len(samples), per_shard)]
        folder = os.path.join(root, split) if domain is None else os.path.join(root, domain, split)
        os.makedirs(folder)
        for number, shard in enumerate(shards):
            with tarfile.open(os.path.join(folder, f"{number}.tar"), "w") as archive:
                for name, file, data in shard:
                    stem, extension = file.split(".", 1)
                    tar_member(archive, f"{name}/{stem}.{extension}", data)
                    tar_member(archive, f"{name}/{stem}.cls", str(classes.index(name)).encode())
        with open(os.path.join(folder, "nshards.txt"), "w") as handle:
            handle.write(f"{len(shards)}\n")
    return root


def huggingface_metadata(classes, domains=None) -> dict:
    """The schema metadata the datasets library writes: an Image feature, a ClassLabel, a domain string."""
    features = {"image": {"_type": "Image"}, "label": {"names": list(classes), "_type": "ClassLabel"}}
    if domains:
        features["domain"] = {"dtype": "string", "_type": "Value"}
    return {b"huggingface": json.dumps({"info": {"features": features}}).encode()}


def folder_to_parquet(folder: str, root: str, files: int = 2, row_group_size: int = 5) -> str:
    """The Hugging Face datasets layout: ROOT/data/train-0000N-of-0000M.parquet, an image struct (bytes, the file's
    name as path), a ClassLabel label and a domain column, in several files and row groups."""
    import pyarrow.parquet as pq

    images = folder_images(folder)
    classes = sorted({name for samples in images.values() for name, _, _ in samples})
    rows = [(domain, name, file, data) for domain, samples in images.items() for name, file, data in samples]
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    os.makedirs(os.path.join(root, "data"), exist_ok=True)
    for number, part in enumerate(np.array_split(np.arange(len(rows)), files)):
        chosen = [rows[index] for index in part]
        table = pa.table({
            "image": pa.array([{"bytes": data, "path": file} for _, _, file, data in chosen], image_type),
            "label": pa.array([classes.index(name) for _, name, _, _ in chosen], pa.int64()),
            "domain": pa.array([domain for domain, _, _, _ in chosen], pa.string()),
        }).replace_schema_metadata(huggingface_metadata(classes, domains=True))
        pq.write_table(table, os.path.join(root, "data", f"train-{number:05d}-of-{files:05d}.parquet"),
                       row_group_size=row_group_size)
    return root
