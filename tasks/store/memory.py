"""Freed memory handed back to the operating system between the large steps of a run.

Arrow's allocator (mimalloc) and glibc's malloc both keep the memory of freed buffers for
reuse: decoding buffers of a Parquet read, chunk-sized float64 copies of scoring and the
probes' passes. A process that reads domain after domain and scores fold after fold then
grows its RSS with memory it no longer uses. Releasing it after each such step keeps the peak
to what is live (Dask's workers trim glibc's heap the same way). Elsewhere than glibc (macOS,
musl) only Arrow's pool is released.
"""
from __future__ import annotations

import ctypes

import pyarrow as pa


def _malloc_trim():
    try:
        return ctypes.CDLL(None).malloc_trim  # the C library the interpreter runs on
    except (OSError, AttributeError):
        return None


_MALLOC_TRIM = _malloc_trim()


def release_freed_memory() -> None:
    pa.default_memory_pool().release_unused()
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)
