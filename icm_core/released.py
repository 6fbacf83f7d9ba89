"""The authors' released recipe (ML-TASA/CLIP-ICM), reproduced exactly; `--preset released` uses it.

It differs from the method as this package runs it by default:
- image embeddings stay raw (unnormalised) when fitted, projected and classified;
- zero-shot: class text embeddings are L2-normalised, then projected, and NOT re-normalised;
  images are projected raw; logits are 100 * img @ txt^T;
- the probe is scikit-learn LogisticRegression(C=0.316, max_iter=1000, random_state=0) on the
  projected raw features.
The smallest-eigenvalue slicing is `InvariantProjection(order="released")`.
"""
from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression

from icm_core.chunks import map_row_chunks
from icm_core.metrics import score_matrix
from icm_core.predict import zero_shot_logits
from icm_core.probe import row_blocks
from icm_core.validation import check_labels, check_matrix

RELEASED_PROBE = {"C": 0.316, "max_iter": 1000, "random_state": 0}


def released_zero_shot_logits(image_embeddings, class_embeddings, projection=None) -> np.ndarray:
    """Raw images, L2-normalised class texts, both projected with no re-normalisation; 100 * img @ txt.T."""
    return zero_shot_logits(image_embeddings, class_embeddings, projection, normalize_images=False)


def released_zero_shot_predict(image_embeddings, class_embeddings, projection=None) -> np.ndarray:
    return map_row_chunks(lambda part: released_zero_shot_logits(part, class_embeddings, projection).argmax(axis=1),
                          image_embeddings)


class ReleasedLinearProbe:
    """The released probe: LogisticRegression(C=0.316, max_iter=1000, random_state=0) on projected raw features."""

    def __init__(self, projection=None):
        self.projection = projection

    def _features(self, X) -> np.ndarray:
        X = check_matrix(X, "X")
        return X if self.projection is None else self.projection.transform(X)

    def fit(self, X, y) -> "ReleasedLinearProbe":
        blocks = row_blocks(X)  # a list of row blocks is stacked: scikit-learn takes one array
        features = self._features(blocks[0] if len(blocks) == 1 else np.concatenate(blocks))
        y = check_labels(y, "y", len(features))
        if len(np.unique(y)) < 2:
            raise ValueError("y must contain at least 2 classes to fit a linear probe")
        self.model_ = LogisticRegression(**RELEASED_PROBE).fit(features, y)
        self.classes_ = self.model_.classes_
        return self

    def _check_fitted(self):
        if not hasattr(self, "model_"):
            raise ValueError("this ReleasedLinearProbe is not fitted yet: call fit(X, y) first")

    def predict(self, X) -> np.ndarray:
        self._check_fitted()
        return self.model_.predict(self._features(X))

    def decision_function(self, X) -> np.ndarray:
        """n x classes_ scores (columns in `classes_` order), for top-k."""
        self._check_fitted()
        return score_matrix(self.model_.decision_function(self._features(X)))
