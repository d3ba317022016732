"""Box prompts from ground truth (SAM-PARSER's, MedSAM's protocol): one box per (slice, object class).

A box is ``(x0, y0, x1, y1)`` in pixels of the 2D sample, x along its last axis (width), y along the
one before (height), x1/y1 the last pixel inside. Training boxes grow each side outwards by a random
0..``max_jitter`` pixels; evaluation boxes by a fixed ``eval_jitter`` (clamped to the image).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from monai.engines import PrepareBatch, PrepareBatchDefault, PrepareBatchExtraInput
from monai.transforms import Randomizable

from medsam_ft.io import InputError


def mask_box(mask: torch.Tensor) -> torch.Tensor:
    """The tight box of a mask.

    Args:
        mask: bool[H, W], non-empty.

    Returns:
        float[4] (x0, y0, x1, y1), the last pixels inside.

    Raises:
        ValueError: an empty mask.
    """
    rows = torch.nonzero(mask.any(dim=1)).flatten()
    cols = torch.nonzero(mask.any(dim=0)).flatten()
    if rows.numel() == 0:
        raise ValueError("an empty mask has no box")
    return torch.tensor([cols[0], rows[0], cols[-1], rows[-1]], dtype=torch.float32)


def grow_box(box: torch.Tensor, amounts: np.ndarray, height: int, width: int) -> torch.Tensor:
    """A box grown outwards, clamped to the image.

    Args:
        box: float[4] (x0, y0, x1, y1).
        amounts: [4] pixels per side.
        height: H of the image.
        width: W of the image.

    Returns:
        float[4], the grown box.
    """
    grown = box + torch.as_tensor(amounts, dtype=torch.float32) * torch.tensor([-1.0, -1.0, 1.0, 1.0])
    return torch.minimum(torch.clamp(grown, min=0.0), torch.tensor([width - 1.0, height - 1.0] * 2))


class BoxPromptDataset(Randomizable, torch.utils.data.Dataset):
    """One item per (sample, class present in its label) of a 2D dataset of ``{"image", "label"}``.

    Item: ``image`` float[3, H, W], ``box`` float[4], ``label`` long[1, H, W] (1 inside that class,
    0 elsewhere, the ignore value kept), ``organ`` the class id. ``fixed``: every side grown by
    ``eval_jitter``; else by a random 0..``max_jitter`` (``seed``; reseeded per DataLoader worker,
    like MONAI's random transforms). ``min_pixels``: (sample, class) pairs whose object has no more
    pixels than this are left out (SAM-PARSER keeps objects of more than 100 pixels). The samples
    must be deterministic (no random augmentation): their boxes are indexed once, at construction.

    Args:
        samples: a 2D dataset of ``{"image", "label"}``.
        max_jitter: training: the largest random growth per side, in pixels.
        fixed: evaluation boxes (``eval_jitter`` on every side).
        eval_jitter: the fixed growth per side, in pixels.
        seed: the jitter's random state.
        ignore_index: the label of unlabelled pixels (kept as it is).
        min_pixels: objects of no more pixels are left out.
    """

    def __init__(self, samples: torch.utils.data.Dataset, max_jitter: int = 20, fixed: bool = False,
                 eval_jitter: int = 10, seed: int = 0, ignore_index: int = 255, min_pixels: int = 0):
        self.samples, self.max_jitter, self.fixed, self.eval_jitter = samples, max_jitter, fixed, eval_jitter
        self.ignore_index = ignore_index
        self.set_random_state(seed)
        self.index: list[tuple[int, int]] = []
        for i in range(len(samples)):
            classes, counts = torch.unique(torch.as_tensor(samples[i]["label"]), return_counts=True)
            self.index += [(i, int(c)) for c, n in zip(classes.tolist(), counts.tolist())
                           if c not in (0, ignore_index) and n > min_pixels]
        if len(samples) and not self.index:
            raise InputError("<box prompts>", "no sample holds any object class to put a box around")

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, k: int) -> dict[str, Any]:
        i, organ = self.index[k]
        sample: Mapping[str, Any] = self.samples[i]
        label = torch.as_tensor(sample["label"])
        inside = label[0] == organ
        height, width = inside.shape
        amounts = np.full(4, self.eval_jitter) if self.fixed else self.R.randint(0, self.max_jitter + 1, size=4)
        binary = torch.where(label == self.ignore_index, label, inside[None].long())
        return {"image": sample["image"], "box": grow_box(mask_box(inside), amounts, height, width),
                "label": binary.long(), "organ": organ}


class PrepareBatchOptionalBoxes(PrepareBatch):
    """The MONAI engines' batch preparation for both network modes.

    A batch holding ``box`` float[B, 4] (from :class:`BoxPromptDataset`) calls the network as
    ``network(image, box)``; any other as ``network(image)``. One trainer and evaluator
    configuration then serves class masks and box prompts.
    """

    def __init__(self) -> None:
        self.with_boxes, self.without = PrepareBatchExtraInput("box"), PrepareBatchDefault()

    def __call__(self, batchdata: Mapping[str, Any], device: str | torch.device | None = None,
                 non_blocking: bool = False, **kwargs: Any) -> Any:
        prepare = self.with_boxes if "box" in batchdata else self.without
        return prepare(batchdata, device, non_blocking, **kwargs)
