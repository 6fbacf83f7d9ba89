"""Zero-shot prompt templates, and the class prompts they make.

`--templates` chooses a set: `simple` ("a photo of a {}."), `openai-imagenet` (the 80 templates
OpenAI engineered for ImageNet, as open_clip ships them) or a text file, one template per line,
each holding `{}` where the class name goes. A class's zero-shot embedding is the prompt
ensemble: the L2-normalised mean of its L2-normalised template embeddings (CLIP_benchmark's rule).
"""
from __future__ import annotations

import pandas as pd
from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

from tasks.data.class_names import class_display_names
from tasks.data.interventions import CLASS_TEMPLATES, load_text_pairs, prompt_bank_pairs
from tasks.store.storage import filesystem
from tasks.errors import InputError

PLACEHOLDER = "{}"
TEMPLATE_SETS = {
    "simple": tuple(CLASS_TEMPLATES),
    # open_clip ships them as functions of the class name
    "openai-imagenet": tuple(template(PLACEHOLDER) for template in OPENAI_IMAGENET_TEMPLATES),
}


def load_templates(spec: str) -> tuple[str, ...]:
    """A named template set, or the templates of a text file (blank lines skipped); fails naming the line."""
    if spec in TEMPLATE_SETS:
        return TEMPLATE_SETS[spec]
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


def class_prompts(classes, names: dict[str, str], templates) -> pd.DataFrame:
    """One row per (class, template): the class id and its prompt text, classes in the given order."""
    rows = [{"class": folder, "text": template.replace(PLACEHOLDER, names[folder])}
            for folder in classes for template in templates]
    return pd.DataFrame(rows, columns=["class", "text"])


def text_inputs(data, text_pairs: str | None = None, templates: str = "simple", class_names: str | None = None):
    """(class prompts: every template per class, caption pairs: the shipped prompt bank's or the user's file)."""
    names = class_display_names(class_names, data.classes, f"dataset {data.root!r}")
    prompts = class_prompts(data.classes, names, load_templates(templates))
    pairs = load_text_pairs(text_pairs, data.classes) if text_pairs else prompt_bank_pairs(data.classes, names=names)
    return prompts, pairs
