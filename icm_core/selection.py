"""Choose (lambda, k) on source-domain validation data by zero-shot accuracy."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from icm_core.moments import InterventionMoments
from icm_core.predict import accuracy, l2_normalize, zero_shot_predict
from icm_core.projection import InvariantProjection, check_hyperparameters, eigendecompose
from icm_core.validation import check_labels, check_matrix


@dataclass
class Selection:
    lam: float
    n_components: int
    accuracy: float
    grid: list[dict]  # one row per (lam, k): {"lam", "n_components", "val_accuracy", "selected"}
    projection: InvariantProjection
    projections: dict  # (lam, k) -> InvariantProjection; the cells of one lambda share its eigenbasis


def select_hyperparameters(
    moments: InterventionMoments,
    val_embeddings,
    val_labels,
    class_embeddings,
    lams,
    ks,
    order: str = "largest",
    *,
    use_image: bool = True,
    use_text: bool = True,
) -> Selection:
    """Grid search over lams x ks, scored by zero-shot accuracy on the validation split.

    One eigendecomposition per lambda serves every k. Ties go to the first best in
    (lambda, k) ascending order: the smallest lambda, then the smallest k. The signature
    takes source-train moments and source-validation data only: there is no way to pass
    the target.
    """
    val = l2_normalize(check_matrix(val_embeddings, "val_embeddings", width=moments.dim))
    labels = check_labels(val_labels, "val_labels", len(val))
    classes = check_matrix(class_embeddings, "class_embeddings", width=moments.dim)
    lams, ks = sorted(set(map(float, lams))), sorted(set(map(int, ks)))
    if not lams or not ks:
        raise ValueError("lams and ks must each hold at least one value")
    for lam in lams:
        for k in ks:
            check_hyperparameters(k, lam, order, moments.dim)

    sources = {"use_image": use_image, "use_text": use_text}
    difference_covariance = moments.difference_covariance(**sources)
    grid, projections, best = [], {}, None
    for lam in lams:
        values, vectors = eigendecompose(moments, lam, order, **sources)
        for k in ks:
            projection = InvariantProjection.from_decomposition(
                values, vectors, difference_covariance, k, lam, order, **sources
            )
            projections[(lam, k)] = projection
            score = accuracy(labels, zero_shot_predict(val, classes, projection))
            grid.append({"lam": lam, "n_components": k, "val_accuracy": score, "selected": False})
            if best is None or score > best[0]:
                best = (score, len(grid) - 1, projection)
    score, index, projection = best
    grid[index]["selected"] = True
    return Selection(
        lam=projection.lam, n_components=projection.n_components, accuracy=score, grid=grid,
        projection=projection, projections=projections,
    )
