"""What every SAM-family backbone provides, the backbone registry, and checked weight loading."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from segment_anything.modeling import MaskDecoder, PromptEncoder
from torch import nn

from medsam_ft.io import InputError, load_torch_file
from medsam_ft.registry import Registry

logger = logging.getLogger(__name__)

# segment_anything's ``Sam.pixel_mean`` / ``pixel_std`` (ImageNet's statistics), on the [0, 1] scale
SAM_PIXEL_MEAN = (123.675 / 255, 116.28 / 255, 103.53 / 255)
SAM_PIXEL_STD = (58.395 / 255, 57.12 / 255, 57.375 / 255)
# Named input normalisations a method or recipe may choose instead of its backbone's own
PIXEL_NORMS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "sam": (SAM_PIXEL_MEAN, SAM_PIXEL_STD),
    "imagenet": (SAM_PIXEL_MEAN, SAM_PIXEL_STD),
    "none": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
}


@dataclass
class QKVProjection:
    """A fused query/key/value ``nn.Linear`` of an encoder attention block and its row layout.

    ``q_rows`` / ``v_rows``: long[Dq] / long[Dv], the output rows of ``parent.<attr>`` that hold the
    queries and the values (ViT: ``[q | k | v]``; TinyViT: ``[q_h | k_h | v_h]`` per head).
    """

    parent: nn.Module
    attr: str
    q_rows: torch.Tensor
    v_rows: torch.Tensor

    @property
    def linear(self) -> nn.Linear:
        return getattr(self.parent, self.attr)


@dataclass
class LoadReport:
    """Which backbone tensors came from which file, and which were adapted on the way."""

    source: str | None
    loaded: list[str] = field(default_factory=list)
    resized: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = field(default_factory=dict)

    def summary(self) -> str:
        if self.source is None:
            return "random initialisation (no checkpoint)"
        text = f"{len(self.loaded)} tensors from {self.source}"
        if self.resized:
            text += "; resized: " + ", ".join(f"{k} {tuple(a)}->{tuple(b)}" for k, (a, b) in self.resized.items())
        return text


@dataclass
class Backbone:
    """The three parts of a SAM-family model, built for one input size.

    ``image_encoder``: float[B, 3, S, S] (pixels normalised as below) -> float[B, D, S/p, S/p], with
    S = ``image_size`` and D the prompt embedding width (256 for SAM). ``prompt_encoder`` and
    ``mask_decoder`` are segment_anything's own modules, with SAM's four mask tokens.
    ``pixel_mean`` / ``pixel_std``: the input normalisation the weights were trained with, per RGB
    channel on the [0, 1] scale (``(image - mean) / std``), as timm's pretrained configs declare it.
    """

    name: str
    image_encoder: nn.Module
    prompt_encoder: PromptEncoder
    mask_decoder: MaskDecoder
    image_size: int
    weights_sha256: str | None
    load_report: LoadReport
    qkv_projections: Callable[[nn.Module], list[QKVProjection]]
    pixel_mean: tuple[float, float, float]
    pixel_std: tuple[float, float, float]

    @property
    def embedding_size(self) -> int:
        return self.prompt_encoder.image_embedding_size[0]


def resolve_pixel_norm(pixel_norm: str | Mapping[str, Sequence[float]] | None,
                       backbone: Backbone) -> dict[str, list[float]]:
    """The input normalisation ``{"mean": [3], "std": [3]}`` ([0, 1] scale) a network applies.

    Args:
        pixel_norm: None (the backbone's own, what its weights were trained with), a name of
            :data:`PIXEL_NORMS` (``sam`` / ``imagenet``: SAM's statistics; ``none``: [0, 1] pixels as they
            are), or explicit ``{"mean": [r, g, b], "std": [r, g, b]}`` (e.g. a data set's statistics).
        backbone: the backbone whose own normalisation None stands for.

    Raises:
        ValueError: an unknown name, or values that are not three numbers with positive std.
    """
    if pixel_norm is None:
        mean, std = backbone.pixel_mean, backbone.pixel_std
    elif isinstance(pixel_norm, str):
        if pixel_norm not in PIXEL_NORMS:
            raise ValueError(f"unknown pixel_norm {pixel_norm!r}; choose one of {sorted(PIXEL_NORMS)}, "
                             "None (the backbone's own) or {'mean': [r, g, b], 'std': [r, g, b]}")
        mean, std = PIXEL_NORMS[pixel_norm]
    else:
        mean, std = pixel_norm.get("mean"), pixel_norm.get("std")
    if (mean is None or std is None or len(mean) != 3 or len(std) != 3 or any(v <= 0 for v in std)):
        raise ValueError(f"pixel_norm needs three means and three positive stds, got {pixel_norm!r}")
    return {"mean": [float(v) for v in mean], "std": [float(v) for v in std]}


BACKBONES: Registry[Callable[..., Backbone]] = Registry("backbone")


def register_backbone(name: str) -> Callable[[Callable[..., Backbone]], Callable[..., Backbone]]:
    """A decorator registering a backbone factory.

    Args:
        name: the name :func:`build_backbone` takes.

    Returns:
        The decorator; the factory is ``factory(weights=None, image_size=None) -> Backbone``.
    """
    return BACKBONES.register(name)


def list_backbones() -> list[str]:
    return BACKBONES.names()


def build_backbone(name: str, weights: str | os.PathLike | None = None, image_size: int | None = None) -> Backbone:
    """Build a registered backbone.

    Args:
        name: see :func:`list_backbones`.
        weights: the backbone's weight file (None: its default, see each factory).
        image_size: the input size (None: the size the weights were trained at).

    Returns:
        The :class:`Backbone` (encoder, prompt encoder, SAM mask decoder, normalisation, load report).
    """
    return BACKBONES.get(name)(weights=weights, image_size=image_size)


def read_state_dict(path: str | os.PathLike, expected: str) -> dict[str, torch.Tensor]:
    """Load a tensor state dict.

    Args:
        path: the weight file.
        expected: the variant, for errors ("SAM vit_b").

    Returns:
        name -> tensor.

    Raises:
        InputError: unreadable, or not a dict of tensors.
    """
    state = load_torch_file(path, f"a {expected} checkpoint")
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(path, f"does not hold a state dict of tensors (expected a {expected} checkpoint)")
    return state


def _parts(backbone_modules: dict[str, nn.Module]) -> Iterator[tuple[str, torch.Tensor]]:
    for prefix, module in backbone_modules.items():
        for key, value in module.state_dict().items():
            yield f"{prefix}.{key}", value


def load_checked(
    modules: dict[str, nn.Module],
    state: dict[str, torch.Tensor],
    path: str | os.PathLike,
    expected: str,
    adapt: Callable[[str, torch.Tensor, torch.Tensor], torch.Tensor | None] = lambda key, value, target: None,
) -> LoadReport:
    """Copy ``state`` into ``modules`` (``{"image_encoder": ..., ...}``), every tensor accounted for.

    ``adapt(key, value, target)`` may return ``value`` resized to ``target``'s shape (position
    tables at another input size), else None.

    Args:
        modules: ``{"image_encoder": ..., "prompt_encoder": ..., "mask_decoder": ...}``.
        state: the weight file's tensors, keys prefixed by those names.
        path: the file, for errors.
        expected: the variant, for errors.
        adapt: resizes a tensor to its target's shape, or returns None.

    Returns:
        What was loaded and resized.

    Raises:
        InputError: a missing, unexpected or mismatched tensor, naming the file and the expected variant.
    """
    report = LoadReport(source=str(path))
    targets = dict(_parts(modules))
    missing = sorted(set(targets) - set(state))
    unexpected = sorted(set(state) - set(targets))
    if missing or unexpected:
        raise InputError(
            path,
            f"not a {expected} checkpoint: {len(missing)} tensors missing (e.g. {missing[:3]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})",
        )
    new_state: dict[str, dict[str, torch.Tensor]] = {prefix: {} for prefix in modules}
    for key, target in targets.items():
        value = state[key]
        if value.shape != target.shape:
            resized = adapt(key, value, target)
            if resized is None:
                raise InputError(
                    path,
                    f"not a {expected} checkpoint: {key} has shape {tuple(value.shape)}, expected {tuple(target.shape)}",
                )
            report.resized[key] = (tuple(value.shape), tuple(resized.shape))
            value = resized
        prefix, _, rest = key.partition(".")
        new_state[prefix][rest] = value.to(target.dtype)
        report.loaded.append(key)
    for prefix, module in modules.items():
        module.load_state_dict(new_state[prefix], strict=True)
    logger.info("backbone %s: %s", expected, report.summary())
    return report


def random_init_report(name: str) -> LoadReport:
    """Warn that a backbone is randomly initialised.

    Args:
        name: the backbone.

    Returns:
        A report of no loaded tensors.
    """
    logger.warning(
        "backbone %s: no weight file given, weights are RANDOMLY INITIALISED (fine for tests and FLOP counts, "
        "useless for segmentation); pass weights=PATH to load SAM weights",
        name,
    )
    return LoadReport(source=None)
