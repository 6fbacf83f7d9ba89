"""What a run shows in the Prefect UI: its tags, the smoke-run warning in its own log (a plain logger's
warning never reaches the UI), and its reports as artifacts."""
from __future__ import annotations

from prefect import get_run_logger
from prefect.client.orchestration import get_client
from prefect.context import FlowRunContext

from tasks.vocabulary import RANDOM_WEIGHTS, run_tags


def label_run(dataset: str, model: str, pretrained: str) -> None:
    """Add the run's tags to the current flow run (keeping a deployment's own) and warn of random weights."""
    flow_run = FlowRunContext.get().flow_run
    with get_client(sync_client=True) as client:
        client.update_flow_run(flow_run.id, tags=sorted(set(flow_run.tags) | set(run_tags(dataset, model, pretrained))))
    if pretrained == RANDOM_WEIGHTS:
        get_run_logger().warning(
            "SMOKE RUN: random weights for %s (--pretrained none): the numbers test the pipeline, not the method", model)
