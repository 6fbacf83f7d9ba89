"""Dataset-shift evaluation tasks: the probes fitted once on the source, and each target dataset scored over
the classes it holds (classes match the source's by folder id, `tasks.data.class_names.match_classes`)."""
from __future__ import annotations

import numpy as np
import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from icm_core import LinearProbe
from tasks.evaluate.predictions import fit_linear_probes, method_rows, zero_shot_scorers
from tasks.fit.projections import load_projection
from tasks.specs import Recipe
from tasks.store.catalog import EmbeddingCatalog
from tasks.vocabulary import DATASET_SHIFT, TRAIN


# the projection travels as its stored file, not as a subflow's result (which the Prefect UI cannot show)
@task(name="fit-linear-probes", cache_policy=NO_CACHE)
def fit_probes(catalog: EmbeddingCatalog, projection_url: str, recipe: Recipe) -> dict[str, LinearProbe]:
    """CLIP and CLIP-ICM probes over every source class, on the source's train split; fitted once for all targets."""
    rows, blocks = catalog.blocks(catalog.domains, TRAIN)
    return fit_linear_probes(recipe, load_projection(projection_url), blocks, rows["label"])


def probe_scorer_among(probe: LinearProbe, labels):
    """(scores of a chunk of rows, their labels) over the probe's classes among `labels` only: a target is
    scored over its classes."""
    keep = np.isin(probe.classes_, labels)
    return (lambda part: probe.decision_function(part)[:, keep]), probe.classes_[keep]


@task(name="evaluate-target-dataset", task_run_name="evaluate target dataset {name}", cache_policy=NO_CACHE)
def evaluate_target_dataset(source: EmbeddingCatalog, target: EmbeddingCatalog, name: str, class_map: dict[str, str],
                            projection_url: str, probes: dict[str, LinearProbe], recipe: Recipe) -> pd.DataFrame:
    """The methods on every image of one target, each scoring the target's classes only."""
    rows, embeddings = target.load(target.domains)
    label = {folder: index for index, folder in enumerate(source.classes)}
    rows = rows.assign(**{"class": rows["class"].map(class_map)})  # reports name classes as the source does
    rows["label"] = rows["class"].map(label).astype("int32")
    labels = np.array(sorted(label[class_map[folder]] for folder in target.classes))
    return method_rows(DATASET_SHIFT, name, rows, embeddings, {
        **zero_shot_scorers(recipe, source, load_projection(projection_url), [source.classes[i] for i in labels],
                            labels),
        **{method: probe_scorer_among(probe, labels) for method, probe in probes.items()},
    })
