"""Flow: moments from the source domains, (lambda, k) chosen on their validation split, the projection stored."""
from __future__ import annotations

from functools import reduce
from operator import add

from prefect import flow, unmapped

from icm_core import Selection
from tasks.catalog import EmbeddingCatalog
from tasks.fit import accumulate_image_moments, accumulate_text_moments, select_projection, store_projection


def source_moments(index: EmbeddingCatalog, sources, classes=None, use_text: bool = True):
    """Map: one moment task per source domain (train split); reduce: add them up, plus text pairs."""
    per_domain = accumulate_image_moments.map(unmapped(index), sources, unmapped(classes))
    moments = reduce(add, per_domain.result())
    return moments + accumulate_text_moments(index, classes) if use_text else moments


@flow(name="fit-projection", flow_run_name="fit on {sources}")
def fit_projection(
    index: EmbeddingCatalog,
    sources: list[str],
    projection_url: str,
    lams: list[float],
    ks: list[int] | None = None,
    order: str = "largest",
    use_text: bool = True,
    classes: list[str] | None = None,
) -> Selection:
    moments = source_moments(index, sources, classes, use_text)
    selection = select_projection(moments, index, sources, classes, lams, ks, order, use_text)
    store_projection(
        selection.projection, projection_url,
        sources=list(sources), classes=list(classes or index.classes), dataset_fingerprint=index.fingerprint,
        val_accuracy=selection.accuracy,
    )
    return selection
