"""Text: zero-shot prompt templates and the class prompts they make, and the caption pairs of the text interventions.

`--templates` chooses a set: `simple` ("a photo of a {}."), `openai-imagenet` (the 80 templates
OpenAI engineered for ImageNet, as open_clip ships them) or a text file, one template per line,
each holding `{}` where the class name goes; a shard set that ships its templates is prompted with them
unless another set or file is chosen. A class's zero-shot embedding is the prompt
ensemble: the L2-normalised mean of its L2-normalised template embeddings (CLIP_benchmark's rule).

A text intervention is a pair of captions of one class that differ only in domain words ("a photo of
a dog." / "a sketch of a dog."): the shipped prompt bank, or the user's pairs from a file.
"""
from __future__ import annotations

import pandas as pd

from tasks.data.class_names import class_display_names, class_prompt_name
from tasks.store.storage import filesystem
from tasks.errors import InputError

# Style/domain templates for text interventions: same class, different domain words.
# Drawn from the kinds of templates open_clip ships for ImageNet zero-shot.
STYLE_TEMPLATES = (
    "a sketch of a {}.",
    "a painting of a {}.",
    "a cartoon {}.",
    "a drawing of a {}.",
    "art of the {}.",
    "a black and white photo of a {}.",
    "a blurry photo of a {}.",
    "a pixelated photo of a {}.",
    "a {} in the snow.",
    "a {} at night.",
    "a rendering of a {}.",
    "a tattoo of a {}.",
    "a plastic {}.",
    "a {} in a video game.",
    "an embroidered {}.",
    "a low resolution photo of a {}.",
)
ANCHOR_TEMPLATE = "a photo of a {}."
CLASS_TEMPLATES = ("a photo of a {}.",)
PLACEHOLDER = "{}"
DEFAULT_TEMPLATES = "simple"


def _openai_imagenet_templates() -> tuple[str, ...]:
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES  # loads torch: only when this set is asked for

    return tuple(template(PLACEHOLDER) for template in OPENAI_IMAGENET_TEMPLATES)  # open_clip ships functions of the name


TEMPLATE_SETS = {"simple": lambda: tuple(CLASS_TEMPLATES), "openai-imagenet": _openai_imagenet_templates}


def load_templates(spec: str) -> tuple[str, ...]:
    """A named template set, or the templates of a text file (blank lines skipped); fails naming the line."""
    if spec in TEMPLATE_SETS:
        return TEMPLATE_SETS[spec]()
    fs, path = filesystem(spec)
    if not fs.isfile(path):
        raise InputError(
            f"templates {spec!r} is neither a built-in set {sorted(TEMPLATE_SETS)} nor an existing file "
            "(one template per line, with {} where the class name goes)"
        )
    with fs.open(path, "rb") as handle:
        lines = handle.read().decode("utf-8").splitlines()
    templates = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if line.count(PLACEHOLDER) != 1:
            raise InputError(
                f"templates file {spec!r} line {number} ({line.strip()!r}) must hold {PLACEHOLDER} exactly once, "
                "where the class name goes"
            )
        templates.append(line.strip())
    if not templates:
        raise InputError(f"templates file {spec!r} holds no template; write one per line, e.g. 'a photo of a {{}}.'")
    return tuple(dict.fromkeys(templates))  # a repeated line would weigh its template twice


def run_templates(dataset, spec: str) -> tuple[str, ...]:
    """The templates a run prompts with: those `spec` names, except that in place of the default set a dataset that
    ships its own (a shard set's zeroshot_classification_templates.txt) is prompted with those."""
    return dataset.templates if spec == DEFAULT_TEMPLATES and dataset.templates else load_templates(spec)


def display_names(dataset, embedding) -> dict[str, str]:
    """The name each class goes by in prompts: --class-names when given, else the names the data gives its classes
    (a shard set's classnames.txt, Parquet's ClassLabel), else the class folder's name."""
    if embedding.class_names is None and dataset.class_names:
        return dataset.class_names
    return class_display_names(embedding.class_names, dataset.classes, f"dataset {dataset.root!r}",
                               embedding.folder_name_spaces)


def class_prompts(classes, names: dict[str, str], templates) -> pd.DataFrame:
    """One row per (class, template): the class id and its prompt text, classes in the given order."""
    rows = [{"class": folder, "text": template.replace(PLACEHOLDER, names[folder])}
            for folder in classes for template in templates]
    return pd.DataFrame(rows, columns=["class", "text"])


def text_inputs(dataset, embedding) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A dataset's text for an EmbedSpec: (class prompts, every template per class; caption pairs, the shipped
    prompt bank's or the user's file)."""
    names = display_names(dataset, embedding)
    prompts = class_prompts(dataset.classes, names, run_templates(dataset, embedding.templates))
    pairs = (load_text_pairs(embedding.text_pairs, dataset.classes) if embedding.text_pairs
             else prompt_bank_pairs(dataset.classes, names=names))
    return prompts, pairs


def prompt_bank_pairs(classes, anchor: str = ANCHOR_TEMPLATE, styles=STYLE_TEMPLATES, names=None) -> pd.DataFrame:
    """One (anchor, style) caption pair per class and style: same class, different domain words.

    `names` maps a class folder to the name its captions use (default: the folder name, spaced).
    """
    names = names or {name: class_prompt_name(name) for name in classes}
    rows = [
        {"class": name, "text_a": anchor.format(names[name]), "text_b": style.format(names[name])}
        for name in classes
        for style in styles
    ]
    return pd.DataFrame(rows, columns=["class", "text_a", "text_b"])


def load_text_pairs(url: str, classes) -> pd.DataFrame:
    """User-supplied caption pairs from CSV or Parquet with columns class, text_a, text_b."""
    fs, path = filesystem(url)
    if not fs.exists(path):
        raise InputError(f"text pairs file {url!r} does not exist")
    kind = "Parquet" if path.endswith(".parquet") else "CSV"
    try:
        with fs.open(path, "rb") as handle:
            frame = pd.read_parquet(handle) if kind == "Parquet" else pd.read_csv(handle)
    except (ValueError, OSError) as error:  # pandas and pyarrow parse errors are ValueErrors
        first_line = str(error).splitlines()[0] if str(error) else ""
        raise InputError(f"text pairs file {url!r} cannot be read as {kind} ({type(error).__name__}: {first_line}); "
                         "write columns class,text_a,text_b") from error
    missing = sorted({"class", "text_a", "text_b"} - set(frame.columns))
    if missing:
        raise InputError(f"text pairs file {url!r} lacks column(s) {missing}; it needs class, text_a, text_b")
    blank = frame.index[frame[["class", "text_a", "text_b"]].isna().any(axis=1)].tolist()
    if blank:
        raise InputError(f"text pairs file {url!r} has empty cells in data row(s) {blank[:10]}; fill or drop them")
    unknown = sorted(set(frame["class"].astype(str)) - set(classes))
    if unknown:
        raise InputError(f"text pairs file {url!r} names classes {unknown[:10]} that the dataset lacks")
    return frame[["class", "text_a", "text_b"]].astype(str).reset_index(drop=True)
