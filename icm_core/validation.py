"""Input checks shared by the estimator, the moments and the predictors."""
from __future__ import annotations

import numpy as np


def check_matrix(X, name: str, *, width: int | None = None, min_rows: int = 1, dtype=np.float64) -> np.ndarray:
    """A finite 2-D array of `dtype` (no copy when X already is one; dtype=None: X's own float dtype, float64
    for anything else), or a ValueError that names the argument."""
    X = np.asarray(X)
    X = np.asarray(X, dtype=dtype or (X.dtype if np.issubdtype(X.dtype, np.floating) else np.float64))
    if X.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (rows x features), got {X.ndim}-D shape {X.shape}")
    if len(X) < min_rows:
        raise ValueError(f"{name} needs at least {min_rows} rows, got {len(X)}")
    if width is not None and X.shape[1] != width:
        raise ValueError(f"{name} has {X.shape[1]} columns; expected {width} (the fitted dimension)")
    # one float per row instead of an n x d boolean mask; a NaN or inf anywhere makes its row sum non-finite
    finite = np.isfinite(X.sum(axis=1, dtype=np.float64))
    if not finite.all():
        raise ValueError(f"{name} contains NaN or inf in {int((~finite).sum())} row(s); drop or repair them before fitting")
    return X


def check_matrix_float32(X, name: str, *, width: int | None = None, min_rows: int = 1) -> np.ndarray:
    """check_matrix in float32: probes on large X never make a float64 copy."""
    return check_matrix(X, name, width=width, min_rows=min_rows, dtype=np.float32)


def check_pair(Z, Z_intervened, *, width: int | None = None, min_rows: int = 1, dtype=np.float64):
    Z = check_matrix(Z, "Z", width=width, min_rows=min_rows, dtype=dtype)
    Z_intervened = check_matrix(Z_intervened, "Z_intervened", width=width, min_rows=min_rows, dtype=dtype)
    if Z.shape != Z_intervened.shape:
        raise ValueError(
            f"Z and Z_intervened must have the same shape (row i of one is the intervened twin of "
            f"row i of the other), got {Z.shape} and {Z_intervened.shape}"
        )
    return Z, Z_intervened


def check_labels(y, name: str, n_rows: int) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != n_rows:
        raise ValueError(f"{name} must be 1-D with {n_rows} entries (one per row), got shape {y.shape}")
    return y
