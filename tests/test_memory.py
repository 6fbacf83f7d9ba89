"""Freed memory goes back to the operating system when a run says so."""
import numpy as np
import pytest

import tasks.store.memory
from tasks.store.memory import release_freed_memory


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:")) / 1024


@pytest.mark.skipif(tasks.store.memory._MALLOC_TRIM is None, reason="malloc_trim is glibc's; elsewhere only Arrow's pool")
def test_freed_heap_memory_is_returned():
    release_freed_memory()
    np.ones(16 * 2**20, np.uint8)  # freeing a 16 MB mapping raises glibc's mmap threshold: what follows goes to the heap
    start = rss_mb()
    chunks = [np.ones(2**20, np.uint8) for _ in range(200)]  # 200 MB of 1 MB chunks, touched
    pinned = chunks.pop()  # the last one keeps the heap's top in use, so free() alone cannot shrink it
    del chunks
    held = rss_mb() - start
    release_freed_memory()
    released = held - (rss_mb() - start)
    assert held > 150 and released > 0.8 * held  # free() kept the 199 MB; the release gave it back
    assert pinned.sum() == 2**20
