"""The CLIP-ICM invariant linear projection (Song et al., ICML 2025, method section 3)."""
from __future__ import annotations

import io
import json

import numpy as np

from icm_core.moments import InterventionMoments
from icm_core.validation import check_matrix, check_pair

FORMAT_VERSION = 1
ORDERS = ("largest", "released")


def check_hyperparameters(n_components, lam, order, dim: int | None = None) -> None:
    if isinstance(n_components, bool) or not isinstance(n_components, (int, np.integer)) or n_components <= 0:
        raise ValueError(f"n_components (k) must be a positive integer, got {n_components!r}")
    if dim is not None and n_components > dim:
        raise ValueError(f"n_components (k) = {n_components} exceeds the embedding dimension d = {dim}")
    if not np.isfinite(lam) or lam < 0:
        raise ValueError(f"lam (lambda) must be a finite number >= 0, got {lam!r}")
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")


def icm_matrix(moments: InterventionMoments, lam: float, *, use_image=True, use_text=True) -> np.ndarray:
    """M = Z^T Z / n - lam * D^T D / n."""
    return moments.second_moment() - lam * moments.difference_covariance(use_image=use_image, use_text=use_text)


def eigendecompose(moments: InterventionMoments, lam: float, order: str = "largest", **sources):
    """Eigenvalues and eigenvectors of M, sorted so that the first k columns are the kept ones.

    "largest": directions that carry the data's variance but do not move under
    interventions (the method). "released": the smallest eigenvalues, as the authors'
    released code slices them; kept only to reproduce that code.
    """
    check_hyperparameters(1, lam, order)
    values, vectors = np.linalg.eigh(icm_matrix(moments, lam, **sources))
    if order == "largest":
        values, vectors = values[::-1], vectors[:, ::-1]
    # eigh's sign is arbitrary; fix it so the same data always gives the same file
    signs = np.sign(vectors[np.abs(vectors).argmax(axis=0), np.arange(vectors.shape[1])])
    return values.copy(), np.ascontiguousarray(vectors * signs)


class InvariantProjection:
    """Projection onto the k-dim subspace that interventions do not move.

    Parameters
    ----------
    n_components : k, the dimension kept.
    lam : lambda >= 0, the weight of the intervention-difference covariance.
    order : "largest" (default, the method) or "released" (the authors' released code).
    use_image, use_text : which intervention sources `fit_moments` uses.

    Learned: ``components_`` (d x k, orthonormal columns), ``eigenvalues_`` (k),
    ``retained_intervention_`` (share of intervention movement, trace of D^T D / n,
    that survives in the kept subspace: near 0 for an invariant subspace).
    """

    def __init__(self, n_components: int, lam: float = 1.0, order: str = "largest", *, use_image=True, use_text=True):
        self.n_components = n_components
        self.lam = lam
        self.order = order
        self.use_image = use_image
        self.use_text = use_text

    def fit(self, Z, Z_intervened) -> "InvariantProjection":
        Z, Z_intervened = check_pair(Z, Z_intervened, min_rows=2)
        return self.fit_moments(InterventionMoments.from_pairs(Z, Z_intervened))

    def fit_moments(self, moments: InterventionMoments) -> "InvariantProjection":
        check_hyperparameters(self.n_components, self.lam, self.order, moments.dim)
        sources = {"use_image": self.use_image, "use_text": self.use_text}
        values, vectors = eigendecompose(moments, self.lam, self.order, **sources)
        return self._set_basis(values, vectors, moments.difference_covariance(**sources))

    def _set_basis(self, values, vectors, difference_covariance) -> "InvariantProjection":
        k = self.n_components
        self.components_ = vectors[:, :k]
        self.eigenvalues_ = values[:k]
        self.n_features_in_ = vectors.shape[0]
        kept = np.trace(self.components_.T @ difference_covariance @ self.components_)
        self.retained_intervention_ = float(kept / max(np.trace(difference_covariance), np.finfo(float).tiny))
        return self

    @classmethod
    def from_decomposition(cls, values, vectors, difference_covariance, n_components, lam, order="largest", **sources):
        """Slice an existing eigendecomposition: many k for one lambda cost one eigh."""
        check_hyperparameters(n_components, lam, order, vectors.shape[0])
        return cls(n_components, lam, order, **sources)._set_basis(values, vectors, difference_covariance)

    def _check_fitted(self):
        if not hasattr(self, "components_"):
            raise ValueError("this InvariantProjection is not fitted yet: call fit(...) or fit_moments(...) first")

    def transform(self, X) -> np.ndarray:
        self._check_fitted()
        X = check_matrix(X, "X", width=self.n_features_in_)
        return X @ self.components_

    def get_params(self) -> dict:
        return {
            "n_components": int(self.n_components),
            "lam": float(self.lam),
            "order": self.order,
            "use_image": bool(self.use_image),
            "use_text": bool(self.use_text),
        }

    def to_bytes(self, **extra_metadata) -> bytes:
        """A portable .npz (arrays + JSON metadata, no pickle); `from_bytes` inverts it."""
        self._check_fitted()
        metadata = {"format_version": FORMAT_VERSION, "d": int(self.n_features_in_), **self.get_params(), **extra_metadata}
        buffer = io.BytesIO()
        np.savez(
            buffer,
            components=self.components_,
            eigenvalues=self.eigenvalues_,
            retained_intervention=np.asarray(self.retained_intervention_),
            metadata=np.asarray(json.dumps(metadata, sort_keys=True)),
        )
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes, source: str = "projection file") -> "InvariantProjection":
        try:
            archive = np.load(io.BytesIO(data), allow_pickle=False)
        except Exception as error:
            raise ValueError(f"{source} is not a valid .npz projection file: {error}") from error
        missing = sorted({"components", "eigenvalues", "retained_intervention", "metadata"} - set(archive.files))
        if missing:
            raise ValueError(f"{source} is missing keys {missing}; it was not written by InvariantProjection.to_bytes")
        metadata = json.loads(str(archive["metadata"]))
        version = metadata.get("format_version")
        if version != FORMAT_VERSION:
            raise ValueError(
                f"{source} has format_version {version!r}; this clip-icm reads version {FORMAT_VERSION}. "
                "Re-run fit_projection with this version to regenerate it."
            )
        missing_meta = sorted({"d", "n_components", "lam", "order"} - set(metadata))
        if missing_meta:
            raise ValueError(f"{source} metadata is missing keys {missing_meta}")
        projection = cls(
            metadata["n_components"],
            metadata["lam"],
            metadata["order"],
            use_image=metadata.get("use_image", True),
            use_text=metadata.get("use_text", True),
        )
        projection.components_ = archive["components"]
        projection.eigenvalues_ = archive["eigenvalues"]
        projection.retained_intervention_ = float(archive["retained_intervention"])
        projection.n_features_in_ = int(metadata["d"])
        if projection.components_.shape != (projection.n_features_in_, projection.n_components):
            raise ValueError(
                f"{source}: components have shape {projection.components_.shape}, "
                f"metadata says d={projection.n_features_in_}, k={projection.n_components}"
            )
        projection.metadata_ = metadata
        return projection
