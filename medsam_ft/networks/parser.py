"""SAM-PARSER: train only the singular-value coefficients of chosen encoder weights (Peng et al. 2024).

Each chosen weight W (a Conv2d's weight reshaped to out x (in/groups * k * k), or a Linear's) is
rewritten from its SVD as ``U diag(p) V^T``: U and V frozen buffers, the coefficients p trained and
initialised to the singular values, so the untrained network computes what the base network does.
The mask decoder (and the no-prompt embedding) are trained as for decoder-only. ``merge()`` folds
the coefficients back into plain weights.

``layers``: ``"conv"`` (the paper's best setting): the Conv2d layers after the transformer, i.e. the
encoder neck (1x1 and 3x3 convs) on SAM's ViT and on LiteMedSAM alike (TinyViT's convolutions inside
its stages, patch embedding and merging are not "after the transformer" and stay frozen);
``"linear"``: every Linear of the encoder; ``"all"``: every Conv2d and Linear of the encoder.
"""

from __future__ import annotations

import copy
import logging
import math

import torch
import torch.nn.functional as F
from torch import nn

from medsam_ft.backbones import Backbone

from .semantic_sam import SemanticSAM

logger = logging.getLogger(__name__)

LAYER_CHOICES = ("conv", "linear", "all")


class SVDWeight(nn.Module):
    """A Conv2d or Linear whose weight is ``U diag(coefficients) V^T`` (U, V frozen buffers, bias frozen).

    forward: as the wrapped layer. ``rank_ratio`` < 1 keeps the largest ``ceil(ratio * min(m, n))``
    singular values only (then the initial weight is the truncated one).
    """

    def __init__(self, layer: nn.Conv2d | nn.Linear, rank_ratio: float = 1.0):
        super().__init__()
        if not 0 < rank_ratio <= 1:
            raise ValueError(f"rank_ratio must be in (0, 1], got {rank_ratio}")
        self.layer = layer
        weight = layer.weight.detach()
        matrix = weight.reshape(weight.shape[0], -1).double()
        u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
        rank = math.ceil(rank_ratio * s.numel())
        self.register_buffer("u", u[:, :rank].to(weight.dtype))
        self.register_buffer("vh", vh[:rank].to(weight.dtype))
        self.coefficients = nn.Parameter(s[:rank].to(weight.dtype))
        self.weight_shape = tuple(weight.shape)
        del layer.weight  # the weight is computed; the layer keeps its bias and hyper-parameters
        layer.register_buffer("weight", None, persistent=False)

    def weight(self) -> torch.Tensor:
        return ((self.u * self.coefficients) @ self.vh).reshape(self.weight_shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        layer = self.layer
        if isinstance(layer, nn.Linear):
            return F.linear(x, self.weight(), layer.bias)
        return layer._conv_forward(x, self.weight(), layer.bias)

    def merged(self) -> nn.Module:
        """A plain Conv2d/Linear with the current weight."""
        plain = copy.deepcopy(self.layer)
        del plain.weight
        plain.weight = nn.Parameter(self.weight().detach().clone())
        return plain


def _chosen_layers(encoder: nn.Module, layers: str) -> list[tuple[nn.Module, str, nn.Module]]:
    """``(parent, attribute, layer)`` for every layer of the encoder that ``layers`` names."""
    if layers not in LAYER_CHOICES:
        raise ValueError(f"unknown SAM-PARSER layers {layers!r}; choose one of {LAYER_CHOICES}")
    if layers == "conv":
        scope, kinds = encoder.neck, (nn.Conv2d,)
    else:
        scope, kinds = encoder, (nn.Linear,) if layers == "linear" else (nn.Conv2d, nn.Linear)
    return [(parent, name, child) for parent in scope.modules() for name, child in parent.named_children()
            if isinstance(child, kinds)]


class SAMParser(SemanticSAM):
    """SAM-PARSER behind the network contract. Options: ``layers``, ``rank_ratio``."""

    def __init__(self, backbone: Backbone, num_classes: int, config: dict, layers: str = "conv",
                 rank_ratio: float = 1.0):
        super().__init__(backbone, num_classes, config)
        self.svd_layers: list[SVDWeight] = []
        for parent, name, layer in _chosen_layers(self.image_encoder, layers):
            wrapped = SVDWeight(layer, rank_ratio)
            setattr(parent, name, wrapped)
            self.svd_layers.append(wrapped)
        if not self.svd_layers:
            raise ValueError(f"backbone {backbone.name} has no {layers} layers to decompose")
        coefficients = sum(layer.coefficients.numel() for layer in self.svd_layers)
        logger.info("SAM-PARSER: %d coefficients in %d %s layers (rank ratio %g)", coefficients,
                    len(self.svd_layers), layers, rank_ratio)
        self.set_trainable([self.mask_decoder, self.prompt_encoder.no_mask_embed],
                           [layer.coefficients for layer in self.svd_layers])

    def merge(self) -> SemanticSAM:
        """A copy with every coefficient vector folded into a plain weight: SAM's own modules, no
        overhead (see :meth:`SemanticSAM.merged_copy`)."""
        return self.merged_copy(SVDWeight, "svd_layers")
