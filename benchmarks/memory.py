"""Peak memory of one training step (forward, backward, optimiser step) per fine-tuning method.

``python -m benchmarks.memory [--backbone lite_medsam --image-size 256 --batch 4 --methods decoder_only cad cad:stem=strided samed]``

A method may carry options: ``NAME:key=value,key=value`` (e.g. ``cad:stem=strided``).

Each method runs in a fresh process. On CUDA: ``torch.cuda.max_memory_allocated`` during the steps
minus the allocation before them (weights and inputs). On CPU: the process's peak resident memory
during the steps (Linux ``VmHWM``, reset through ``/proc/self/clear_refs`` just before) minus its
resident memory before them. Prints one JSON line per method and a table.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
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


def measure(method: str, backbone: str, image_size: int, batch: int, steps: int, device: str) -> dict:
    """Training-step peak memory of ``method`` (a :func:`parse_method` spec) in this process (call it in a fresh one)."""
    torch.manual_seed(0)
    name, options = parse_method(method)
    net = medsam_ft.build_network(name, backbone=backbone, num_classes=2, image_size=image_size, **options)
    net = net.to(device).train()
    optimizer = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-4)
    loss_fn = SegmentationLoss()
    image = torch.rand(batch, 3, image_size, image_size, device=device)
    label = torch.randint(0, 2, (batch, 1, image_size, image_size), device=device)
    gc.collect()
    if device == "cuda":
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
    if device == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = _status_kib("VmHWM") * 1024
    return {"method": method, "backbone": backbone, "image_size": image_size, "batch": batch, "device": device,
            "trainable_parameters": net.num_parameters(trainable_only=True),
            "step_peak_mib": round((peak - before) / 2**20, 1)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="lite_medsam")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--methods", nargs="+", default=["decoder_only", "cad", "samed"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # run one method in this process
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(measure(args.methods[0], args.backbone, args.image_size, args.batch, args.steps, args.device)))
        return
    results = []
    for method in args.methods:
        cmd = [sys.executable, "-m", "benchmarks.memory", "--one", "--methods", method, "--backbone", args.backbone,
               "--image-size", str(args.image_size), "--batch", str(args.batch), "--steps", str(args.steps),
               "--device", args.device]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        results.append(json.loads(out))
        print(out, flush=True)
    machine = torch.cuda.get_device_name() if args.device == "cuda" else f"{platform.processor() or platform.machine()} CPU"
    print(f"\n{args.backbone}, {args.image_size} px, batch {args.batch}, {machine}, torch {torch.__version__}")
    reference = {r["method"]: r["step_peak_mib"] for r in results}
    for r in results:
        ratios = ", ".join(f"{r['step_peak_mib'] / v:.2f}x {m}" for m, v in reference.items() if m != r["method"])
        print(f"{r['method']:>18}: {r['step_peak_mib']:9.1f} MiB  ({ratios})")


if __name__ == "__main__":
    main()
