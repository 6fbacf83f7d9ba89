"""A linear structural causal model in which the invariant subspace is known.

Latent z_inv (k dims) carries the label; latent z_var (d - k dims) is style. An
invertible matrix G mixes [z_inv; z_var] into d-dim "embeddings", as the paper's
identifiability argument assumes of CLIP. Interventions perturb z_var only, so every
intervention difference lies in span(G_var), and the true invariant readout subspace
is its orthogonal complement: projecting onto it leaves a function of z_inv alone.
In training environments z_var is spuriously correlated with the label; in the test
environment the correlation is reversed.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.linalg import subspace_angles


@dataclass
class Environment:
    Z: np.ndarray  # n x d originals
    Z_intervened: np.ndarray  # n x d, z_var perturbed, z_inv untouched
    labels: np.ndarray  # n
    spurious_agreement: float  # P(style code names the true class)


class SyntheticSCM:
    def __init__(
        self,
        dim: int = 64,
        n_invariant: int = 20,
        n_classes: int = 5,
        class_separation: float = 0.35,
        style_scale: float = 3.0,
        spurious_strength: float = 3.0,
        intervention_scale: float = 1.0,
        seed: int = 0,
    ):
        if not 0 < n_invariant < dim:
            raise ValueError(f"n_invariant must be in (0, dim={dim}), got {n_invariant}")
        rng = np.random.default_rng(seed)
        self.dim, self.n_invariant, self.n_classes = dim, n_invariant, n_classes
        self.style_scale, self.intervention_scale = style_scale, intervention_scale
        left, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
        right, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
        # well-conditioned but far from orthogonal: invariant and style directions overlap
        self.mixing = left @ np.diag(rng.uniform(0.5, 2.0, dim)) @ right.T
        self.class_means = class_separation * rng.normal(size=(n_classes, n_invariant))
        self.style_codes = spurious_strength * rng.normal(size=(n_classes, dim - n_invariant))
        self._seed = seed

    @property
    def invariant_subspace(self) -> np.ndarray:
        """d x k orthonormal basis of span(G_var)^perp, the subspace interventions never move."""
        u, _, _ = np.linalg.svd(self.mixing[:, self.n_invariant :], full_matrices=True)
        return u[:, self.dim - self.n_invariant :]

    @property
    def class_embeddings(self) -> np.ndarray:
        """The "text" embedding of each class: its mean invariant factors, neutral style."""
        latent = np.hstack([self.class_means, np.zeros((self.n_classes, self.dim - self.n_invariant))])
        return latent @ self.mixing.T

    def sample(self, n: int, spurious_agreement: float, seed: int) -> Environment:
        rng = np.random.default_rng([self._seed, seed])
        labels = rng.integers(self.n_classes, size=n)
        agrees = rng.random(n) < spurious_agreement
        other = (labels + rng.integers(1, self.n_classes, size=n)) % self.n_classes
        style_class = np.where(agrees, labels, other)
        z_inv = self.class_means[labels] + rng.normal(size=(n, self.n_invariant))
        z_var = self.style_codes[style_class] + self.style_scale * rng.normal(size=(n, self.dim - self.n_invariant))
        z_var_intervened = z_var + self.intervention_scale * self.style_scale * rng.normal(size=z_var.shape)
        return Environment(
            Z=np.hstack([z_inv, z_var]) @ self.mixing.T,
            Z_intervened=np.hstack([z_inv, z_var_intervened]) @ self.mixing.T,
            labels=labels,
            spurious_agreement=spurious_agreement,
        )

    def environments(self, n: int, train_agreements=(0.9, 0.8), test_agreement: float = 0.1) -> dict[str, Environment]:
        """Training environments where style predicts the label, and a test one where it misleads."""
        envs = {f"train{i}": self.sample(n, p, seed=i) for i, p in enumerate(train_agreements)}
        envs["test"] = self.sample(n, test_agreement, seed=len(train_agreements))
        return envs


def largest_principal_angle_deg(A, B) -> float:
    """The largest principal angle between span(A) and span(B), in degrees."""
    return float(np.degrees(subspace_angles(np.asarray(A), np.asarray(B)).max()))
