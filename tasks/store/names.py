"""How things are named on a store: content keys (one short, stable hash for cache keys, fingerprints and derived
names), and the store's own URL."""
from __future__ import annotations

import hashlib
import json
import os


def stable_hash(value, length: int = 16) -> str:
    """A short hash of a JSON-able value, identical across processes and machines."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:length]


def store_url(store: str) -> str:
    """A store path made absolute (run records name it); URLs as they are."""
    return store if "://" in store else os.path.abspath(store)
