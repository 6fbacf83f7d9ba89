"""CLIP-ICM math: moments, the invariant projection, predictors, selection. No I/O, no Prefect."""
from icm_core.moments import InterventionMoments
from icm_core.predict import (
    LinearProbe,
    accuracy,
    harmonic_mean,
    l2_normalize,
    per_class_accuracy,
    zero_shot_logits,
    zero_shot_predict,
)
from icm_core.projection import FORMAT_VERSION, InvariantProjection, eigendecompose, icm_matrix
from icm_core.selection import Selection, select_hyperparameters

__all__ = [
    "FORMAT_VERSION",
    "InterventionMoments",
    "InvariantProjection",
    "LinearProbe",
    "Selection",
    "accuracy",
    "eigendecompose",
    "harmonic_mean",
    "icm_matrix",
    "l2_normalize",
    "per_class_accuracy",
    "select_hyperparameters",
    "zero_shot_logits",
    "zero_shot_predict",
]
