"""Published backbone weights by name: downloaded once into torch.hub's cache, SHA-256 checked.

``--sam_checkpoint vit_b`` (``build_network(..., weights="vit_b")``) means Meta's SAM ViT-B checkpoint,
as ``torch.hub`` names model files: it is fetched from its official URL into
``<torch.hub.get_dir()>/checkpoints/`` (``$TORCH_HOME``), its SHA-256 compared with the published one
(a mismatch is refused and nothing is kept), and read from there afterwards. A path works as before.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from medsam_ft.io import InputError, file_sha256

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PublishedWeights:
    """A weight file as its authors publish it: where, and its SHA-256."""

    url: str
    sha256: str

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


# segment-anything's README lists these URLs; the SHA-256 of each file as published
PUBLISHED_WEIGHTS: dict[str, PublishedWeights] = {
    "vit_b": PublishedWeights("https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth",
                              "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912"),
    "vit_l": PublishedWeights("https://dl.fbaipublicfiles.com/segment_anything/sam_vit_l_0b3195.pth",
                              "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622"),
    "vit_h": PublishedWeights("https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth",
                              "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e"),
}


def resolve_weights(weights: str | os.PathLike) -> tuple[Path, str | None]:
    """A weight file from a path or a published name.

    Args:
        weights: a file path, or a name of :data:`PUBLISHED_WEIGHTS` (``vit_b``, ``vit_l``, ``vit_h``).

    Returns:
        ``(path, sha256)``: for a name, the cached file and its checked SHA-256; for a path, the path
        and None (the caller hashes it).

    Raises:
        InputError: the download failed, or the file's SHA-256 is not the published one.
    """
    published = PUBLISHED_WEIGHTS.get(os.fspath(weights))
    if published is None:
        return Path(weights), None
    path = Path(torch.hub.get_dir()) / "checkpoints" / published.filename
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        logger.info("downloading %s to %s", published.url, path)
        try:
            torch.hub.download_url_to_file(published.url, str(path), hash_prefix=published.sha256, progress=True)
        except (OSError, RuntimeError) as err:  # unreachable URL, or the hash check (nothing is kept then)
            raise InputError(published.url, f"could not be downloaded as {weights!r} weights: {err}; download it "
                                            f"yourself and give its path instead") from None
    elif file_sha256(path) != published.sha256:
        raise InputError(path, f"is not the published {weights!r} file (SHA-256 differs from {published.sha256}): "
                               "delete it to download it again")
    return path, published.sha256


def require_weights(backbone: str, weights: str | os.PathLike | None, random_init: bool = False) -> None:
    """Refuse to fine-tune a SAM ViT backbone from random weights by accident.

    SAM ViT backbones have no embedded weights: without a file or a published name they are randomly
    initialised, which only tests and FLOP counts want.

    Args:
        backbone: the backbone name.
        weights: its weight file or published name (None: none given).
        random_init: random initialisation asked for explicitly.

    Raises:
        ValueError: a ViT backbone, no weights and no ``random_init``.
    """
    if backbone.startswith("vit_") and weights is None and not random_init:
        raise ValueError(f"--backbone {backbone} needs its SAM weights: --sam_checkpoint PATH, or a published name "
                         f"({', '.join(PUBLISHED_WEIGHTS)}) to download the official file; --random_init True "
                         "trains from random weights (tests, FLOP counts)")
