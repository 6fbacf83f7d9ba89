"""How a flow run reads in the Prefect UI before any result exists: its tags, and the smoke-run
warning in its own log (a plain logger's warning never reaches the UI)."""
from __future__ import annotations

from prefect import get_run_logger
from prefect.client.orchestration import get_client
from prefect.context import FlowRunContext

from flows.config import RunConfig
from tasks.embed.models import RANDOM_WEIGHTS
from tasks.report.run_report import dataset_label, weights_label

SMOKE_TAG = "smoke"


def run_tags(config: RunConfig) -> list[str]:
    """model:…, pretrained:…, dataset:… (filters in the UI's run list), and `smoke` for random weights."""
    tags = [f"model:{config.model}", f"pretrained:{weights_label(config.pretrained)}",
            f"dataset:{dataset_label(config.dataset)}"]
    return tags + [SMOKE_TAG] if config.pretrained == RANDOM_WEIGHTS else tags


def label_run(config: RunConfig) -> None:
    """Add the config's tags to the current flow run (keeping a deployment's own) and warn of random weights."""
    flow_run = FlowRunContext.get().flow_run
    with get_client(sync_client=True) as client:
        client.update_flow_run(flow_run.id, tags=sorted(set(flow_run.tags) | set(run_tags(config))))
    if config.pretrained == RANDOM_WEIGHTS:
        get_run_logger().warning(
            "SMOKE RUN: random weights for %s (--pretrained none): the numbers test the pipeline, not the method",
            config.model,
        )
