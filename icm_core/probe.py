"""Multinomial logistic regression in torch, with scikit-learn's objective, solved by full-batch L-BFGS.

Objective (scikit-learn's `LogisticRegression(C)`, multinomial, intercept not penalised):

    mean_i CE(x_i W + b, y_i) + ||W||^2 / (2 C n)

X is an n x d array or a list of row blocks of one (a catalog's per-domain arrays), read in
place: no stacked copy. Rows are visited in chunks, so memory beyond the features is
O(chunk x classes) on any device. With a projection A (d x k, orthonormal columns) and
k <= d/2 the features are X A, made chunk by chunk in float32 (n x k, never a float64 copy of
X): each L-BFGS pass then costs k/d of a pass over X. For larger k the logits are X (A W):
each pass reads X itself, at about the same cost, and nothing n x k is held. The gradient is
written out (softmax minus one-hot, in place) rather than taped, so a pass holds one
chunk x classes buffer.
The stopping rule is scipy's (which scikit-learn uses): the largest absolute gradient entry
below `tol`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from icm_core.devices import resolve_device


def probe_device(device: str = "auto") -> torch.device:
    """The device of `resolve_device`, but the CPU for MPS: the objective and its sums are float64, which MPS lacks."""
    resolved = torch.device(resolve_device(device))
    return torch.device("cpu") if resolved.type == "mps" else resolved


@dataclass
class LogisticFit:
    weight: np.ndarray  # k x C (k = d, or the projection's width)
    bias: np.ndarray  # C
    objective: float
    n_iter: int
    n_evaluations: int  # objective + gradient passes over X, line searches included
    converged: bool


def chunk_rows_for(device: torch.device) -> int:
    """Rows per pass chunk: a chunk x classes buffer of a few MB on the CPU; larger on a GPU, fewer launches."""
    return 65536 if device.type == "cuda" else 8192


def row_blocks(X) -> list:
    """An n x d array, or a list of row blocks of one (2-D arrays), as a list of blocks."""
    is_blocks = isinstance(X, (list, tuple)) and len(X) > 0 and all(getattr(b, "ndim", 0) == 2 for b in X)
    return list(X) if is_blocks else [X]


def _tensor(array, device, dtype=torch.float32) -> torch.Tensor:
    # zero-copy on the CPU when the array is already contiguous float32
    return torch.as_tensor(np.ascontiguousarray(array), device=device).to(dtype)


def _chunks(blocks, chunk_rows: int):
    for block in blocks:
        for start in range(0, len(block), chunk_rows):
            yield block[start : start + chunk_rows]


def fit_logistic(
    X,
    y: np.ndarray,
    n_classes: int,
    C: float,
    *,
    projection: np.ndarray | None = None,
    init: tuple[np.ndarray, np.ndarray] | None = None,
    max_iter: int = 1000,
    tol: float = 1e-4,
    history_size: int = 10,
    chunk_rows: int | None = None,
    device: str = "auto",
) -> LogisticFit:
    """Minimise the objective above over (W, b); y holds class indices 0..n_classes-1.

    `init` = (W, b) starts L-BFGS there instead of at zero (a warm start: the same optimum,
    fewer passes when it is close).
    """
    if C <= 0:
        raise ValueError(f"C must be > 0, got {C}")
    torch_device = probe_device(device)
    chunk_rows = chunk_rows or chunk_rows_for(torch_device)
    blocks = [_tensor(block, torch_device) for block in row_blocks(X)]
    basis = None if projection is None else _tensor(projection, torch_device)
    if basis is not None and materialise(basis):
        blocks, basis = [project(blocks, basis, chunk_rows)], None
    features = list(_chunks(blocks, chunk_rows))
    n = sum(len(chunk) for chunk in features)
    targets = torch.as_tensor(np.asarray(y, dtype=np.int64), device=torch_device).split([len(c) for c in features])
    width = features[0].shape[1] if basis is None else basis.shape[1]
    if init is None:
        weight = torch.zeros(width, n_classes, device=torch_device)
        bias = torch.zeros(n_classes, device=torch_device)
    else:
        weight, bias = (_tensor(value, torch_device).clone() for value in init)
        if weight.shape != (width, n_classes) or bias.shape != (n_classes,):
            raise ValueError(f"init must be a {width} x {n_classes} weight and a {n_classes} bias, "
                             f"got {tuple(weight.shape)} and {tuple(bias.shape)}")
    weight.requires_grad_(True)
    bias.requires_grad_(True)
    optimizer = torch.optim.LBFGS(
        [weight, bias], lr=1.0, max_iter=max_iter, max_eval=2 * max_iter, tolerance_grad=tol,
        tolerance_change=1e-9, history_size=history_size, line_search_fn="strong_wolfe",
    )
    penalty_scale = 1.0 / (2.0 * C * n)

    @torch.no_grad()
    def closure():
        total = torch.zeros((), dtype=torch.float64, device=torch_device)
        full = weight if basis is None else basis @ weight  # the weights on the features the chunks hold
        full_grad = torch.zeros_like(full)
        bias_grad = torch.zeros_like(bias)
        for chunk, labels in zip(features, targets):
            logits = torch.addmm(bias, chunk, full)
            log_norm = torch.logsumexp(logits, dim=1)
            total += (log_norm - logits.gather(1, labels[:, None]).squeeze(1)).sum(dtype=torch.float64)
            residual = logits.sub_(log_norm[:, None]).exp_()  # softmax, in place
            residual[torch.arange(len(labels), device=torch_device), labels] -= 1.0  # minus one-hot
            full_grad.addmm_(chunk.T, residual)
            bias_grad += residual.sum(dim=0)
        weight_grad = full_grad if basis is None else basis.T @ full_grad
        weight.grad = weight_grad.div_(n).add_(weight, alpha=2.0 * penalty_scale)
        bias.grad = bias_grad.div_(n)
        return total / n + penalty_scale * (weight.double() ** 2).sum()  # float64: L-BFGS compares objectives

    optimizer.step(closure)
    state = optimizer.state[weight]
    objective = float(closure())
    gradient = max(weight.grad.abs().max().item(), bias.grad.abs().max().item())
    return LogisticFit(
        weight=weight.detach().cpu().numpy(), bias=bias.detach().cpu().numpy(), objective=objective,
        n_iter=int(state.get("n_iter", 0)), n_evaluations=int(state.get("func_evals", 0)), converged=gradient <= tol,
    )


def materialise(basis: torch.Tensor) -> bool:
    """Whether the probe holds X A (n x k) or passes through X (A W): a pass over X A costs k/d of one
    over X, so for k <= d/2 holding it at least halves each pass; above that the saving is small and
    the n x k copy is not."""
    dim, k = basis.shape
    return 2 * k <= dim


def project(blocks, basis: torch.Tensor, chunk_rows: int) -> torch.Tensor:
    """The row blocks stacked and multiplied by basis, chunk by chunk, into one n x k tensor."""
    out = torch.empty(sum(len(block) for block in blocks), basis.shape[1], dtype=basis.dtype, device=basis.device)
    start = 0
    for chunk in _chunks(blocks, chunk_rows):
        torch.mm(chunk, basis, out=out[start : start + len(chunk)])
        start += len(chunk)
    return out


def decision_scores(X, weight, bias, *, projection=None, chunk_rows: int | None = None, device: str = "auto") -> np.ndarray:
    """n x classes scores X (A W) + b, float32, chunk by chunk."""
    torch_device = probe_device(device)
    chunk_rows = chunk_rows or chunk_rows_for(torch_device)
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
