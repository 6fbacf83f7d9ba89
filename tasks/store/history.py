"""Run history: every execution of a config gets its own folder, and a LATEST pointer names the newest.

    STORE/runs/<config name>/<UTC time>-<dataset fingerprint>-<flow-run id>/   one execution's reports
    STORE/runs/<config name>/LATEST                                           the newest entry's name

The config name (RunConfig.name) leaves out the dataset's content and the time, so the nightly
job's reports of last night stay where they were. Entry names start with the UTC time, so a
sorted listing is chronological. Object stores have no symlinks: LATEST is a small text file,
written atomically after the entry's run.json, so it never names a half-written entry.
"""
from __future__ import annotations

import hashlib
import json
import importlib.metadata
import platform
import uuid
from datetime import datetime, timezone
from pathlib import Path

from tasks import __version__
from tasks.store.storage import exists, filesystem, join, read_bytes, write_bytes
from tasks.errors import InputError

LATEST = "LATEST"
RUN_RECORD = "run.json"
ENTRY_TIME = "%Y%m%dT%H%M%SZ"  # the UTC start an entry's name begins with
# libraries whose versions can change a run's numbers (distribution names)
LIBRARIES = ("torch", "torchvision", "open_clip_torch", "numpy", "scipy", "scikit-learn", "pandas", "pyarrow", "prefect")
SOURCE_PACKAGES = ("icm_core", "tasks", "flows", "clip_icm")


def config_url(store_url: str, config_name: str) -> str:
    return join(store_url, "runs", config_name)


def new_entry(store_url: str, config_name: str, dataset_fingerprint: str, flow_run_id: str | None = None) -> str:
    """A fresh, never reused folder for this execution of the config."""
    run_id = str(flow_run_id or uuid.uuid4())
    stamp = datetime.now(timezone.utc).strftime(ENTRY_TIME)
    return join(config_url(store_url, config_name), f"{stamp}-{dataset_fingerprint[:8]}-{run_id[:8]}")


def mark_latest(entry_url: str) -> str:
    """Point the config folder's LATEST at this entry; call after the entry is complete."""
    parent, name = entry_url.rstrip("/").rsplit("/", 1)
    return write_bytes(join(parent, LATEST), name.encode())


def resolve_run(url: str) -> str:
    """A history entry as given, or a config folder's latest entry; fails in one line, naming the file, when
    neither is there or LATEST names an entry that is not a complete run."""
    url = url.rstrip("/")
    try:
        if exists(join(url, RUN_RECORD)):
            return url
        if exists(join(url, LATEST)):
            entry = join(url, read_bytes(join(url, LATEST)).decode().strip())
            if not exists(join(entry, RUN_RECORD)):
                raise InputError(f"{join(url, LATEST)} names {entry}, which is not a complete run (deleted or moved?); "
                                 f"pass one of the entries under {url}, or run the config again")
            return entry
    except (ValueError, ImportError, OSError) as error:  # an unknown scheme, a store we cannot read
        if isinstance(error, InputError):
            raise
        raise InputError(f"cannot open {url} ({type(error).__name__}: {error}); "
                         "pass STORE/runs/NAME or one of its entries STORE/runs/NAME/<entry>") from error
    raise InputError(
        f"{url} is neither a run (no {RUN_RECORD}) nor a config folder (no {LATEST}); "
        "pass STORE/runs/NAME or one of its entries STORE/runs/NAME/<entry>"
    )


def read_record(entry: str) -> dict:
    """An entry's run.json, with where the entry is now: its `run_url` and the store paths it records (relative to
    the store: a moved or copied store reads its own files) are made URLs of the store that holds it."""
    url = join(entry, RUN_RECORD)
    try:
        record = json.loads(read_bytes(url))
    except FileNotFoundError as error:
        raise InputError(f"{url} does not exist: {entry} is not a complete run (deleted or moved?); pass one of the "
                         f"entries under {entry.rsplit('/', 1)[0]}") from error
    except (ValueError, OSError) as error:
        raise InputError(f"{url} is damaged and cannot be read ({type(error).__name__}: {error}); pass another entry "
                         f"of {entry.rsplit('/', 1)[0]}, or run the config again") from error
    if not isinstance(record, dict) or "config" not in record:
        raise InputError(f"{url} is not a clip-icm run record (no config); pass an entry written by `clip-icm run`")
    return located(record, store_of(entry), entry)


def located(record: dict, store: str, entry: str) -> dict:
    """A record as read from `entry`: its store paths resolved in `store`, its `run_url` the entry."""
    written_in = _written_in(record["run_url"])
    return {**_store_paths(record, lambda path: in_store(store, path, written_in)), "run_url": entry}


def stored(record: dict, store: str) -> dict:
    """A record as written: its store paths, `run_url` included, relative to the store."""
    return _store_paths(record, lambda url: relative_to(store, url))


def _store_paths(record: dict, convert) -> dict:
    """The record with every path into the store it names (its entry, embedding files, split table) converted."""
    record = {**record, "run_url": convert(record["run_url"])}
    embeddings = record.get("embeddings")
    if embeddings:
        record["embeddings"] = {**embeddings, "shards": {key: convert(path) for key, path in embeddings["shards"].items()},
                                "text": convert(embeddings["text"]) if embeddings.get("text") else None}
    if record.get("split", {}).get("table"):
        record["split"] = {**record["split"], "table": convert(record["split"]["table"])}
    record["target_datasets"] = {name: {**target, "shards": {key: convert(path) for key, path in target["shards"].items()}}
                                 for name, target in record.get("target_datasets", {}).items()}
    return record


def relative_to(store: str, url: str) -> str:
    """A URL under the store as a path relative to it (what records hold); any other URL as it is."""
    prefix = store.rstrip("/") + "/"
    return url[len(prefix):] if url.startswith(prefix) else url


def in_store(store: str, path: str, written_in: str | None = None) -> str:
    """A recorded path resolved in the store: relative ones under it, and so are absolute ones under the store the
    record was written in (`written_in`: records before 0.3 hold absolute paths); other URLs as they are."""
    if written_in and path.startswith(written_in.rstrip("/") + "/"):
        path = relative_to(written_in, path)
    return path if "://" in path or path.startswith("/") else join(store, path)


def entry_in_store(store: str, entry: str) -> str:
    """A history entry a manifest records, resolved in `store` (relative, or absolute before 0.3)."""
    return in_store(store, entry, _written_in(entry))


def _written_in(entry_url: str) -> str | None:
    """The store an absolute entry URL STORE/runs/NAME/ENTRY names (what records before 0.3 hold); None for a
    relative one."""
    if "://" not in entry_url and not entry_url.startswith("/"):
        return None
    try:
        return store_of(entry_url)
    except InputError:
        return None


def _folders(url: str) -> list[str]:
    """The names of the folders in `url`, sorted; none if it is not a folder."""
    fs, path = filesystem(url)
    if not fs.isdir(path):
        return []
    return sorted(item.rstrip("/").rsplit("/", 1)[-1] for item in fs.ls(path, detail=False) if fs.isdir(item))


def latest_runs(store_url: str) -> list[str]:
    """The latest entry of every config in a store."""
    runs = join(store_url, "runs")
    return [resolve_run(join(runs, name)) for name in _folders(runs) if exists(join(runs, name, LATEST))]


def history(config_folder: str) -> list[str]:
    """Every complete entry of a config (its run.json written), oldest first."""
    entries = [join(config_folder, name) for name in _folders(config_folder)]
    return [entry for entry in entries if exists(join(entry, RUN_RECORD))]


def entry_time(entry_url: str) -> datetime:
    """When the execution of a history entry started (UTC), from the entry's name."""
    stamp = entry_url.rstrip("/").rsplit("/", 1)[-1].split("-", 1)[0]
    return datetime.strptime(stamp, ENTRY_TIME).replace(tzinfo=timezone.utc)


def store_of(entry_url: str) -> str:
    """STORE of STORE/runs/NAME/ENTRY."""
    parts = entry_url.rstrip("/").rsplit("/", 3)
    if len(parts) != 4 or parts[1] != "runs":
        raise InputError(f"{entry_url} is not a history entry STORE/runs/NAME/ENTRY; pass --store")
    return parts[0]


def source_hash() -> str:
    """A hash of the package's Python sources: the code version, even for an uninstalled checkout."""
    digest = hashlib.sha256()
    root = Path(__file__).resolve().parents[2]  # the checkout: tasks/store/history.py
    for package in SOURCE_PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def provenance(weights_id: str) -> dict:
    """What, besides the config and the data, decides a run's numbers: recorded in run.json."""
    return {"package_version": __version__, "source_hash": source_hash(), "weights_id": weights_id,
            "libraries": library_versions()}
