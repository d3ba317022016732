"""The papers' losses: on low-resolution logits against the label downsampled with nearest (SAMed),
or on logits upsampled to the label's resolution (GSAM, CAD)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.losses import DiceLoss
from torch import nn

from medsam_ft.transforms import IGNORE_INDEX


def downsample_label(label: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A label map at the logits' resolution, by nearest-neighbour sampling (no new label values).

    Args:
        label: long[B, 1, H, W] class ids.
        size: (h, w).

    Returns:
        long[B, 1, h, w].
    """
    if tuple(label.shape[-2:]) == tuple(size):
        return label
    return F.interpolate(label.float(), size=size, mode="nearest").long()


class SegmentationLoss(nn.Module):
    """``ce_weight * CE + focal_weight * focal + dice_weight * Dice``, every method's loss.

    SAMed: CE 0.2 + Dice 0.8 (the defaults); SAM-PARSER: ``(1 - lambda) CE + lambda focal + Dice``;
    CAD: CE + soft IoU (``jaccard=True``); GSAM: CE alone. Dice: softmax over the C classes,
    background included, squared denominator, one Dice per class computed over the whole batch,
    averaged over classes (``jaccard``: soft IoU instead). Focal: ``(1 - p_t)^gamma`` times the
    pixel's CE. Resolution: by default the label is downsampled (nearest) to the logits' size, as
    SAMed supervises its low-resolution logits; ``upsample_logits`` instead resizes the logits
    (bilinear) to the label's size, as the GSAM and CAD references do (thin structures such as
    membranes alias when the label is downsampled). Pixels labelled ``ignore_index`` count in no
    term (MONAI's ``DiceCELoss`` has no ignore value; CE and focal are means over labelled pixels).

    forward: logits float[B, C, h, w], label long[B, 1, H, W] -> scalar.

    Args:
        ce_weight: weight of the cross-entropy.
        dice_weight: weight of the Dice (or soft IoU) loss.
        focal_weight: weight of the focal loss.
        focal_gamma: the focal loss's gamma.
        jaccard: soft IoU instead of Dice (CAD).
        ignore_index: the label of pixels that count in no term.
        upsample_logits: resize the logits to the label instead of the label to the logits.
    """

    def __init__(self, ce_weight: float = 0.2, dice_weight: float = 0.8, focal_weight: float = 0.0,
                 focal_gamma: float = 2.0, jaccard: bool = False, ignore_index: int = IGNORE_INDEX,
                 upsample_logits: bool = False):
        super().__init__()
        self.upsample_logits = upsample_logits
        self.ce_weight, self.dice_weight, self.focal_weight = ce_weight, dice_weight, focal_weight
        self.focal_gamma, self.ignore_index = focal_gamma, ignore_index
        self.dice = DiceLoss(include_background=True, squared_pred=True, batch=True, jaccard=jaccard)

    def forward(self, logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        if self.upsample_logits and tuple(logits.shape[-2:]) != tuple(label.shape[-2:]):
            logits = F.interpolate(logits, size=tuple(label.shape[-2:]), mode="bilinear", align_corners=False)
        label = downsample_label(label, tuple(logits.shape[-2:]))[:, 0]
        valid = (label != self.ignore_index).unsqueeze(1)
        count = valid.sum().clamp(min=1)
        ce_pixels = F.cross_entropy(logits, label, ignore_index=self.ignore_index, reduction="none")
        loss = self.ce_weight * ce_pixels.sum() / count
        if self.focal_weight:
            focal = (1.0 - torch.exp(-ce_pixels)) ** self.focal_gamma * ce_pixels
            loss = loss + self.focal_weight * focal.sum() / count
        target = F.one_hot(torch.where(valid[:, 0], label, 0), logits.shape[1]).permute(0, 3, 1, 2).to(logits.dtype)
        return loss + self.dice_weight * self.dice(logits.softmax(dim=1) * valid, target * valid)
