"""A fitted projection and its base model as one open_clip model folder, checked before it takes its name.

`export_projection` folds the projection into the base model, writes the folder and reloads it through
open_clip's own `local-dir:` loader: the folder is kept only if the reloaded model's encode_image and
encode_text equal the base model's outputs times the projection. `load_exported` is open_clip's triple.
"""
from __future__ import annotations

import copy

import numpy as np
import open_clip
import torch

from tasks.embed.models import LOCAL_DIR, load_model, model_config
from tasks.errors import InputError
from tasks.export.fold import CannotFold, fold_projection
from tasks.export.folder import write_folder

# the folded model's outputs may differ from (base output) @ P by float32 rounding alone
RELATIVE_TOLERANCE = 1e-4
PROBE_TEXTS = ("a photo of a dog.", "a sketch of a house in the snow.")


def load_exported(folder: str, device: str = "cpu"):
    """open_clip's triple (model, preprocess, tokenizer) of an exported folder, exactly as anyone loads it."""
    name = f"{LOCAL_DIR}{folder}"
    model, _, preprocess = open_clip.create_model_and_transforms(name, device=device)
    return model.eval(), preprocess, open_clip.get_tokenizer(name)


@torch.inference_mode()
def _outputs(model, pixels, tokens) -> tuple[np.ndarray, np.ndarray]:
    return (model.encode_image(pixels).double().numpy(), model.encode_text(tokens).double().numpy())


def probe_inputs(model, tokenizer) -> tuple[torch.Tensor, torch.Tensor]:
    """Two seeded random images at the model's input size and two tokenised captions."""
    size = model.visual.preprocess_cfg["size"]
    height, width = (size, size) if isinstance(size, int) else size
    pixels = torch.randn(2, 3, height, width, generator=torch.Generator().manual_seed(0))
    return pixels, tokenizer(list(PROBE_TEXTS))


def check_reproduces(base, tokenizer, components: np.ndarray):
    """A check for `write_folder`: the folder, reloaded by open_clip, gives the base model's outputs times P."""
    pixels, tokens = probe_inputs(base, tokenizer)
    expected = [output @ components for output in _outputs(base, pixels, tokens)]

    def check(folder) -> None:
        exported, _, _ = load_exported(str(folder))
        for tower, got, want in zip(("image", "text"), _outputs(exported, pixels, tokens), expected):
            error = np.abs(got - want).max() / max(np.abs(want).max(), np.finfo(float).tiny)
            if not error <= RELATIVE_TOLERANCE:
                raise CannotFold(f"the exported model's {tower} embeddings differ from the base model's times the "
                                 f"projection (relative error {error:.1e}): this architecture uses its embedding width "
                                 "beyond its last linear layer, so the projection cannot be folded into it", "model")
    return check


def export_projection(model_name: str, pretrained: str, components, out: str, *, provenance: dict, card: str):
    """Fold `components` (d x k) into the base model and write the checked folder `out`; return its path."""
    components = np.asarray(components, dtype=np.float64)
    loaded = load_model(model_name, pretrained, "cpu")
    model_cfg = copy.deepcopy(model_config(model_name))
    if components.ndim != 2 or components.shape[0] != model_cfg["embed_dim"]:
        raise InputError(f"the projection maps {components.shape[0]}-dim embeddings, but {model_name!r} embeds into "
                         f"{model_cfg['embed_dim']} dimensions: export it with the model its run used", "model")
    folded = fold_projection(loaded.model, components)
    model_cfg["embed_dim"] = int(components.shape[1])
    preprocess_cfg = dict(loaded.model.visual.preprocess_cfg)
    return write_folder(out, folded, model_cfg, preprocess_cfg, loaded.tokenizer, provenance, card,
                        check=check_reproduces(loaded.model, loaded.tokenizer, components))
