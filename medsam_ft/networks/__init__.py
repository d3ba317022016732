"""Fine-tuning methods behind one contract (see docs/ARCHITECTURE.md)."""

from .embedding_cache import EmbeddingCache, embedding_cache_for
from .registry import build_network, list_networks, network_config, register_network
from .samed import SAMed
from .semantic_sam import SemanticSAM

__all__ = ["EmbeddingCache", "SAMed", "SemanticSAM", "build_network", "embedding_cache_for", "list_networks",
           "network_config", "register_network"]
