"""Task: choose (lambda, k) under a DomainBed model-selection rule."""
from __future__ import annotations

from functools import partial

from prefect import task
from prefect.cache_policies import NO_CACHE

from icm_core import Selection, ValidationFold, select_over_folds, zero_shot_predict
from tasks.fit.moments import total_moments
from tasks.specs import Recipe, SelectionSpec
from tasks.store.catalog import EmbeddingCatalog
from tasks.vocabulary import LEAVE_ONE_DOMAIN_OUT, ORACLE, SELECTION_RULES, TRAIN, TRAINING_DOMAIN, VAL


def default_ks(dim: int) -> list[int]:
    """The k grid when none is given: 1/8, 1/4, 1/2 and 3/4 of the embedding width."""
    return sorted({max(1, round(fraction * dim)) for fraction in (0.125, 0.25, 0.5, 0.75)})


def _fold(catalog: EmbeddingCatalog, moments, domains, split, classes, class_names, name) -> ValidationFold:
    rows, embeddings = catalog.load(domains, split, classes)
    labels = rows["class"].map({name: i for i, name in enumerate(class_names)}).to_numpy()
    return ValidationFold(moments, embeddings, labels, name)


def validation_folds(catalog, moments, per_domain, text, sources, target, classes, rule) -> list[ValidationFold]:
    """The rule's folds; `moments` are all sources' (the final fit). Only `oracle` reads the target."""
    class_names = list(classes if classes is not None else catalog.classes)
    if rule == TRAINING_DOMAIN:
        return [_fold(catalog, moments, sources, VAL, classes, class_names, "sources")]
    if rule == ORACLE:
        return [_fold(catalog, moments, [target], VAL, classes, class_names, target)]
    if rule == LEAVE_ONE_DOMAIN_OUT:
        # DomainBed scores each held-out source on its 80% ("in") split; the fit never saw any of it
        return [
            _fold(catalog, total_moments(per_domain, [d for d in sources if d != held_out], text),
                  [held_out], TRAIN, classes, class_names, held_out)
            for held_out in sources
        ]
    raise ValueError(f"unknown selection rule {rule!r}; one of {SELECTION_RULES}")


@task(name="select-projection", task_run_name="select (lambda, k) by {selection.rule}", cache_policy=NO_CACHE)
def select_by_rule(catalog: EmbeddingCatalog, per_domain: dict, text, sources, target: str, classes, recipe: Recipe,
                   selection: SelectionSpec) -> Selection:
    """The (lambda, k) with the best mean zero-shot accuracy over the rule's folds, refit on every source."""
    moments = total_moments(per_domain, sources, text)
    folds = validation_folds(catalog, moments, per_domain, text, sources, target, classes, selection.rule)
    return select_over_folds(
        moments, folds, catalog.class_embeddings(list(classes if classes is not None else catalog.classes)),
        selection.lams, selection.ks or default_ks(moments.dim), recipe.order, use_text=recipe.use_text,
        predict=partial(zero_shot_predict, normalize_images=recipe.zero_shot_normalizes_images),
    )
