"""Prediction wiring: a network as MONAI inferers call it, and 2D images at their own resolution."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from monai.inferers import Inferer, SimpleInferer, SlidingWindowInferer
from torch import nn

from medsam_ft.transforms import three_channels


class ResizingInferer(Inferer):
    """Resize the whole image to ``size`` x ``size``, run ``inner`` on it, resize the logits back.

    For networks trained on whole images resized to ``size`` (then cropped, for networks of any input
    size such as GSAM): windows and whole-image predictions see the image at its training scale.

    ``__call__(inputs float[B, C, H, W], network)`` -> float[B, K, H, W].

    Args:
        size: the side whole images were resized to in training.
        inner: the inferer run on the resized image (whole, or sliding windows).
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

    Use it with :class:`SlicePredictor` (without its own ``resize_to``), which returns
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


class SlicePredictor(nn.Module):
    """A 2D network as MONAI's ``SliceInferer`` needs it: grey slices in, full-resolution logits out.

    forward: float[B, 1 or 3, H, W] in [0, 1] -> float[B, C, H, W] (grey repeated to 3 channels;
    logits upsampled bilinearly from H/s x W/s). Also what MONAI's ``SlidingWindowInferer`` calls
    on each window of a large 2D image.

    Args:
        network: a :class:`~medsam_ft.networks.SemanticSAM`.
        resize_to: R: the image is resized to R x R first, as in training (networks of any input
            size; fixed-size networks resize to their own size anyway). None: as given.
    """

    def __init__(self, network: nn.Module, resize_to: int | None = None):
        super().__init__()
        self.network, self.resize_to = network, resize_to

    def forward(self, image: torch.Tensor, boxes: torch.Tensor | None = None) -> torch.Tensor:
        """``boxes`` float[B, 4] (box-prompted networks) in the image's pixels."""
        size = tuple(image.shape[-2:])
        image = three_channels(image)
        if self.resize_to is not None:
            image = F.interpolate(image, size=(self.resize_to, self.resize_to), mode="bilinear", align_corners=False)
            if boxes is not None:
                boxes = boxes * boxes.new_tensor([self.resize_to / size[1], self.resize_to / size[0]] * 2)
        logits = self.network(image) if boxes is None else self.network(image, boxes)
        if tuple(logits.shape[-2:]) != size:
            logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        return logits
