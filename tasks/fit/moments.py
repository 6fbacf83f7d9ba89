"""Moments: the sums M is made of, one cached task per source domain (and one for the caption pairs), added up per fold."""
from __future__ import annotations

from functools import reduce
from operator import add

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from prefect import task
from prefect.cache_policies import INPUTS, TASK_SOURCE, CacheKeyFnPolicy

from icm_core import InterventionMoments
from tasks.store.catalog import EmbeddingCatalog
from tasks.store.memory import release_freed_memory
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


def total_moments(per_domain: dict, domains, text=None) -> InterventionMoments:
    """The moments of some domains' train splits, plus the text pairs when given."""
    moments = reduce(add, [per_domain[domain] for domain in domains])
    return moments + text if text is not None else moments
