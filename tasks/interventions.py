"""Image interventions (the paper's seven families) and the text-intervention prompt bank.

One image intervention is drawn per sample from an RNG keyed by (seed, sample id), so
the result never depends on batch order, batch size or worker count.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torchvision.transforms.functional as TF
from PIL import Image

from tasks.storage import filesystem, stable_hash

# Documented defaults; any entry can be overridden through InterventionConfig.params.
DEFAULT_PARAMS = {
    "color_jitter": {"brightness": 0.5, "contrast": 0.5, "saturation": 0.5, "hue": 0.3},
    "grayscale": {},
    "gaussian_blur": {"kernel_size": 9, "sigma": (1.0, 3.0)},
    "invert": {},
    "posterize": {"bits": (2, 4)},
    "solarize": {"threshold": (64, 192)},
    "equalize": {},
}
FAMILIES = tuple(DEFAULT_PARAMS)


def _color_jitter(image, rng, brightness, contrast, saturation, hue):
    image = TF.adjust_brightness(image, rng.uniform(1 - brightness, 1 + brightness))
    image = TF.adjust_contrast(image, rng.uniform(1 - contrast, 1 + contrast))
    image = TF.adjust_saturation(image, rng.uniform(1 - saturation, 1 + saturation))
    # keep the hue shift away from 0 so the intervention always moves colour
    return TF.adjust_hue(image, rng.choice([-1, 1]) * rng.uniform(hue / 2, hue))


_APPLY = {
    "color_jitter": _color_jitter,
    "grayscale": lambda image, rng: TF.rgb_to_grayscale(image, num_output_channels=3),
    "gaussian_blur": lambda image, rng, kernel_size, sigma: TF.gaussian_blur(
        image, kernel_size, float(rng.uniform(*sigma))
    ),
    "invert": lambda image, rng: TF.invert(image),
    "posterize": lambda image, rng, bits: TF.posterize(image, int(rng.integers(bits[0], bits[1] + 1))),
    "solarize": lambda image, rng, threshold: TF.solarize(image, float(rng.uniform(*threshold))),
    "equalize": lambda image, rng: TF.equalize(image),
}


@dataclass(frozen=True)
class InterventionConfig:
    families: tuple[str, ...] = FAMILIES
    seed: int = 0
    params: dict = field(default_factory=dict)  # {family: {parameter: value}} overrides

    def __post_init__(self):
        unknown = sorted(set(self.families) - set(FAMILIES)) + sorted(set(self.params) - set(FAMILIES))
        if unknown or not self.families:
            raise ValueError(f"unknown or no intervention families {unknown}; choose from {list(FAMILIES)}")
        for family, overrides in self.params.items():
            bad = sorted(set(overrides) - set(DEFAULT_PARAMS[family]))
            if bad:
                raise ValueError(
                    f"intervention {family!r} has no parameter(s) {bad}; it takes {sorted(DEFAULT_PARAMS[family])}"
                )

    def parameters(self, family: str) -> dict:
        return {**DEFAULT_PARAMS[family], **self.params.get(family, {})}

    @property
    def key(self) -> str:
        return stable_hash({"families": list(self.families), "seed": self.seed,
                            "params": {f: self.parameters(f) for f in self.families}})

    def rng(self, sample_id: str) -> np.random.Generator:
        digest = int.from_bytes(hashlib.sha256(sample_id.encode()).digest()[:8], "little")
        return np.random.default_rng([self.seed, digest])

    def apply(self, image: Image.Image, sample_id: str, family: str | None = None) -> tuple[str, Image.Image]:
        """(family, intervened image); the family is drawn per sample unless given."""
        rng = self.rng(sample_id)
        drawn = self.families[int(rng.integers(len(self.families)))]
        family = family or drawn
        return family, _APPLY[family](image.convert("RGB"), rng, **self.parameters(family))


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


def class_prompt_name(folder_name: str) -> str:
    return folder_name.replace("_", " ").replace("-", " ")


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
        raise ValueError(f"text pairs file {url!r} does not exist")
    with fs.open(path, "rb") as handle:
        frame = pd.read_parquet(handle) if path.endswith(".parquet") else pd.read_csv(handle)
    missing = sorted({"class", "text_a", "text_b"} - set(frame.columns))
    if missing:
        raise ValueError(f"text pairs file {url!r} lacks column(s) {missing}; it needs class, text_a, text_b")
    unknown = sorted(set(frame["class"]) - set(classes))
    if unknown:
        raise ValueError(f"text pairs file {url!r} names classes {unknown[:10]} that the dataset lacks")
    return frame[["class", "text_a", "text_b"]].astype(str).reset_index(drop=True)
