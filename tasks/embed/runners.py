"""How the shards of one run execute in parallel: Prefect's thread runner, or its Dask and Ray integrations
(the preflight checks that the integration a run asks for is installed)."""
from __future__ import annotations


def make_task_runner(name: str, max_workers: int):
    """Threads on one machine by default; Dask or Ray (Prefect integrations) to scale out."""
    if name == "dask":
        from prefect_dask import DaskTaskRunner

        # worker processes, one thread each: a shard's torch threads do the parallel work
        return DaskTaskRunner(cluster_kwargs={"n_workers": max_workers, "processes": True, "threads_per_worker": 1})
    if name == "ray":
        from prefect_ray import RayTaskRunner

        # a local Ray of max_workers CPUs (an address in RAY_ADDRESS joins an existing cluster instead)
        return RayTaskRunner(init_kwargs={"num_cpus": max_workers})
    from prefect.task_runners import ThreadPoolTaskRunner

    return ThreadPoolTaskRunner(max_workers=max_workers)
