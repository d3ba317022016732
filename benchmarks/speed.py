"""Speed on this machine: training images/s, inference slices/s, and whole-volume prediction time.

Every figure is the median of ``repeats`` timed runs after ``warmup`` untimed ones (CUDA synchronised
before each clock read). Networks have random decoder weights: speed does not depend on them.
On CUDA the forward passes run under bf16 autocast, as training and prediction do there.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

import medsam_ft
from medsam_ft.inference import SlicePredictor
from medsam_ft.losses import SegmentationLoss
from medsam_ft.predict import VolumePredictor
from medsam_ft.scans import find_scans, read_scan
from medsam_ft.transforms import HU_WINDOW

from .memory import parse_method


def _median_seconds(run: Callable[[], object], warmup: int, repeats: int, device: torch.device) -> float:
    times = []
    for i in range(warmup + repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        run()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def _autocast(device: torch.device) -> contextlib.AbstractContextManager:
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()


def measure_speed(method: str, backbone: str, image_size: int, batch: int, slice_batch: int, warmup: int,
                  repeats: int, device: str, volume: Path | None = None, num_classes: int = 9) -> dict:
    """Training images/s (forward + backward + AdamW step, batch ``batch``), inference slices/s
    (``SlicePredictor`` on ``slice_batch`` grey slices of ``image_size`` px) and, given a ``volume``
    file, the seconds :class:`~medsam_ft.predict.VolumePredictor` takes for all its slices."""
    torch.manual_seed(0)
    torch_device = torch.device(device)
    name, options = parse_method(method)
    net = medsam_ft.build_network(name, backbone=backbone, num_classes=num_classes, image_size=image_size,
                                  method_options=options)
    net = net.to(torch_device)
    optimizer = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-4)
    loss_fn = SegmentationLoss()
    images = torch.rand(batch, 3, image_size, image_size, device=torch_device)
    labels = torch.randint(0, num_classes, (batch, 1, image_size, image_size), device=torch_device)

    def train_step() -> None:
        with _autocast(torch_device):
            loss = loss_fn(net(images).float(), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    net.train()
    step_s = _median_seconds(train_step, warmup, repeats, torch_device)

    net.eval()
    predictor = SlicePredictor(net)
    slices = torch.rand(slice_batch, 1, image_size, image_size, device=torch_device)

    @torch.inference_mode()
    def infer() -> None:
        with _autocast(torch_device):
            predictor(slices)

    infer_s = _median_seconds(infer, warmup, repeats, torch_device)
    result = {"method": method, "backbone": backbone, "image_size": image_size, "device": device,
              "train_images_per_s": round(batch / step_s, 2), "train_step_s": round(step_s, 3),
              "inference_slices_per_s": round(slice_batch / infer_s, 2)}
    if volume is not None:
        scan = read_scan(find_scans(volume)[0])
        class_names = ["background"] + [f"class_{c}" for c in range(1, num_classes)]
        volume_predictor = VolumePredictor(net, class_names, list(HU_WINDOW), resize_to=image_size,
                                           slice_batch_size=slice_batch, device=torch_device)
        result["volume_shape"] = list(scan.voxels.shape)
        result["volume_prediction_s"] = round(_median_seconds(lambda: volume_predictor(scan), 1, max(1, repeats // 3),
                                                              torch_device), 2)
    return result
