"""Box prompts as the frozen prompt encoder's sparse tokens: SAM-PARSER's ground-truth boxes, CAD's whole-image box."""

from __future__ import annotations

import torch
from segment_anything.modeling import PromptEncoder

PROMPTS = ("none", "box", "whole_image_box")


def box_tokens(prompt_encoder: PromptEncoder, boxes: torch.Tensor) -> torch.Tensor:
    """SAM's sparse tokens of boxes.

    Args:
        prompt_encoder: the backbone's prompt encoder (frozen, as in SAM fine-tuning).
        boxes: float[B, 4] (x0, y0, x1, y1) in the backbone's S x S input frame.

    Returns:
        float[B, 2, D] sparse tokens.
    """
    tokens, _ = prompt_encoder(points=None, boxes=boxes, masks=None)
    return tokens


def prompt_tokens(prompt_encoder: PromptEncoder, prompt: str, boxes: torch.Tensor | None, image_size: int,
                  height: int, width: int) -> torch.Tensor | None:
    """The sparse prompt tokens the decoder reads for a network's ``prompt`` mode.

    Args:
        prompt_encoder: the backbone's prompt encoder.
        prompt: ``none``, ``box`` or ``whole_image_box`` (see :class:`~medsam_ft.networks.SemanticSAM`).
        boxes: float[B, 4] (x0, y0, x1, y1) in the pixels of the H x W image (``prompt="box"`` only).
        image_size: S, the backbone's input size the boxes are scaled to.
        height: H of the image the boxes are in.
        width: W of the image the boxes are in.

    Returns:
        float[B, 2, D] tokens (``box``), float[1, 2, D] (``whole_image_box``), or None (``none``).

    Raises:
        ValueError: boxes missing for a box-prompted network, or given to any other.
    """
    if prompt == "box":
        if boxes is None:
            raise ValueError("this network is box-prompted: call it as forward(image, boxes)")
        scale = boxes.new_tensor([width, height, width, height])
        return box_tokens(prompt_encoder, boxes.float() * image_size / scale)
    if boxes is not None:
        raise ValueError(f"this network takes no boxes (prompt={prompt!r}); build it with prompt='box'")
    if prompt == "whole_image_box":
        device = prompt_encoder.point_embeddings[0].weight.device
        return box_tokens(prompt_encoder, torch.tensor([[0.0, 0.0, image_size - 1.0, image_size - 1.0]], device=device))
    return None
