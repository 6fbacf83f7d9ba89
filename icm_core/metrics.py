"""Classification metrics beyond top-1: top-k and balanced accuracy (DomainBed / CLIP_benchmark conventions)."""
from __future__ import annotations

import numpy as np

from icm_core.validation import check_labels, check_matrix


def top_k_labels(scores, k: int, labels=None) -> np.ndarray:
    """n x k: the labels of each row's k highest scores, best first (ties: the lower column first).

    `labels` names the score columns (a probe's `classes_`); by default column j is label j.
    """
    scores = check_matrix(scores, "scores")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= scores.shape[1]:
        raise ValueError(f"k must be an integer in [1, {scores.shape[1]}] (the number of score columns), got {k!r}")
    columns = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return columns if labels is None else np.asarray(labels)[columns]


def top_k_correct(y_true, top_labels) -> np.ndarray:
    """Per row: whether the true label is among its top-k labels (n x k, from `top_k_labels`)."""
    top_labels = np.asarray(top_labels)
    y_true = check_labels(y_true, "y_true", len(top_labels))
    if top_labels.ndim != 2:
        raise ValueError(f"top_labels must be n x k, got shape {top_labels.shape}")
    return (top_labels == y_true[:, None]).any(axis=1)


def top_k_accuracy(y_true, scores, k: int = 5, labels=None) -> float:
    """Share of rows whose true label is among the k best-scored labels."""
    hits = top_k_correct(y_true, top_k_labels(scores, k, labels))
    if len(hits) == 0:
        raise ValueError("top-k accuracy of an empty set is undefined")
    return float(hits.mean())


def balanced_accuracy(y_true, y_pred) -> float:
    """Mean per-class recall over the classes present in y_true (scikit-learn's balanced_accuracy_score)."""
    y_true = np.asarray(y_true)
    y_pred = check_labels(y_pred, "y_pred", len(y_true))
    if len(y_true) == 0:
        raise ValueError("balanced accuracy of an empty set is undefined")
    return float(np.mean([np.mean(y_pred[y_true == label] == label) for label in np.unique(y_true)]))


def score_matrix(scores) -> np.ndarray:
    """n x classes scores; scikit-learn's binary decision_function gives one column (the positive class)."""
    scores = np.asarray(scores, dtype=np.float64)
    return np.column_stack([-scores, scores]) if scores.ndim == 1 else scores
