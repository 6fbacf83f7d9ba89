"""What every Δ's uncertainty costs: the paired bootstrap interval and McNemar p (icm_core.uncertainty) on 100,000 test
images, for one target, for the mean over six targets of unequal size, and for a whole summary's comparisons from a
predictions table (the pandas pairing included); beside it, the index bootstrap it replaces (n x resamples indices), and
how far the interval's ends move from one seed to another. Prints a table and writes
bench/results/uncertainty_cost.md (--smoke: a small size, its table in a temporary folder, for CI).

    python bench/uncertainty_cost.py [--images 100000] [--resamples 10000] [--repeats 5] [--smoke] [--results DIR]
"""
from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from harness import bench_parser, machine, parse, write_table  # noqa: E402
from icm_core.uncertainty import paired_difference  # noqa: E402
from tasks.evaluate.comparisons import paired_comparisons  # noqa: E402

TARGET_SHARES = np.array([0.08, 0.12, 0.15, 0.2, 0.2, 0.25])  # six targets of unequal size, DomainNet-like
INDEX_RESAMPLES = 100  # the index bootstrap is timed on this many resamples, then scaled


def outcomes(images: int, seed: int = 0):
    """Baseline and candidate correctness (12% of the images redrawn for the candidate, right with probability 0.85),
    and each image's target."""
    rng = np.random.default_rng(seed)
    baseline = rng.random(images) < 0.7
    flip = rng.random(images) < 0.12
    candidate = np.where(flip, rng.random(images) < 0.85, baseline)
    targets = rng.choice(len(TARGET_SHARES), size=images, p=TARGET_SHARES)
    return baseline, candidate, np.array([f"target{t}" for t in range(len(TARGET_SHARES))])[targets]


def predictions_table(baseline, candidate, targets) -> pd.DataFrame:
    """The two zero-shot methods' rows of a predictions table, as the run writes them."""
    ids = np.arange(len(baseline)).astype(str)
    return pd.concat([pd.DataFrame({"protocol": "domain-shift", "method": method, "target": targets, "sample_id": ids,
                                    "correct": correct})
                      for method, correct in (("clip_zero_shot", baseline), ("clip_icm_zero_shot", candidate))],
                     ignore_index=True)


def index_bootstrap(baseline, candidate, resamples: int, seed: int = 0) -> np.ndarray:
    """The textbook paired bootstrap: n image indices per resample (what the multinomial draw replaces)."""
    rng = np.random.default_rng(seed)
    difference = candidate.astype(np.int8) - baseline.astype(np.int8)
    return np.array([difference[rng.integers(0, len(difference), len(difference))].mean() for _ in range(resamples)])


def median_seconds(work, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        work()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def seed_spread(images: int, resamples: int, seeds: int = 20) -> float:
    """The largest move of either end of the interval over `seeds` seeds, on one target of `images` images."""
    baseline, candidate, _ = outcomes(images, seed=1)
    ends = np.array([[d.ci_low, d.ci_high] for d in (paired_difference(baseline, candidate, resamples=resamples, seed=s)
                                                      for s in range(seeds))])
    return float((ends.max(axis=0) - ends.min(axis=0)).max())


def main(argv=None) -> str:
    parser = bench_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--resamples", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parse(parser, {"images": 2_000, "resamples": 200, "repeats": 1}, argv)
    baseline, candidate, targets = outcomes(args.images)
    predictions = predictions_table(baseline, candidate, targets)
    index_seconds = median_seconds(lambda: index_bootstrap(baseline, candidate, INDEX_RESAMPLES), args.repeats)
    rows = [
        {"what": "one target: interval + McNemar p",
         "seconds": median_seconds(lambda: paired_difference(baseline, candidate, resamples=args.resamples), args.repeats)},
        {"what": f"mean over {len(TARGET_SHARES)} targets (resampled within each)",
         "seconds": median_seconds(lambda: paired_difference(baseline, candidate, targets, resamples=args.resamples),
                                   args.repeats)},
        {"what": f"a summary's comparisons from predictions ({len(TARGET_SHARES)} targets + mean, pairing included)",
         "seconds": median_seconds(lambda: paired_comparisons(predictions), args.repeats)},
        {"what": f"index bootstrap, one target, scaled from {INDEX_RESAMPLES} resamples (not used)",
         "seconds": index_seconds * args.resamples / INDEX_RESAMPLES},
    ]
    spread_images = min(args.images, 2_000)
    spread = seed_spread(spread_images, args.resamples)
    difference = paired_difference(baseline, candidate, targets, resamples=args.resamples)
    text = "\n\n".join([
        "# Uncertainty cost",
        f"{args.images:,} test images, {args.resamples:,} bootstrap resamples, median of {args.repeats} "
        f"repeat(s); {machine()}; `python bench/uncertainty_cost.py --images {args.images} "
        f"--resamples {args.resamples} --repeats {args.repeats}`. (`paired_comparisons` covers one CLIP-ICM method; "
        "a run has two per protocol.)",
        pd.DataFrame(rows).to_markdown(index=False, floatfmt=".4f"),
        f"The mean over targets here: Δ {difference.delta:+.4f}, 95% CI [{difference.ci_low:+.4f}, "
        f"{difference.ci_high:+.4f}], McNemar p {difference.mcnemar_p:.2g} ({difference.gained:,} gained, "
        f"{difference.lost:,} lost). Over 20 seeds, an end of the interval moves by at most {spread:.4f} on one target "
        f"of {spread_images:,} images.",
    ])
    print(text)
    write_table(args, "uncertainty_cost.md", text)
    return text


if __name__ == "__main__":
    main()
