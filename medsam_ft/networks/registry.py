"""One way to build a network: ``build_network(method, *, backbone, num_classes, ...)``."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from medsam_ft.backbones import Backbone, build_backbone
from medsam_ft.registry import Registry

from .cad import CAD
from .gsam import GSAM
from .parser import SAMParser
from .samed import SAMed
from .semantic_sam import SemanticSAM

NETWORKS: Registry[Callable[..., SemanticSAM]] = Registry("method")


def register_network(name: str) -> Callable[[Callable[..., SemanticSAM]], Callable[..., SemanticSAM]]:
    """Register ``factory(backbone: Backbone, num_classes: int, config: dict, **options)`` as method ``name``."""
    return NETWORKS.register(name)


def list_networks() -> list[str]:
    return NETWORKS.names()


def build_network(
    method: str,
    *,
    backbone: str,
    num_classes: int,
    checkpoint: str | os.PathLike | None = None,
    image_size: int | None = None,
    pixel_norm: str | Mapping[str, Sequence[float]] | None = None,
    prompt: str = "none",
    **method_options: Any,
) -> SemanticSAM:
    """Build fine-tuning method ``method`` on ``backbone`` for ``num_classes`` classes (background included).

    Args:
        method: a registered method (:func:`list_networks`).
        backbone: a registered backbone (:func:`~medsam_ft.backbones.list_backbones`).
        num_classes: C, the number of output classes, background included.
        checkpoint: the backbone's weights (a SAM ``.pth`` for ViT backbones; None = the embedded
            LiteMedSAM weights, or random initialisation for ViT).
        image_size: the backbone's input size (default: its native size).
        pixel_norm: the input normalisation; None = the backbone's own (the one its weights were
            trained with: identity on [0, 1] for LiteMedSAM, SAM's mean/std for SAM ViT), or a name
            / explicit mean and std where a method's recipe differs (see
            :func:`~medsam_ft.backbones.resolve_pixel_norm`).
        prompt: ``none``, ``box`` or ``whole_image_box`` (see :class:`SemanticSAM`).
        method_options: go to the method (e.g. ``rank=4`` for samed).

    Returns:
        The network; its ``config`` rebuilds it: ``build_network(**net.config)``.
    """
    factory = NETWORKS.get(method)
    parts: Backbone = build_backbone(backbone, checkpoint=checkpoint, image_size=image_size)
    config = {
        "method": method,
        "backbone": backbone,
        "num_classes": num_classes,
        "checkpoint": None if checkpoint is None else os.fspath(checkpoint),
        "image_size": parts.image_size,
        "pixel_norm": pixel_norm,
        "prompt": prompt,
        **method_options,
    }
    return factory(parts, num_classes, config, **method_options)


@register_network("decoder_only")
def _decoder_only(backbone: Backbone, num_classes: int, config: dict) -> SemanticSAM:
    """Baseline: frozen encoder; mask decoder and no-prompt embedding trained."""
    return SemanticSAM(backbone, num_classes, config)


@register_network("samed")
def _samed(backbone: Backbone, num_classes: int, config: dict, rank: int = 4, alpha: float = 1.0) -> SemanticSAM:
    return SAMed(backbone, num_classes, config, rank=rank, alpha=alpha)


@register_network("gsam")
def _gsam(backbone: Backbone, num_classes: int, config: dict, **options: Any) -> SemanticSAM:
    """GSAM: any input size (see :class:`medsam_ft.networks.gsam.GSAM` for the options)."""
    return GSAM(backbone, num_classes, config, **options)


@register_network("cad")
def _cad(backbone: Backbone, num_classes: int, config: dict, **options: Any) -> SemanticSAM:
    """CAD: convolutional adapter beside the frozen encoder (see :class:`medsam_ft.networks.cad.CAD`)."""
    return CAD(backbone, num_classes, config, **options)


@register_network("parser")
def _parser(backbone: Backbone, num_classes: int, config: dict, **options: Any) -> SemanticSAM:
    """SAM-PARSER: SVD coefficients of encoder weights (see :class:`medsam_ft.networks.parser.SAMParser`)."""
    return SAMParser(backbone, num_classes, config, **options)
