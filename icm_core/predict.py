"""Zero-shot and linear-probe predictors, with or without the invariant projection, and metrics."""
from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression

from icm_core.chunks import map_row_chunks
from icm_core.metrics import score_matrix
from icm_core.probe import decision_scores, fit_logistic, row_blocks
from icm_core.validation import check_labels, check_matrix, check_matrix_float32

# CLIP's learned logit scale is ~100; argmax does not depend on it, softmax does.
CLIP_LOGIT_SCALE = 100.0


def l2_normalize(X) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    norms = np.linalg.norm(X, axis=-1, keepdims=True)
    return X / np.maximum(norms, np.finfo(float).tiny)


def prompt_ensemble(prompt_embeddings, groups, n_groups: int, projection=None) -> np.ndarray:
    """CLIP's prompt ensemble: per group (class), the normalised mean of its prompts' normalised embeddings.

    With a fitted projection each prompt's embedding is projected before it is normalised: what open_clip's
    users (CLIP_benchmark among them) compute with an exported CLIP-ICM model, whose text tower ends in the
    projection. The recipe instead projects the ensemble of the raw space (zero_shot_logits).
    """
    prompts = check_matrix(prompt_embeddings, "prompt_embeddings")
    prompts = l2_normalize(prompts if projection is None else projection.transform(prompts))
    means = np.zeros((n_groups, prompts.shape[1]))
    np.add.at(means, np.asarray(groups), prompts)
    return l2_normalize(means)


def zero_shot_logits(image_embeddings, class_embeddings, projection=None, scale: float = CLIP_LOGIT_SCALE, *,
                     normalize_images: bool = True) -> np.ndarray:
    """Logits of each image against each class text embedding.

    Both sides are L2-normalised, then (when a fitted projection is given) projected
    into the invariant subspace, as in the paper, then compared by dot product.
    normalize_images=False leaves the images raw, as the authors' released code does.
    """
    images = check_matrix(image_embeddings, "image_embeddings")
    images = l2_normalize(images) if normalize_images else images
    classes = l2_normalize(check_matrix(class_embeddings, "class_embeddings", width=images.shape[1]))
    if projection is not None:
        images, classes = projection.transform(images), projection.transform(classes)
    return scale * images @ classes.T


def zero_shot_predict(image_embeddings, class_embeddings, projection=None, *, normalize_images: bool = True) -> np.ndarray:
    """The argmax of `zero_shot_logits`, a chunk of rows at a time."""
    return map_row_chunks(
        lambda part: zero_shot_logits(part, class_embeddings, projection, normalize_images=normalize_images).argmax(axis=1),
        image_embeddings)


SOLVERS = ("torch", "sklearn")


class LinearProbe:
    """Logistic regression on (optionally projected) embeddings; C and max_iter as the authors.

    solver="torch" (default) minimises scikit-learn's objective with full-batch L-BFGS in
    float32 on `device` (auto: the GPU when there is one), never copying X: a projection
    enters the logits as X (A W), and X may be a list of row blocks (a catalog's per-domain
    arrays), read in place. `start_from`, a fitted torch probe of the same classes (on the same
    rows), warm-starts L-BFGS at its solution carried into this probe's features: the same
    optimum in fewer passes. solver="sklearn" is the authors' LogisticRegression, from zero.
    """

    def __init__(self, projection=None, C: float = 0.316, max_iter: int = 1000, solver: str = "torch",
                 device: str = "auto", start_from: "LinearProbe | None" = None):
        if solver not in SOLVERS:
            raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
        self.projection = projection
        self.C = C
        self.max_iter = max_iter
        self.solver = solver
        self.device = device
        self.start_from = start_from

    def _features(self, X) -> np.ndarray:
        X = check_matrix(X, "X")
        return X if self.projection is None else self.projection.transform(X)

    def _basis(self):
        return None if self.projection is None else self.projection.components_

    def _width(self):
        return None if self.projection is None else self.projection.n_features_in_

    def _initial(self):
        """start_from's (W, b) in this probe's features, when it is a fitted torch probe of the same classes."""
        other = self.start_from
        if (other is None or getattr(other, "solver", None) != "torch" or not hasattr(other, "model_")
                or not np.array_equal(other.classes_, self.classes_)):
            return None
        weight = other.model_.weight if other.projection is None else other._basis() @ other.model_.weight
        return (weight if self.projection is None else self._basis().T @ weight), other.model_.bias

    def fit(self, X, y) -> "LinearProbe":
        given = row_blocks(X)
        blocks = [block for block in given if len(block)] or given[:1]
        if self.solver == "sklearn":
            features = self._features(blocks[0] if len(blocks) == 1 else np.concatenate(blocks))
            y = check_labels(y, "y", len(features))
        else:
            blocks = [check_matrix_float32(block, "X", width=self._width()) for block in blocks]
            y = check_labels(y, "y", sum(map(len, blocks)))
        self.classes_, indices = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError("y must contain at least 2 classes to fit a linear probe")
        if self.solver == "sklearn":
            self.model_ = LogisticRegression(C=self.C, max_iter=self.max_iter, random_state=0).fit(features, y)
            return self
        self.model_ = fit_logistic(blocks, indices, len(self.classes_), self.C, projection=self._basis(),
                                   init=self._initial(), max_iter=self.max_iter, device=self.device)
        return self

    def predict(self, X) -> np.ndarray:
        if not hasattr(self, "model_"):
            raise ValueError("this LinearProbe is not fitted yet: call fit(X, y) first")
        if self.solver == "sklearn":
            return map_row_chunks(lambda part: self.model_.predict(self._features(part)), X)
        return map_row_chunks(lambda part: self.classes_[self.decision_function(part).argmax(axis=1)], X)

    def decision_function(self, X) -> np.ndarray:
        """n x classes_ scores (columns in `classes_` order), for top-k metrics."""
        if not hasattr(self, "model_"):
            raise ValueError("this LinearProbe is not fitted yet: call fit(X, y) first")
        if self.solver == "sklearn":
            return score_matrix(self.model_.decision_function(self._features(X)))
        X = check_matrix_float32(X, "X", width=self._width())
        return decision_scores(X, self.model_.weight, self.model_.bias, projection=self._basis(), device=self.device)


def accuracy(y_true, y_pred) -> float:
    y_true = np.asarray(y_true)
    y_pred = check_labels(y_pred, "y_pred", len(y_true))
    if len(y_true) == 0:
        raise ValueError("accuracy of an empty set is undefined")
    return float(np.mean(y_true == y_pred))


def per_class_accuracy(y_true, y_pred) -> dict:
    """{class: accuracy over the samples of that class}, for the classes present in y_true."""
    y_true = np.asarray(y_true)
    y_pred = check_labels(y_pred, "y_pred", len(y_true))
    return {label.item(): float(np.mean(y_pred[y_true == label] == label)) for label in np.unique(y_true)}


def harmonic_mean(base_accuracy: float, novel_accuracy: float) -> float:
    """2 b n / (b + n), the open-class summary (0 when both are 0)."""
    total = base_accuracy + novel_accuracy
    return 0.0 if total == 0 else 2 * base_accuracy * novel_accuracy / total
