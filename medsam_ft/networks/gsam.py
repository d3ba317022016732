"""GSAM: SAM for any input size (Kato, Mitsuoka & Hotta, "Generalized SAM", 2024).

Three additions to a frozen SAM encoder, all trained:
- no absolute position table: a Positional Encoding Generator (PEG, a residual depth-wise 3x3 conv)
  after the first block, and the mask decoder's positional encoding generated from the image
  embedding by another depth-wise conv, so any token grid works;
- a CNN encoder (torchvision ResNet stem + layer1..3, "the third block of ResNet-101") whose
  features, projected 1x1 to the encoder width, are added to the tokens before the first block and,
  x0.5, after the last one;
- a Spatial-Multiscale AdaptFormer beside every block's MLP: down-projection, the sum of 1x1, 3x3 and
  dilated 3x3 convs (rates 12, 24, 36), up-projection, x0.5.
Also trained: the global-attention relative position tables (interpolated to each token grid by
segment_anything), the mask decoder and the no-prompt embedding. The rest of SAM stays frozen.

Inputs of any H x W: padded (zeros after normalisation) to a multiple of the encoder's stride and the
logits cropped back, so training on random crops and predicting whole images use one network.

On ``lite_medsam`` (TinyViT) there is no absolute position table to replace and its blocks already
hold depth-wise convs, so no PEG is added; the adapters go beside the MLPs of its attention blocks,
and the CNN features are resized to the token grid where they are added (before the first attention
stage, after the last stage).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
import torchvision
from segment_anything.modeling import ImageEncoderViT
from torch import nn

from medsam_ft.backbones import Backbone
from medsam_ft.backbones.base import SAM_PIXEL_MEAN as IMAGENET_MEAN
from medsam_ft.backbones.base import SAM_PIXEL_STD as IMAGENET_STD
from medsam_ft.backbones.lite_medsam import TinyViTEncoder
from medsam_ft.io import InputError, load_torch_file

from .semantic_sam import SemanticSAM

logger = logging.getLogger(__name__)

ADAPTER_BRANCHES = ("1x1", "3x3", "dilated")
CNN_ENCODERS = {"resnet101": 1024, "resnet50": 1024, "resnet18": 256}  # name -> layer3 channels


class PositionalEncodingGenerator(nn.Module):
    """PEG (Chu et al. 2021): ``x + depthwise_conv3x3(x)``. forward: float[B, H, W, D] -> float[B, H, W, D].

    Args:
        dim: D.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.conv = nn.Conv2d(dim, dim, kernel_size=3, padding=1, groups=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


class SMAdaptFormer(nn.Module):
    """Spatial-Multiscale AdaptFormer.

    forward: float[B, H, W, D] -> float[B, H, W, D] =
    ``scale * up(sum_k branch_k(relu(down(x))))``, the branches being convs on the bottleneck map:
    ``1x1``, ``3x3`` and, for ``dilated``, one dilated 3x3 per rate. ``up`` starts at zero, so the
    adapted block starts as the pretrained one.

    Args:
        dim: D.
        bottleneck: the bottleneck width.
        branches: which of ``1x1``, ``3x3``, ``dilated``.
        dilations: the dilated branch's rates.
        scale: the output's scale.

    Raises:
        ValueError: an unknown branch.
    """

    def __init__(self, dim: int, bottleneck: int, branches: Sequence[str] = ADAPTER_BRANCHES,
                 dilations: Sequence[int] = (12, 24, 36), scale: float = 0.5):
        super().__init__()
        unknown = sorted(set(branches) - set(ADAPTER_BRANCHES))
        if unknown or not branches:
            raise ValueError(f"adapter branches must be some of {ADAPTER_BRANCHES}, got {list(branches)}")
        self.down = nn.Linear(dim, bottleneck)
        convs: list[nn.Module] = []
        if "1x1" in branches:
            convs.append(nn.Conv2d(bottleneck, bottleneck, kernel_size=1))
        if "3x3" in branches:
            convs.append(nn.Conv2d(bottleneck, bottleneck, kernel_size=3, padding=1))
        if "dilated" in branches:
            convs += [nn.Conv2d(bottleneck, bottleneck, kernel_size=3, padding=r, dilation=r) for r in dilations]
        self.branches = nn.ModuleList(convs)
        self.up = nn.Linear(bottleneck, dim)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = F.relu(self.down(x)).permute(0, 3, 1, 2)
        spatial = sum(branch(hidden) for branch in self.branches)
        return self.scale * self.up(spatial.permute(0, 2, 3, 1))


class AdaptedMLP(nn.Module):
    """A block's MLP with an :class:`SMAdaptFormer` beside it: ``mlp(x) + adapter(x)``.

    forward: float[B, H, W, D] (ViT blocks), or float[B, H*W, D] token sequences whose grid
    ``grid()`` returns (TinyViT blocks) -> the same shape.

    Args:
        mlp: the block's MLP (frozen).
        adapter: the adapter beside it.
        grid: for token sequences, returns their (H, W); None for [B, H, W, D] input.
    """

    def __init__(self, mlp: nn.Module, adapter: SMAdaptFormer, grid: Callable[[], tuple[int, int]] | None = None):
        super().__init__()
        self.mlp, self.adapter, self.grid = mlp, adapter, grid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 4:
            return self.mlp(x) + self.adapter(x)
        height, width = self.grid()
        return self.mlp(x) + self.adapter(x.view(x.shape[0], height, width, -1)).flatten(1, 2)


class CNNEncoder(nn.Module):
    """A torchvision ResNet's stem and layer1..3: float[B, 3, H, W] -> float[B, C, H/s, W/s].

    s = 8 without the stem's max-pool, 16 with it; C = 1024 (resnet50/101) or 256 (resnet18).
    ``weights``: a local torchvision ImageNet file for that ResNet; without one, random init.
    The input is normalised as ``input_norm`` (``{"mean", "std"}`` on the [0, 1] scale, the
    network's pixel normalisation) and converted to the ImageNet statistics torchvision's ResNets
    were trained with, whatever the transformer branch is fed.

    Args:
        name: ``resnet18``, ``resnet50`` or ``resnet101``.
        stride: s, 8 or 16.
        weights: a local torchvision ImageNet file for that ResNet; None: random initialisation.
        input_norm: the normalisation its input arrives in (None: none, [0, 1] pixels).

    Raises:
        ValueError: unknown name or stride.
        InputError: a weight file that is not that ResNet's.
    """

    def __init__(self, name: str = "resnet101", stride: int = 16, weights: str | os.PathLike | None = None,
                 input_norm: Mapping[str, Sequence[float]] | None = None):
        super().__init__()
        mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
        given_mean = torch.tensor(input_norm["mean"]) if input_norm else mean
        given_std = torch.tensor(input_norm["std"]) if input_norm else std
        self.register_buffer("input_scale", (given_std / std).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("input_shift", ((given_mean - mean) / std).view(1, 3, 1, 1), persistent=False)
        if name not in CNN_ENCODERS:
            raise ValueError(f"unknown CNN encoder {name!r}; choose one of {list(CNN_ENCODERS)}")
        if stride not in (8, 16):
            raise ValueError(f"the CNN encoder's stride is 8 or 16, got {stride}")
        resnet = getattr(torchvision.models, name)(weights=None)
        if weights is not None:
            _load_resnet_weights(resnet, weights, name)
        else:
            logger.warning("GSAM CNN encoder %s: random initialisation (no cnn_weights file given; GSAM starts "
                           "from ImageNet weights, e.g. torchvision's %s-*.pth; a trained checkpoint restores "
                           "its own)", name, name)
        stem = [resnet.conv1, resnet.bn1, resnet.relu] + ([resnet.maxpool] if stride == 16 else [])
        self.body = nn.Sequential(*stem, resnet.layer1, resnet.layer2, resnet.layer3)
        self.out_channels = CNN_ENCODERS[name]
        self.stride = stride

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.body(image * self.input_scale + self.input_shift)


def _load_resnet_weights(resnet: nn.Module, path: str | os.PathLike, name: str) -> None:
    """Load the stem and layer1..3 of a torchvision ResNet state dict; anything missing is an error."""
    state = load_torch_file(path, f"torchvision {name} ImageNet weights")
    if not isinstance(state, dict):
        raise InputError(path, f"is not a state dict of torchvision's {name}")
    wanted = {k for k in resnet.state_dict() if k.startswith(("conv1.", "bn1.", "layer1.", "layer2.", "layer3."))}
    missing = sorted(wanted - set(state))
    if missing:
        raise InputError(path, f"lacks {len(missing)} tensors of torchvision's {name} (e.g. {missing[:3]}): another network?")
    try:
        resnet.load_state_dict({k: state[k] for k in wanted}, strict=False)
    except RuntimeError as err:
        raise InputError(path, f"does not fit torchvision's {name}: {err}") from None
    logger.info("GSAM CNN encoder %s: %d tensors from %s", name, len(wanted), path)


class GSAMViTEncoder(nn.Module):
    """SAM's ViT encoder without its position table: PEG after block 0, CNN features added before and after.

    forward: float[B, 3, H, W] (SAM-normalised, H and W multiples of the patch stride p)
    -> float[B, 256, H/p, W/p].

    Args:
        encoder: SAM's ``ImageEncoderViT`` (its blocks and neck are reused).
        cnn: the CNN encoder (None: none).
        patch_stride: p (16, or 8 with a re-strided patch embedding).
    """

    def __init__(self, encoder: ImageEncoderViT, cnn: CNNEncoder | None, patch_stride: int):
        super().__init__()
        self.patch_embed, self.blocks, self.neck = encoder.patch_embed, encoder.blocks, encoder.neck
        if patch_stride != self.patch_embed.proj.stride[0]:
            # SAM's 16 x 16 patch kernel at a finer stride, padded so that the grid is H/p x W/p
            self.patch_embed.proj.stride = (patch_stride, patch_stride)
            self.patch_embed.proj.padding = ((16 - patch_stride) // 2,) * 2
        dim = self.patch_embed.proj.out_channels
        self.peg = PositionalEncodingGenerator(dim)
        self.cnn = cnn
        if cnn is not None:
            self.cnn_in = nn.Conv2d(cnn.out_channels, dim, kernel_size=1)
            self.cnn_out = nn.Conv2d(cnn.out_channels, dim, kernel_size=1)
        self.stride = patch_stride

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(image)
        features = self.cnn(image) if self.cnn is not None else None
        if features is not None:
            x = x + self.cnn_in(features).permute(0, 2, 3, 1)
        for index, block in enumerate(self.blocks):
            x = block(x)
            if index == 0:
                x = self.peg(x)
        if features is not None:
            x = x + 0.5 * self.cnn_out(features).permute(0, 2, 3, 1)
        return self.neck(x.permute(0, 3, 1, 2))


class GSAMTinyViTEncoder(nn.Module):
    """LiteMedSAM's TinyViT with CNN features added before its first attention stage and after its last.

    forward: float[B, 3, H, W] (SAM-normalised, H and W multiples of 8) -> float[B, 256, H/4, W/4].
    The CNN features are resized (bilinear) to each token grid.

    Args:
        encoder: LiteMedSAM's :class:`~medsam_ft.backbones.lite_medsam.TinyViTEncoder`.
        cnn: the CNN encoder (None: none).
    """

    def __init__(self, encoder: TinyViTEncoder, cnn: CNNEncoder | None):
        super().__init__()
        self.encoder, self.cnn = encoder, cnn
        if cnn is not None:
            self.cnn_in = nn.Conv2d(cnn.out_channels, encoder.layers[1].dim, kernel_size=1)
            self.cnn_out = nn.Conv2d(cnn.out_channels, encoder.layers[-1].dim, kernel_size=1)
        self.stride = 8

    def _add(self, tokens: torch.Tensor, features: torch.Tensor, projection: nn.Module, grid: tuple[int, int],
             weight: float) -> torch.Tensor:
        """tokens float[B, h*w, C] + weight * projection(features) resized to the h x w grid."""
        added = F.interpolate(projection(features), size=grid, mode="bilinear", align_corners=False)
        return tokens + weight * added.flatten(2).transpose(1, 2)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = image.shape
        encoder = self.encoder
        encoder.set_input_size(height, width)
        features = self.cnn(image) if self.cnn is not None else None
        x = encoder.patch_embed(image)
        for index, layer in enumerate(encoder.layers):
            if index == 1 and features is not None:
                x = self._add(x, features, self.cnn_in, layer.input_resolution, 1.0)
            x = layer(x)
        if features is not None:
            x = self._add(x, features, self.cnn_out, (height // 4, width // 4), 0.5)
        return encoder.neck(x.view(batch, height // 4, width // 4, x.shape[-1]).permute(0, 3, 1, 2))


class GSAM(SemanticSAM):
    """GSAM behind the network contract: forward(float[B, 3, H, W]) -> float[B, C, H/s, W/s] for any H x W.

    s = ``output_stride``: patch stride / 4 on ViT (4 by default), 1 on lite_medsam.

    Args:
        backbone: the backbone's parts.
        num_classes: C, background included.
        config: what :func:`~medsam_ft.networks.build_network` records.
        patch_stride: ViT: 16 keeps SAM's token grid and output stride 4; 8, as the authors' code,
            quadruples the tokens.
        cnn: a ResNet name, or None for no CNN encoder.
        cnn_weights: a local torchvision ImageNet weight file for it (None: random initialisation).
        adapter_bottleneck: the SM-AdaptFormer's bottleneck width (default: the block width / 4).
        adapter_branches: which of ``1x1``, ``3x3``, ``dilated`` the adapter has.
        dilations: the dilated branch's dilation rates.
        adapter_scale: the adapter output's scale.
    """

    any_input_size = True

    def __init__(self, backbone: Backbone, num_classes: int, config: dict, *, patch_stride: int = 16,
                 cnn: str | None = "resnet101", cnn_weights: str | os.PathLike | None = None,
                 adapter_bottleneck: int | None = None, adapter_branches: Sequence[str] = ADAPTER_BRANCHES,
                 dilations: Sequence[int] = (12, 24, 36), adapter_scale: float = 0.5):
        super().__init__(backbone, num_classes, config)
        if self.prompt != "none":
            raise ValueError("GSAM is prompt-free (semantic segmentation): build it with prompt='none'")
        if patch_stride not in (8, 16):
            raise ValueError(f"GSAM patch_stride is 16 or 8, got {patch_stride}")

        def adapter(dim: int) -> SMAdaptFormer:
            return SMAdaptFormer(dim, adapter_bottleneck or max(dim // 4, 1), adapter_branches, dilations, adapter_scale)

        encoder = self.image_encoder
        adapters: list[nn.Module] = []
        rel_pos: list[nn.Parameter] = []
        if isinstance(encoder, ImageEncoderViT):
            cnn_encoder = CNNEncoder(cnn, patch_stride, cnn_weights, self.config["pixel_norm"]) if cnn else None
            for block in encoder.blocks:
                block.mlp = AdaptedMLP(block.mlp, adapter(block.norm2.normalized_shape[0]))
                adapters.append(block.mlp.adapter)
                if block.window_size == 0 and block.attn.use_rel_pos:
                    rel_pos += [block.attn.rel_pos_h, block.attn.rel_pos_w]
            self.image_encoder = GSAMViTEncoder(encoder, cnn_encoder, patch_stride)
            new = [self.image_encoder.peg]
            self.output_stride = patch_stride // 4
        elif isinstance(encoder, TinyViTEncoder):
            if patch_stride != 16:
                raise ValueError("lite_medsam has no patch embedding stride to choose: leave patch_stride at 16")
            cnn_encoder = CNNEncoder(cnn, 8, cnn_weights, self.config["pixel_norm"]) if cnn else None
            for layer in encoder.layers[1:]:
                for block in layer.blocks:
                    block.mlp = AdaptedMLP(block.mlp, adapter(block.dim), grid=lambda b=block: b.input_resolution)
                    adapters.append(block.mlp.adapter)
            self.image_encoder = GSAMTinyViTEncoder(encoder, cnn_encoder)
            new = []
        else:
            raise ValueError(f"GSAM supports SAM ViT and lite_medsam backbones, not {type(encoder).__name__}")
        if cnn_encoder is not None:
            new += [cnn_encoder, self.image_encoder.cnn_in, self.image_encoder.cnn_out]
        dim = self.mask_decoder.transformer_dim
        self.decoder_pe = nn.Conv2d(dim, dim, kernel_size=3, padding=1, groups=dim)
        self.size_multiple = self.image_encoder.stride
        self.set_trainable(new + adapters + [self.decoder_pe, self.mask_decoder, self.prompt_encoder.no_mask_embed],
                           rel_pos)
        logger.info("GSAM: %d trainable parameters of %d (%d adapters, CNN %s, patch stride %d)",
                    self.num_parameters(trainable_only=True), self.num_parameters(), len(adapters), cnn, patch_stride)

    def positional_encoding(self, embeddings: torch.Tensor) -> torch.Tensor:
        """float[B, D, h, w]: generated from the image embedding (depth-wise 3x3 conv), for any grid."""
        return self.decoder_pe(embeddings)

    def forward(self, image: torch.Tensor, boxes: torch.Tensor | None = None) -> torch.Tensor:
        """float[B, 3, H, W] in [0, 1] -> logits float[B, C, H/s, W/s]; H, W padded to the encoder's
        stride internally, the logits cropped back. GSAM is prompt-free: ``boxes`` are refused."""
        if boxes is not None:
            raise ValueError("GSAM is prompt-free (semantic segmentation); it takes no box prompts")
        height, width = image.shape[-2:]
        multiple = self.size_multiple
        image = self.normalise(image)
        image = F.pad(image, (0, -width % multiple, 0, -height % multiple))
        logits = self.decode(self.encode(image))
        return logits[..., : height // self.output_stride, : width // self.output_stride]
