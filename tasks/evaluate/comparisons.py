"""Each CLIP-ICM method against its CLIP baseline on the same test images: the accuracy difference (Δ) per target and
on the mean over targets, with its paired bootstrap interval and exact McNemar p (icm_core.uncertainty). The summary
carries them on the CLIP-ICM rows; run.json records how they were computed (UNCERTAINTY)."""
from __future__ import annotations

import pandas as pd

from icm_core.uncertainty import LEVEL, RESAMPLES, SEED, PairedDifference, paired_difference
from tasks.vocabulary import BASELINES

COMPARISON_COLUMNS = ["delta", "ci_low", "ci_high", "mcnemar_p"]
MEAN = "mean"  # the summary's row of the mean over targets

# what run.json records of the intervals and the test
UNCERTAINTY = {
    "interval": "paired bootstrap, percentile", "level": LEVEL, "resamples": RESAMPLES, "seed": SEED,
    "mean_over_targets": "images resampled within each target; McNemar on the discordant images of every target",
    "test": "exact McNemar: two-sided binomial test (p = 1/2) on the images exactly one method gets right",
}


def _row(protocol: str, method: str, target: str, difference: PairedDifference) -> dict:
    return {"protocol": protocol, "method": method, "target": target,
            **{column: getattr(difference, column) for column in COMPARISON_COLUMNS}}


def paired_comparisons(predictions: pd.DataFrame) -> pd.DataFrame:
    """One row per protocol x CLIP-ICM method x target (and `mean`) whose baseline was scored too: Δ = its accuracy
    minus the baseline's, ci_low and ci_high (the paired bootstrap interval), mcnemar_p. The mean's Δ is the
    unweighted mean over targets of the targets' Δ, as the summary's mean rows average accuracies."""
    rows = []
    for (protocol, method), candidate in predictions.groupby(["protocol", "method"], sort=True):
        baseline = predictions[(predictions["protocol"] == protocol) & (predictions["method"] == BASELINES.get(method))]
        if baseline.empty:
            continue
        paired = candidate.merge(baseline[["target", "sample_id", "correct"]], on=["target", "sample_id"],
                                 suffixes=("", "_baseline"), validate="one_to_one")
        if not len(paired) == len(candidate) == len(baseline):
            raise ValueError(f"{protocol} {method} and its baseline {BASELINES[method]} were not scored on the same "
                             f"images ({len(candidate)} and {len(baseline)} rows, {len(paired)} paired)")
        for target, images in paired.groupby("target", sort=True):
            rows.append(_row(protocol, method, target, paired_difference(images["correct_baseline"], images["correct"])))
        rows.append(_row(protocol, method, MEAN,
                         paired_difference(paired["correct_baseline"], paired["correct"], paired["target"])))
    frame = pd.DataFrame(rows, columns=["protocol", "method", "target", *COMPARISON_COLUMNS])
    return frame.astype(dict.fromkeys(COMPARISON_COLUMNS, float))  # floats even with no pair (a baseline alone)
