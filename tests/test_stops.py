"""Safe to run unattended: a stopped run (SIGTERM, Ctrl-C) ends in seconds with one line and leaves nothing behind; a
killed one (kill -9) leaves what the next run cleans; errors anywhere are one `clip-icm:` line. Real processes."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import TINY_MODEL, make_image_folder

from tasks.store.storage import TEMPORARY, alive, remove_dead_writers_files

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.pipeline  # whole clip-icm processes, each with its own temporary Prefect server


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Enough images that embedding them takes a while: a stop lands in the middle of it."""
    return make_image_folder(str(tmp_path_factory.mktemp("stops") / "data"), domains=("art", "photo", "sketch"),
                             classes=("cat", "dog"), per_class=40, extra_files=False)


def clip_icm(*args, store) -> subprocess.Popen:
    env = {key: value for key, value in os.environ.items() if key != "PREFECT_API_URL"}  # its own temporary server
    return subprocess.Popen([sys.executable, "-m", "clip_icm", *args, "--store", str(store)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run_args(dataset) -> list[str]:
    return ["run", "--dataset", dataset, "--model", TINY_MODEL, "--pretrained", "none", "--protocol", "domain-shift",
            "--lams", "1", "--ks", "4", "--batch-size", "4", "--shard-size", "8"]


def wait_for_embedding(store: Path, process: subprocess.Popen, timeout: float = 240) -> None:
    """Until the first part of an embedding is on the store (the run is well under way)."""
    deadline = time.monotonic() + timeout
    while not any(store.rglob("part-*.parquet")):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the run never started embedding"
        time.sleep(0.2)


def servers_of(prefect_home: str) -> list[dict]:
    folder = Path(prefect_home) / "clip-icm" / "temporary-servers"
    return [json.loads(path.read_text()) for path in folder.glob("*.json")] if folder.exists() else []


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_stopped_run_ends_in_one_line_leaves_nothing_and_resumes(dataset, tmp_path, signum, code):
    store = tmp_path / "store"
    process = clip_icm(*run_args(dataset), store=store)
    wait_for_embedding(store, process)
    (server,) = [started["server"] for started in servers_of(os.environ["PREFECT_HOME"])
                 if started["owner"] == process.pid]
    assert alive(server)
    stopped_at = time.monotonic()
    os.kill(process.pid, signum)
    _, err = process.communicate(timeout=60)
    assert process.returncode == code and time.monotonic() - stopped_at < 30
    lines = [line for line in err.splitlines() if line.startswith("clip-icm:")]
    assert lines == [lines[-1]] and lines[0].startswith(f"clip-icm: stopped by {signal.Signals(signum).name}")
    assert str(store) in lines[0] and "resumes" in lines[0] and "Traceback" not in err
    assert not alive(server)
    assert all(started["owner"] != process.pid for started in servers_of(os.environ["PREFECT_HOME"]))
    assert not [path for path in store.rglob(f"*{TEMPORARY}*")]
    resumed = clip_icm(*run_args(dataset), store=store)
    out, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err
    assert "Reports: `" in out and not [path for path in store.rglob("*.parts")]


def test_what_a_killed_run_leaves_the_next_one_cleans(dataset, tmp_path):
    store = tmp_path / "store"
    process = clip_icm(*run_args(dataset), store=store)
    wait_for_embedding(store, process)
    (server,) = [started["server"] for started in servers_of(os.environ["PREFECT_HOME"])
                 if started["owner"] == process.pid]
    os.kill(process.pid, signal.SIGKILL)
    process.communicate(timeout=60)
    assert alive(server)  # nobody stopped it
    # a file the killed writer was writing when it died, beside a shard
    part = next(store.rglob("part-*.parquet"))
    left = part.parent / f"{part.name}{TEMPORARY}{socket.gethostname()}-{process.pid}-0123abcd"
    left.write_bytes(b"half")
    resumed = clip_icm(*run_args(dataset), store=store)
    out, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err
    assert not alive(server) and not left.exists() and not [path for path in store.rglob("*.parts")]


def test_only_a_dead_writers_temporary_files_are_removed(tmp_path):
    live = tmp_path / f"a.parquet{TEMPORARY}{socket.gethostname()}-{os.getpid()}-1"
    other_host = tmp_path / f"b.parquet{TEMPORARY}elsewhere-1-2"
    dead = tmp_path / f"c.parquet{TEMPORARY}{socket.gethostname()}-{2 ** 22 + 7}-3"
    for path in (live, other_host, dead):
        path.write_bytes(b"x")
    assert not alive(2 ** 22 + 7)
    assert remove_dead_writers_files(str(tmp_path)) == [str(dead)]
    assert live.exists() and other_host.exists() and not dead.exists()


def test_an_error_inside_a_running_flow_is_one_line_without_traceback(tmp_path):
    import open_clip
    import torch

    import tasks.embed.models  # noqa: F401  (registers ICM-Tiny with open_clip)

    checkpoint = str(tmp_path / "diverged.pt")
    torch.save({name: torch.full_like(value, float("nan")) if value.is_floating_point() else value
                for name, value in open_clip.create_model(TINY_MODEL).state_dict().items()}, checkpoint)
    data = make_image_folder(str(tmp_path / "data"), domains=("art", "photo"), classes=("cat", "dog"), per_class=2,
                             extra_files=False)
    args = run_args(data)
    args[args.index("none")] = checkpoint
    process = clip_icm(*args, "--holdout", "0.5", store=tmp_path / "store")
    _, err = process.communicate(timeout=600)
    assert process.returncode == 2
    lines = [line for line in err.splitlines() if "clip-icm:" in line or "Traceback" in line or "Error" in line]
    assert len(lines) == 1 and lines[0].startswith("clip-icm: config field 'pretrained'") and checkpoint in lines[0]
