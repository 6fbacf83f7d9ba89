"""Every Δ's uncertainty against independent computations: the bootstrap distribution enumerated over every possible
resample of tiny prediction tables, McNemar's p from binomial coefficients by hand, and the summary's columns from a
fixed prediction table."""
import itertools
from math import comb

import numpy as np
import pandas as pd
import pytest

from icm_core import paired_difference
from icm_core.uncertainty import bootstrap_differences, paired_cells
from tasks.evaluate.summary import summarize


def every_resample(baseline, candidate) -> np.ndarray:
    """The difference of accuracies of each of the n^n equally likely resamples of n images (indices drawn with
    replacement): the exact bootstrap distribution, by brute force."""
    baseline, candidate = np.asarray(baseline, float), np.asarray(candidate, float)
    n = len(baseline)
    indices = np.array(list(itertools.product(range(n), repeat=n)))
    return candidate[indices].mean(axis=1) - baseline[indices].mean(axis=1)


def exact_law(values) -> dict:
    """{value: probability} of equally likely values, rounded so that equal differences meet."""
    rounded, counts = np.unique(np.round(values, 9), return_counts=True)
    return dict(zip(rounded, counts / counts.sum()))


def assert_draws_follow(draws, law: dict):
    """Each value's share of the draws within 5 standard errors of its exact probability, and nothing else drawn."""
    shares = exact_law(draws)
    assert set(shares) <= set(law)
    for value, probability in law.items():
        assert shares.get(value, 0.0) == pytest.approx(probability, abs=5 * np.sqrt(probability * (1 - probability) / len(draws)) + 1e-12)


# one target of 6 images: the candidate gains images 2 and 3, loses image 1
BASELINE = [1, 1, 0, 0, 1, 0]
CANDIDATE = [1, 0, 1, 1, 1, 0]


def test_the_bootstrap_follows_every_resample_of_the_images():
    law = exact_law(every_resample(BASELINE, CANDIDATE))  # 6^6 = 46,656 resamples
    draws = bootstrap_differences(paired_cells(BASELINE, CANDIDATE), resamples=200_000, seed=3)
    assert_draws_follow(draws, law)
    difference = paired_difference(BASELINE, CANDIDATE, resamples=200_000, seed=3)
    assert difference.delta == pytest.approx(1 / 6)
    # the percentile interval is the exact distribution's 2.5% and 97.5% points (neither sits on a step of its CDF)
    values, probabilities = np.array(sorted(law)), np.array([law[value] for value in sorted(law)])
    cdf = np.cumsum(probabilities)
    assert np.abs(cdf - 0.025).min() > 0.005 and np.abs(cdf - 0.975).min() > 0.005
    assert difference.ci_low == pytest.approx(values[np.searchsorted(cdf, 0.025)])
    assert difference.ci_high == pytest.approx(values[np.searchsorted(cdf, 0.975)])
    assert (difference.ci_low, difference.ci_high) == pytest.approx((-1 / 3, 2 / 3))


def test_the_mean_over_targets_of_unequal_size_resamples_within_each_target():
    # target a: 3 images (Δ = +1/3), target b: 4 images (Δ = -1/4); pooled, 7 images would give (2 - 2) / 7 = 0
    baseline, candidate = [0, 1, 1, 1, 1, 0, 0], [1, 1, 1, 0, 0, 1, 0]
    targets = ["a", "a", "a", "b", "b", "b", "b"]
    a, b = every_resample(baseline[:3], candidate[:3]), every_resample(baseline[3:], candidate[3:])
    law = exact_law((a[:, None] + b[None, :]).ravel() / 2)  # every pair of resamples, 27 x 256
    draws = bootstrap_differences(paired_cells(baseline, candidate, targets), resamples=200_000, seed=0)
    assert_draws_follow(draws, law)
    difference = paired_difference(baseline, candidate, targets, resamples=200_000, seed=0)
    assert difference.delta == pytest.approx((1 / 3 - 1 / 4) / 2)
    assert (difference.gained, difference.lost, difference.n) == (2, 2, 7)
    assert difference.mcnemar_p == pytest.approx(1.0)  # 2 gained, 2 lost over both targets: no evidence either way


def test_a_target_of_one_image_contributes_its_difference_without_spread():
    # target "one": a single image only the candidate gets right (Δ = 1 in every resample); target "four": Δ = 1/4
    baseline, candidate = [0, 1, 0, 0, 0], [1, 1, 1, 0, 0]
    targets = ["one", "four", "four", "four", "four"]
    assert paired_difference([0], [1]).ci_low == paired_difference([0], [1]).ci_high == 1.0
    four = exact_law(every_resample(baseline[1:], candidate[1:]))
    draws = bootstrap_differences(paired_cells(baseline, candidate, targets), resamples=100_000, seed=1)
    assert_draws_follow(draws, {(1 + value) / 2: probability for value, probability in four.items()})
    difference = paired_difference(baseline, candidate, targets)
    assert difference.delta == pytest.approx(0.625)
    assert difference.mcnemar_p == pytest.approx(0.5)  # 2 gained of 2 discordant: 2 x (1/2)^2


@pytest.mark.parametrize("baseline, candidate", [([1, 1, 1], [1, 1, 1]), ([1, 0, 1, 0], [1, 0, 1, 0])])
def test_no_discordant_pair_is_p_one_and_the_interval_zero(baseline, candidate):
    difference = paired_difference(baseline, candidate)
    assert (difference.delta, difference.ci_low, difference.ci_high, difference.mcnemar_p) == (0, 0, 0, 1)
    assert (difference.gained, difference.lost, difference.n) == (0, 0, len(baseline))


def test_mcnemar_p_is_the_two_sided_binomial_of_the_discordant_images():
    # 2 gained, 8 lost: p = 2 x P(X <= 2), X ~ Binomial(10, 1/2) = 2 x (1 + 10 + 45) / 1024
    baseline = [1] * 8 + [0] * 2 + [1] * 5
    candidate = [0] * 8 + [1] * 2 + [1] * 5
    difference = paired_difference(baseline, candidate)
    assert difference.mcnemar_p == pytest.approx(112 / 1024)
    assert difference.delta == pytest.approx(-6 / 15)
    by_hand = 2 * sum(comb(40, k) for k in range(11)) / 2 ** 40  # 10 gained, 30 lost
    assert paired_difference([1] * 30 + [0] * 10, [0] * 30 + [1] * 10).mcnemar_p == pytest.approx(by_hand)


def test_a_seed_decides_the_interval_and_bad_input_is_named():
    rng = np.random.default_rng(5)
    baseline, candidate = rng.random(500) < 0.6, rng.random(500) < 0.7
    assert paired_difference(baseline, candidate, seed=4) == paired_difference(baseline, candidate, seed=4)
    assert paired_difference(baseline, candidate, seed=4).ci_low != paired_difference(baseline, candidate, seed=5).ci_low
    with pytest.raises(ValueError, match="paired"):
        paired_difference([1, 0], [1])
    with pytest.raises(ValueError, match="at least one image"):
        paired_difference([], [])
    with pytest.raises(ValueError, match="resamples must be a positive integer"):
        paired_difference([1], [0], resamples=0)


def prediction_rows(protocol, method, target, correct) -> pd.DataFrame:
    n = len(correct)
    return pd.DataFrame({
        "protocol": protocol, "method": method, "target": target, "sample_id": [f"{target}/{i}" for i in range(n)],
        "class": "x", "label": 0, "prediction": [0 if right else 1 for right in correct], "correct": correct,
        "top5_correct": pd.array([pd.NA] * n, dtype="boolean"),
    })


def test_the_summary_carries_each_comparison_on_the_clip_icm_rows():
    # art: 3 images, photo: 5; zero-shot gains 2 and loses 1 on art, gains 1 on photo; the probe changes nothing
    outcomes = {
        ("clip_zero_shot", "art"): [False, False, True], ("clip_icm_zero_shot", "art"): [True, True, False],
        ("clip_zero_shot", "photo"): [True, False, False, True, True],
        ("clip_icm_zero_shot", "photo"): [True, True, False, True, True],
        ("clip_linear_probe", "art"): [True, False, True], ("clip_icm_linear_probe", "art"): [True, False, True],
        ("clip_linear_probe", "photo"): [True] * 5, ("clip_icm_linear_probe", "photo"): [True] * 5,
    }
    predictions = pd.concat([prediction_rows("domain-shift", method, target, correct)
                             for (method, target), correct in outcomes.items()], ignore_index=True)
    summary = summarize(predictions, ["x", "y"]).set_index(["method", "target"])
    zero_shot = summary.loc["clip_icm_zero_shot"]
    assert zero_shot.loc["art", "delta"] == pytest.approx(1 / 3) and zero_shot.loc["photo", "delta"] == pytest.approx(0.2)
    # the mean row's Δ is the difference of the mean rows' accuracies (unweighted over targets), not the pooled one
    mean_difference = summary.at[("clip_icm_zero_shot", "mean"), "accuracy"] - summary.at[("clip_zero_shot", "mean"), "accuracy"]
    assert zero_shot.loc["mean", "delta"] == pytest.approx(mean_difference) == pytest.approx((1 / 3 + 0.2) / 2)
    assert zero_shot.loc["art", "mcnemar_p"] == pytest.approx(1.0)  # 2 gained, 1 lost: 2 x 4/8 capped at 1
    assert zero_shot.loc["mean", "mcnemar_p"] == pytest.approx(2 * (1 + 4) / 16)  # 3 gained, 1 lost
    expected = paired_difference(outcomes[("clip_zero_shot", "art")] + outcomes[("clip_zero_shot", "photo")],
                                 outcomes[("clip_icm_zero_shot", "art")] + outcomes[("clip_icm_zero_shot", "photo")],
                                 ["art"] * 3 + ["photo"] * 5)
    assert (zero_shot.loc["mean", "ci_low"], zero_shot.loc["mean", "ci_high"]) == (expected.ci_low, expected.ci_high)
    probe = summary.loc["clip_icm_linear_probe"]
    assert (probe[["delta", "ci_low", "ci_high"]] == 0).all().all() and (probe["mcnemar_p"] == 1).all()
    # CLIP's own rows compare with nothing
    assert summary.loc[["clip_zero_shot", "clip_linear_probe"], ["delta", "ci_low", "ci_high", "mcnemar_p"]].isna().all().all()
