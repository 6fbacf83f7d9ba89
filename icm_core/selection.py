"""Choose (lambda, k) by zero-shot accuracy on held-out data, under DomainBed's model-selection rules.

A rule is a set of validation folds, each a pair (moments to fit on, labelled embeddings
to score on); a cell's score is its mean accuracy over the folds:
- training-domain: one fold, the sources' moments scored on the sources' validation split;
- leave-one-domain-out: one fold per source, the other sources' moments scored on it;
- oracle: one fold, the sources' moments scored on the target's validation split.
Which data goes into the folds is the caller's (the flow's) business; these functions take
whatever they are given and never look for a target.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from icm_core.moments import InterventionMoments
from icm_core.predict import accuracy, zero_shot_predict
from icm_core.projection import InvariantProjection, check_hyperparameters, eigendecompose
from icm_core.validation import check_labels, check_matrix


@dataclass
class ValidationFold:
    """Moments to fit the projection on, and labelled embeddings to score it on."""

    moments: InterventionMoments
    embeddings: np.ndarray
    labels: np.ndarray
    name: str = "validation"


@dataclass
class Selection:
    lam: float
    n_components: int
    accuracy: float
    grid: list[dict]  # one row per (lam, k): {"lam", "n_components", "val_accuracy", "selected"}
    projection: InvariantProjection
    projections: dict  # (lam, k) -> InvariantProjection fitted on the full moments; one eigh per lambda
    eigenvalues: dict  # lam -> every eigenvalue of M (full moments), in kept-first order


def _check_grid(lams, ks, order, dim):
    lams, ks = sorted(set(map(float, lams))), sorted(set(map(int, ks)))
    if not lams or not ks:
        raise ValueError("lams and ks must each hold at least one value")
    for lam in lams:
        for k in ks:
            check_hyperparameters(k, lam, order, dim)
    return lams, ks


def _fit_grid(moments, lams, ks, order, sources):
    """{(lam, k): projection} and {lam: eigenvalues}, one eigendecomposition per lambda."""
    difference_covariance = moments.difference_covariance(**sources)
    projections, spectra = {}, {}
    for lam in lams:
        values, vectors = eigendecompose(moments, lam, order, **sources)
        spectra[lam] = values
        for k in ks:
            projections[(lam, k)] = InvariantProjection.from_decomposition(
                values, vectors, difference_covariance, k, lam, order, **sources
            )
    return projections, spectra


def select_over_folds(
    moments: InterventionMoments,
    folds: list[ValidationFold],
    class_embeddings,
    lams,
    ks,
    order: str = "largest",
    *,
    use_image: bool = True,
    use_text: bool = True,
    predict: Callable = zero_shot_predict,
) -> Selection:
    """Grid search over lams x ks scored by mean accuracy over the folds; the pick refit on `moments`.

    `predict(embeddings, class_embeddings, projection) -> labels` is the zero-shot rule scored.
    Ties go to the first best in (lambda, k) ascending order: the smallest lambda, then the
    smallest k. A fold whose moments are `moments` itself reuses the full fit.
    """
    if not folds:
        raise ValueError("selection needs at least one validation fold")
    classes = check_matrix(class_embeddings, "class_embeddings", width=moments.dim)
    lams, ks = _check_grid(lams, ks, order, moments.dim)
    sources = {"use_image": use_image, "use_text": use_text}
    projections, spectra = _fit_grid(moments, lams, ks, order, sources)

    scores = np.zeros((len(folds), len(lams) * len(ks)))
    for f, fold in enumerate(folds):
        # float32 embeddings stay float32: the zero-shot rule makes its float64 copies a chunk at a time
        embeddings = check_matrix(fold.embeddings, f"embeddings of fold {fold.name!r}", width=moments.dim, dtype=None)
        labels = check_labels(fold.labels, f"labels of fold {fold.name!r}", len(embeddings))
        fitted = projections if fold.moments is moments else _fit_grid(fold.moments, lams, ks, order, sources)[0]
        for cell, key in enumerate(fitted):
            scores[f, cell] = accuracy(labels, predict(embeddings, classes, fitted[key]))

    mean_scores = scores.mean(axis=0)
    best = int(np.argmax(mean_scores))  # first maximum: the (lambda, k)-ascending tie-break
    grid = [
        {"lam": lam, "n_components": k, "val_accuracy": float(score), "selected": cell == best}
        for cell, ((lam, k), score) in enumerate(zip(projections, mean_scores))
    ]
    projection = list(projections.values())[best]
    return Selection(
        lam=projection.lam, n_components=projection.n_components, accuracy=float(mean_scores[best]), grid=grid,
        projection=projection, projections=projections, eigenvalues=spectra,
    )


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
    predict: Callable = zero_shot_predict,
) -> Selection:
    """Training-domain validation: fit on the moments, score on one validation split.

    One eigendecomposition per lambda serves every k. The signature takes source-train
    moments and source-validation data only: there is no way to pass the target.
    """
    fold = ValidationFold(moments, val_embeddings, val_labels)
    return select_over_folds(
        moments, [fold], class_embeddings, lams, ks, order, use_image=use_image, use_text=use_text, predict=predict
    )
