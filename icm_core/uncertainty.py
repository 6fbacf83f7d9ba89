"""The uncertainty of a paired accuracy difference: both methods scored on the same test images.

Each image is one of three cells: both methods agree (right or wrong), the candidate alone is right ("gained"), the
baseline alone is right ("lost"). The difference of accuracies is (gained - lost) / n, so everything below needs the
three counts alone:

- a paired bootstrap (images resampled with replacement, both methods' outcomes together) draws the three counts of a
  resample from a multinomial over the cells: the same distribution as drawing n image indices, at O(resamples)
  instead of O(n x resamples). Over several targets (the mean over targets, an unweighted mean of per-target
  accuracies) images are resampled within each target, so every target keeps its size;
- the percentile interval of the resampled differences;
- the exact McNemar test: under "the two methods are interchangeable on every image" each discordant image is a fair
  coin, so the gained count is Binomial(gained + lost, 1/2) (scipy's two-sided binomtest). Over several targets the
  discordant images are pooled: the same null, tested exactly.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import binomtest

RESAMPLES = 10_000  # seed to seed, an end of the interval moves by under 0.001 at n = 2,000 (bench/uncertainty_cost.py)
LEVEL = 0.95
SEED = 0


@dataclass(frozen=True)
class PairedDifference:
    """Candidate minus baseline accuracy, with its bootstrap interval and McNemar's p."""

    delta: float
    ci_low: float
    ci_high: float
    mcnemar_p: float
    gained: int  # images the candidate alone gets right (over every stratum)
    lost: int  # images the baseline alone gets right
    n: int


def paired_cells(baseline_correct, candidate_correct, strata=None) -> np.ndarray:
    """strata x 3 counts: (agree, gained, lost) per stratum, strata in sorted order (one row without strata)."""
    baseline, candidate = (np.asarray(values, dtype=bool) for values in (baseline_correct, candidate_correct))
    if baseline.ndim != 1 or baseline.shape != candidate.shape:
        raise ValueError(f"baseline_correct and candidate_correct must be 1-D and paired (one entry per image), "
                         f"got shapes {baseline.shape} and {candidate.shape}")
    if len(baseline) == 0:
        raise ValueError("a paired difference needs at least one image")
    if strata is None:
        stratum, count = np.zeros(len(baseline), dtype=np.intp), 1
    else:
        strata = np.asarray(strata)
        if strata.shape != baseline.shape:
            raise ValueError(f"strata must hold one entry per image ({len(baseline)}), got shape {strata.shape}")
        labels, stratum = np.unique(strata, return_inverse=True)
        count = len(labels)
    cell = np.where(baseline == candidate, 0, np.where(candidate, 1, 2))
    return np.bincount(stratum * 3 + cell, minlength=3 * count).reshape(count, 3)


def mcnemar_exact(gained: int, lost: int) -> float:
    """Two-sided exact McNemar p from the discordant counts; 1 when there are none."""
    discordant = int(gained) + int(lost)
    return 1.0 if discordant == 0 else float(binomtest(int(gained), discordant, 0.5).pvalue)


def bootstrap_differences(cells: np.ndarray, resamples: int = RESAMPLES, seed: int = SEED) -> np.ndarray:
    """`resamples` differences of the mean over strata of per-stratum accuracy differences, each from images
    resampled with replacement within every stratum (cells: strata x (agree, gained, lost))."""
    if isinstance(resamples, bool) or not isinstance(resamples, (int, np.integer)) or resamples < 1:
        raise ValueError(f"resamples must be a positive integer, got {resamples!r}")
    rng = np.random.default_rng(seed)
    total = np.zeros(resamples)
    for counts in np.asarray(cells, dtype=np.int64):
        n = int(counts.sum())
        drawn = rng.multinomial(n, counts / n, size=resamples)
        total += (drawn[:, 1] - drawn[:, 2]) / n
    return total / len(cells)


def paired_difference(baseline_correct, candidate_correct, strata=None, *, resamples: int = RESAMPLES,
                      level: float = LEVEL, seed: int = SEED) -> PairedDifference:
    """Candidate minus baseline accuracy on the same images, its paired bootstrap percentile interval at `level`,
    and the exact McNemar p. With `strata` (each image's target) the difference is the unweighted mean over strata
    of the per-stratum differences, and the bootstrap resamples images within each stratum.

    Examples
    --------
    >>> d = paired_difference([1, 1, 0, 0], [1, 1, 1, 0])
    >>> d.delta, d.gained, d.lost, d.mcnemar_p
    (0.25, 1, 0, 1.0)
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    cells = paired_cells(baseline_correct, candidate_correct, strata)
    sizes = cells.sum(axis=1)
    delta = float(np.mean((cells[:, 1] - cells[:, 2]) / sizes))
    low, high = np.quantile(bootstrap_differences(cells, resamples, seed), [(1 - level) / 2, (1 + level) / 2])
    gained, lost = (int(total) for total in cells[:, 1:].sum(axis=0))
    return PairedDifference(delta, float(low), float(high), mcnemar_exact(gained, lost), gained, lost, int(sizes.sum()))
