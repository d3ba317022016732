"""The papers' losses, on low-resolution logits against the label downsampled with nearest."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.losses import DiceLoss
from torch import nn

from medsam_ft.transforms import IGNORE_INDEX


def downsample_label(label: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """long[B, 1, H, W] -> long[B, 1, h, w] by nearest-neighbour sampling (no new label values)."""
    if tuple(label.shape[-2:]) == tuple(size):
        return label
    return F.interpolate(label.float(), size=size, mode="nearest").long()


class SAMedLoss(nn.Module):
    """``ce_weight * CE + dice_weight * Dice`` (SAMed: 0.2 / 0.8).

    Dice: softmax over the C classes, background included, squared denominator, one Dice per class
    computed over the whole batch, averaged over classes. The label is downsampled (nearest) to the
    logits' size, as SAMed supervises its low-resolution logits. Pixels labelled ``ignore_index``
    count in neither term (MONAI's ``DiceCELoss`` has no ignore value; the terms are its own).
    ``jaccard``: soft IoU instead of Dice (CAD's BCE + IoU in softmax terms: ``ce_weight=1,
    dice_weight=1, jaccard=True``).

    forward: logits float[B, C, h, w], label long[B, 1, H, W] -> scalar.
    """

    def __init__(self, ce_weight: float = 0.2, dice_weight: float = 0.8, ignore_index: int = IGNORE_INDEX,
                 jaccard: bool = False):
        super().__init__()
        self.ce_weight, self.dice_weight, self.ignore_index = ce_weight, dice_weight, ignore_index
        self.dice = DiceLoss(include_background=True, squared_pred=True, batch=True, jaccard=jaccard)

    def forward(self, logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        label = downsample_label(label, tuple(logits.shape[-2:]))[:, 0]
        valid = (label != self.ignore_index).unsqueeze(1)
        ce = F.cross_entropy(logits, label, ignore_index=self.ignore_index, reduction="sum") / valid.sum().clamp(min=1)
        target = F.one_hot(torch.where(valid[:, 0], label, 0), logits.shape[1]).permute(0, 3, 1, 2).to(logits.dtype)
        dice = self.dice(logits.softmax(dim=1) * valid, target * valid)
        return self.ce_weight * ce + self.dice_weight * dice
