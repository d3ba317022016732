"""The papers' losses, on low-resolution logits against the label downsampled with nearest."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.losses import DiceCELoss
from torch import nn


def downsample_label(label: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """long[B, 1, H, W] -> long[B, 1, h, w] by nearest-neighbour sampling (no new label values)."""
    if tuple(label.shape[-2:]) == tuple(size):
        return label
    return F.interpolate(label.float(), size=size, mode="nearest").long()


class SAMedLoss(nn.Module):
    """``ce_weight * CE + dice_weight * Dice`` (SAMed: 0.2 / 0.8).

    Dice: softmax over the C classes, background included, squared denominator, one Dice per class
    computed over the whole batch, averaged over classes. The label is downsampled (nearest) to the
    logits' size, as SAMed supervises its low-resolution logits.

    forward: logits float[B, C, h, w], label long[B, 1, H, W] -> scalar.
    """

    def __init__(self, ce_weight: float = 0.2, dice_weight: float = 0.8):
        super().__init__()
        self.loss = DiceCELoss(
            include_background=True,
            to_onehot_y=True,
            softmax=True,
            squared_pred=True,
            batch=True,
            lambda_ce=ce_weight,
            lambda_dice=dice_weight,
        )

    def forward(self, logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        return self.loss(logits, downsample_label(label, tuple(logits.shape[-2:])))
