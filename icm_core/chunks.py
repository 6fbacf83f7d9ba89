"""Row-chunked evaluation: a function of rows applied a chunk at a time, so the float64 temporaries of
scoring (normalised copies, projections, logits, rankings) stay O(chunk x d) whatever n is.

Rows are independent in every function mapped here, so the result equals one call on all rows.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

CHUNK_ROWS = 2048


def map_row_chunks(fn: Callable, X, chunk_rows: int = CHUNK_ROWS) -> np.ndarray:
    """fn(X[i : i + chunk_rows]) for each chunk of rows, stacked; an empty X goes to fn as it is (fn's own error)."""
    X = np.asarray(X)
    if len(X) <= chunk_rows:
        return fn(X)
    return np.concatenate([fn(X[start : start + chunk_rows]) for start in range(0, len(X), chunk_rows)])
