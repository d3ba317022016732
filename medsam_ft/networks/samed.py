"""SAMed: LoRA on the query and value projections of every image-encoder attention block.

Zhang & Liu, "Customized Segment Anything Model for Medical Image Segmentation" (2023). The encoder
is frozen; each fused qkv Linear gets two rank-r bypasses, ``alpha * B_q A_q x`` added to the query
rows and ``alpha * B_v A_v x`` to the value rows (keys untouched). A is Kaiming-uniform
initialised and B zero, so the untrained network equals the base network. The mask decoder and the
no-prompt embedding are trained as well. ``alpha`` multiplies the update directly; SAMed uses 1
(PEFT's ``lora_alpha`` corresponds to ``alpha = lora_alpha / r``).
"""

from __future__ import annotations

import copy
import logging
import math

import torch
from torch import nn

from medsam_ft.backbones import Backbone, QKVProjection

from .semantic_sam import SemanticSAM

logger = logging.getLogger(__name__)


class LoRAQKV(nn.Module):
    """A frozen fused qkv Linear plus low-rank updates of its query and value rows.

    forward: float[..., in] -> float[..., out]; ``q_rows`` / ``v_rows`` say where q and v sit in
    the output (``[q | k | v]`` for SAM's ViT, per head for TinyViT).

    Args:
        qkv: the frozen fused projection.
        q_rows: its output rows of q.
        v_rows: its output rows of v.
        rank: the LoRA rank.
        alpha: the update's scale.
    """

    def __init__(self, qkv: nn.Linear, q_rows: torch.Tensor, v_rows: torch.Tensor, rank: int, alpha: float):
        super().__init__()
        if rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {rank}")
        self.qkv = qkv
        self.alpha = alpha
        self.register_buffer("q_rows", q_rows.clone(), persistent=False)
        self.register_buffer("v_rows", v_rows.clone(), persistent=False)
        self.lora_q_a = nn.Linear(qkv.in_features, rank, bias=False)
        self.lora_q_b = nn.Linear(rank, len(q_rows), bias=False)
        self.lora_v_a = nn.Linear(qkv.in_features, rank, bias=False)
        self.lora_v_b = nn.Linear(rank, len(v_rows), bias=False)
        for down, up in ((self.lora_q_a, self.lora_q_b), (self.lora_v_a, self.lora_v_b)):
            nn.init.kaiming_uniform_(down.weight, a=math.sqrt(5))
            nn.init.zeros_(up.weight)

    @property
    def lora_modules(self) -> list[nn.Module]:
        return [self.lora_q_a, self.lora_q_b, self.lora_v_a, self.lora_v_b]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.qkv(x)
        out = out.index_add(-1, self.q_rows, self.lora_q_b(self.lora_q_a(x)), alpha=self.alpha)
        return out.index_add(-1, self.v_rows, self.lora_v_b(self.lora_v_a(x)), alpha=self.alpha)

    def merged(self) -> nn.Linear:
        """A plain Linear computing the same function (weight + alpha * scatter(B A))."""
        linear = copy.deepcopy(self.qkv)
        with torch.no_grad():
            linear.weight.index_add_(0, self.q_rows, self.lora_q_b.weight @ self.lora_q_a.weight, alpha=self.alpha)
            linear.weight.index_add_(0, self.v_rows, self.lora_v_b.weight @ self.lora_v_a.weight, alpha=self.alpha)
        return linear


class SAMed(SemanticSAM):
    """SemanticSAM with LoRA on q and v of every encoder attention block.

    Args:
        backbone: the backbone's parts.
        num_classes: C, background included.
        config: what :func:`~medsam_ft.networks.build_network` records.
        rank: the LoRA rank (SAMed: 4).
        alpha: the scale of the low-rank update.
    """

    def __init__(self, backbone: Backbone, num_classes: int, config: dict, rank: int = 4, alpha: float = 1.0):
        super().__init__(backbone, num_classes, config)
        self.lora_layers = [self._insert_lora(p, rank, alpha) for p in backbone.qkv_projections(self.image_encoder)]
        if not self.lora_layers:
            raise ValueError(f"backbone {backbone.name} has no attention blocks for LoRA")
        logger.info("new: LoRA rank %d (alpha %g) on q and v of %d attention blocks, A Kaiming-uniform, B zero",
                    rank, alpha, len(self.lora_layers))
        self.set_trainable(
            [self.mask_decoder, self.prompt_encoder.no_mask_embed]
            + [m for layer in self.lora_layers for m in layer.lora_modules]
        )

    @staticmethod
    def _insert_lora(projection: QKVProjection, rank: int, alpha: float) -> LoRAQKV:
        layer = LoRAQKV(projection.linear, projection.q_rows, projection.v_rows, rank, alpha)
        setattr(projection.parent, projection.attr, layer)
        return layer

    def merge(self) -> SemanticSAM:
        """A copy with every LoRA update folded into its qkv weight: plain SAM modules, no overhead
        (see :meth:`SemanticSAM.merged_copy`)."""
        def fold(network: nn.Module) -> None:
            for parent in list(network.modules()):
                for name, child in list(parent.named_children()):
                    if isinstance(child, LoRAQKV):
                        setattr(parent, name, child.merged())

        return self.merged_copy(fold, "lora_layers")
