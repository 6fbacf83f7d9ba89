"""Projection files: RUN/projections/<protocol>-<target>.npz (components, eigenvalues and metadata; never a pickle)."""
from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from icm_core import InvariantProjection
from tasks.store.storage import join, read_bytes, write_bytes


@task(name="store-projection", cache_policy=NO_CACHE, retries=2)
def store_projection(projection: InvariantProjection, url: str, **metadata) -> str:
    return write_bytes(url, projection.to_bytes(**metadata))


def projection_url(run_url: str, protocol: str, target: str | None = None) -> str:
    """RUN/projections/<protocol>-<target>.npz, or <protocol>.npz for one projection that serves every target."""
    return join(run_url, "projections", f"{protocol}-{target}.npz" if target else f"{protocol}.npz")


def load_projection(url: str) -> InvariantProjection:
    return InvariantProjection.from_bytes(read_bytes(url), source=url)
