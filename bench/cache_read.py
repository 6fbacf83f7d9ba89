"""What a fully cached run reads of its embedding cache: bytes and seconds of the cache check and the catalog's read,
beside one plain read of the same files.

A DomainNet-shaped store (bench/eval_scaling.py's synthetic cache, today's layout: six domains x two views and the
text table, written by the checkout's own writers) is read three ways, each step in a fresh process of its own (the
page cache warm, the allocator not: every step pays for the memory it fills), checkouts and steps in turn each round:

  - plain read: `pyarrow.parquet.read_table` of every file, once (the floor: every byte decoded once);
  - cache check: what the embedding stage does before it trusts a cached file (`tasks.embed.cache.usable`);
  - catalog: every file through the run's catalog (`EmbeddingCatalog.read_all`, or in code from before it, the
    same reads one by one): originals and text held, the other view's validation split held.

Bytes are the process's own `rchar` (/proc/self/io: bytes through read calls, page cache or not); seconds are wall
and CPU, all threads' (the catalog's read also orders each domain by split and normalises: work a plain read does
not do; it reads files side by side on pyarrow's CPU threads, the plain read on one). With --baseline PATH the same
runs on an older checkout (e.g. `git worktree add --detach /tmp/base-0c7deaf 0c7deaf`, before the one read).

    python bench/cache_read.py --scale 0.1 --baseline /tmp/base-0c7deaf
    python bench/cache_read.py --smoke
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from harness import bench_parser, machine, parse, results_folder, write_table

HERE = Path(__file__).resolve().parent


def bytes_read() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise RuntimeError("no rchar in /proc/self/io")


def measured(step) -> dict:
    """Wall and CPU seconds (CPU drifts less on a shared machine) and MB read by one step."""
    began_bytes, began, began_cpu = bytes_read(), time.perf_counter(), time.process_time()
    step()
    return {"s": time.perf_counter() - began, "cpu": time.process_time() - began_cpu,
            "MB": (bytes_read() - began_bytes) / 2**20}


def read_all(catalog) -> None:
    """The catalog's read of every file; code from before `read_all` makes the same calls one by one."""
    if hasattr(catalog, "read_all"):
        catalog.read_all()
        return
    for key in catalog.shards:
        domain, view = key.split("/", 1)
        catalog.images(domain, view, None if view == "original" else "val")
    catalog.class_embeddings()


STEPS = ("plain read", "cache check", "catalog")


def run_one(cache: Path, scale: float, classes: int, dim: int, step: str) -> dict:
    import pyarrow.parquet as pq
    from eval_scaling import build_cache  # this bench's cache, written by the checkout's own writers

    from tasks.embed.cache import usable
    from tasks.embed.images import key_of
    from tasks.store.catalog import EmbeddingCatalog

    description = build_cache(cache, scale, classes, dim)
    layout = description["layouts"]["split-table"]
    files = [*layout["shards"].values(), layout["text_url"]]

    def catalog_read():
        read_all(EmbeddingCatalog(dataset_root=description["dataset_root"], fingerprint=description["fingerprint"],
                                  domains=tuple(description["domains"]), classes=tuple(description["classes"]),
                                  **layout))

    def plain_read():
        for url in files:
            pq.read_table(url, use_threads=False)

    def cache_check():
        assert all(usable(url, key_of(url)) for url in files), "a file of the cache was refused"

    return {step: measured({"plain read": plain_read, "cache check": cache_check, "catalog": catalog_read}[step]),
            "files": len(files), "file MB": sum(os.path.getsize(url) for url in files) / 2**20,
            "images": description["images"]}


def main() -> None:
    parser = bench_parser(__doc__.split("\n")[0])
    parser.add_argument("--scale", type=float, default=0.1, help="share of DomainNet's per-domain image counts")
    parser.add_argument("--classes", type=int, default=345)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3, help="fresh processes per checkout; the table gives medians")
    parser.add_argument("--baseline", default=None, help="an older checkout to run beside this one")
    parser.add_argument("--one", nargs=3, metavar=("CODE", "CACHE", "STEP"), help=argparse.SUPPRESS)
    args = parse(parser, smoke={"scale": 0.0005, "classes": 12, "dim": 32, "rounds": 1})
    if args.one:
        code, cache, step = args.one
        sys.path.insert(0, code)
        print(json.dumps(run_one(Path(cache), args.scale, args.classes, args.dim, step)))
        return

    load_at_start = machine()
    checkouts = [("this checkout", HERE.parent)]
    if args.baseline:
        checkouts.insert(0, (f"baseline {args.baseline}", Path(args.baseline).resolve()))
    rounds = {label: [] for label, _ in checkouts}
    for _ in range(args.rounds):
        for label, code in checkouts:
            # each checkout's own cache: its writers decide what a file says it holds
            cache = (results_folder(args) if args.smoke else Path("/tmp")) / f"cache-read-{args.scale:g}-{code.name}"
            measures = {}
            for step in ("plain read", *STEPS):  # the first plain read writes the cache and warms the page cache
                completed = subprocess.run(
                    [sys.executable, __file__, "--scale", str(args.scale), "--classes", str(args.classes), "--dim",
                     str(args.dim), "--one", str(code), str(cache), step],
                    capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(code)})
                if completed.returncode:
                    raise SystemExit(f"{label} failed:\n{completed.stderr[-4000:]}")
                measures.update(json.loads(completed.stdout.strip().splitlines()[-1]))
            rounds[label].append(measures)
        print(f"round {len(rounds[label])} done", flush=True)
    rows = list(rounds.items())

    def median(rounds, step, unit):
        values = sorted(r[step][unit] for r in rounds)
        return values[len(values) // 2]

    first = rows[0][1][0]
    lines = [
        f"# cache_read: what a fully cached run reads of its embedding cache, scale {args.scale:g}",
        "",
        f"{first['images']:,} images, {args.classes} classes, d={args.dim}: {first['files']} files, "
        f"{first['file MB']:.0f} MB on disk (page cache warm). {load_at_start} at the start; medians of "
        f"{args.rounds} round(s), each step a fresh process; ratios are medians of each round's.",
        "",
        "Seconds are wall / CPU.",
        "",
        "| code | plain read (s) | plain read (MB) | cache check (s) | cache check (MB) | catalog (s) | catalog (MB) "
        "| check + catalog / plain read: wall, CPU, bytes |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, rounds in rows:
        plain, check, catalog = ({unit: median(rounds, step, unit) for unit in ("s", "cpu", "MB")}
                                 for step in ("plain read", "cache check", "catalog"))
        ratios = ", ".join(  # per round: the three steps of a round ran back to back
            f"{statistics.median((r['cache check'][unit] + r['catalog'][unit]) / r['plain read'][unit] for r in rounds):.2f}x"
            for unit in ("s", "cpu", "MB"))
        lines.append(
            f"| {label} | {plain['s']:.2f} / {plain['cpu']:.2f} | {plain['MB']:.0f} | {check['s']:.2f} / "
            f"{check['cpu']:.2f} | {check['MB']:.1f} | {catalog['s']:.2f} / {catalog['cpu']:.2f} | {catalog['MB']:.0f} | "
            f"{ratios} |")
    lines += ["", f"load average at the end: {machine().rsplit('load average', 1)[1]}",
              "", "command: python bench/cache_read.py " + " ".join(sys.argv[1:])]
    text = "\n".join(lines)
    print(text)
    write_table(args, "cache_read.md", text)


if __name__ == "__main__":
    main()
