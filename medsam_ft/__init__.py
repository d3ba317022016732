"""medsam_ft: fine-tune Segment Anything for semantic segmentation of medical volumes and 2D images."""

from importlib.metadata import PackageNotFoundError, version

from .backbones import build_backbone, list_backbones
from .networks import build_network, list_networks

try:
    __version__ = version("medsam-ft")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__", "build_backbone", "build_network", "list_backbones", "list_networks"]
