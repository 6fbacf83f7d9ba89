"""Metrics, projection diagnostics, selection rules and the released recipe, on hand-made and synthetic arrays."""
import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score, top_k_accuracy_score

from icm_core import (
    InterventionMoments,
    InvariantProjection,
    LinearProbe,
    ValidationFold,
    accuracy,
    balanced_accuracy,
    eigengap,
    kept_share,
    kept_share_by_family,
    movement_kept,
    movement_kept_by_family,
    pair_movement,
    positive_eigenvalues,
    select_hyperparameters,
    select_over_folds,
    top_k_accuracy,
    top_k_correct,
    top_k_labels,
    variance_kept,
    zero_shot_logits,
    zero_shot_predict,
)
from icm_core.chunks import CHUNK_ROWS
from icm_core.synthetic import SyntheticSCM
from tasks.evaluate.predictions import ranked
from tasks.evaluate.summary import summarize

# 3 images x 6 classes; row 0's ranking is 5,4,3,2,1,0, row 1's 0,1,2,3,4,5, row 2 ties at the top
SCORES = np.array([
    [0.0, 1.0, 2.0, 3.0, 4.0, 5.0],
    [6.0, 5.0, 4.0, 3.0, 2.0, 1.0],
    [1.0, 9.0, 9.0, 0.0, 0.0, 0.0],
])


def test_top_k_by_hand():
    np.testing.assert_array_equal(top_k_labels(SCORES, 2), [[5, 4], [0, 1], [1, 2]])  # a tie keeps column order
    top5 = top_k_labels(SCORES, 5)
    # label 0 is last for row 0 (missed by top-5), first for row 1; label 3 is 4th for row 2 (ties 3, 4, 5 -> 3 first)
    np.testing.assert_array_equal(top_k_correct([0, 0, 3], top5), [False, True, True])
    assert top_k_accuracy([0, 0, 3], SCORES, k=5) == pytest.approx(2 / 3)
    assert top_k_accuracy([5, 5, 2], SCORES, k=1) == pytest.approx(1 / 3)  # row 2's tie goes to label 1
    assert top_k_accuracy([0, 0, 5], SCORES, k=5) == pytest.approx(1 / 3)  # label 5 is 6th for row 2
    # named columns (a probe's classes_) map positions to labels
    np.testing.assert_array_equal(top_k_labels(SCORES[:1], 3, labels=[10, 11, 12, 13, 14, 15]), [[15, 14, 13]])
    rng = np.random.default_rng(0)
    scores, truth = rng.normal(size=(50, 7)), rng.integers(7, size=50)
    assert top_k_accuracy(truth, scores, k=5) == pytest.approx(top_k_accuracy_score(truth, scores, k=5, labels=range(7)))
    with pytest.raises(ValueError, match="k must be an integer in \\[1, 6\\]"):
        top_k_labels(SCORES, 7)


def test_balanced_accuracy_by_hand():
    # class 0: 3 of 3 right, class 1: 0 of 1 right -> recall (1 + 0) / 2; plain accuracy 3/4
    y_true, y_pred = [0, 0, 0, 1], [0, 0, 0, 0]
    assert balanced_accuracy(y_true, y_pred) == pytest.approx(0.5)
    assert accuracy(y_true, y_pred) == pytest.approx(0.75)
    # a predicted class absent from y_true does not count: (1/2 + 1) / 2
    assert balanced_accuracy([1, 1, 2], [1, 7, 2]) == pytest.approx(0.75)
    rng = np.random.default_rng(1)
    truth, guess = rng.integers(5, size=200), rng.integers(5, size=200)
    assert balanced_accuracy(truth, guess) == pytest.approx(balanced_accuracy_score(truth, guess))


def test_summary_metrics_from_predictions():
    predictions = pd.DataFrame({
        "protocol": "domain-shift", "method": "clip_zero_shot", "target": ["a"] * 4 + ["b"] * 2,
        "sample_id": list("123456"), "class": ["x", "x", "x", "y", "x", "y"],
        "label": [0, 0, 0, 1, 0, 1], "prediction": [0, 0, 0, 0, 1, 1],
        "correct": [True, True, True, False, False, True],
        "top5_correct": pd.array([True, True, True, True, False, True], dtype="boolean"),
    })
    summary = summarize(predictions, ["x", "y"], "leave-one-domain-out").set_index("target")
    assert summary.loc["a", "accuracy"] == pytest.approx(0.75)
    assert summary.loc["a", "balanced_accuracy"] == pytest.approx(0.5)
    assert summary.loc["a", "top5_accuracy"] == pytest.approx(1.0)
    assert summary.loc["b", "balanced_accuracy"] == pytest.approx(0.5)
    assert summary.loc["mean", "balanced_accuracy"] == pytest.approx(0.5)
    assert summary.loc["mean", "top5_accuracy"] == pytest.approx(0.75)
    assert (summary["selection"] == "leave-one-domain-out").all()
    # fewer than 5 scored classes: top-5 is undefined, not 1
    predictions["top5_correct"] = pd.array([pd.NA] * 6, dtype="boolean")
    summary = summarize(predictions, ["x", "y"]).set_index("target")
    assert summary["top5_accuracy"].isna().all() and summary.loc["mean", "accuracy"] == pytest.approx(0.625)


def test_diagnostics_by_hand():
    e1 = np.array([[1.0], [0.0]])
    Z, Z_twin = np.array([[1.0, 0.0], [0.0, 0.0]]), np.array([[0.0, 0.0], [0.0, 2.0]])  # moves: e1 by 1, e2 by 2
    assert movement_kept(Z, Z_twin, e1) == pytest.approx(1 / 5)
    assert movement_kept_by_family(Z, Z_twin, ["blur", "invert"], e1) == pytest.approx({"blur": 1.0, "invert": 0.0})
    assert variance_kept(np.diag([3.0, 1.0]), e1) == pytest.approx(0.75)
    assert positive_eigenvalues([3.0, 1e-18, -2.0]) == 1
    assert eigengap([5.0, 3.0, 1.0], 1) == pytest.approx(2.0) and eigengap([5.0, 3.0, 0.5], 2) == pytest.approx(2.5)
    assert np.isnan(eigengap([5.0, 3.0, 1.0], 3))
    with pytest.raises(ValueError, match="components has 3 rows; expected 2"):
        movement_kept(Z, Z_twin, np.ones((3, 1)))


def test_diagnostics_on_the_synthetic_model():
    scm = SyntheticSCM(dim=64, n_invariant=20, seed=0)
    train, held_out = scm.sample(5000, 0.9, seed=0), scm.sample(2000, 0.9, seed=1)
    moments = InterventionMoments.from_pairs(train.Z, train.Z_intervened)
    largest = InvariantProjection(20, lam=1000).fit_moments(moments)
    released = InvariantProjection(20, lam=1000, order="released").fit_moments(moments)
    # the true invariant subspace barely moves under held-out interventions; the released slice moves
    assert movement_kept(held_out.Z, held_out.Z_intervened, largest.components_) < 1e-3
    assert movement_kept(held_out.Z, held_out.Z_intervened, released.components_) > 0.01
    values, _ = np.linalg.eigh(moments.second_moment() - 1000 * moments.difference_covariance())
    # 20 invariant directions keep positive eigenvalues at a large lambda; the other 44 go negative
    assert positive_eigenvalues(values) == 20
    assert 0 < variance_kept(moments.second_moment(), largest.components_) < 1


def _folds_data(scm, seeds):
    return [scm.sample(800, 1 / scm.n_classes, seed=seed) for seed in seeds]


def test_leave_one_domain_out_scores_each_held_out_source_with_the_others_moments():
    scm = SyntheticSCM(dim=16, n_invariant=6, n_classes=4, seed=2)
    envs = _folds_data(scm, [10, 11, 12])
    per_domain = [InterventionMoments.from_pairs(env.Z, env.Z_intervened) for env in envs]
    everything = per_domain[0] + per_domain[1] + per_domain[2]
    folds = [
        ValidationFold(sum((m for j, m in enumerate(per_domain) if j != i), InterventionMoments(16)),
                       envs[i].Z, envs[i].labels, f"env{i}")
        for i in range(3)
    ]
    lams, ks = [1.0, 100.0], [2, 6, 10]
    chosen = select_over_folds(everything, folds, scm.class_embeddings, lams, ks)
    for row in chosen.grid:  # each cell's score is the mean over folds of a projection fit without that fold
        by_hand = [
            accuracy(env.labels, zero_shot_predict(
                env.Z, scm.class_embeddings,
                InvariantProjection(row["n_components"], row["lam"]).fit_moments(fold.moments)))
            for env, fold in zip(envs, folds)
        ]
        assert row["val_accuracy"] == pytest.approx(np.mean(by_hand))
    best = max(row["val_accuracy"] for row in chosen.grid)
    first_best = next(row for row in chosen.grid if row["val_accuracy"] == best)
    assert first_best["selected"] and sum(row["selected"] for row in chosen.grid) == 1
    # the chosen projection is refit on every source, not on a fold
    refit = InvariantProjection(chosen.n_components, chosen.lam).fit_moments(everything)
    np.testing.assert_allclose(chosen.projection.components_, refit.components_)
    assert set(chosen.eigenvalues) == set(lams) and len(chosen.eigenvalues[1.0]) == 16


def test_one_fold_on_the_full_moments_is_training_domain_selection():
    scm = SyntheticSCM(dim=16, n_invariant=6, n_classes=4, seed=2)
    train, val = _folds_data(scm, [10, 11])
    moments = InterventionMoments.from_pairs(train.Z, train.Z_intervened)
    one = select_hyperparameters(moments, val.Z, val.labels, scm.class_embeddings, [1.0, 10.0], [2, 6])
    folds = select_over_folds(moments, [ValidationFold(moments, val.Z, val.labels)], scm.class_embeddings, [1.0, 10.0], [2, 6])
    assert one.grid == folds.grid


def test_released_zero_shot_and_probe_follow_the_recipe():
    rng = np.random.default_rng(4)
    images, classes = 5 * rng.normal(size=(30, 8)), 3 * rng.normal(size=(4, 8))
    projection = InvariantProjection(3, lam=1, order="released").fit(rng.normal(size=(50, 8)), rng.normal(size=(50, 8)))
    A = projection.components_
    text = classes / np.linalg.norm(classes, axis=1, keepdims=True)
    np.testing.assert_allclose(zero_shot_logits(images, classes, projection, normalize_images=False),
                               100 * (images @ A) @ (text @ A).T)
    labels = rng.integers(4, size=30)
    probe = LinearProbe(projection, solver="sklearn").fit(images, labels)
    reference = LogisticRegression(C=0.316, max_iter=1000, random_state=0).fit(images @ A, labels)
    np.testing.assert_array_equal(probe.predict(images), reference.predict(images @ A))
    np.testing.assert_allclose(probe.decision_function(images), reference.decision_function(images @ A))


def test_scoring_a_chunk_of_rows_at_a_time_equals_scoring_all_rows():
    rng = np.random.default_rng(3)
    images = rng.normal(size=(CHUNK_ROWS + 123, 16)).astype(np.float32)  # two chunks, the second short
    classes, every_class = rng.normal(size=(7, 16)), np.arange(7)
    projection = InvariantProjection(8, lam=1.0).fit(images[:500], images[:500] + rng.normal(size=(500, 16)))
    for fitted in (None, projection):
        logits = zero_shot_logits(images, classes, fitted)
        np.testing.assert_array_equal(zero_shot_predict(images, classes, fitted), logits.argmax(axis=1))
        np.testing.assert_array_equal(zero_shot_predict(images, classes, fitted, normalize_images=False),
                                      zero_shot_logits(images, classes, fitted, normalize_images=False).argmax(axis=1))
        chunked = ranked(lambda part: zero_shot_logits(part, classes, fitted), every_class, images)
        np.testing.assert_array_equal(chunked, top_k_labels(logits, 5))
    # named columns, fewer than 5 of them: as many ranks as columns
    two = ranked(lambda part: part[:, :2], np.array([10, 20]), images)
    np.testing.assert_array_equal(two, np.where((images[:, 1] > images[:, 0])[:, None], [[20, 10]], [[10, 20]]))


def test_pair_movement_sums_to_movement_kept_per_family():
    rng = np.random.default_rng(4)
    Z = rng.normal(size=(CHUNK_ROWS + 50, 6)).astype(np.float32)
    Z_twin = Z + rng.normal(size=Z.shape).astype(np.float32)
    components = np.linalg.qr(rng.normal(size=(6, 2)))[0]
    families = rng.choice(["blur", "invert", "solarize"], size=len(Z))
    movement = pair_movement(Z, Z_twin, components)
    difference = Z.astype(float) - Z_twin
    np.testing.assert_allclose(movement, np.column_stack([((difference @ components) ** 2).sum(1), (difference**2).sum(1)]))
    assert kept_share(movement) == pytest.approx(movement_kept(Z, Z_twin, components))
    by_family = kept_share_by_family(movement, families)
    for family in ("blur", "invert", "solarize"):
        rows = families == family
        assert by_family[family] == pytest.approx(movement_kept(Z[rows], Z_twin[rows], components))
