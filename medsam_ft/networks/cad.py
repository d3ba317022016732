"""CAD: a convolutional adapter beside the frozen SAM encoder, for little training memory.

The image encoder runs under ``torch.no_grad()`` in eval mode, so training keeps none of its
activations; a small CNN sees the RGB image and its high-frequency components (FFT with the centred
low-frequency square of area ``tau * H * W`` removed) and adds ``0.1 * tanh(...)`` of its features,
pooled to the embedding grid, to the image embedding. The adapter and the mask decoder are trained.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from medsam_ft.backbones import Backbone

from .semantic_sam import SemanticSAM

STEMS = ("paper", "strided")


def high_frequency(image: torch.Tensor, tau: float = 0.25) -> torch.Tensor:
    """CAD's high-frequency image: ``|Re(ifft2(F))|``, F the centred spectrum with its low frequencies zeroed.

    Args:
        image: float[..., H, W].
        tau: the zeroed square around the zero frequency has side ``2 * floor(sqrt(tau * H * W) / 2)``.

    Returns:
        float[..., H, W].
    """
    height, width = image.shape[-2:]
    half = int(math.sqrt(tau * height * width) // 2)
    spectrum = torch.fft.fftshift(torch.fft.fft2(image.float()), dim=(-2, -1))
    keep = torch.ones(height, width, device=image.device)
    keep[height // 2 - half : height // 2 + half, width // 2 - half : width // 2 + half] = 0
    return torch.fft.ifft2(torch.fft.ifftshift(spectrum * keep, dim=(-2, -1))).real.abs()


class AdapterBlock(nn.Module):
    """``avgpool2(x + leaky_relu(bn(conv3x3_dilation2(x))))``: float[B, C, H, W] -> float[B, C, H/2, W/2].

    Args:
        channels: C.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, padding=2, dilation=2, bias=False)
        self.norm = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x + F.leaky_relu(self.norm(self.conv(x)), 0.1), 2)


class ConvAdapter(nn.Module):
    """CAD's adapter: float[B, 3, S, S] in [0, 1] and an embedding grid (h, w) -> float[B, D, h, w] in [-0.1, 0.1].

    Input: RGB + its high-frequency components (6 channels), each divided by its maximum per image.
    ``stem="paper"``: a 1x1 conv to ``channels``, so the first block convolves at full resolution;
    ``"strided"``: a 4x4 conv at stride 4 instead (16x fewer block FLOPs, same memory benefit).
    Each block's output is average-pooled to (h, w); the sum is projected to D (1x1 conv, when
    ``channels`` differs from D), squashed with tanh and scaled by 0.1.

    Args:
        embed_dim: D, the image embedding's channels.
        channels: the blocks' width (None: D).
        num_blocks: the adapter blocks.
        tau: see :func:`high_frequency`.
        stem: ``paper`` or ``strided``.

    Raises:
        ValueError: unknown stem.
    """

    def __init__(self, embed_dim: int, channels: int | None = None, num_blocks: int = 3, tau: float = 0.25,
                 stem: str = "paper"):
        super().__init__()
        if stem not in STEMS:
            raise ValueError(f"unknown CAD stem {stem!r}; choose one of {STEMS}")
        channels = channels or embed_dim
        self.stem = nn.Conv2d(6, channels, kernel_size=1) if stem == "paper" else nn.Conv2d(6, channels, 4, stride=4)
        self.blocks = nn.ModuleList(AdapterBlock(channels) for _ in range(num_blocks))
        self.project = nn.Conv2d(channels, embed_dim, kernel_size=1) if channels != embed_dim else nn.Identity()
        self.tau = tau

    def forward(self, image: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        x = torch.cat([image, high_frequency(image, self.tau)], dim=1)
        x = x / x.amax(dim=(-2, -1), keepdim=True).clamp_min(1e-6)
        x = self.stem(x)
        pooled = 0
        for block in self.blocks:
            x = block(x)
            pooled = pooled + F.adaptive_avg_pool2d(x, grid)
        return 0.1 * torch.tanh(self.project(pooled))


class CAD(SemanticSAM):
    """CAD behind the network contract (``forward(image) -> logits float[B, C, H/s, W/s]``).

    The paper prompts the decoder with a box around the whole image:
    ``build_network("cad", ..., prompt="whole_image_box")``. Trained: the adapter and the mask decoder.

    Args:
        backbone: the backbone's parts.
        num_classes: C, background included.
        config: what :func:`~medsam_ft.networks.build_network` records.
        tau: the FFT high-pass radius, a fraction of the spectrum.
        stem: ``paper`` (the reference's full-resolution convolutions) or ``strided`` (cheaper).
        adapter_channels: the adapter's width (None: its default).
        adapter_size: the side the adapter sees the image at, apart from the encoder's; None: half
            the encoder's, as the reference feeds the adapter 512-px images and the encoder 1024.
    """

    def __init__(self, backbone: Backbone, num_classes: int, config: dict, *, tau: float = 0.25,
                 stem: str = "paper", adapter_channels: int | None = None, adapter_size: int | None = None):
        super().__init__(backbone, num_classes, config)
        self.adapter = ConvAdapter(self.mask_decoder.transformer_dim, adapter_channels, tau=tau, stem=stem)
        self.adapter_size = adapter_size or self.image_size // 2
        smallest = self.adapter_size // ((4 if stem == "strided" else 1) * 2 ** len(self.adapter.blocks))
        if smallest < 1:
            raise ValueError(f"CAD's adapter at {self.adapter_size} px with the {stem} stem pools its last block to "
                             f"{smallest} px; give a larger adapter_size (or image_size)")
        self.set_trainable([self.adapter, self.mask_decoder])

    def train(self, mode: bool = True) -> CAD:
        """The encoder stays in eval mode whatever the mode of the rest."""
        super().train(mode)
        self.image_encoder.eval()
        return self

    def image_embeddings(self, image: torch.Tensor) -> torch.Tensor:
        """The frozen encoder's embedding (no autograd; the image at the encoder's size) plus the
        adapter's (the image at ``adapter_size``): float[B, D, h, w]."""
        embeddings = self.encode(self.preprocess(image))
        adapter_input = F.interpolate(image, size=(self.adapter_size, self.adapter_size), mode="bilinear",
                                      align_corners=False)
        return embeddings + self.adapter(adapter_input, tuple(embeddings.shape[-2:]))
