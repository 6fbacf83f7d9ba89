"""How a flow run reads in the Prefect UI before any result exists: its tags, and the smoke-run
warning in its own log (a plain logger's warning never reaches the UI)."""
from __future__ import annotations

from prefect import get_run_logger
from prefect.client.orchestration import get_client
from prefect.context import FlowRunContext

from flows.config import RunConfig
from tasks.vocabulary import RANDOM_WEIGHTS, run_tags


def label_run(config: RunConfig) -> None:
    """Add the config's tags to the current flow run (keeping a deployment's own) and warn of random weights."""
    flow_run = FlowRunContext.get().flow_run
    with get_client(sync_client=True) as client:
        client.update_flow_run(flow_run.id, tags=sorted(set(flow_run.tags) | set(run_tags(config.dataset, config.model, config.pretrained))))
    if config.pretrained == RANDOM_WEIGHTS:
        get_run_logger().warning(
            "SMOKE RUN: random weights for %s (--pretrained none): the numbers test the pipeline, not the method",
            config.model,
        )
