"""One clip-icm process that runs flows: its Prefect API, how it stops, and what a killed one left behind.

Without PREFECT_API_URL, the flows talk to a temporary Prefect server this process starts (given
SERVER_STARTUP_TIMEOUT_S to come up on a loaded machine, unless the user chose a timeout) and stops
when it ends, however it ends: normally, on an error, on Ctrl-C (SIGINT) or on SIGTERM (what a
scheduler or `docker stop` sends), which end the run within seconds. A process killed outright
(kill -9) cannot stop its server, so each one records the server it started; the next clip-icm
process stops the servers of dead ones before it starts its own. Files a killed writer left
half-written are removed by whoever writes there next (tasks.store.storage).
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

from tasks.store.storage import alive

SERVER_STARTUP_TIMEOUT_S = 180  # Prefect's 20 s is not enough on a loaded machine
EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}  # 128 + the signal, as shells report them


class Stopped(BaseException):
    """The process was asked to stop (SIGINT or SIGTERM): a BaseException, so that no `except Exception` keeps
    the run going."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.signum]


def _stop(signum, frame):
    raise Stopped(signum)


@contextlib.contextmanager
def stoppable():
    """SIGINT and SIGTERM raise Stopped in the main thread (Prefect turns SIGTERM inside a flow run into its own
    TerminationSignal, which `run_flows` reads as the same)."""
    previous = {signum: signal.signal(signum, _stop) for signum in EXIT_CODES}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _servers_folder() -> Path:
    from prefect.settings import PREFECT_HOME

    folder = Path(PREFECT_HOME.value()) / "clip-icm" / "temporary-servers"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def stop_orphaned_servers() -> list[int]:
    """Stop the temporary servers that clip-icm processes killed outright left running; returns their pids."""
    stopped = []
    for record in _servers_folder().glob("*.json"):
        try:
            started = json.loads(record.read_text())
        except (OSError, ValueError):
            record.unlink(missing_ok=True)
            continue
        if alive(started["owner"]):
            continue
        if alive(started["server"]) and "uvicorn" in _command_line(started["server"]):
            os.kill(started["server"], signal.SIGTERM)
            stopped.append(started["server"])
        record.unlink(missing_ok=True)
        record.with_suffix(".log").unlink(missing_ok=True)
    return stopped


def _command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:  # no /proc (macOS): trust the record, it names a process clip-icm started
        return "uvicorn"


@contextlib.contextmanager
def prefect_api():
    """A Prefect API for the flows: the one PREFECT_API_URL names, or a temporary server of this process's own."""
    from prefect.logging.handlers import APILogWorker
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS, temporary_settings

    if PREFECT_API_URL.value():
        yield
        return
    stop_orphaned_servers()
    server = SubprocessASGIServer()  # the instance Prefect's own clients use when no API URL is set
    record = _servers_folder() / f"{os.getpid()}.json"
    try:
        with temporary_settings(updates={PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS: startup_timeout()}):
            with _apart(record.with_suffix(".log")):
                server.start()
            record.write_text(json.dumps({"owner": os.getpid(), "server": server.server_process.pid}))
            yield
    finally:
        APILogWorker.drain_all(timeout=5)  # the run's last log records reach the server before it stops
        server.stop()
        record.unlink(missing_ok=True)
        record.with_suffix(".log").unlink(missing_ok=True)


def startup_timeout() -> float:
    """The temporary server's start-up timeout: the user's, or SERVER_STARTUP_TIMEOUT_S in place of Prefect's default."""
    from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS
    from prefect.settings.models.server.ephemeral import ServerEphemeralSettings

    chosen = PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value()
    prefect_default = ServerEphemeralSettings.model_fields["startup_timeout_seconds"].default
    return SERVER_STARTUP_TIMEOUT_S if chosen == prefect_default else chosen


@contextlib.contextmanager
def _apart(log: Path):
    """Processes started in the block run in a session of their own, writing to `log`: the server Prefect starts
    then hears no terminal's Ctrl-C (the CLI stops it) and prints nothing into the run's terminal."""
    popen = subprocess.Popen
    with open(log, "ab") as output:
        def apart(*args, **kwargs):
            return popen(*args, **{"start_new_session": True, "stdout": output, "stderr": output, **kwargs})

        subprocess.Popen = apart  # Prefect's SubprocessASGIServer starts uvicorn with subprocess.Popen
        try:
            yield
        finally:
            subprocess.Popen = popen


class QuietErrors(logging.Filter):
    """Prefect's error records (a failed task's traceback, the flow's crash) stay out of the terminal: the CLI
    prints the one line that matters; they still reach the API and the UI."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.ERROR


@contextlib.contextmanager
def quiet_prefect_errors():
    from prefect.logging.configuration import ensure_logging_setup
    from prefect.logging.handlers import PrefectConsoleHandler

    ensure_logging_setup()  # Prefect configures logging on first use: its console handler must exist to be filtered
    handlers = [handler for name in ("prefect", "") for handler in logging.getLogger(name).handlers
                if isinstance(handler, PrefectConsoleHandler)]
    quiet = QuietErrors()
    for handler in handlers:
        handler.addFilter(quiet)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(quiet)


def exit_now(code: int) -> None:
    """End the process at once: threads still embedding are not waited for (what they finished is on the store)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
