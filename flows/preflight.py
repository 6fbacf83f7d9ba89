"""One validation pass over a run, before any task is submitted: nothing that can be known from
the config, the model config or the weights may wait for the first image to be embedded."""
from __future__ import annotations

from flows.config import RunConfig
from tasks.models import check_model


def fail(field: str, problem: str):
    raise ValueError(f"config field {field!r}: {problem}")


def preflight(config: RunConfig) -> RunConfig:
    """Raise ValueError naming the field or file and the fix; return the config unchanged."""
    try:
        config.intervention_config()
    except ValueError as error:
        fail("interventions", str(error))
    try:
        check_model(config.model, config.pretrained)
    except ValueError as error:
        fail("model/pretrained", str(error))
    return config
