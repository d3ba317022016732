"""Peak memory of one training step (forward, backward, optimiser step) per fine-tuning method.

Each measurement runs in a fresh process (:func:`measure_in_fresh_process`). On CUDA:
``torch.cuda.max_memory_allocated`` during the steps minus the allocation before them (weights and
inputs). On CPU: the process's peak resident memory during the steps (Linux ``VmHWM``, reset through
``/proc/self/clear_refs`` just before) minus its resident memory before them.
A method may carry options: ``NAME:key=value,key=value`` (e.g. ``cad:stem=strided``).
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
from pathlib import Path

import torch

import medsam_ft
from medsam_ft.losses import SegmentationLoss


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def parse_method(spec: str) -> tuple[str, dict[str, str]]:
    """``"cad:stem=strided"`` -> ``("cad", {"stem": "strided"})``."""
    name, _, options = spec.partition(":")
    return name, dict(item.split("=", 1) for item in options.split(",") if item)


def measure(method: str, backbone: str, image_size: int, batch: int, steps: int, device: str,
            num_classes: int = 9) -> dict:
    """Training-step peak memory of ``method`` (a :func:`parse_method` spec) in this process (call it in a fresh one)."""
    torch.manual_seed(0)
    name, options = parse_method(method)
    net = medsam_ft.build_network(name, backbone=backbone, num_classes=num_classes, image_size=image_size,
                                  method_options=options)
    net = net.to(device).train()
    optimizer = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-4)
    loss_fn = SegmentationLoss()
    image = torch.rand(batch, 3, image_size, image_size, device=device)
    label = torch.randint(0, num_classes, (batch, 1, image_size, image_size), device=device)
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        Path("/proc/self/clear_refs").write_text("5")  # reset the peak resident set to the current one
        before = _status_kib("VmRSS") * 1024
    for _ in range(steps):
        loss = loss_fn(net(image), label)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = _status_kib("VmHWM") * 1024
    return {"method": method, "backbone": backbone, "image_size": image_size, "batch": batch, "device": device,
            "trainable_parameters": net.num_parameters(trainable_only=True),
            "step_peak_mib": round((peak - before) / 2**20, 1)}


def measure_in_fresh_process(method: str, backbone: str, image_size: int, batch: int, steps: int,
                              device: str) -> dict:
    """:func:`measure` in a new Python process, so no earlier allocation hides in the peak."""
    cmd = [sys.executable, "-m", "benchmarks.memory", method, backbone, str(image_size), str(batch), str(steps), device]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    if result.returncode != 0:
        raise RuntimeError(f"memory measurement of {method} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


if __name__ == "__main__":  # the worker of measure_in_fresh_process
    method, backbone, image_size, batch, steps, device = sys.argv[1:7]
    print(json.dumps(measure(method, backbone, int(image_size), int(batch), int(steps), device)))
