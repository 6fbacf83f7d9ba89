"""CLIP-ICM math: moments, the invariant projection, predictors, selection. No I/O, no Prefect."""
from icm_core.diagnostics import (
    eigengap,
    kept_share,
    kept_share_by_family,
    movement_kept,
    movement_kept_by_family,
    pair_movement,
    positive_eigenvalues,
    variance_kept,
)
from icm_core.metrics import balanced_accuracy, top_k_accuracy, top_k_correct, top_k_labels
from icm_core.moments import InterventionMoments
from icm_core.predict import (
    LinearProbe,
    accuracy,
    harmonic_mean,
    l2_normalize,
    per_class_accuracy,
    prompt_ensemble,
    zero_shot_logits,
    zero_shot_predict,
)
from icm_core.projection import FORMAT_VERSION, InvariantProjection, eigendecompose, icm_matrix
from icm_core.selection import Selection, ValidationFold, select_hyperparameters, select_over_folds
from icm_core.uncertainty import PairedDifference, mcnemar_exact, paired_difference

__all__ = [
    "FORMAT_VERSION",
    "InterventionMoments",
    "InvariantProjection",
    "LinearProbe",
    "PairedDifference",
    "Selection",
    "ValidationFold",
    "accuracy",
    "balanced_accuracy",
    "eigendecompose",
    "eigengap",
    "harmonic_mean",
    "icm_matrix",
    "kept_share",
    "kept_share_by_family",
    "l2_normalize",
    "mcnemar_exact",
    "movement_kept",
    "movement_kept_by_family",
    "pair_movement",
    "paired_difference",
    "per_class_accuracy",
    "prompt_ensemble",
    "positive_eigenvalues",
    "select_hyperparameters",
    "select_over_folds",
    "top_k_accuracy",
    "top_k_correct",
    "top_k_labels",
    "variance_kept",
    "zero_shot_logits",
    "zero_shot_predict",
]
