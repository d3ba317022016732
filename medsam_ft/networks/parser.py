"""SAM-PARSER: train only the singular-value coefficients of chosen encoder weights (Peng et al. 2024).

Each chosen weight W (a Conv2d's weight reshaped to out x (in/groups * k * k), or a Linear's) is
rewritten from its SVD as ``U diag(p) V^T`` (a ``torch.nn.utils.parametrize`` parametrization): U and V
frozen buffers, the coefficients p trained and initialised to the singular values, so the untrained
network computes what the base network does.
The mask decoder (and the no-prompt embedding) are trained as for decoder-only. ``merge()`` folds
the coefficients back into plain weights.

``layers``: ``"conv"`` (the paper's best setting): the Conv2d layers after the transformer, i.e. the
encoder neck (1x1 and 3x3 convs) on SAM's ViT and on LiteMedSAM alike (TinyViT's convolutions inside
its stages, patch embedding and merging are not "after the transformer" and stay frozen);
``"linear"``: every Linear of the encoder; ``"all"``: every Conv2d and Linear of the encoder.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping

import torch
from torch import nn
from torch.nn.utils import parametrize

from medsam_ft.backbones import Backbone

from .semantic_sam import SemanticSAM

logger = logging.getLogger(__name__)

LAYER_CHOICES = ("conv", "linear", "all")


class SVDCoefficients(nn.Module):
    """A Conv2d or Linear weight as ``U diag(p) V^T``: a ``torch.nn.utils.parametrize`` parametrization.

    Registered on a layer's ``weight``, the layer stores only the coefficients p (its
    ``parametrizations.weight.original``, float[r]) and computes its weight from them; U float[m, r]
    and V^T float[r, n] (m = out channels, n = in/groups x k x k) are frozen buffers from the SVD
    of the weight it was registered on, and p starts at its singular values. ``rank_ratio`` < 1 keeps
    the largest r = ``ceil(ratio * min(m, n))`` singular values only (the initial weight is then the
    truncated one).

    Args:
        weight: the layer's weight, float[m, ...].
        rank_ratio: the share of singular values kept, in (0, 1].

    Raises:
        ValueError: ``rank_ratio`` outside (0, 1].
    """

    def __init__(self, weight: torch.Tensor, rank_ratio: float = 1.0):
        super().__init__()
        if not 0 < rank_ratio <= 1:
            raise ValueError(f"rank_ratio must be in (0, 1], got {rank_ratio}")
        u, s, vh = torch.linalg.svd(weight.detach().reshape(weight.shape[0], -1).double(), full_matrices=False)
        rank = math.ceil(rank_ratio * s.numel())
        self.register_buffer("u", u[:, :rank].to(weight.dtype))
        self.register_buffer("vh", vh[:rank].to(weight.dtype))
        self.weight_shape = tuple(weight.shape)

    def forward(self, coefficients: torch.Tensor) -> torch.Tensor:
        """float[r] -> the weight, float[m, ...] as the layer's."""
        return ((self.u * coefficients) @ self.vh).reshape(self.weight_shape)

    def right_inverse(self, weight: torch.Tensor) -> torch.Tensor:
        """The coefficients of ``weight`` in this basis: diag(U^T W V), float[r] (the singular values
        for the weight the basis came from)."""
        matrix = weight.detach().reshape(weight.shape[0], -1).double()
        return (self.u.double().T @ matrix @ self.vh.double().T).diagonal().to(weight.dtype)


def fold_svd_coefficients(network: nn.Module) -> None:
    """Replace every SVD-parametrized weight of ``network`` by the plain weight it computes (in place).

    ``network`` is a deep copy (:meth:`SemanticSAM.merged_copy`): a copied parametrized module shares
    the class ``parametrize`` made for the original, and ``remove_parametrizations`` edits that class;
    each module gets its own copy of the class first, so the original network stays parametrized.

    Args:
        network: the copy to fold.
    """
    for module in network.modules():
        if parametrize.is_parametrized(module, "weight"):
            shared = type(module)
            module.__class__ = type(shared.__name__, shared.__bases__, dict(shared.__dict__))
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)


def _chosen_layers(encoder: nn.Module, layers: str) -> list[nn.Module]:
    """Every layer of the encoder that ``layers`` names."""
    if layers not in LAYER_CHOICES:
        raise ValueError(f"unknown SAM-PARSER layers {layers!r}; choose one of {LAYER_CHOICES}")
    if layers == "conv":
        scope, kinds = encoder.neck, (nn.Conv2d,)
    else:
        scope, kinds = encoder, (nn.Linear,) if layers == "linear" else (nn.Conv2d, nn.Linear)
    return [module for module in scope.modules() if isinstance(module, kinds)]


class SAMParser(SemanticSAM):
    """SAM-PARSER behind the network contract.

    Args:
        backbone: the backbone's parts.
        num_classes: C, background included.
        config: what :func:`~medsam_ft.networks.build_network` records.
        layers: ``conv``, ``linear`` or ``all`` (see the module docstring).
        rank_ratio: the share of singular values kept, in (0, 1].

    Raises:
        ValueError: unknown ``layers``, or none of them in the backbone's encoder.
    """

    def __init__(self, backbone: Backbone, num_classes: int, config: dict, layers: str = "conv",
                 rank_ratio: float = 1.0):
        super().__init__(backbone, num_classes, config)
        self.svd_layers: list[nn.Module] = []
        for layer in _chosen_layers(self.image_encoder, layers):
            parametrize.register_parametrization(layer, "weight", SVDCoefficients(layer.weight, rank_ratio))
            self.svd_layers.append(layer)
        if not self.svd_layers:
            raise ValueError(f"backbone {backbone.name} has no {layers} layers to decompose")
        coefficients = sum(c.numel() for c in self.coefficients)
        logger.info("SAM-PARSER: %d coefficients in %d %s layers (rank ratio %g)", coefficients,
                    len(self.svd_layers), layers, rank_ratio)
        self.set_trainable([self.mask_decoder, self.prompt_encoder.no_mask_embed],
                           self.coefficients)

    @property
    def coefficients(self) -> list[nn.Parameter]:
        """The trained coefficient vectors p, one per decomposed layer."""
        return [layer.parametrizations.weight.original for layer in self.svd_layers]

    def load_trainable_state_dict(self, state: Mapping[str, torch.Tensor], source: str = "state dict") -> None:
        """As :meth:`SemanticSAM.load_trainable_state_dict`; checkpoints of medsam_ft 0.1 stored each
        layer's coefficients as ``<layer>.coefficients``."""
        renamed = {k.removesuffix(".coefficients") + ".parametrizations.weight.original" if k.endswith(".coefficients")
                   else k: v for k, v in state.items()}
        super().load_trainable_state_dict(renamed, source)

    def merge(self) -> SemanticSAM:
        """A copy with every coefficient vector folded into a plain weight: SAM's own modules, no
        overhead (see :meth:`SemanticSAM.merged_copy`)."""
        return self.merged_copy(fold_svd_coefficients, "svd_layers")
