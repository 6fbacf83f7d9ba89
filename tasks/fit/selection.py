"""Task: choose (lambda, k) under a DomainBed model-selection rule."""
from __future__ import annotations

from functools import reduce
from operator import add

from prefect import task
from prefect.cache_policies import NO_CACHE

from icm_core import Selection, ValidationFold, released_zero_shot_predict, select_over_folds, zero_shot_predict
from tasks.store.catalog import EmbeddingCatalog
from tasks.fit.moments import default_ks
from tasks.errors import InputError

ZERO_SHOT = {"default": zero_shot_predict, "released": released_zero_shot_predict}


def total_moments(per_domain: dict, domains, text=None):
    """The moments of some domains' train splits, plus the text pairs when given."""
    moments = reduce(add, [per_domain[domain] for domain in domains])
    return moments + text if text is not None else moments


def _fold(index: EmbeddingCatalog, moments, domains, split, classes, class_names, name) -> ValidationFold:
    rows, embeddings = index.load(domains, split, classes)
    if len(rows) == 0:
        fix = "raise --holdout" if split == "val" else "lower --holdout"
        raise InputError(f"domain(s) {list(domains)} have no {split} images to select (lambda, k) on; "
                         f"{fix}, add data, or choose another --selection rule")
    labels = rows["class"].map({name: i for i, name in enumerate(class_names)}).to_numpy()
    return ValidationFold(moments, embeddings, labels, name)


def validation_folds(index, moments, per_domain, text, sources, target, classes, rule) -> list[ValidationFold]:
    """The rule's folds; `moments` are all sources' (the final fit). Only `oracle` reads the target."""
    class_names = list(classes if classes is not None else index.classes)
    if rule == "training-domain":
        return [_fold(index, moments, sources, "val", classes, class_names, "sources")]
    if rule == "oracle":
        return [_fold(index, moments, [target], "val", classes, class_names, target)]
    if rule == "leave-one-domain-out":
        if len(sources) < 2:
            raise InputError(
                f"config field 'selection': leave-one-domain-out needs at least 2 source domains, "
                f"target {target!r} leaves {list(sources)}; use --selection training-domain"
            )
        # DomainBed scores each held-out source on its 80% ("in") split; the fit never saw any of it
        return [
            _fold(index, total_moments(per_domain, [d for d in sources if d != held_out], text),
                  [held_out], "train", classes, class_names, held_out)
            for held_out in sources
        ]
    raise InputError(f"config field 'selection': unknown rule {rule!r}")


@task(name="select-projection", task_run_name="select (lambda, k) by {rule}", cache_policy=NO_CACHE)
def select_by_rule(
    index: EmbeddingCatalog, per_domain: dict, text, sources, target: str, classes, lams, ks, order: str,
    use_text: bool, rule: str = "training-domain", preset: str = "default",
) -> Selection:
    """The (lambda, k) with the best mean zero-shot accuracy over the rule's folds, refit on every source."""
    moments = total_moments(per_domain, sources, text)
    folds = validation_folds(index, moments, per_domain, text, sources, target, classes, rule)
    return select_over_folds(
        moments, folds, index.class_embeddings(list(classes if classes is not None else index.classes)),
        lams, ks or default_ks(moments.dim), order, use_text=use_text, predict=ZERO_SHOT[preset],
    )
