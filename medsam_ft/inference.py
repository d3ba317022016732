"""Predicting 2D images at their own resolution, whatever their size."""

from __future__ import annotations

from monai.inferers import Inferer, SimpleInferer, SlidingWindowInferer


def full_resolution_inferer(sliding_window: int | None = None, overlap: float = 0.25, sw_batch_size: int = 4,
                            blend: str = "gaussian") -> Inferer:
    """The MONAI inferer that predicts a whole image at its own resolution with a fixed-size network.

    Use it with :class:`medsam_ft.engine.SlicePredictor`, which returns logits at the size of what it is given.

    - ``sliding_window`` None: resize-predict-resize: the image is resized to the network's input size
      and the logits back to the image's size (for images trained as whole, resized images).
    - ``sliding_window`` w: windows of w x w pixels at native resolution, overlapping by ``overlap``,
      blended with ``blend`` weights (``gaussian`` or ``constant``); each window is resized to the
      network and back. Images smaller than a window are padded with zeros, as crops were in
      training. A 1500 x 1500 tile is predicted without being shrunk to the network's size.
    """
    if sliding_window is None:
        return SimpleInferer()
    return SlidingWindowInferer(roi_size=(sliding_window, sliding_window), sw_batch_size=sw_batch_size,
                                overlap=overlap, mode=blend, padding_mode="constant", progress=False)
