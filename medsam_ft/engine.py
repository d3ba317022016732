"""What the Ignite trainers need: the LR schedule, trainable-only checkpoints, slice prediction."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from ignite.engine import Engine, Events
from ignite.handlers import ProgressBar
from monai.data import DistributedSampler
from torch import nn

import medsam_ft
from medsam_ft.io import InputError, atomic_path, load_torch_file
from medsam_ft.networks import SemanticSAM, build_network
from medsam_ft.transforms import three_channels

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "medsam_ft.trainable/1"
# Network options naming weight files: where weights were read from, not what the network is. The
# backbone's is checked by hash; GSAM's CNN initialisation is part of the trained state.
WEIGHT_FILE_OPTIONS = ("checkpoint", "cnn_weights")


class WarmupPolyLR(torch.optim.lr_scheduler.LRScheduler):
    """SAMed's per-iteration schedule.

    Iteration t (0-based): ``lr * (t + 1) / warmup`` for t < warmup (from lr/warmup up to lr), then
    ``lr * (1 - (t - warmup) / max_iterations) ** power``, clamped at 0. Step it once per iteration.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, max_iterations: int, warmup: int = 250, power: float = 0.9,
                 last_epoch: int = -1):
        if max_iterations < 1:
            raise ValueError(f"max_iterations must be >= 1, got {max_iterations}")
        self.max_iterations, self.warmup, self.power = max_iterations, warmup, power
        super().__init__(optimizer, last_epoch)

    def factor(self, iteration: int) -> float:
        if iteration < self.warmup:
            return (iteration + 1) / self.warmup
        return max(0.0, 1.0 - (iteration - self.warmup) / self.max_iterations) ** self.power

    def get_lr(self) -> list[float]:
        return [base * self.factor(self.last_epoch) for base in self.base_lrs]


class TrainableCheckpoint:
    """The state a checkpoint holds: the network's trainable tensors and what rebuilds it.

    ``state_dict()`` -> ``{"format", "config", "state", "backbone_sha256", "class_names", "hu_window",
    "sliding_window", "resize_to", "class_colors", "prompt", "medsam_ft_version"}``; ``load_state_dict()``
    checks the format and the config before loading. Ignite/MONAI checkpoint handlers take it like
    any module. ``hu_window``: CT intensity window (volumes); ``sliding_window``: the crop size 2D
    images were trained at, so inference predicts windows of that size (None: whole images);
    ``resize_to``: the size whole images were resized to before training crops were cut from them
    (networks of any input size, GSAM), so inference resizes alike (see :class:`SlicePredictor`);
    ``axcodes``: the orientation of the volume slices trained on (RAS for NIfTI; a TransUNet layout's
    own), which evaluation and prediction slice volumes in; ``class_colors``: [r, g, b] per class for
    overlays (a data set's palette); ``prompt``: ``"box"``
    for a box-prompted network (predicts only with boxes), else ``"none"`` (class masks of whole
    images), read from the network.
    """

    def __init__(self, network: SemanticSAM, class_names: Sequence[str] | None = None,
                 hu_window: Sequence[float] | None = None, sliding_window: int | None = None,
                 resize_to: int | None = None, class_colors: Sequence[Sequence[int]] | None = None,
                 axcodes: str | None = None):
        self.network = network
        self.axcodes = axcodes
        self.class_names = list(class_names) if class_names is not None else None
        self.hu_window = list(hu_window) if hu_window is not None else None
        self.sliding_window, self.resize_to = sliding_window, resize_to
        self.class_colors = [list(c) for c in class_colors] if class_colors is not None else None

    def state_dict(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "config": dict(self.network.config),
            "state": self.network.trainable_state_dict(),
            "backbone_sha256": self.network.backbone_sha256,
            "class_names": self.class_names,
            "hu_window": self.hu_window,
            "sliding_window": self.sliding_window,
            "resize_to": self.resize_to,
            "class_colors": self.class_colors,
            "axcodes": self.axcodes,
            "prompt": "box" if self.network.prompt == "box" else "none",
            "medsam_ft_version": medsam_ft.__version__,
        }

    def load_state_dict(self, checkpoint: Mapping[str, Any], source: str = "checkpoint") -> None:
        checkpoint = unwrap_checkpoint(checkpoint, source)
        mine = {k: v for k, v in self.network.config.items() if k not in WEIGHT_FILE_OPTIONS}
        theirs = {k: v for k, v in checkpoint["config"].items() if k not in WEIGHT_FILE_OPTIONS}
        if mine != theirs:
            raise InputError(source, f"was trained with {theirs}, but this network is {mine}")
        self.network.load_trainable_state_dict(checkpoint["state"], source=source)


def unwrap_checkpoint(checkpoint: Any, source: str) -> dict[str, Any]:
    """The :class:`TrainableCheckpoint` state inside what a handler saved (alone, or under ``"model"``)."""
    if isinstance(checkpoint, Mapping) and checkpoint.get("format") != CHECKPOINT_FORMAT and "model" in checkpoint:
        checkpoint = checkpoint["model"]
    if not isinstance(checkpoint, Mapping) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise InputError(source, "not a medsam_ft checkpoint (no trainable state and config inside)")
    checkpoint = dict(checkpoint)
    # Written before networks recorded these: SAM's pixel statistics on every backbone, box
    # prompts only in the checkpoint's own "prompt" entry, volumes always sliced RAS
    checkpoint["config"] = {"pixel_norm": "sam", "prompt": checkpoint.get("prompt", "none"), **checkpoint["config"]}
    if checkpoint.get("hu_window") is not None and checkpoint.get("axcodes") is None:
        checkpoint["axcodes"] = "RAS"
    return checkpoint


def load_checkpoint(path: str | os.PathLike, backbone_checkpoint: str | os.PathLike | None = None,
                    device: str | torch.device = "cpu") -> tuple[SemanticSAM, dict[str, Any]]:
    """Rebuild the trained network from a checkpoint file alone.

    ``backbone_checkpoint`` overrides the SAM weights path stored in the config (ViT backbones; the
    file's SHA-256 must match the one trained with). Returns ``(network in eval mode, checkpoint)``.
    """
    checkpoint = unwrap_checkpoint(load_torch_file(path, "a medsam_ft checkpoint"), str(path))
    config = dict(checkpoint["config"])
    if backbone_checkpoint is not None:
        config["checkpoint"] = os.fspath(backbone_checkpoint)
    if "cnn_weights" in config:
        config["cnn_weights"] = None  # the trained CNN encoder is in the state
    network = build_network(**config)
    if network.backbone_sha256 != checkpoint["backbone_sha256"]:
        raise InputError(path, f"was trained on backbone weights sha256 {checkpoint['backbone_sha256']}, "
                               f"but {config.get('checkpoint') or 'the embedded weights'} has {network.backbone_sha256}")
    network.load_trainable_state_dict(checkpoint["state"], source=str(path))
    return network.to(device).eval(), checkpoint


class LastCheckpoint:
    """Ignite handler: save everything ``--resume`` needs after every epoch; load it back at the start.

    ``path`` holds ``objects``' states (model, optimizer, LR schedule, ...) plus the trainer's epoch
    and iteration, written atomically (by rank 0 alone under DDP). With ``resume=True`` every rank
    loads it when the trainer starts, so training continues at the next epoch and schedule step.
    """

    def __init__(self, path: str | os.PathLike, objects: Mapping[str, Any], resume: bool = False):
        self.path = Path(path)
        self.objects = dict(objects)
        self.resume = resume

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self.load)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.save)

    def load(self, engine: Engine) -> None:
        if not self.resume:
            return
        if not self.path.is_file():
            raise InputError(self.path, "cannot resume: no checkpoint from an earlier run here")
        saved = load_torch_file(self.path, "a last.pt written by this trainer")
        for name, obj in self.objects.items():
            obj.load_state_dict(saved[name])
        engine.state.epoch, engine.state.iteration = saved["trainer"]["epoch"], saved["trainer"]["iteration"]
        logger.info("resumed from %s at epoch %d, iteration %d", self.path, engine.state.epoch, engine.state.iteration)

    def save(self, engine: Engine) -> None:
        if torch.distributed.is_initialized() and torch.distributed.get_rank() > 0:
            return
        state = {name: obj.state_dict() for name, obj in self.objects.items()}
        state["trainer"] = {"epoch": engine.state.epoch, "iteration": engine.state.iteration}
        with atomic_path(self.path) as tmp:
            torch.save(state, tmp)
        logger.info("epoch %d: saved %s", engine.state.epoch, self.path)


class BestMetricState:
    """What ``--resume`` must restore of validation: the evaluator's best key metric (and its epoch),
    and the best-checkpoint saver's record of it, so the first validation after resuming replaces
    ``best.pt`` only when it beats the best of the earlier run. Give it to :class:`LastCheckpoint`.

    Args:
        evaluator: the MONAI evaluator whose ``state.best_metric`` tracks the key metric.
        saver: the MONAI ``CheckpointSaver`` writing the key-metric checkpoint (``key_metric_filename``).
    """

    def __init__(self, evaluator: Engine, saver: Any):
        self.evaluator, self.saver = evaluator, saver

    def state_dict(self) -> dict[str, Any]:
        return {"best_metric": float(self.evaluator.state.best_metric),
                "best_metric_epoch": int(self.evaluator.state.best_metric_epoch)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.evaluator.state.best_metric = state["best_metric"]
        self.evaluator.state.best_metric_epoch = state["best_metric_epoch"]
        if state["best_metric_epoch"] > 0:  # a best checkpoint was written: the saver replaces it only when beaten
            # Ignite Checkpoint's state: its "_saved" list of (priority, filename); the saver writes its fixed
            # key_metric_filename whatever name the record holds
            self.saver.load_state_dict({"_saved": [(state["best_metric"], "restored_best")]})


class EpochSummary:
    """Ignite handler: a progress bar over iterations (optional) and one readable log line per epoch."""

    def __init__(self, optimizer: torch.optim.Optimizer, progress: bool = True):
        self.optimizer = optimizer
        self.progress = progress
        self.losses: list[float] = []
        self.started = 0.0

    def attach(self, engine: Engine) -> None:
        if self.progress:
            ProgressBar(persist=False).attach(engine, output_transform=lambda output: {"loss": _loss_of(output)})
        engine.add_event_handler(Events.EPOCH_STARTED, self.start)
        engine.add_event_handler(Events.ITERATION_COMPLETED, lambda e: self.losses.append(_loss_of(e.state.output)))
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.log)

    def start(self, engine: Engine) -> None:
        self.losses, self.started = [], time.perf_counter()

    def log(self, engine: Engine) -> None:
        logger.info(
            "epoch %d/%d: mean loss %.4f over %d iterations, lr %.3g, %.1f s",
            engine.state.epoch, engine.state.max_epochs, float(np.mean(self.losses)), len(self.losses),
            self.optimizer.param_groups[0]["lr"], time.perf_counter() - self.started,
        )


def _loss_of(output: Any) -> float:
    """The loss from a MONAI trainer's output (a dict, or a list of per-sample dicts)."""
    first = output[0] if isinstance(output, list) else output
    return float(first["loss"])


class SlicePredictor(nn.Module):
    """A 2D network as MONAI's ``SliceInferer`` needs it: grey slices in, full-resolution logits out.

    forward: float[B, 1 or 3, H, W] in [0, 1] -> float[B, C, H, W] (grey repeated to 3 channels;
    logits upsampled bilinearly from H/s x W/s). Also what MONAI's ``SlidingWindowInferer`` calls
    on each window of a large 2D image. ``resize_to`` R: the image is resized to R x R first, as in
    training (networks of any input size; fixed-size networks resize to their own size anyway).
    """

    def __init__(self, network: nn.Module, resize_to: int | None = None):
        super().__init__()
        self.network, self.resize_to = network, resize_to

    def forward(self, image: torch.Tensor, boxes: torch.Tensor | None = None) -> torch.Tensor:
        """``boxes`` float[B, 4] (box-prompted networks) in the image's pixels."""
        size = tuple(image.shape[-2:])
        image = three_channels(image)
        if self.resize_to is not None:
            image = F.interpolate(image, size=(self.resize_to, self.resize_to), mode="bilinear", align_corners=False)
            if boxes is not None:
                boxes = boxes * boxes.new_tensor([self.resize_to / size[1], self.resize_to / size[0]] * 2)
        logits = self.network(image) if boxes is None else self.network(image, boxes)
        if tuple(logits.shape[-2:]) != size:
            logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        return logits


def validation_sampler(dataset: torch.utils.data.Dataset) -> DistributedSampler:
    """Shard validation volumes over the DDP ranks without padding; with fewer volumes than ranks
    (where MONAI's uneven sharding fails), every rank gets one, repeating some (their metric counts twice)."""
    world_size = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
    return DistributedSampler(dataset, shuffle=False, even_divisible=len(dataset) < world_size)


def resolve_device(device: str | None = None) -> torch.device:
    """``"cuda"`` / ``"cpu"`` / ``"cuda:1"``; None picks CUDA when present, else CPU."""
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but CUDA is not available on this machine")
    return resolved
