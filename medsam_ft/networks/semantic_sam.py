"""SemanticSAM: prompt-free SAM with one mask token per class; the network every method builds on."""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from medsam_ft.backbones import Backbone, resolve_pixel_norm
from medsam_ft.io import InputError

from .class_decoder import ClassMaskDecoder
from .embedding_cache import EmbeddingCache
from .prompts import PROMPTS, prompt_tokens

logger = logging.getLogger(__name__)

# What every network's config holds beside its method's own options (see build_network)
COMMON_OPTIONS = ("method", "backbone", "num_classes", "weights", "image_size", "pixel_norm", "prompt")


class SemanticSAM(nn.Module):
    """Semantic segmentation with a SAM-family backbone.

    ``forward(image)``: float[B, 3, H, W] in [0, 1] -> logits float[B, C, H/s, W/s], C classes
    including background, s = ``output_stride``. The network resizes the input to its backbone's
    ``image_size`` (bilinear) and normalises the pixels itself; if H x W differs from the backbone
    size, the logits are resized to H/s x W/s.

    ``config`` (what :func:`~medsam_ft.networks.build_network` records) may hold:

    - ``pixel_norm``: the input normalisation (see :func:`~medsam_ft.backbones.resolve_pixel_norm`;
      None: the backbone's own, the one its weights were trained with); stored resolved, as
      ``{"mean": [3], "std": [3]}``.
    - ``prompt``: ``none`` (prompt-free class masks), ``box`` (``forward(image, boxes)``, 2 classes:
      SAM's mask of the boxed object, see :class:`ClassMaskDecoder`) or ``whole_image_box`` (the
      prompt encoder's tokens of a box around the whole image, as CAD; a 2-class network then
      starts as SAM's mask of that box).

    Trainable tensors are declared by module with :meth:`set_trainable`; by default (the
    ``decoder_only`` baseline) the mask decoder and the no-prompt embedding.

    Args:
        backbone: the backbone's parts (encoder, prompt encoder, SAM mask decoder, normalisation).
        num_classes: C, background included.
        config: what rebuilds the network (see above).

    Raises:
        ValueError: an unknown prompt mode, or box prompts for other than 2 classes.
    """

    any_input_size = False  # True: H x W taken as they are (padded to the stride), not resized to image_size

    def __init__(self, backbone: Backbone, num_classes: int, config: Mapping[str, Any]):
        super().__init__()
        prompt = config.get("prompt", "none")
        if prompt not in PROMPTS:
            raise ValueError(f"unknown prompt {prompt!r}; choose one of {PROMPTS}")
        if prompt == "box" and num_classes != 2:
            raise ValueError(f"box prompts need a 2-class network (background, object), not {num_classes} classes")
        pixel_norm = resolve_pixel_norm(config.get("pixel_norm"), backbone)
        self.image_encoder = backbone.image_encoder
        self.prompt_encoder = backbone.prompt_encoder
        self.prompt = prompt
        self.mask_decoder = ClassMaskDecoder(backbone.mask_decoder, num_classes,
                                             sam_mask_output=prompt != "none" and num_classes == 2)
        self.register_buffer("pixel_mean", torch.tensor(pixel_norm["mean"]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(pixel_norm["std"]).view(1, 3, 1, 1), persistent=False)
        self.num_classes = num_classes
        self.image_size = backbone.image_size
        self.output_stride = backbone.image_size // (4 * backbone.embedding_size)
        self.config = {**config, "prompt": prompt, "pixel_norm": pixel_norm}
        self.backbone_sha256 = backbone.weights_sha256
        self.trainable_modules: list[nn.Module] = []
        self.embedding_cache: EmbeddingCache | None = None
        self.set_trainable([self.mask_decoder, self.prompt_encoder.no_mask_embed])

    # --- what is trained -------------------------------------------------------------------------
    def set_trainable(self, modules: Iterable[nn.Module], parameters: Iterable[nn.Parameter] = ()) -> None:
        """Freeze every parameter, then make exactly the parameters of ``modules`` trainable, and the
        single ``parameters`` that belong to otherwise frozen modules (e.g. relative position tables)."""
        self.trainable_modules = list(modules)
        self.trainable_parameters = list(parameters)
        self.requires_grad_(False)
        for module in self.trainable_modules:
            module.requires_grad_(True)
        for parameter in self.trainable_parameters:
            parameter.requires_grad_(True)
        self.train(self.training)

    def train(self, mode: bool = True) -> SemanticSAM:
        """Set train/eval mode; batch norms with no trainable parameter stay in eval (frozen statistics)."""
        super().train(mode)
        for module in self.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and not any(
                p.requires_grad for p in module.parameters()
            ):
                module.eval()
        return self

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Exactly the tensors this method trains (parameters and buffers of its trainable modules)."""
        names = {id(module): name for name, module in self.named_modules()}
        state: dict[str, torch.Tensor] = {}
        for module in self.trainable_modules:
            prefix = names[id(module)]
            for key, value in module.state_dict().items():
                state[f"{prefix}.{key}"] = value.detach().clone()
        parameter_names = {id(p): name for name, p in self.named_parameters()}
        for parameter in self.trainable_parameters:
            state[parameter_names[id(parameter)]] = parameter.detach().clone()
        return state

    def load_trainable_state_dict(self, state: Mapping[str, torch.Tensor], source: str = "state dict") -> None:
        """Load what :meth:`trainable_state_dict` returned; keys and shapes must match exactly."""
        expected = {k: v.shape for k, v in self.trainable_state_dict().items()}
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        mismatched = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k])]
        if missing or unexpected or mismatched:
            raise InputError(
                source, f"does not match this {self.config.get('method')} network: "
                f"missing {missing[:3]}, unexpected {unexpected[:3]}, "
                + ", ".join(f"{k} {tuple(state[k].shape)} != {tuple(expected[k])}" for k in mismatched[:3])
            )
        self.load_state_dict(dict(state), strict=False)

    def merged_copy(self, fold: Callable[[nn.Module], None], layer_list: str) -> SemanticSAM:
        """A copy with the method's extra weights folded into plain layers: a ``decoder_only``
        :class:`SemanticSAM` with SAM's own weight keys and no overhead. Its ``config`` builds the same
        structure (``build_network(**merged.config)``), and its whole ``state_dict()`` (merged encoder
        weights included) loads into that.

        Args:
            fold: turns the copy's method layers (LoRA, SVD coefficients) into plain ones, in place.
            layer_list: the attribute listing the method's layers, dropped from the copy.

        Returns:
            The merged copy.
        """
        merged = copy.deepcopy(self)
        vars(merged).pop(layer_list, None)
        merged.__class__ = SemanticSAM
        fold(merged)
        merged.config = {k: self.config[k] for k in COMMON_OPTIONS if k in self.config} | {
            "method": "decoder_only", "method_options": {}}
        merged.set_trainable([merged.mask_decoder, merged.prompt_encoder.no_mask_embed])
        return merged

    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    # --- forward ------------------------------------------------------------------------------------
    def normalise(self, image: torch.Tensor) -> torch.Tensor:
        """float[B, 3, H, W] in [0, 1] -> float[B, 3, H, W] normalised as ``config["pixel_norm"]`` says."""
        if image.ndim != 4 or image.shape[1] != 3:
            raise ValueError(f"expected an image batch float[B, 3, H, W] in [0, 1], got shape {tuple(image.shape)}")
        return (image - self.pixel_mean) / self.pixel_std

    def resize_input(self, image: torch.Tensor) -> torch.Tensor:
        """float[B, 3, H, W] -> float[B, 3, S, S] at the backbone size S (bilinear), unchanged if already S x S."""
        if tuple(image.shape[-2:]) != (self.image_size, self.image_size):
            image = F.interpolate(image, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        return image

    def preprocess(self, image: torch.Tensor) -> torch.Tensor:
        """float[B, 3, H, W] in [0, 1] -> float[B, 3, S, S], normalised, at the backbone size S."""
        return self.normalise(self.resize_input(image))

    def use_embedding_cache(self, cache: EmbeddingCache | None) -> None:
        """Reuse the frozen encoder's embeddings of inputs seen before (None: stop). Only used while no
        encoder tensor trains; see :class:`~medsam_ft.networks.embedding_cache.EmbeddingCache`."""
        self.embedding_cache = cache

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """Image embeddings float[B, D, S/p, S/p]; without autograd when no encoder tensor is trained
        (then from the embedding cache, when one is in use)."""
        if any(p.requires_grad for p in self.image_encoder.parameters()):
            return self.image_encoder(image)
        with torch.no_grad():
            if self.embedding_cache is not None:
                return self.embedding_cache.encode(self.image_encoder, image)
            return self.image_encoder(image)

    def image_embeddings(self, image: torch.Tensor) -> torch.Tensor:
        """float[B, 3, H, W] in [0, 1] -> float[B, D, h, w], what the mask decoder reads."""
        return self.encode(self.preprocess(image))

    def positional_encoding(self, embeddings: torch.Tensor) -> torch.Tensor:
        """float[1 or B, D, h, w]: SAM's random-Fourier encoding of the h x w embedding grid
        (the prompt encoder's ``get_dense_pe()`` at its own grid, any other grid alike)."""
        return self.prompt_encoder.pe_layer(tuple(embeddings.shape[-2:])).unsqueeze(0)

    def decode(self, embeddings: torch.Tensor, sparse: torch.Tensor | None = None) -> torch.Tensor:
        """float[B, D, h, w] image embeddings -> logits float[B, C, 4h, 4w], with the no-prompt embedding.

        Without prompts SAM's prompt encoder gives no sparse tokens (``sparse`` None; else float[B, N, D]
        prompt tokens) and its ``no_mask_embed`` at every grid position, built here for the
        embedding's own grid.
        """
        batch, dim, height, width = embeddings.shape
        if sparse is None:
            sparse = embeddings.new_zeros((batch, 0, dim))
        dense = self.prompt_encoder.no_mask_embed.weight.reshape(1, dim, 1, 1).expand(batch, -1, height, width)
        return self.mask_decoder(embeddings, self.positional_encoding(embeddings), sparse, dense)

    def forward(self, image: torch.Tensor, boxes: torch.Tensor | None = None) -> torch.Tensor:
        """float[B, 3, H, W] in [0, 1] -> logits float[B, C, H/s, W/s].

        Box-prompted networks (``prompt="box"``) take ``boxes`` float[B, 4] (x0, y0, x1, y1 in the
        image's pixels); their logits are background / inside the box's object, one binary mask per box.
        """
        height, width = image.shape[-2:]
        sparse = prompt_tokens(self.prompt_encoder, self.prompt, boxes, self.image_size, height, width)
        embeddings = self.image_embeddings(image)
        if sparse is not None and sparse.shape[0] != embeddings.shape[0]:
            sparse = sparse.expand(embeddings.shape[0], -1, -1)
        logits = self.decode(embeddings, sparse)
        out_size = (height // self.output_stride, width // self.output_stride)
        if tuple(logits.shape[-2:]) != out_size:
            logits = F.interpolate(logits, size=out_size, mode="bilinear", align_corners=False)
        return logits
