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
from .semantic_sam import COMMON_OPTIONS, SemanticSAM

NETWORKS: Registry[Callable[..., SemanticSAM]] = Registry("method")


def register_network(name: str) -> Callable[[Callable[..., SemanticSAM]], Callable[..., SemanticSAM]]:
    """A decorator registering a fine-tuning method.

    Args:
        name: the method name :func:`build_network` takes.

    Returns:
        The decorator; the factory is ``factory(backbone: Backbone, num_classes: int, config: dict,
        **method_options) -> SemanticSAM``.
    """
    return NETWORKS.register(name)


def list_networks() -> list[str]:
    return NETWORKS.names()


def build_network(
    method: str,
    *,
    backbone: str,
    num_classes: int,
    weights: str | os.PathLike | None = None,
    image_size: int | None = None,
    pixel_norm: str | Mapping[str, Sequence[float]] | None = None,
    prompt: str = "none",
    method_options: Mapping[str, Any] | None = None,
) -> SemanticSAM:
    """Build fine-tuning method ``method`` on ``backbone`` for ``num_classes`` classes (background included).

    Args:
        method: a registered method (:func:`list_networks`).
        backbone: a registered backbone (:func:`~medsam_ft.backbones.list_backbones`).
        num_classes: C, the number of output classes, background included.
        weights: the backbone's weight file (a SAM ``.pth`` for ViT backbones; None = the embedded
            LiteMedSAM weights, or random initialisation for ViT).
        image_size: the backbone's input size (default: its native size).
        pixel_norm: the input normalisation; None = the backbone's own (the one its weights were
            trained with: identity on [0, 1] for LiteMedSAM, SAM's mean/std for SAM ViT), or a name
            / explicit mean and std where a method's recipe differs (see
            :func:`~medsam_ft.backbones.resolve_pixel_norm`).
        prompt: ``none``, ``box`` or ``whole_image_box`` (see :class:`SemanticSAM`).
        method_options: the method's own options (e.g. ``{"rank": 4}`` for samed), a mapping so that
            a bundle's ``network_def`` states them as one key.

    Returns:
        The network; its ``config`` rebuilds it: ``build_network(**net.config)``.

    Raises:
        KeyError: unknown method or backbone (the message lists the registered ones).
        TypeError: an option the method does not take.
    """
    factory = NETWORKS.get(method)
    options = dict(method_options or {})
    parts: Backbone = build_backbone(backbone, weights=weights, image_size=image_size)
    config = {
        "method": method,
        "backbone": backbone,
        "num_classes": num_classes,
        "weights": None if weights is None else os.fspath(weights),
        "image_size": parts.image_size,
        "pixel_norm": pixel_norm,
        "prompt": prompt,
        "method_options": options,
    }
    return factory(parts, num_classes, config, **options)


def network_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A stored network config in the current form (the keyword arguments of :func:`build_network`).

    Configs written by medsam_ft 0.1 name the backbone weights ``checkpoint`` and hold the
    method's options beside the common ones; before box prompts and per-backbone normalisation
    they had no ``prompt`` (none) and no ``pixel_norm`` (SAM's mean/std, which they trained with).

    Args:
        config: a ``network.config`` as stored in a checkpoint, of any version.

    Returns:
        The same network's config as :func:`build_network` takes it.
    """
    config = dict(config)
    if "checkpoint" in config:
        config["weights"] = config.pop("checkpoint")
    config.setdefault("pixel_norm", "sam")
    config.setdefault("prompt", "none")
    if "method_options" not in config:
        config["method_options"] = {k: config.pop(k) for k in list(config) if k not in COMMON_OPTIONS}
    return config


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
