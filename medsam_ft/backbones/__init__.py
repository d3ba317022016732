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
from .weights import PUBLISHED_WEIGHTS, require_weights, resolve_weights

__all__ = ["PIXEL_NORMS", "PUBLISHED_WEIGHTS", "Backbone", "LoadReport", "QKVProjection", "build_backbone",
           "list_backbones", "register_backbone", "require_weights", "resolve_pixel_norm", "resolve_weights"]
