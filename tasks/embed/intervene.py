"""The image interventions applied: torchvision's functional transforms, which take a PIL image (the CPU
path) and a uint8 tensor on any device (the GPU path) alike, so both paths draw and apply the same thing."""
from __future__ import annotations

import torchvision.transforms.functional as TF

from tasks.specs import InterventionConfig


def _color_jitter(image, rng, brightness, contrast, saturation, hue):
    image = TF.adjust_brightness(image, rng.uniform(1 - brightness, 1 + brightness))
    image = TF.adjust_contrast(image, rng.uniform(1 - contrast, 1 + contrast))
    image = TF.adjust_saturation(image, rng.uniform(1 - saturation, 1 + saturation))
    # keep the hue shift away from 0 so the intervention always moves colour
    return TF.adjust_hue(image, rng.choice([-1, 1]) * rng.uniform(hue / 2, hue))


TRANSFORMS = {
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


def intervene(config: InterventionConfig, image, sample_id: str, family: str | None = None):
    """(family, intervened image) of a PIL RGB image or a uint8 3xHxW tensor: the per-sample draw of `config`
    (the family unless given, and its parameters), applied."""
    family, rng = config.draw(sample_id, family)
    return family, TRANSFORMS[family](image, rng, **config.parameters(family))
