"""Diagnostics of a fitted invariant projection: what it keeps, and how clearly k is determined.

Each is a share in [0, 1] or a property of the spectrum of M = Z^T Z / n - lambda D^T D / n.
"""
from __future__ import annotations

import numpy as np

from icm_core.chunks import map_row_chunks
from icm_core.validation import check_labels, check_matrix, check_pair

_TINY = np.finfo(float).tiny


def _check_components(components, dim: int) -> np.ndarray:
    components = check_matrix(components, "components")
    if components.shape[0] != dim:
        raise ValueError(f"components has {components.shape[0]} rows; expected {dim} (the embedding dimension)")
    return components


def pair_movement(Z, Z_intervened, components) -> np.ndarray:
    """n x 2, per pair: the intervention movement kept in the subspace, ||(z - z') A||^2, and in all,
    ||z - z'||^2; in float64, a chunk of rows at a time (float32 inputs are never copied whole)."""
    Z, Z_intervened = check_pair(Z, Z_intervened, dtype=None)
    components = _check_components(components, Z.shape[1])

    def movement(rows):
        differences = Z[rows].astype(np.float64) - Z_intervened[rows]
        return np.column_stack([np.sum((differences @ components) ** 2, axis=1), np.sum(differences**2, axis=1)])

    return map_row_chunks(movement, np.arange(len(Z)))


def kept_share(movement) -> float:
    """Share of the total movement of `pair_movement` rows that the subspace keeps."""
    kept, total = np.asarray(movement, dtype=np.float64).sum(axis=0)
    return float(kept / max(total, _TINY))


def kept_share_by_family(movement, families) -> dict[str, float]:
    """`kept_share` per intervention family (the family that made each pair's twin)."""
    movement = np.asarray(movement, dtype=np.float64)
    families = check_labels(families, "families", len(movement))
    names, group = np.unique(families, return_inverse=True)
    kept = np.bincount(group, weights=movement[:, 0], minlength=len(names))
    total = np.bincount(group, weights=movement[:, 1], minlength=len(names))
    return {str(name): float(k / max(t, _TINY)) for name, k, t in zip(names, kept, total)}


def movement_kept(Z, Z_intervened, components) -> float:
    """Share of the intervention movement ||Z - Z'||^2 that survives projection onto the subspace.

    Near 0 for an invariant subspace. Measure it on pairs the fit never saw (held-out
    validation pairs) to see whether invariance generalises.
    """
    return kept_share(pair_movement(Z, Z_intervened, components))


def movement_kept_by_family(Z, Z_intervened, families, components) -> dict[str, float]:
    """`movement_kept` per intervention family (the family that made each pair's twin)."""
    return kept_share_by_family(pair_movement(Z, Z_intervened, components), families)


def variance_kept(second_moment, components) -> float:
    """Share of the data's (uncentred) variance tr(S) kept in the subspace: tr(A^T S A) / tr(S)."""
    second_moment = check_matrix(second_moment, "second_moment")
    components = _check_components(components, second_moment.shape[0])
    return float(np.trace(components.T @ second_moment @ components) / max(np.trace(second_moment), _TINY))


def positive_eigenvalues(eigenvalues) -> int:
    """How many eigenvalues of M are positive (beyond rounding): a data-driven upper bound on k.

    A direction with a negative eigenvalue moves more under interventions (times lambda)
    than it carries data variance.
    """
    values = np.asarray(eigenvalues, dtype=np.float64)
    tolerance = len(values) * np.finfo(float).eps * max(np.abs(values).max(initial=0.0), _TINY)
    return int(np.sum(values > tolerance))


def eigengap(eigenvalues, k: int) -> float:
    """|lambda_k - lambda_{k+1}| of the eigenvalues in kept-first order: a large gap means a clear cut at k.

    NaN when k keeps every direction (there is no next eigenvalue).
    """
    values = np.asarray(eigenvalues, dtype=np.float64)
    if not 1 <= k <= len(values):
        raise ValueError(f"k must be in [1, {len(values)}] (the number of eigenvalues), got {k}")
    return float("nan") if k == len(values) else float(abs(values[k - 1] - values[k]))
