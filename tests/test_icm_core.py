import ast
import pathlib
from unittest import mock

import numpy as np
import pytest

import icm_core.projection
from icm_core import (
    InterventionMoments,
    InvariantProjection,
    LinearProbe,
    accuracy,
    harmonic_mean,
    per_class_accuracy,
    select_hyperparameters,
    zero_shot_logits,
)
from icm_core.synthetic import SyntheticSCM, largest_principal_angle_deg


@pytest.fixture(scope="module")
def scm():
    return SyntheticSCM(dim=64, n_invariant=20, seed=0)


@pytest.fixture(scope="module")
def train(scm):
    return scm.sample(5000, spurious_agreement=0.9, seed=0)


def _stack(envs, names, attribute):
    return np.concatenate([getattr(envs[name], attribute) for name in names])


def assert_same_columns_up_to_sign(A, B):
    signs = np.sign(np.sum(A * B, axis=0))
    np.testing.assert_allclose(A, B * signs, atol=1e-8)


def test_icm_core_imports_no_io_or_orchestration():
    forbidden = {"prefect", "fsspec", "open_clip", "pandas", "pyarrow"}
    for path in pathlib.Path(icm_core.projection.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                roots = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                roots = {(node.module or "").split(".")[0]}
            else:
                continue
            assert not roots & forbidden, f"{path.name} imports {roots & forbidden}"


def test_largest_order_recovers_invariant_subspace_and_released_does_not(scm, train):
    largest = InvariantProjection(20, lam=1000).fit(train.Z, train.Z_intervened)
    released = InvariantProjection(20, lam=1000, order="released").fit(train.Z, train.Z_intervened)
    assert largest.components_.shape == (64, 20)
    np.testing.assert_allclose(largest.components_.T @ largest.components_, np.eye(20), atol=1e-10)
    assert largest_principal_angle_deg(largest.components_, scm.invariant_subspace) < 1.0
    assert largest_principal_angle_deg(released.components_, scm.invariant_subspace) > 45.0
    assert largest.retained_intervention_ < 1e-4
    assert released.retained_intervention_ > 0.1
    assert np.all(np.diff(largest.eigenvalues_) <= 0)


def test_streaming_chunks_and_merged_shards_equal_batch_fit(train):
    batch = InterventionMoments.from_pairs(train.Z, train.Z_intervened)
    streamed = InterventionMoments(64)
    for rows in np.array_split(np.arange(len(train.Z)), 10):
        streamed.update(train.Z[rows], train.Z_intervened[rows])
    shards = [
        InterventionMoments(64).update(train.Z[rows], train.Z_intervened[rows])
        for rows in np.array_split(np.arange(len(train.Z)), 4)
    ]
    merged = shards[0] + shards[1] + shards[2].merge(shards[3])
    restored = InterventionMoments.from_arrays(merged.to_arrays())
    reference = InvariantProjection(20, lam=1000).fit_moments(batch).components_
    for moments in (merged, restored, streamed):
        rtol = 1e-10
        assert moments.n_samples == batch.n_samples == 5000
        assert moments.n_image_pairs == 5000
        np.testing.assert_allclose(moments.sum_zz, batch.sum_zz, rtol=rtol, atol=rtol * np.abs(batch.sum_zz).max())
        np.testing.assert_allclose(
            moments.image_sum_dd, batch.image_sum_dd, rtol=rtol, atol=rtol * np.abs(batch.image_sum_dd).max()
        )
        assert_same_columns_up_to_sign(InvariantProjection(20, lam=1000).fit_moments(moments).components_, reference)


def test_text_pairs_are_kept_apart_and_weighted_equally():
    rng = np.random.default_rng(0)
    Z, Zi, T, Ti = (rng.normal(size=(n, 4)) for n in (10, 10, 3, 3))
    moments = InterventionMoments(4).update(Z, Zi).update_differences(T, Ti, source="text")
    image_cov = (Z - Zi).T @ (Z - Zi) / 10
    text_cov = (T - Ti).T @ (T - Ti) / 3
    assert (moments.n_image_pairs, moments.n_text_pairs, moments.n_samples) == (10, 3, 10)
    np.testing.assert_allclose(moments.difference_covariance(use_text=False), image_cov)
    np.testing.assert_allclose(moments.difference_covariance(use_image=False), text_cov)
    np.testing.assert_allclose(moments.difference_covariance(), (image_cov + text_cov) / 2)


def test_projected_linear_probe_beats_raw_out_of_distribution(scm):
    envs = scm.environments(5000, train_agreements=(0.9, 0.8), test_agreement=0.1)
    train_names = ["train0", "train1"]
    X, y = _stack(envs, train_names, "Z"), _stack(envs, train_names, "labels")
    projection = InvariantProjection(20, lam=1000).fit(X, _stack(envs, train_names, "Z_intervened"))
    test = envs["test"]
    raw = accuracy(test.labels, LinearProbe().fit(X, y).predict(test.Z))
    invariant = accuracy(test.labels, LinearProbe(projection).fit(X, y).predict(test.Z))
    assert invariant >= raw + 0.10, (raw, invariant)


@pytest.mark.parametrize(
    "call, argument",
    [
        (lambda Z: InvariantProjection(5).fit(Z, Z[:, :-1]), "Z_intervened"),
        (lambda Z: InvariantProjection(0).fit(Z, Z), "n_components"),
        (lambda Z: InvariantProjection(9).fit(Z, Z), "n_components"),
        (lambda Z: InvariantProjection(2, lam=-1).fit(Z, Z), "lam"),
        (lambda Z: InvariantProjection(2, order="smallest").fit(Z, Z), "order"),
        (lambda Z: InvariantProjection(2).fit(np.where(np.eye(len(Z), 8, dtype=bool), np.nan, Z), Z), "Z"),
        (lambda Z: InvariantProjection(2).fit(Z, np.where(np.eye(len(Z), 8, dtype=bool), np.inf, Z)), "Z_intervened"),
        (lambda Z: InvariantProjection(2).fit(Z[:1], Z[:1]), "Z"),
        (lambda Z: InvariantProjection(2).fit(Z, Z + 1).transform(Z[:, :5]), "X"),
        (lambda Z: InvariantProjection(2).transform(Z), "not fitted"),
    ],
)
def test_bad_input_raises_value_error_naming_the_argument(call, argument):
    Z = np.random.default_rng(1).normal(size=(30, 8))
    with pytest.raises(ValueError, match=argument):
        call(Z)


def test_save_load_round_trip_and_bad_files(tmp_path, train):
    projection = InvariantProjection(20, lam=1000).fit(train.Z, train.Z_intervened)
    data = projection.to_bytes(dataset="synthetic")
    loaded = InvariantProjection.from_bytes(data)
    np.testing.assert_array_equal(loaded.transform(train.Z[:50]), projection.transform(train.Z[:50]))
    assert loaded.get_params() == projection.get_params()
    assert loaded.metadata_["dataset"] == "synthetic"
    assert b"pickle" not in data.lower()

    newer = projection.to_bytes(format_version=99)
    with pytest.raises(ValueError, match="format_version 99"):
        InvariantProjection.from_bytes(newer, source="p.npz")
    path = tmp_path / "partial.npz"
    np.savez(path, components=projection.components_)
    with pytest.raises(ValueError, match=r"p2.npz is missing keys \['eigenvalues'"):
        InvariantProjection.from_bytes(path.read_bytes(), source="p2.npz")
    with pytest.raises(ValueError, match="not a valid .npz"):
        InvariantProjection.from_bytes(b"garbage", source="p3.npz")


def test_selection_recovers_true_k_with_one_eigh_per_lambda(scm):
    envs = scm.environments(5000)
    moments = InterventionMoments(64)
    for name in ("train0", "train1"):
        moments.update(envs[name].Z, envs[name].Z_intervened)
    # validation drawn without the spurious correlation: the best k is the invariant dimension
    val = scm.sample(4000, spurious_agreement=1 / scm.n_classes, seed=7)
    with mock.patch.object(icm_core.projection.np.linalg, "eigh", wraps=np.linalg.eigh) as eigh:
        selection = select_hyperparameters(
            moments, val.Z, val.labels, scm.class_embeddings, lams=[100, 1000, 10000], ks=[5, 10, 15, 20, 25, 30, 40]
        )
    assert eigh.call_count == 3
    assert selection.n_components == 20
    assert len(selection.grid) == 21
    assert [row["selected"] for row in selection.grid].count(True) == 1
    chosen = next(row for row in selection.grid if row["selected"])
    assert chosen["val_accuracy"] == selection.accuracy == max(row["val_accuracy"] for row in selection.grid)
    assert largest_principal_angle_deg(selection.projection.components_, scm.invariant_subspace) < 1.0
    assert set(selection.projections) == {(row["lam"], row["n_components"]) for row in selection.grid}
    assert selection.projections[(selection.lam, selection.n_components)] is selection.projection
    assert selection.projections[(100.0, 5)].components_.shape == (64, 5)


def test_selection_signature_cannot_take_test_data():
    import inspect

    parameters = set(inspect.signature(select_hyperparameters).parameters)
    assert not any("test" in name or "target" in name for name in parameters)


def test_zero_shot_normalises_then_projects():
    rng = np.random.default_rng(3)
    images, classes = rng.normal(size=(6, 8)), rng.normal(size=(3, 8))
    projection = InvariantProjection(4, lam=1).fit(rng.normal(size=(40, 8)), rng.normal(size=(40, 8)))
    A = projection.components_
    unit = lambda X: X / np.linalg.norm(X, axis=1, keepdims=True)  # noqa: E731
    expected = 100 * (unit(images) @ A) @ (unit(classes) @ A).T
    np.testing.assert_allclose(zero_shot_logits(images * 7, classes * 3, projection), expected)
    np.testing.assert_allclose(zero_shot_logits(images, classes), 100 * unit(images) @ unit(classes).T)


def test_metrics():
    y_true = np.array([0, 0, 1, 1, 2])
    y_pred = np.array([0, 1, 1, 1, 0])
    assert accuracy(y_true, y_pred) == pytest.approx(0.6)
    assert per_class_accuracy(y_true, y_pred) == {0: 0.5, 1: 1.0, 2: 0.0}
    assert harmonic_mean(0.8, 0.4) == pytest.approx(2 * 0.8 * 0.4 / 1.2)
    assert harmonic_mean(0.0, 0.0) == 0.0
    with pytest.raises(ValueError, match="y_pred"):
        accuracy(y_true, y_pred[:3])


def test_linear_probe_uses_authors_defaults_and_projection():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 6))
    y = (X[:, 0] > 0).astype(int)
    probe = LinearProbe(solver="sklearn").fit(X, y)
    assert (probe.model_.C, probe.model_.max_iter) == (0.316, 1000)
    assert accuracy(y, probe.predict(X)) > 0.9
    assert (LinearProbe().C, LinearProbe().max_iter, LinearProbe().solver) == (0.316, 1000, "torch")
    with pytest.raises(ValueError, match="not fitted"):
        LinearProbe().predict(X)
