"""Fine-tuning methods behind one contract (see docs/ARCHITECTURE.md)."""

from .registry import build_network, list_networks, register_network
from .samed import SAMed
from .semantic_sam import SemanticSAM

__all__ = ["SAMed", "SemanticSAM", "build_network", "list_networks", "register_network"]
