"""Predicting 2D images at their own resolution, whatever their size."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from monai.inferers import Inferer, SimpleInferer, SlidingWindowInferer


class ResizingInferer(Inferer):
    """Resize the whole image to ``size`` x ``size``, run ``inner`` on it, resize the logits back.

    For networks trained on whole images resized to ``size`` (then cropped, for networks of any input
    size such as GSAM): windows and whole-image predictions see the image at its training scale.

    ``__call__(inputs float[B, C, H, W], network)`` -> float[B, K, H, W].
    """

    def __init__(self, size: int, inner: Inferer):
        super().__init__()
        self.size, self.inner = size, inner

    def __call__(self, inputs: torch.Tensor, network: Callable[..., torch.Tensor], *args: Any,
                 **kwargs: Any) -> torch.Tensor:
        height, width = inputs.shape[-2:]
        resized = F.interpolate(torch.as_tensor(inputs), size=(self.size, self.size), mode="bilinear",
                                align_corners=False)
        logits = self.inner(resized, network, *args, **kwargs)
        return F.interpolate(torch.as_tensor(logits).float(), size=(height, width), mode="bilinear",
                             align_corners=False)


def full_resolution_inferer(sliding_window: int | None = None, overlap: float = 0.25, sw_batch_size: int = 4,
                            blend: str = "gaussian", resize_to: int | None = None) -> Inferer:
    """The MONAI inferer that predicts a whole image at its own resolution, at the scale it trained at.

    Use it with :class:`medsam_ft.engine.SlicePredictor` (without its own ``resize_to``), which returns
    logits at the size of what it is given.

    Args:
        sliding_window: None: the whole image in one pass (a fixed-size network resizes it to its
            input size and the logits back). w: windows of w x w pixels, overlapping by ``overlap``,
            blended with ``blend`` weights (``gaussian`` or ``constant``); images smaller than a
            window are padded with zeros, as crops were in training. A 1500 x 1500 tile is then
            predicted without being shrunk to the network's size.
        overlap: window overlap (fraction).
        sw_batch_size: windows per network call.
        blend: how overlapping windows are averaged.
        resize_to: R: training resized whole images to R x R before cutting crops (GSAM): the
            image is resized to R x R first, windows (or the whole) predicted on that, and the logits
            resized back to the image's size (see :class:`ResizingInferer`).

    Returns:
        ``inferer(image float[B, C, H, W], network) -> float[B, K, H, W]``.
    """
    inferer: Inferer = SimpleInferer()
    if sliding_window is not None:
        inferer = SlidingWindowInferer(roi_size=(sliding_window, sliding_window), sw_batch_size=sw_batch_size,
                                       overlap=overlap, mode=blend, padding_mode="constant", progress=False)
    return inferer if resize_to is None else ResizingInferer(resize_to, inferer)
