"""The medsam_ft checkpoint: a trained network's trainable tensors and the config that rebuilds it."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch

import medsam_ft
from medsam_ft.io import InputError, load_torch_file
from medsam_ft.networks import SemanticSAM, build_network, network_config
from medsam_ft.transforms import intensity_spec

CHECKPOINT_FORMAT = "medsam_ft.trainable/1"


def _without_weight_files(config: Mapping[str, Any]) -> dict[str, Any]:
    """The network config less the options that name weight files: where weights were read from,
    not what the network is (the backbone's are checked by hash; GSAM's CNN initialisation is part
    of the trained state)."""
    options = {k: v for k, v in config["method_options"].items() if k != "cnn_weights"}
    return {k: v for k, v in config.items() if k != "weights"} | {"method_options": options}


class TrainableCheckpoint:
    """The state a checkpoint holds: the network's trainable tensors and what rebuilds it.

    ``state_dict()`` -> ``{"format", "config", "state", "backbone_sha256", "class_names", "intensity",
    "sliding_window", "resize_to", "class_colors", "axcodes", "prompt", "medsam_ft_version"}``;
    ``load_state_dict()`` checks the format and the config before loading. Ignite/MONAI checkpoint
    handlers take it like any module.

    Args:
        network: the network being trained.
        class_names: C names, background first.
        intensity: how volume voxels became [0, 1] in training (see
            :func:`~medsam_ft.transforms.intensity_spec`; a pair is a CT window); None for 2D images.
        sliding_window: the crop size 2D images were trained at, so inference predicts windows of
            that size (None: whole images).
        resize_to: the size whole images were resized to before training crops were cut from them
            (networks of any input size, GSAM), so inference resizes alike
            (see :class:`~medsam_ft.inference.SlicePredictor`).
        class_colors: [r, g, b] per class for overlays (a data set's palette).
        axcodes: the orientation of the volume slices trained on (RAS for NIfTI; a TransUNet
            layout's own), which evaluation and prediction slice volumes in.

    The stored ``prompt`` is ``"box"`` for a box-prompted network (predicts only with boxes), else
    ``"none"`` (class masks of whole images), read from the network.
    """

    def __init__(self, network: SemanticSAM, class_names: Sequence[str] | None = None,
                 intensity: Mapping[str, Any] | Sequence[float] | None = None, sliding_window: int | None = None,
                 resize_to: int | None = None, class_colors: Sequence[Sequence[int]] | None = None,
                 axcodes: str | None = None):
        self.network = network
        self.axcodes = axcodes
        self.class_names = list(class_names) if class_names is not None else None
        self.intensity = intensity_spec(intensity) if intensity is not None else None
        self.sliding_window, self.resize_to = sliding_window, resize_to
        self.class_colors = [list(c) for c in class_colors] if class_colors is not None else None

    def state_dict(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "config": dict(self.network.config),
            "state": self.network.trainable_state_dict(),
            "backbone_sha256": self.network.backbone_sha256,
            "class_names": self.class_names,
            "intensity": self.intensity,
            "sliding_window": self.sliding_window,
            "resize_to": self.resize_to,
            "class_colors": self.class_colors,
            "axcodes": self.axcodes,
            "prompt": "box" if self.network.prompt == "box" else "none",
            "medsam_ft_version": medsam_ft.__version__,
        }

    def load_state_dict(self, checkpoint: Mapping[str, Any], source: str = "checkpoint") -> None:
        """Load a checkpoint's trainable tensors into the network.

        Raises:
            InputError: not a medsam_ft checkpoint, or one of another network (names ``source``).
        """
        checkpoint = unwrap_checkpoint(checkpoint, source)
        mine, theirs = _without_weight_files(self.network.config), _without_weight_files(checkpoint["config"])
        if mine != theirs:
            raise InputError(source, f"was trained with {theirs}, but this network is {mine}")
        self.network.load_trainable_state_dict(checkpoint["state"], source=source)


def unwrap_checkpoint(checkpoint: Any, source: str) -> dict[str, Any]:
    """The :class:`TrainableCheckpoint` state inside what a handler saved, in the current form.

    Args:
        checkpoint: what ``torch.load`` gave: the state alone, or under ``"model"``.
        source: the file's name, for errors.

    Returns:
        The checkpoint, its ``config`` upgraded to the current form
        (:func:`~medsam_ft.networks.network_config`), a 0.1 ``hu_window`` as its ``intensity``;
        volumes of checkpoints written before orientations were recorded are sliced RAS, as they were trained.

    Raises:
        InputError: not a medsam_ft checkpoint.
    """
    if isinstance(checkpoint, Mapping) and checkpoint.get("format") != CHECKPOINT_FORMAT and "model" in checkpoint:
        checkpoint = checkpoint["model"]
    if not isinstance(checkpoint, Mapping) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise InputError(source, "not a medsam_ft checkpoint (no trainable state and config inside)")
    checkpoint = dict(checkpoint)
    # Written before networks recorded their prompt: it was only in the checkpoint's own "prompt" entry
    checkpoint["config"] = network_config({"prompt": checkpoint.get("prompt", "none"), **checkpoint["config"]})
    if "intensity" not in checkpoint:  # medsam_ft 0.1: volumes had a CT window, "hu_window"
        window = checkpoint.pop("hu_window", None)
        checkpoint["intensity"] = intensity_spec(window) if window is not None else None
    if checkpoint["intensity"] is not None and checkpoint.get("axcodes") is None:
        checkpoint["axcodes"] = "RAS"
    return checkpoint


def load_checkpoint(path: str | os.PathLike, backbone_weights: str | os.PathLike | None = None,
                    device: str | torch.device = "cpu") -> tuple[SemanticSAM, dict[str, Any]]:
    """Rebuild the trained network from a checkpoint file alone.

    Args:
        path: a medsam_ft checkpoint (``best.pt``, ``final.pt``, ``last.pt``).
        backbone_weights: overrides the backbone weight file stored in the config (ViT backbones;
            the file's SHA-256 must match the one trained with).
        device: where the network goes.

    Returns:
        ``(network in eval mode, checkpoint)``, the checkpoint as :func:`unwrap_checkpoint` gives it.

    Raises:
        InputError: the file unreadable, not a medsam_ft checkpoint, or the backbone weights not
            those trained with.
    """
    checkpoint = unwrap_checkpoint(load_torch_file(path, "a medsam_ft checkpoint"), str(path))
    config = dict(checkpoint["config"])
    if backbone_weights is not None:
        config["weights"] = os.fspath(backbone_weights)
    if "cnn_weights" in config["method_options"]:  # the trained CNN encoder is in the state
        config["method_options"] = {**config["method_options"], "cnn_weights": None}
    network = build_network(**config)
    if network.backbone_sha256 != checkpoint["backbone_sha256"]:
        raise InputError(path, f"was trained on backbone weights sha256 {checkpoint['backbone_sha256']}, "
                               f"but {config.get('weights') or 'the embedded weights'} has {network.backbone_sha256}")
    network.load_trainable_state_dict(checkpoint["state"], source=str(path))
    return network.to(device).eval(), checkpoint
