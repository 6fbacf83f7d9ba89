"""Tasks that turn the catalog's embeddings into moments, a selected projection, and a stored projection file."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from prefect import task
from prefect.cache_policies import INPUTS, NO_CACHE, TASK_SOURCE, CacheKeyFnPolicy

from icm_core import InterventionMoments, InvariantProjection
from tasks.store.catalog import EmbeddingCatalog
from tasks.store.memory import release_freed_memory
from tasks.store.storage import join, read_bytes, write_bytes
from tasks.vocabulary import INTERVENED, ORIGINAL


# Rows per matrix product when summing moments: float64 copies stay O(CHUNK_ROWS x d), not O(n x d).
CHUNK_ROWS = 4096


def catalog_key(context, parameters) -> str:
    return parameters["catalog"].cache_key


# The catalog's shard URLs are content keys, so they and the other inputs decide the moments: Prefect's
# cache lets every leave-one-domain-out fold, the open-class pass and the sweep reuse each domain's sums.
# The catalog is keyed by its description, never by hashing the arrays it holds.
MOMENTS_CACHE = TASK_SOURCE + (INPUTS - "catalog") + CacheKeyFnPolicy(cache_key_fn=catalog_key)


def paired_rows(originals: np.ndarray, intervened: np.ndarray) -> np.ndarray:
    """For each original sample id, the row of its intervened twin, or -1 when it has none."""
    position = pc.index_in(pa.array(originals), value_set=pa.array(intervened))
    return position.fill_null(-1).to_numpy()


@task(name="accumulate-image-moments", task_run_name="moments {domain}", cache_policy=MOMENTS_CACHE,
      persist_result=True, retries=2)
def accumulate_image_moments(catalog: EmbeddingCatalog, domain: str, classes=None, split: str = "train") -> InterventionMoments:
    """Sums over one domain's split: originals, and original-minus-intervened differences."""
    originals, Z = catalog.load([domain], split, classes, ORIGINAL)
    if len(Z) == 0:
        raise ValueError(f"domain {domain!r} has no readable {split} images{' of classes ' + str(classes) if classes else ''}")
    intervened, Z_intervened = catalog.load([domain], split, classes, INTERVENED)
    twin = paired_rows(originals["sample_id"].to_numpy(), intervened["sample_id"].to_numpy())
    paired = np.flatnonzero(twin >= 0)
    moments = InterventionMoments(Z.shape[1])
    for start in range(0, len(Z), CHUNK_ROWS):
        moments.update(Z[start : start + CHUNK_ROWS])
    for start in range(0, len(paired), CHUNK_ROWS):
        rows = paired[start : start + CHUNK_ROWS]
        moments.update_differences(Z[rows], Z_intervened[twin[rows]], source="image")
    release_freed_memory()  # the domain's intervened view and the chunks' float64 copies
    return moments


@task(name="accumulate-text-moments", cache_policy=MOMENTS_CACHE, persist_result=True, retries=2)
def accumulate_text_moments(catalog: EmbeddingCatalog, classes=None) -> InterventionMoments:
    """Sums over caption-pair differences (same class, different domain words)."""
    a, b = catalog.text_pairs(classes)
    moments = InterventionMoments(a.shape[1])
    return moments.update_differences(a, b, source="text") if len(a) else moments


def default_ks(dim: int) -> list[int]:
    return sorted({max(1, round(fraction * dim)) for fraction in (0.125, 0.25, 0.5, 0.75)})


@task(name="store-projection", cache_policy=NO_CACHE, retries=2)
def store_projection(projection: InvariantProjection, url: str, **metadata) -> str:
    return write_bytes(url, projection.to_bytes(**metadata))


def projection_url(run_url: str, protocol: str, target: str | None = None) -> str:
    """RUN/projections/<protocol>-<target>.npz, or <protocol>.npz for one projection that serves every target."""
    return join(run_url, "projections", f"{protocol}-{target}.npz" if target else f"{protocol}.npz")


def load_projection(url: str) -> InvariantProjection:
    return InvariantProjection.from_bytes(read_bytes(url), source=url)
