"""One validation pass over a run, before any task is submitted: nothing that can be known from
the config, the device, the store, the model's config, the checkpoint or the dataset listing may
wait for the first image to be embedded.

Field-level checks (types, ranges, duplicates, names) already ran when the RunConfig was built;
these are the ones that need the machine, the store or the files. Every failure is an InputError
naming the field (and its CLI flag), the file where there is one, and the fix. The CLI calls
`preflight` before Prefect starts, and the flows call it again (deployments skip the CLI); a
config that passed in this process is not checked twice.

Answers before imports: everything that needs no model (options, the store, the dataset's listing,
option files) is checked first, by code that imports neither torch, open_clip nor Prefect, so a bad
path or option is one line in about a second; only the device, model and weight checks load torch.
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
import uuid
from dataclasses import replace

from flows.config.run_config import RunConfig
from tasks.data.class_names import class_display_names, match_classes
from tasks.data.datasets import Dataset, list_dataset, split_table_url
from tasks.data.prompts import load_templates, load_text_pairs, text_inputs
from tasks.data.splits import assign_splits, split_base_novel, split_column
from tasks.errors import InputError
from tasks.store.storage import filesystem, missing_bucket
from tasks.vocabulary import (
    DATASET_SHIFT, OPEN_CLASS, RANDOM_WEIGHTS, ROTATED_DIGITS, TRAIN, VAL, carries_weights, protocols,
)

DEVICE_TYPES = ("cpu", "cuda", "mps")
RUNNER_PACKAGES = {"dask": "prefect_dask", "ray": "prefect_ray"}
_PASSED: set[tuple[str, bool]] = set()  # configs that passed in this process, as JSON


def fail(field: str, problem) -> None:
    """Raise InputError about `field`: `problem` is the message, or the error whose message it is."""
    message = problem.message if isinstance(problem, InputError) else str(problem)
    raise InputError(message, field) from (problem if isinstance(problem, Exception) else None)


def preflight(config: RunConfig, *, cached: bool = False) -> RunConfig:
    """Raise InputError naming the field or file and the fix; return the config unchanged.

    cached: the run reads embeddings from the store only (sweep), so they must all be there.
    """
    key = (config.model_dump_json(), cached)
    if key in _PASSED:
        return config
    # what needs no model: no torch, open_clip or Prefect is imported for these
    if config.protocol == DATASET_SHIFT:
        check_shift_options(config)
    if cached:
        check_sweep_options(config)
    check_store(config.store_url)
    check_task_runner(config.task_runner)
    # the built-in dataset is written to the store when first listed: only once everything else has passed
    data = None if config.dataset == ROTATED_DIGITS else check_data(config)
    # the machine and the model. Prefect's logging is set up first: open_clip logs to the root logger, which would
    # otherwise get Python's default handler and print every Prefect record a second time, traceback and all
    from prefect.logging.configuration import ensure_logging_setup

    ensure_logging_setup()
    check_device(config.device)
    width = check_weights(config.model, config.pretrained)
    if config.ks and max(config.ks) > width:
        fail("ks", f"{max(config.ks)} exceeds the embedding width {width} of {config.model!r}; "
                   f"pick k between 1 and {width}")
    data = data or check_data(config)
    if cached:
        check_cached(config, data)
    _PASSED.add(key)
    return config


def check_data(config: RunConfig) -> Dataset:
    """The dataset's listing and every file the config names besides it."""
    data = check_dataset(config)
    check_files(config, data)
    check_text_pairs(config, data)
    return data


def check_shift_options(config: RunConfig) -> None:
    """The options dataset-shift takes and those it refuses: before any file is read."""
    if config.targets:
        fail("targets", "target domains apply to domain-shift and open-class; dataset-shift tests the --target-datasets")
    if "mean" in config.target_datasets:
        fail("target_datasets", "'mean' names the summary's mean rows; rename that target")
    if config.selection != "training-domain":
        fail("selection", f"dataset-shift selects (lambda, k) on the source's validation split (training-domain); "
                          f"{config.selection!r} is not available for it")
    if config.test_split != "all":
        fail("test_split", f"dataset-shift tests every image of each target dataset; {config.test_split!r} applies "
                           "to domain-shift")


def check_target_datasets(config: RunConfig, source: Dataset) -> None:
    """Every target dataset listed and its classes matched to the source's: before anything is embedded."""
    for name, url in config.target_datasets.items():
        try:
            target = list_dataset(replace(config.data_spec(), dataset=url))
            match_classes(config.class_names, source.classes, target.classes, name)
        except InputError as error:
            fail("target_datasets", error)


def check_device(device: str) -> None:
    """The device exists on this machine: 'cuda' without a GPU fails here, not as a weights error."""
    if device == "auto":
        return
    import torch

    try:
        parsed = torch.device(device)
    except RuntimeError:
        parsed = None
    if parsed is None or parsed.type not in DEVICE_TYPES:
        fail("device", f"{device!r} is not a device clip-icm runs on; use auto, cpu, cuda, cuda:N or mps")
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            fail("device", f"{device!r} but this machine has no usable CUDA GPU (torch.cuda.is_available() is "
                           "False); use --device cpu, or auto to take the best device there is")
        if parsed.index is not None and parsed.index >= count:
            fail("device", f"{device!r} but this machine has {count} CUDA GPU(s), cuda:0 to cuda:{count - 1}")
    if parsed.type == "mps" and not torch.backends.mps.is_available():
        fail("device", f"{device!r} but MPS is not available here; use --device cpu or auto")


def check_store(url: str) -> None:
    """Write and delete a tiny file under the store: its scheme, permissions and path all work.

    Folders the probe had to create on a local disk are removed again, so a failed preflight
    leaves nothing behind.
    """
    try:
        fs, path = filesystem(url)
    except (ValueError, ImportError) as error:
        fail("store", f"cannot open {url!r} ({error}); use a local folder, memory://, s3:// (pip install "
                      "'clip-icm[s3]') or gs:// ('clip-icm[gcs]')")
    local = "file" in fs.protocol
    bucket = missing_bucket(url)
    if bucket:  # writing would create it: a misspelt name would become a new, unwatched bucket
        fail("store", f"the bucket {bucket!r} of {url!r} does not exist (or these credentials cannot see it); "
                      "create it first, or fix its name")
    created = path
    while local and not fs.exists(os.path.dirname(created)) and os.path.dirname(created) != created:
        created = os.path.dirname(created)
    created = created if local and not fs.exists(created) else None
    probe = f"{path.rstrip('/')}/.clip-icm-probe-{uuid.uuid4().hex}"
    try:
        fs.makedirs(path, exist_ok=True)
        with fs.open(probe, "wb") as handle:
            handle.write(b"probe")
        fs.rm(probe)
    except Exception as error:  # every backend has its own errors: all mean the store cannot be written
        fail("store", f"cannot write to {url!r} ({type(error).__name__}: {error}); pass a writable folder or URL")
    finally:
        if created:
            _remove_empty_folders(path, created)


def _remove_empty_folders(path: str, top: str) -> None:
    while True:
        with contextlib.suppress(OSError):
            os.rmdir(path)
        if path == top or os.path.dirname(path) == path:
            return
        path = os.path.dirname(path)


def check_weights(model: str, pretrained: str) -> int:
    """The model name, the weights (a tag, or a checkpoint file that fits); returns the embedding width.
    A local-dir:DIR or hf-hub:ORG/NAME model carries its weights: its folder (read without network) or its
    repository's config decides."""
    import open_clip

    from tasks.embed.checkpoints import check_checkpoint
    from tasks.embed.models import check_model, model_config

    if carries_weights(model):
        check_model(model, pretrained)
        return int(model_config(model)["embed_dim"])
    check_model(model, RANDOM_WEIGHTS)  # the name alone
    if pretrained != RANDOM_WEIGHTS and os.path.exists(pretrained):
        check_checkpoint(pretrained, model)  # it names the file and what is wrong with it
    else:
        check_model(model, pretrained)
    return int(open_clip.get_model_config(model)["embed_dim"])


def check_task_runner(task_runner: str) -> None:
    package = RUNNER_PACKAGES.get(task_runner)
    if package and importlib.util.find_spec(package) is None:
        fail("task_runner", f"{task_runner!r} needs its Prefect integration: pip install 'clip-icm[{task_runner}]'")


def check_dataset(config: RunConfig) -> Dataset:
    """The listing: readable, enough domains and classes for the protocol, targets that exist, and a
    holdout that leaves every source domain both training and validation images."""
    try:
        data = list_dataset(config.data_spec())
    except (ValueError, OSError, ImportError) as error:
        fail(getattr(error, "field", None) or "dataset", error)
    domains = list(data.domains)
    if config.protocol != DATASET_SHIFT and len(domains) < 2:
        fail("dataset", f"{config.dataset!r} has one domain ({domains[0]!r}), but protocol {config.protocol!r} holds "
                        "a domain out and fits on the others: add domain folders ROOT/<domain>/<class>/<image>, or "
                        "use --protocol dataset-shift --target-datasets NAME=URL")
    if len(data.classes) < 2:
        fail("dataset", f"{config.dataset!r} has one class ({data.classes[0]!r}); classifying needs at least two")
    unknown = sorted(set(config.targets or []) - set(domains))
    if unknown:
        fail("targets", f"{unknown} are not domains of the dataset {domains}")
    if config.protocol == DATASET_SHIFT:
        sources, targets = domains, []
    else:
        targets = config.targets or domains
        sources = sorted({domain for target in targets for domain in domains if domain != target})
        if config.selection == "leave-one-domain-out" and len(domains) < 3:
            fail("selection", f"'leave-one-domain-out' leaves one source out of the sources of each target, so it "
                              f"needs at least three domains; {config.dataset!r} has {domains}: use training-domain")
    validated = sorted(set(sources) | (set(targets) if config.selection == "oracle" else set()))
    for protocol in protocols(config.protocol):
        check_splits(config, data, protocol, sources, validated)
    tested = {"in": "train", "out": "val"}.get(config.test_split)  # 'all' tests every image
    every_class = data.samples.groupby(["domain", "split"]).size()
    untested = [target for target in targets if tested and every_class.get((target, tested), 0) == 0]
    if untested:
        fail("test_split", f"{config.test_split!r} tests the {tested} split of each target, and holdout "
                           f"{config.holdout} leaves {untested} none: use --test-split all or change --holdout")
    return data


def check_splits(config: RunConfig, data: Dataset, protocol: str, sources, validated) -> None:
    """The protocol's sources have training images and the validated domains validation images, of the classes it
    fits on (open-class: the base classes) in the split it uses (tasks.data.splits.split_column)."""
    column = split_column(protocol, data.split_rule)
    open_class = protocol == OPEN_CLASS
    needed = split_base_novel(data.classes)[0] if open_class else list(data.classes)
    which = " of the base classes (open-class fits on those)" if open_class else ""
    counts = data.samples[data.samples["class"].isin(needed)].groupby(["domain", column]).size()
    no_val = [domain for domain in validated if counts.get((domain, VAL), 0) == 0]
    no_train = [domain for domain in sources if counts.get((domain, TRAIN), 0) == 0]
    if no_val:
        fixes = [_smallest_holdout(data, domain, needed, column) for domain in no_val]
        fix = (f"raise --holdout to at least {max(fixes)} or add images to them" if all(fixes) else
               "add images to them (no holdout gives them both a training and a validation image)")
        fail("holdout", f"{config.holdout} leaves domain(s) {no_val} without a validation image{which}, "
                        f"which choosing (lambda, k) needs: {fix}")
    if no_train:
        fail("holdout", f"{config.holdout} leaves domain(s) {no_train} without a training image{which}, "
                        "which fitting needs: lower --holdout or add images to them")


def _smallest_holdout(data: Dataset, domain: str, classes, column: str) -> float | None:
    """The smallest two-decimal holdout that leaves a domain images of these classes in both splits, if any."""
    rows = data.samples[data.samples["domain"] == domain]
    base = split_base_novel(data.classes)[0]
    for hundredths in range(1, 100):
        split = assign_splits(rows, data.split_rule, hundredths / 100, data.seed, base,
                              env_index=data.domains.index(domain))[column]
        split = split[rows["class"].isin(classes)]
        if (split == VAL).any() and (split == TRAIN).any():
            return hundredths / 100
    return None


def check_files(config: RunConfig, data: Dataset) -> None:
    """Every other file or folder the config names: target datasets (listed, classes matched to the
    source's), class names and templates (read and parsed)."""
    for name, url in (config.target_datasets or {}).items():
        try:
            fs, path = filesystem(url)
            found = fs.isdir(path)
        except (ValueError, ImportError, OSError) as error:
            found, url = False, f"{url} ({error})"
        if not found:
            fail("target_datasets", f"{name}={url!r} does not exist or is not a folder; give each target dataset "
                                    "as NAME=URL of a folder: ROOT/<class>/<image>, CLIP_benchmark's shards "
                                    "ROOT/<split>/N.tar, or Hugging Face Parquet files")
    if config.protocol == DATASET_SHIFT:
        check_target_datasets(config, data)
    for field, check in (("class_names", lambda: class_display_names(config.class_names, data.classes, f"dataset {data.root!r}",
                                                                     config.folder_name_spaces)),
                         ("templates", lambda: load_templates(config.templates))):
        try:
            check()
        except (ValueError, OSError, ImportError) as error:
            fail(field, error)


def check_text_pairs(config: RunConfig, data: Dataset) -> None:
    if not config.text_pairs:
        return
    if not config.use_text:
        fail("text_pairs", f"{config.text_pairs!r} is given with --no-text, which would ignore it; drop one of the two")
    try:
        pairs = load_text_pairs(config.text_pairs, data.classes)
    except (ValueError, OSError, ImportError) as error:
        fail("text_pairs", error)
    if pairs.empty:
        fail("text_pairs", f"file {config.text_pairs!r} holds no pairs; add rows class,text_a,text_b or drop --text-pairs")


def check_sweep_options(config: RunConfig) -> None:
    """The sweep scores every (lambda, k) leave-one-domain-out with the default recipe: refuse what it would ignore."""
    if config.protocol == DATASET_SHIFT:
        fail("protocol", "the sweep holds out each domain of --dataset in turn; dataset-shift is not swept, "
                         "run `clip-icm run --protocol dataset-shift` per grid point instead")
    if config.preset != "default":
        fail("preset", f"the sweep uses the default recipe; drop --preset {config.preset} (or run it with `clip-icm run`)")
    if config.selection != "training-domain":
        fail("selection", "the sweep marks the training-domain rule's pick; drop --selection "
                          f"{config.selection} (or run it with `clip-icm run`)")


def check_cached(config: RunConfig, data: Dataset) -> None:
    """Runs that read the store only (sweep) need every embedding file there already."""
    from tasks.embed.plan import cached_catalog

    try:
        embedding = config.embed_spec()
        cached_catalog(data, embedding, text_inputs(data, embedding), split_table_url(data, config.store_url))
    except InputError as error:
        fail("store", error)
