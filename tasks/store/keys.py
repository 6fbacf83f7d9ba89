"""Content keys: one short, stable hash for cache keys, fingerprints and derived names."""
from __future__ import annotations

import hashlib
import json


def stable_hash(value, length: int = 16) -> str:
    """A short hash of a JSON-able value, identical across processes and machines."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:length]
