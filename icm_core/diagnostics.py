"""Diagnostics of a fitted invariant projection: what it keeps, and how clearly k is determined.

Each is a share in [0, 1] or a property of the spectrum of M = Z^T Z / n - lambda D^T D / n.
"""
from __future__ import annotations

import numpy as np

from icm_core.validation import check_labels, check_matrix, check_pair

_TINY = np.finfo(float).tiny


def _check_components(components, dim: int) -> np.ndarray:
    components = check_matrix(components, "components")
    if components.shape[0] != dim:
        raise ValueError(f"components has {components.shape[0]} rows; expected {dim} (the embedding dimension)")
    return components


def movement_kept(Z, Z_intervened, components) -> float:
    """Share of the intervention movement ||Z - Z'||^2 that survives projection onto the subspace.

    Near 0 for an invariant subspace. Measure it on pairs the fit never saw (held-out
    validation pairs) to see whether invariance generalises.
    """
    Z, Z_intervened = check_pair(Z, Z_intervened, min_rows=1)
    components = _check_components(components, Z.shape[1])
    differences = Z - Z_intervened
    return float(np.sum((differences @ components) ** 2) / max(np.sum(differences**2), _TINY))


def movement_kept_by_family(Z, Z_intervened, families, components) -> dict[str, float]:
    """`movement_kept` per intervention family (the family that made each pair's twin)."""
    families = check_labels(families, "families", len(np.asarray(Z)))
    return {
        str(family): movement_kept(np.asarray(Z)[families == family], np.asarray(Z_intervened)[families == family], components)
        for family in np.unique(families)
    }


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
