"""Streaming second moments: everything the invariant projection needs, in O(d^2) memory."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from icm_core.validation import check_matrix, check_pair

_FIELDS = ("sum_zz", "n_samples", "image_sum_dd", "n_image_pairs", "text_sum_dd", "n_text_pairs")


@dataclass
class InterventionMoments:
    """Sums of z z^T over originals and of d d^T over intervention differences d = z - z'.

    Image and text differences are kept apart so a flow can choose which to use; the
    sums are float64 whatever dtype comes in, so shards accumulated apart and merged
    equal a single pass to rounding.
    """

    dim: int
    sum_zz: np.ndarray = field(default=None)
    n_samples: int = 0
    image_sum_dd: np.ndarray = field(default=None)
    n_image_pairs: int = 0
    text_sum_dd: np.ndarray = field(default=None)
    n_text_pairs: int = 0

    def __post_init__(self):
        if int(self.dim) <= 0:
            raise ValueError(f"dim must be a positive integer, got {self.dim}")
        self.dim = int(self.dim)
        for name in ("sum_zz", "image_sum_dd", "text_sum_dd"):
            value = getattr(self, name)
            value = np.zeros((self.dim, self.dim)) if value is None else np.array(value, dtype=np.float64)
            if value.shape != (self.dim, self.dim):
                raise ValueError(f"{name} must be {self.dim} x {self.dim}, got shape {value.shape}")
            setattr(self, name, value)

    def update(self, Z, Z_intervened=None) -> "InterventionMoments":
        """Add a batch of image embeddings and, when given, their intervened twins (row-aligned)."""
        if Z_intervened is None:
            Z = check_matrix(Z, "Z", width=self.dim, min_rows=1)
        else:
            Z, Z_intervened = check_pair(Z, Z_intervened, width=self.dim, min_rows=1)
            diff = Z - Z_intervened
            self.image_sum_dd += diff.T @ diff
            self.n_image_pairs += len(diff)
        self.sum_zz += Z.T @ Z
        self.n_samples += len(Z)
        return self

    def update_differences(self, Z, Z_intervened, *, source: str = "image") -> "InterventionMoments":
        """Add intervention pairs only (no originals): text pairs, or image pairs counted apart."""
        if source not in ("image", "text"):
            raise ValueError(f"source must be 'image' or 'text', got {source!r}")
        Z, Z_intervened = check_pair(Z, Z_intervened, width=self.dim, min_rows=1)
        diff = Z - Z_intervened
        setattr(self, f"{source}_sum_dd", getattr(self, f"{source}_sum_dd") + diff.T @ diff)
        count = "n_image_pairs" if source == "image" else "n_text_pairs"
        setattr(self, count, getattr(self, count) + len(diff))
        return self

    def merge(self, other: "InterventionMoments") -> "InterventionMoments":
        if not isinstance(other, InterventionMoments):
            raise TypeError(f"can only merge InterventionMoments, got {type(other).__name__}")
        if other.dim != self.dim:
            raise ValueError(f"cannot merge moments of dim {self.dim} and {other.dim}")
        return InterventionMoments(
            dim=self.dim,
            **{name: getattr(self, name) + getattr(other, name) for name in _FIELDS},
        )

    __add__ = merge

    def second_moment(self) -> np.ndarray:
        """Z^T Z / n over the originals."""
        if self.n_samples < 2:
            raise ValueError(f"need at least 2 original embeddings, have {self.n_samples}")
        return self.sum_zz / self.n_samples

    def difference_covariance(self, *, use_image: bool = True, use_text: bool = True) -> np.ndarray:
        """D^T D / n over the chosen intervention sources.

        Each source present is weighted equally, so a few hundred text pairs are not
        drowned by hundreds of thousands of image pairs.
        """
        parts = []
        if use_image and self.n_image_pairs:
            parts.append(self.image_sum_dd / self.n_image_pairs)
        if use_text and self.n_text_pairs:
            parts.append(self.text_sum_dd / self.n_text_pairs)
        if not parts:
            raise ValueError(
                "no intervention pairs accumulated for the requested sources "
                f"(image pairs: {self.n_image_pairs}, text pairs: {self.n_text_pairs}); "
                "add pairs with update(Z, Z_intervened) or update_differences(..., source='text')"
            )
        return sum(parts) / len(parts)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Plain arrays (for npz/Parquet storage); `from_arrays` inverts it exactly."""
        return {"dim": np.asarray(self.dim), **{name: np.asarray(getattr(self, name)) for name in _FIELDS}}

    @classmethod
    def from_arrays(cls, arrays) -> "InterventionMoments":
        missing = [name for name in ("dim", *_FIELDS) if name not in arrays]
        if missing:
            raise ValueError(f"moment arrays are missing keys {missing}")
        counts = {name: int(arrays[name]) for name in ("n_samples", "n_image_pairs", "n_text_pairs")}
        return cls(
            dim=int(arrays["dim"]),
            sum_zz=arrays["sum_zz"],
            image_sum_dd=arrays["image_sum_dd"],
            text_sum_dd=arrays["text_sum_dd"],
            **counts,
        )

    @classmethod
    def from_pairs(cls, Z, Z_intervened) -> "InterventionMoments":
        Z, Z_intervened = check_pair(Z, Z_intervened, min_rows=1)
        return cls(dim=Z.shape[1]).update(Z, Z_intervened)
