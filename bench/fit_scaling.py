"""Streaming fit: seconds and peak RSS for n in {1e4, 1e5, 1e6} rows x d=512, and one eigh at d=1024.

Each n runs in its own process so that peak RSS is that run's own. Prints a table and
writes it to bench/results/fit_scaling.md (--results FOLDER elsewhere).

    python bench/fit_scaling.py [--sizes 10000 100000 1000000] [--batch 10000] [--smoke]
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np

from harness import bench_parser, machine, parse, write_table


def one_run(n: int, dim: int, batch: int) -> dict:
    from icm_core import InterventionMoments, InvariantProjection

    rng = np.random.default_rng(0)
    started = time.perf_counter()
    moments = InterventionMoments(dim)
    for start in range(0, n, batch):
        rows = min(batch, n - start)
        Z = rng.standard_normal((rows, dim), dtype=np.float32)
        moments.update(Z, Z + 0.1 * rng.standard_normal((rows, dim), dtype=np.float32))
    accumulated = time.perf_counter() - started
    InvariantProjection(dim // 2, lam=10).fit_moments(moments)
    return {
        "n": n, "d": dim, "accumulate_s": accumulated, "total_s": time.perf_counter() - started,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    parser = bench_parser(__doc__.split("\n")[0])
    parser.add_argument("--sizes", nargs="+", type=int, default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--eigh-dim", type=int, default=1024)
    args = parse(parser, smoke={"sizes": [1000, 4000], "dim": 32, "batch": 1000, "eigh_dim": 64})
    if args.one:
        print(json.dumps(one_run(args.one, args.dim, args.batch)))
        return

    rows = []
    for n in args.sizes:
        out = subprocess.run([sys.executable, __file__, "--one", str(n), "--dim", str(args.dim), "--batch", str(args.batch)],
                             capture_output=True, text=True, check=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    matrix = np.random.default_rng(0).standard_normal((args.eigh_dim, args.eigh_dim))
    matrix = matrix @ matrix.T
    started = time.perf_counter()
    np.linalg.eigh(matrix)
    eigh_seconds = time.perf_counter() - started

    lines = [
        "# fit_scaling",
        "",
        f"{machine()}; numpy {np.__version__}",
        "",
        "| n | d | accumulate (s) | accumulate + fit (s) | peak RSS (MB) |",
        "|---:|---:|---:|---:|---:|",
        *(f"| {r['n']:,} | {r['d']} | {r['accumulate_s']:.2f} | {r['total_s']:.2f} | {r['peak_rss_mb']:.0f} |" for r in rows),
        "",
        f"peak RSS ratio, largest / smallest n: {rows[-1]['peak_rss_mb'] / rows[0]['peak_rss_mb']:.2f}",
        f"one eigh at d={args.eigh_dim}: {eigh_seconds:.3f} s",
        "",
        "command: python bench/fit_scaling.py " + " ".join(sys.argv[1:]),
    ]
    text = "\n".join(lines)
    print(text)
    write_table(args, "fit_scaling.md", text)


if __name__ == "__main__":
    main()
