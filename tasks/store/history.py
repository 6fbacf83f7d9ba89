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
    """A history entry as given, or a config folder's latest entry."""
    try:
        if exists(join(url, RUN_RECORD)):
            return url
        if exists(join(url, LATEST)):
            return join(url, read_bytes(join(url, LATEST)).decode().strip())
    except (ValueError, ImportError, OSError) as error:  # an unknown scheme, a store we cannot read
        raise InputError(f"cannot open {url} ({type(error).__name__}: {error}); "
                         "pass STORE/runs/NAME or one of its entries STORE/runs/NAME/<entry>") from error
    raise InputError(
        f"{url} is neither a run (no {RUN_RECORD}) nor a config folder (no {LATEST}); "
        "pass STORE/runs/NAME or one of its entries STORE/runs/NAME/<entry>"
    )


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
