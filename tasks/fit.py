"""Tasks that turn cached embeddings into moments, a selected projection, and a stored projection file."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from prefect import task
from prefect.cache_policies import INPUTS, NO_CACHE, TASK_SOURCE

from icm_core import InterventionMoments, InvariantProjection, l2_normalize, select_hyperparameters
from tasks.embed import INTERVENED, ORIGINAL, read_embeddings
from tasks.storage import read_bytes, write_bytes


@dataclass
class EmbeddingIndex:
    """Where one dataset's embeddings are: a shard per (domain, view) and one text table."""

    dataset_root: str
    fingerprint: str
    domains: tuple[str, ...]
    classes: tuple[str, ...]
    shards: dict[str, str]  # "domain/view" -> url
    text_url: str | None  # None for a dataset-shift target: its prompts come from the source's table
    embedded: int = 0  # images and prompts embedded by this call (0 when all came from cache)

    def shard(self, domain: str, view: str) -> str:
        return self.shards[f"{domain}/{view}"]

    def load(self, domains, split=None, classes=None, view=ORIGINAL):
        """(rows, embeddings) of the given domains' view, optionally one split and some classes."""
        frames, arrays = [], []
        filters = {"split": [split]} if split else {}
        if classes is not None:
            filters["class"] = list(classes)
        for domain in domains:
            frame, embeddings = read_embeddings(self.shard(domain, view), filters)
            frames.append(frame)
            arrays.append(embeddings)
        # image embeddings are stored raw; the method works on unit vectors
        return pd.concat(frames, ignore_index=True), l2_normalize(np.concatenate(arrays)).astype(np.float32)

    def class_embeddings(self, classes=None) -> np.ndarray:
        """One text embedding per class, in the given order: the prompt ensemble, i.e. the normalised mean
        of the class's normalised template embeddings (stored raw)."""
        frame, embeddings = read_embeddings(self.text_url, {"role": ["class_prompt"]})
        wanted = list(classes if classes is not None else self.classes)
        embeddings = l2_normalize(embeddings)
        return np.stack([l2_normalize(embeddings[(frame["class"] == name).to_numpy()].mean(axis=0)) for name in wanted])


# Shard URLs are content keys, so the inputs decide the moments: Prefect's cache lets every
# leave-one-domain-out fold, the open-class pass and the sweep reuse each domain's sums.
MOMENTS_CACHE = INPUTS + TASK_SOURCE


@task(name="accumulate-image-moments", task_run_name="moments {domain}", cache_policy=MOMENTS_CACHE,
      persist_result=True, retries=2)
def accumulate_image_moments(index: EmbeddingIndex, domain: str, classes=None, split: str = "train") -> InterventionMoments:
    """Sums over one domain's split: originals, and original-minus-intervened differences."""
    originals, Z = index.load([domain], split, classes, ORIGINAL)
    if len(Z) == 0:
        raise ValueError(f"domain {domain!r} has no readable {split} images{' of classes ' + str(classes) if classes else ''}")
    intervened, Z_intervened = index.load([domain], split, classes, INTERVENED)
    position = dict(zip(intervened["sample_id"], range(len(intervened))))
    paired = np.array([position.get(sample_id, -1) for sample_id in originals["sample_id"]])
    moments = InterventionMoments(Z.shape[1]).update(Z)
    if (paired >= 0).any():
        moments.update_differences(Z[paired >= 0], Z_intervened[paired[paired >= 0]], source="image")
    return moments


@task(name="accumulate-text-moments", cache_policy=MOMENTS_CACHE, persist_result=True, retries=2)
def accumulate_text_moments(index: EmbeddingIndex, classes=None) -> InterventionMoments:
    """Sums over caption-pair differences (same class, different domain words)."""
    wanted = {"class": list(classes)} if classes is not None else {}
    frame, embeddings = read_embeddings(index.text_url, {"role": ["pair_a", "pair_b"], **wanted})
    embeddings = l2_normalize(embeddings)  # stored raw; caption differences are taken on the unit sphere
    a = frame.index[frame["role"] == "pair_a"].to_numpy()
    b = frame.index[frame["role"] == "pair_b"].to_numpy()
    a = a[np.argsort(frame.loc[a, "pair_id"].to_numpy(), kind="stable")]
    b = b[np.argsort(frame.loc[b, "pair_id"].to_numpy(), kind="stable")]
    moments = InterventionMoments(embeddings.shape[1])
    return moments.update_differences(embeddings[a], embeddings[b], source="text") if len(a) else moments


def default_ks(dim: int) -> list[int]:
    return sorted({max(1, round(fraction * dim)) for fraction in (0.125, 0.25, 0.5, 0.75)})


@task(name="select-and-fit", cache_policy=NO_CACHE)
def select_projection(moments, index: EmbeddingIndex, sources, classes, lams, ks, order, use_text):
    """Choose (lambda, k) by zero-shot accuracy on the sources' validation split; never the target."""
    val_rows, val_embeddings = index.load(sources, "val", classes)
    if len(val_rows) == 0:
        raise ValueError(f"source domains {list(sources)} have no validation images; lower the holdout or add data")
    class_names = list(classes if classes is not None else index.classes)
    return select_hyperparameters(
        moments,
        val_embeddings,
        val_rows["class"].map({name: i for i, name in enumerate(class_names)}).to_numpy(),
        index.class_embeddings(class_names),
        lams,
        ks or default_ks(moments.dim),
        order,
        use_text=use_text,
    )


@task(name="store-projection", cache_policy=NO_CACHE, retries=2)
def store_projection(projection: InvariantProjection, url: str, **metadata) -> str:
    return write_bytes(url, projection.to_bytes(**metadata))


def load_projection(url: str) -> InvariantProjection:
    return InvariantProjection.from_bytes(read_bytes(url), source=url)
