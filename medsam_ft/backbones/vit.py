"""SAM ViT backbones (``vit_b``, ``vit_l``, ``vit_h``, and ``vit_tiny`` for tests) from ``segment_anything``.

Weights come from a user-given SAM checkpoint (e.g. ``sam_vit_b_01ec64.pth``). For an input size
other than the checkpoint's 1024, the absolute position embedding and the relative position tables
of the global-attention blocks are resized bilinearly (``align_corners=False``), as SAMed does for
512; windowed blocks keep their 14x14 tables. Pixels are normalised with SAM's own mean/std
(``segment_anything.modeling.Sam``'s ``pixel_mean`` / ``pixel_std``, the ImageNet statistics).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, TwoWayTransformer
from segment_anything.modeling.image_encoder import Attention as ViTAttention
from torch import nn

from medsam_ft.io import file_sha256

from .base import (
    SAM_PIXEL_MEAN,
    SAM_PIXEL_STD,
    Backbone,
    QKVProjection,
    load_checked,
    random_init_report,
    read_state_dict,
    register_backbone,
)
from .weights import resolve_weights


@dataclass(frozen=True)
class ViTConfig:
    embed_dim: int
    depth: int
    num_heads: int
    global_attn_indexes: tuple[int, ...]
    window_size: int = 14
    patch_size: int = 16
    prompt_dim: int = 256
    decoder_mlp_dim: int = 2048
    decoder_heads: int = 8
    mask_in_chans: int = 16
    checkpoint_size: int = 1024  # input size the published weights were trained at


VIT_CONFIGS: dict[str, ViTConfig] = {
    "vit_b": ViTConfig(768, 12, 12, (2, 5, 8, 11)),
    "vit_l": ViTConfig(1024, 24, 16, (5, 11, 17, 23)),
    "vit_h": ViTConfig(1280, 32, 16, (7, 15, 23, 31)),
    # Same classes at toy size: one windowed and two global blocks, a narrow decoder. Tests only.
    "vit_tiny": ViTConfig(64, 3, 2, (1, 2), window_size=4, prompt_dim=32, decoder_mlp_dim=64, decoder_heads=2,
                          mask_in_chans=4, checkpoint_size=256),
}


def _resize_position_table(key: str, value: torch.Tensor, target: torch.Tensor) -> torch.Tensor | None:
    """Resize ``pos_embed`` [1, g, g, C] or a global ``rel_pos_h/w`` [2g-1, C] to ``target``'s shape."""
    if key == "image_encoder.pos_embed" and value.ndim == 4 and value.shape[-1] == target.shape[-1]:
        grid = value.permute(0, 3, 1, 2).float()
        resized = F.interpolate(grid, size=tuple(target.shape[1:3]), mode="bilinear", align_corners=False)
        return resized.permute(0, 2, 3, 1)
    if key.endswith(("attn.rel_pos_h", "attn.rel_pos_w")) and value.ndim == 2 and value.shape[1] == target.shape[1]:
        table = value[None, None].float()
        return F.interpolate(table, size=tuple(target.shape), mode="bilinear", align_corners=False)[0, 0]
    return None


def vit_qkv_projections(image_encoder: nn.Module) -> list[QKVProjection]:
    """Every attention block's ``qkv`` Linear, laid out ``[q | k | v]`` (dim rows each).

    Args:
        image_encoder: SAM's ``ImageEncoderViT``.

    Returns:
        Where each q and v row block sits, for LoRA.
    """
    projections = []
    for module in image_encoder.modules():
        if isinstance(module, ViTAttention):
            dim = module.qkv.in_features
            projections.append(
                QKVProjection(module, "qkv", torch.arange(0, dim), torch.arange(2 * dim, 3 * dim))
            )
    return projections


def build_sam_vit(name: str, weights: str | os.PathLike | None = None, image_size: int | None = None) -> Backbone:
    """Build SAM's ViT variant ``name`` at ``image_size`` (a multiple of 16; default: the weights' size).

    Args:
        name: ``vit_b``, ``vit_l``, ``vit_h`` or the tiny test configuration ``vit_tiny``.
        weights: a SAM checkpoint file (``sam_vit_b_01ec64.pth``...), or a published name (``vit_b``,
            ``vit_l``, ``vit_h``: downloaded once, see :mod:`medsam_ft.backbones.weights`); None: random
            initialisation.
        image_size: the input size; position tables are resized from the weights' size.

    Returns:
        The backbone with SAM's pixel mean/std as its normalisation.

    Raises:
        ValueError: ``image_size`` not a multiple of the patch size.
        InputError: ``weights`` unreadable or not this variant's (names the file and the tensors).
    """
    cfg = VIT_CONFIGS[name]
    image_size = image_size or cfg.checkpoint_size
    if image_size % cfg.patch_size:
        raise ValueError(f"{name}: image_size must be a multiple of {cfg.patch_size}, got {image_size}")
    grid = image_size // cfg.patch_size
    image_encoder = ImageEncoderViT(
        img_size=image_size,
        patch_size=cfg.patch_size,
        embed_dim=cfg.embed_dim,
        depth=cfg.depth,
        num_heads=cfg.num_heads,
        mlp_ratio=4,
        out_chans=cfg.prompt_dim,
        qkv_bias=True,
        norm_layer=partial(nn.LayerNorm, eps=1e-6),
        use_rel_pos=True,
        global_attn_indexes=cfg.global_attn_indexes,
        window_size=cfg.window_size,
    )
    prompt_encoder = PromptEncoder(
        embed_dim=cfg.prompt_dim,
        image_embedding_size=(grid, grid),
        input_image_size=(image_size, image_size),
        mask_in_chans=cfg.mask_in_chans,
    )
    mask_decoder = MaskDecoder(
        num_multimask_outputs=3,
        transformer=TwoWayTransformer(depth=2, embedding_dim=cfg.prompt_dim, mlp_dim=cfg.decoder_mlp_dim,
                                      num_heads=cfg.decoder_heads),
        transformer_dim=cfg.prompt_dim,
        iou_head_depth=3,
        iou_head_hidden_dim=cfg.prompt_dim,
    )
    modules = {"image_encoder": image_encoder, "prompt_encoder": prompt_encoder, "mask_decoder": mask_decoder}
    if weights is None:
        report, sha = random_init_report(name), None
    else:
        path, sha = resolve_weights(weights)
        state = read_state_dict(path, expected=f"SAM {name}")
        report = load_checked(modules, state, path, expected=f"SAM {name}", adapt=_resize_position_table)
        sha = sha or file_sha256(path)
    return Backbone(name, image_encoder, prompt_encoder, mask_decoder, image_size, sha, report, vit_qkv_projections,
                    SAM_PIXEL_MEAN, SAM_PIXEL_STD)


for _name in VIT_CONFIGS:
    register_backbone(_name)(partial(build_sam_vit, _name))
