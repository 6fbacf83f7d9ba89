"""Fold a fitted projection P (d x k) into an open_clip model's last linear layers.

CLIP-ICM's projection is linear and applies to each tower's output, and each open_clip tower ends
in a linear map into the d-dim embedding space; so (x W) P = x (W P): the folded model's
encode_image / encode_text are the base model's outputs times P, exactly, and the model is an
ordinary open_clip model with embed_dim = k. Only a head whose output is a linear map of the
embedding's inputs takes it (no offset after it, no layer that reads the embedding again);
anything else is refused in one line saying why.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from tasks.errors import InputError


@dataclass(frozen=True)
class Head:
    """Where a tower's output is made: `owner.attribute`, a weight matrix (width x d) or an nn.Linear (d x width)."""

    owner: nn.Module
    attribute: str
    path: str  # for messages and the model card: "visual.proj"

    def fold(self, projection: torch.Tensor) -> None:
        layer = getattr(self.owner, self.attribute)
        if isinstance(layer, nn.Linear):  # y = x W^T + b  ->  y P = x (P^T W)^T + P^T b
            folded = nn.Linear(layer.in_features, projection.shape[1], bias=layer.bias is not None,
                               dtype=layer.weight.dtype, device=layer.weight.device)
            with torch.no_grad():
                folded.weight.copy_(projection.T @ layer.weight.double())
                if layer.bias is not None:
                    folded.bias.copy_(projection.T @ layer.bias.double())
            setattr(self.owner, self.attribute, folded)
        else:  # y = x W  ->  y P = x (W P)
            setattr(self.owner, self.attribute,
                    nn.Parameter((layer.detach().double() @ projection).to(layer.dtype), requires_grad=False))


class CannotFold(InputError):
    """The model's final layers cannot take the projection."""


def image_head(model: nn.Module) -> Head:
    """The image tower's last linear layer: a ViT's `proj`, a ModifiedResNet's `attnpool.c_proj`, a timm head's
    `proj` (or its MLP's `fc2`)."""
    visual = model.visual
    name = type(visual).__name__
    if hasattr(visual, "attnpool") and isinstance(getattr(visual.attnpool, "c_proj", None), nn.Linear):
        return Head(visual.attnpool, "c_proj", "visual.attnpool.c_proj")
    if name == "VisionTransformer":
        if getattr(visual, "attn_pool", None) is not None:
            raise CannotFold(f"the image tower ({name} with an attentional pooler) sizes its pooler by the embedding "
                             "width, so a projection cannot be folded into its output layer", "model")
        if getattr(visual, "proj", None) is None:
            raise CannotFold(f"the image tower ({name}) has no output projection (visual.proj is None) to fold "
                             "the projection into", "model")
        return Head(visual, "proj", "visual.proj")
    head = getattr(visual, "head", None)
    if isinstance(getattr(head, "proj", None), nn.Linear):
        return Head(head, "proj", "visual.head.proj")
    if isinstance(getattr(getattr(head, "mlp", None), "fc2", None), nn.Linear):
        return Head(head.mlp, "fc2", "visual.head.mlp.fc2")
    trunk = getattr(visual, "trunk", None)  # a timm model without a projection of open_clip's: its classifier is
    classifier = trunk.get_classifier() if hasattr(trunk, "get_classifier") else None  # sized to the embedding
    if isinstance(classifier, nn.Linear):
        path = next(path for path, module in trunk.named_modules() if module is classifier)
        owner, _, attribute = path.rpartition(".")
        return Head(trunk.get_submodule(owner), attribute, f"visual.trunk.{path}")
    raise CannotFold(f"the image tower ({name}) ends in no linear layer clip-icm knows how to fold the projection "
                     "into (a ViT's proj, a ResNet's attnpool.c_proj, a timm head's proj or mlp.fc2, a timm "
                     "classifier)", "model")


def text_head(model: nn.Module) -> Head:
    """The text tower's last linear layer: `text_projection` (a matrix or an nn.Linear), or an HF text encoder's
    `proj` (an nn.Linear, or the last one of its MLP)."""
    if getattr(model, "text_projection", None) is not None:  # CLIP: the text tower's parts sit on the model
        return Head(model, "text_projection", "text_projection")
    text = getattr(model, "text", None)
    if getattr(text, "text_projection", None) is not None:
        return Head(text, "text_projection", "text.text_projection")
    proj = getattr(text, "proj", None)
    if isinstance(proj, nn.Linear):
        return Head(text, "proj", "text.proj")
    if isinstance(proj, nn.Sequential) and isinstance(proj[-1], nn.Linear):
        return Head(proj, str(len(proj) - 1), f"text.proj.{len(proj) - 1}")
    raise CannotFold(f"the text tower ({type(text or model).__name__}) ends in no linear layer (text_projection or "
                     "proj) to fold the projection into", "model")


def heads(model: nn.Module) -> dict[str, Head]:
    """{"image": Head, "text": Head}; CannotFold for a model that also reads its embeddings again (CoCa's
    captioning decoder)."""
    if hasattr(model, "text_decoder"):
        raise CannotFold(f"{type(model).__name__} feeds its embeddings to a captioning decoder, which a projected "
                         "embedding would break; export a contrastive CLIP model", "model")
    return {"image": image_head(model), "text": text_head(model)}


def fold_projection(model: nn.Module, components) -> nn.Module:
    """A copy of `model` whose encode_image and encode_text are the base model's times `components` (d x k)."""
    projection = torch.as_tensor(components, dtype=torch.float64)
    folded = copy.deepcopy(model).cpu()
    for head in heads(folded).values():
        head.fold(projection)
    return folded
