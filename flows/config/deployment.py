"""The config a flow run started from a deployment runs with: the deployment's config, with the fields the run gave.

Prefect merges a run's parameters over its deployment's one parameter at a time, so a run that gives
`{"config": {"dataset": …, "store": …}}` (`prefect deployment run --params`, `run_deployment(parameters=…)`, the
UI's form) replaces the deployment's whole config, and its model, device, batch size and workers would silently
fall back to RunConfig's defaults. Every flow that takes a config calls `effective_config` first.
"""
from __future__ import annotations

from prefect import get_run_logger
from prefect.client.orchestration import get_client
from prefect.context import FlowRunContext

from flows.config.run_config import RunConfig


def effective_config(config: RunConfig) -> RunConfig:
    """`config` as the flow was called with it, unless this flow run was started from a deployment: then the
    deployment's config with each field the run gave in its place (a nested value such as intervention_params is
    replaced whole), checked as one RunConfig. The run's title is rendered again from it: Prefect rendered it from
    the run's fields alone."""
    context = FlowRunContext.get()
    # the flow's function alone (flow.fn), the flow called directly or as a subflow: the caller's config is whole
    if context is None or context.flow_run.deployment_id is None:
        return config
    flow_run = context.flow_run
    given = flow_run.parameters.get("config") or {}  # as the run gave them, not filled with defaults
    with get_client(sync_client=True) as client:
        deployed = client.read_deployment(flow_run.deployment_id).parameters.get("config") or {}
        effective = RunConfig(**{**deployed, **given})
        if effective != config:
            get_run_logger().info("config: the deployment's, with this run's %s", ", ".join(sorted(given)))
            title = context.flow.flow_run_name.format(**{**context.parameters, "config": effective})
            client.set_flow_run_name(flow_run.id, title)
    return effective
