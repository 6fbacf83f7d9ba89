"""Multinomial logistic regression in torch, with scikit-learn's objective, solved by full-batch L-BFGS.

Objective (scikit-learn's `LogisticRegression(C)`, multinomial, intercept not penalised):

    mean_i CE(x_i W + b, y_i) + ||W||^2 / (2 C n)

Rows are visited in chunks, so memory beyond the features is O(chunk x classes) on any device.
With a projection A (d x k, orthonormal columns) the features are X A, made chunk by chunk in
float32 (n x k, never a float64 copy of X): each L-BFGS pass then costs k/d of a pass over X.
The stopping rule is scipy's (which scikit-learn uses): the largest absolute gradient entry
below `tol`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


def resolve_device(device: str = "auto") -> torch.device:
    """auto: the GPU when there is one, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@dataclass
class LogisticFit:
    weight: np.ndarray  # k x C (k = d, or the projection's width)
    bias: np.ndarray  # C
    objective: float
    n_iter: int
    n_evaluations: int  # objective + gradient passes over X, line searches included
    converged: bool


def _tensor(array, device, dtype=torch.float32) -> torch.Tensor:
    # zero-copy on the CPU when the array is already contiguous float32
    return torch.as_tensor(np.ascontiguousarray(array), device=device).to(dtype)


def fit_logistic(
    X: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    C: float,
    *,
    projection: np.ndarray | None = None,
    max_iter: int = 1000,
    tol: float = 1e-4,
    history_size: int = 10,
    chunk_rows: int = 32768,
    device: str = "auto",
) -> LogisticFit:
    """Minimise the objective above over (W, b); y holds class indices 0..n_classes-1."""
    if C <= 0:
        raise ValueError(f"C must be > 0, got {C}")
    torch_device = resolve_device(device)
    n = len(X)
    features = _tensor(X, torch_device)
    if projection is not None:
        features = project(features, _tensor(projection, torch_device), chunk_rows)
    targets = torch.as_tensor(np.asarray(y, dtype=np.int64), device=torch_device)
    width = features.shape[1]
    weight = torch.zeros(width, n_classes, device=torch_device, requires_grad=True)
    bias = torch.zeros(n_classes, device=torch_device, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [weight, bias], lr=1.0, max_iter=max_iter, max_eval=2 * max_iter, tolerance_grad=tol,
        tolerance_change=1e-9, history_size=history_size, line_search_fn="strong_wolfe",
    )
    penalty_scale = 1.0 / (2.0 * C * n)

    def closure():
        optimizer.zero_grad()
        total = torch.zeros((), dtype=torch.float64, device=torch_device)
        for start in range(0, n, chunk_rows):
            logits = torch.addmm(bias, features[start : start + chunk_rows], weight)
            loss = F.cross_entropy(logits, targets[start : start + chunk_rows], reduction="sum") / n
            loss.backward()
            total += loss.detach()
        penalty = penalty_scale * (weight * weight).sum()
        penalty.backward()
        return total + penalty.detach()  # float64: L-BFGS compares successive objectives

    optimizer.step(closure)
    state = optimizer.state[weight]
    objective = float(closure())
    gradient = max(weight.grad.abs().max().item(), bias.grad.abs().max().item())
    return LogisticFit(
        weight=weight.detach().cpu().numpy(), bias=bias.detach().cpu().numpy(), objective=objective,
        n_iter=int(state.get("n_iter", 0)), n_evaluations=int(state.get("func_evals", 0)), converged=gradient <= tol,
    )


def project(features: torch.Tensor, basis: torch.Tensor, chunk_rows: int) -> torch.Tensor:
    """features @ basis, written chunk by chunk into one n x k tensor."""
    out = torch.empty(len(features), basis.shape[1], dtype=features.dtype, device=features.device)
    for start in range(0, len(features), chunk_rows):
        torch.mm(features[start : start + chunk_rows], basis, out=out[start : start + chunk_rows])
    return out


def decision_scores(X, weight, bias, *, projection=None, chunk_rows: int = 32768, device: str = "auto") -> np.ndarray:
    """n x classes scores X (A W) + b, float32, chunk by chunk."""
    torch_device = resolve_device(device)
    with torch.no_grad():
        full = _tensor(weight, torch_device)
        if projection is not None:
            full = _tensor(projection, torch_device) @ full
        b = _tensor(bias, torch_device)
        out = [
            torch.addmm(b, _tensor(X[start : start + chunk_rows], torch_device), full).cpu().numpy()
            for start in range(0, len(X), chunk_rows)
        ]
    return np.concatenate(out) if out else np.zeros((0, len(bias)), np.float32)
