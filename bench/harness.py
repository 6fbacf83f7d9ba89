"""What every benchmark script shares: a smoke size that CI runs, where the table goes, the machine it ran on.

A benchmark is a claim only while it still runs: `--smoke` shrinks a script to seconds (tests/test_bench_scripts.py
runs every script that way), and a smoke table goes to a temporary folder, never over the measured ones in
bench/results/.
"""
from __future__ import annotations

import argparse
import os
import platform
import tempfile
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def bench_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--smoke", action="store_true",
                        help="the smallest size that exercises every step (seconds; what CI runs); the table goes to a "
                             "temporary folder unless --results names one")
    parser.add_argument("--results", type=Path, default=None,
                        help="folder the table is written to (default: bench/results, a temporary one with --smoke)")
    return parser


def parse(parser: argparse.ArgumentParser, smoke: dict, argv=None) -> argparse.Namespace:
    """The arguments, with `smoke` as the defaults under --smoke (options given on the command line still win)."""
    args = parser.parse_args(argv)
    if args.smoke:
        parser.set_defaults(**smoke)
        args = parser.parse_args(argv)
    return args


def results_folder(args: argparse.Namespace) -> Path:
    if args.results is None:
        args.results = Path(tempfile.mkdtemp(prefix="clip-icm-bench-smoke-")) if args.smoke else RESULTS
    args.results.mkdir(parents=True, exist_ok=True)
    return args.results


def write_table(args: argparse.Namespace, name: str, text: str) -> Path:
    """Write a script's table (markdown) under its results folder and say where."""
    path = results_folder(args) / name
    path.write_text(text.rstrip("\n") + "\n")
    print(f"\ntable written to {path}")
    return path


def cpu_model() -> str:
    if Path("/proc/cpuinfo").exists():
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def load_average() -> str:
    return " / ".join(f"{load:.2f}" for load in os.getloadavg())


def machine() -> str:
    """The CPU, its cores (shared with whatever else runs) and the load average now."""
    return (f"{cpu_model()} ({platform.machine()}), {os.cpu_count()} cores, Python {platform.python_version()}; "
            f"load average (1 / 5 / 15 min) {load_average()}")
