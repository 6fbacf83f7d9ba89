"""The torch linear probe minimises scikit-learn's objective: same solution, same accuracy, deterministic."""
import numpy as np
import torch
import pytest
from sklearn.linear_model import LogisticRegression

from icm_core import InvariantProjection, LinearProbe, accuracy
from icm_core.probe import fit_logistic


def objective(X, y, weight, bias, C):
    """scikit-learn's multinomial objective, in float64: mean cross-entropy + ||W||^2 / (2 C n)."""
    logits = X.astype(np.float64) @ weight + bias
    logits -= logits.max(axis=1, keepdims=True)
    log_sum = np.log(np.exp(logits).sum(axis=1))
    return float((log_sum - logits[np.arange(len(y)), y]).mean() + (weight**2).sum() / (2 * C * len(y)))


@pytest.fixture(scope="module")
def blobs():
    """Overlapping classes on the unit sphere (like normalised CLIP embeddings): accuracy well below 100%."""
    rng = np.random.default_rng(0)
    n, d, classes = 2000, 24, 6
    labels = rng.integers(classes, size=2 * n)
    X = 0.4 * rng.normal(size=(classes, d))[labels] + rng.normal(size=(2 * n, d))
    X = (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32)
    return X[:n], labels[:n] + 10, X[n:], labels[n:] + 10  # labels need not start at 0


@pytest.mark.parametrize("C", [0.316, 10.0])
def test_torch_probe_matches_sklearn_objective_coefficients_and_accuracy(blobs, C):
    X, y, X_test, y_test = blobs
    reference = LinearProbe(C=C, solver="sklearn").fit(X, y)
    probe = LinearProbe(C=C, solver="torch", device="cpu").fit(X, y)
    assert probe.model_.converged
    indices = np.searchsorted(probe.classes_, y)
    ours = objective(X, indices, probe.model_.weight, probe.model_.bias, C)
    theirs = objective(X, indices, reference.model_.coef_.T, reference.model_.intercept_, C)
    assert ours == pytest.approx(theirs, rel=1e-5)
    np.testing.assert_allclose(probe.model_.weight, reference.model_.coef_.T, atol=2e-3 * np.abs(reference.model_.coef_).max())
    test_accuracy = accuracy(y_test, probe.predict(X_test))
    assert 0.3 < test_accuracy < 0.95  # a case where the probes could disagree
    assert abs(test_accuracy - accuracy(y_test, reference.predict(X_test))) <= 0.005
    assert set(probe.predict(X_test)) <= set(y)


def test_torch_probe_on_a_projection_equals_sklearn_on_projected_features(blobs):
    X, y, X_test, y_test = blobs
    rng = np.random.default_rng(1)
    projection = InvariantProjection(8, lam=1.0).fit(X, X + 0.3 * rng.normal(size=X.shape))
    reference = LogisticRegression(C=0.316, max_iter=1000).fit(projection.transform(X), y)
    probe = LinearProbe(projection, device="cpu").fit(X, y)
    assert probe.model_.weight.shape == (8, 6)  # the weights live in the k-dim subspace
    np.testing.assert_allclose(probe.model_.weight, reference.coef_.T, atol=2e-3 * np.abs(reference.coef_).max())
    agree = np.mean(probe.predict(X_test) == reference.predict(projection.transform(X_test)))
    assert agree >= 0.995


def test_torch_probe_is_deterministic_on_cpu(blobs):
    X, y, _, _ = blobs
    first = fit_logistic(X, y - 10, 6, 0.316, device="cpu", chunk_rows=512)
    second = fit_logistic(X, y - 10, 6, 0.316, device="cpu", chunk_rows=512)
    assert first.n_iter > 1
    np.testing.assert_array_equal(first.weight, second.weight)
    np.testing.assert_array_equal(first.bias, second.bias)
    # chunking changes only the order of the sums, not the solution
    whole = fit_logistic(X, y - 10, 6, 0.316, device="cpu", chunk_rows=len(X))
    np.testing.assert_allclose(whole.weight, first.weight, atol=1e-3)


def test_probe_rejects_bad_input():
    X = np.random.default_rng(0).normal(size=(10, 3)).astype(np.float32)
    with pytest.raises(ValueError, match="solver"):
        LinearProbe(solver="liblinear")
    with pytest.raises(ValueError, match="at least 2 classes"):
        LinearProbe().fit(X, np.zeros(10))
    X[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or inf in 1 row"):
        LinearProbe().fit(X, np.arange(10) % 2)


def test_row_blocks_fit_as_their_stack_without_a_copy(blobs):
    X, y, _, _ = blobs
    whole = fit_logistic(X, y - 10, 6, 0.316, device="cpu", chunk_rows=512)
    # block edges on chunk edges: the same chunks in the same order, so the same sums bit for bit
    blocks = fit_logistic([X[:1024], X[1024:]], y - 10, 6, 0.316, device="cpu", chunk_rows=512)
    np.testing.assert_array_equal(blocks.weight, whole.weight)
    np.testing.assert_array_equal(blocks.bias, whole.bias)
    ragged = LinearProbe(device="cpu").fit([X[:700], X[700:700], X[700:]], y)  # an empty block is dropped
    assert ragged.model_.objective == pytest.approx(whole.objective, rel=1e-6)
    nested = LinearProbe(device="cpu").fit(X.tolist(), y)  # a list of rows is one matrix, not blocks
    assert nested.model_.objective == pytest.approx(whole.objective, rel=1e-6)


def test_warm_start_reaches_the_same_optimum_in_fewer_passes(blobs):
    X, y, X_test, _ = blobs
    rng = np.random.default_rng(2)
    projection = InvariantProjection(16, lam=1.0).fit(X, X + 0.3 * rng.normal(size=X.shape))
    clip = LinearProbe(device="cpu").fit(X, y)
    cold = LinearProbe(projection, device="cpu").fit(X, y)
    warm = LinearProbe(projection, device="cpu", start_from=clip).fit(X, y)
    assert warm.model_.converged and warm.model_.n_evaluations < cold.model_.n_evaluations
    indices = np.searchsorted(cold.classes_, y)
    features = projection.transform(X)
    assert objective(features, indices, warm.model_.weight, warm.model_.bias, 0.316) == pytest.approx(
        objective(features, indices, cold.model_.weight, cold.model_.bias, 0.316), rel=1e-5)
    assert np.mean(warm.predict(X_test) == cold.predict(X_test)) >= 0.995
    # a start over other classes, or from scikit-learn, is not used: the fit is the cold one, bit for bit
    for start in (LinearProbe(device="cpu").fit(X[y != 10], y[y != 10]), LinearProbe(solver="sklearn").fit(X, y)):
        unused = LinearProbe(projection, device="cpu", start_from=start).fit(X, y)
        np.testing.assert_array_equal(unused.model_.weight, cold.model_.weight)
    with pytest.raises(ValueError, match="init must be a 16 x 6 weight and a 6 bias, got \\(3, 6\\)"):
        fit_logistic(X, y - 10, 6, 0.316, projection=projection.components_, init=(np.zeros((3, 6)), np.zeros(6)))


@pytest.mark.parametrize("k", [8, 16])  # X A held (k <= d/2), and passes through X (A W) (k > d/2)
def test_torch_probe_on_either_side_of_holding_the_projected_features(blobs, k):
    X, y, X_test, _ = blobs
    rng = np.random.default_rng(1)
    projection = InvariantProjection(k, lam=1.0).fit(X, X + 0.3 * rng.normal(size=X.shape))
    reference = LogisticRegression(C=0.316, max_iter=1000).fit(projection.transform(X), y)
    probe = LinearProbe(projection, device="cpu").fit([X[:900], X[900:]], y)
    assert probe.model_.converged and probe.model_.weight.shape == (k, 6)
    indices = np.searchsorted(probe.classes_, y)
    features = projection.transform(X)
    assert objective(features, indices, probe.model_.weight, probe.model_.bias, 0.316) == pytest.approx(
        objective(features, indices, reference.coef_.T, reference.intercept_, 0.316), rel=1e-5)
    assert np.mean(probe.predict(X_test) == reference.predict(projection.transform(X_test))) >= 0.995


def test_one_device_rule_and_the_probe_keeps_float64_off_mps(monkeypatch):
    from icm_core.devices import resolve_device
    from icm_core.probe import probe_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device() == "mps" and probe_device().type == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device() == "cuda" and probe_device().type == "cuda"
    assert resolve_device("cpu") == "cpu" and probe_device("cpu").type == "cpu"
