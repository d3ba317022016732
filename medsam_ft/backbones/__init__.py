"""SAM-family backbones behind one registry: ``build_backbone(name, weights, image_size)``."""

from . import lite_medsam, vit  # noqa: F401  (registers the backbones)
from .base import (
    PIXEL_NORMS,
    Backbone,
    LoadReport,
    QKVProjection,
    build_backbone,
    list_backbones,
    register_backbone,
    resolve_pixel_norm,
)

__all__ = ["PIXEL_NORMS", "Backbone", "LoadReport", "QKVProjection", "build_backbone", "list_backbones",
           "register_backbone", "resolve_pixel_norm"]
