"""A content-addressed cache of frozen-encoder embeddings (decoder-only training, CAD).

A frozen encoder maps the same input to the same embedding, so later epochs can skip it. The key of
an input is a hash of the encoder's own weights and of the exact tensor it receives (size and
values, after every transform and the network's resizing and normalisation): a change of backbone,
of its weights, of the input size or of any preprocessing gives a different key, never a stale
embedding. Random augmentation gives new inputs every epoch, so it only fills the cache with
misses: :func:`embedding_cache_for` turns the cache off for such configurations.
"""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict

import torch
from torch import nn

logger = logging.getLogger(__name__)


def _digest(*chunks: bytes) -> str:
    hasher = hashlib.blake2b(digest_size=20)
    for chunk in chunks:
        hasher.update(chunk)
    return hasher.hexdigest()


def _tensor_bytes(tensor: torch.Tensor) -> bytes:
    return tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes()


class EmbeddingCache:
    """Embeddings float[D, h, w] by key, kept on the CPU, least recently used evicted beyond ``max_bytes``.

    ``encode(encoder, images)``: images float[B, 3, S, S] (the encoder's input) -> float[B, D, h, w],
    running ``encoder`` on the misses only. ``hits`` / ``misses`` count lookups.

    Args:
        max_bytes: the memory the kept embeddings may take.
    """

    def __init__(self, max_bytes: int = 2 * 1024**3):
        self.max_bytes = int(max_bytes)
        self.entries: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.size_bytes = 0
        self.hits = self.misses = 0
        self.fingerprints: dict[int, tuple[int, str]] = {}

    def fingerprint(self, encoder: nn.Module) -> str:
        """A hash of the encoder's class, parameters and buffers (computed once per encoder object
        and version of its tensors)."""
        version = sum(t._version for t in encoder.state_dict().values())
        known = self.fingerprints.get(id(encoder))
        if known is None or known[0] != version:
            state = encoder.state_dict()
            digest = _digest(type(encoder).__qualname__.encode(),
                             *(name.encode() + _tensor_bytes(t) for name, t in state.items()))
            self.fingerprints[id(encoder)] = known = (version, digest)
        return known[1]

    def encode(self, encoder: nn.Module, images: torch.Tensor) -> torch.Tensor:
        weights = self.fingerprint(encoder).encode()
        keys = [_digest(weights, str(tuple(image.shape)).encode(), _tensor_bytes(image)) for image in images]
        found = [self.entries.get(key) for key in keys]
        for key, embedding in zip(keys, found):
            if embedding is not None:
                self.entries.move_to_end(key)
        missing = [i for i, embedding in enumerate(found) if embedding is None]
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        if missing:
            computed = encoder(images[missing])
            for i, embedding in zip(missing, computed):
                found[i] = embedding
                self.store(keys[i], embedding)
        return torch.stack([e.to(images.device) for e in found])

    def store(self, key: str, embedding: torch.Tensor) -> None:
        embedding = embedding.detach().to("cpu").clone()
        size = embedding.numel() * embedding.element_size()
        if size > self.max_bytes:
            return
        self.entries[key] = embedding
        self.size_bytes += size
        while self.size_bytes > self.max_bytes:
            _, evicted = self.entries.popitem(last=False)
            self.size_bytes -= evicted.numel() * evicted.element_size()


def embedding_cache_for(enabled: bool, augment: str = "none", crop_size: int | None = None,
                        max_gib: float = 2.0) -> EmbeddingCache | None:
    """The cache a bundle asked for.

    Args:
        enabled: the bundle's ``cache_embeddings``.
        augment: its augmentation.
        crop_size: its random crop size (None: whole images).
        max_gib: the cache's memory bound in GiB.

    Returns:
        An :class:`EmbeddingCache`, or None (logged) when not enabled or when the training inputs
        are random (augmentation other than ``none``, or random crops): every input would be a miss.
    """
    if not enabled:
        return None
    if augment != "none" or crop_size is not None:
        logger.info("embedding cache off: augmentation %r / random crops %s change the encoder input every epoch",
                    augment, crop_size)
        return None
    return EmbeddingCache(int(max_gib * 1024**3))
