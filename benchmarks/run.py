"""``python -m benchmarks --quick | --full``: measure every method and write BENCHMARKS.md with its plots.

Everything in the written file comes from measurements taken in that run (``results.json`` beside
the plots keeps them raw); nothing is typed by hand. ``--quick`` (a few minutes on 2 CPU cores) and
``--full`` differ only in their :class:`Settings`.
"""

from __future__ import annotations

import argparse
import datetime
import io
import os
import platform
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

import medsam_ft
from data_prep.phantom import generate
from data_prep.synapse import main as make_datalist
from medsam_ft.checkpoint import TrainableCheckpoint

from .accuracy import BUNDLES, train_and_evaluate
from .flops import forward_flops, training_step_flops
from .memory import measure_in_fresh_process
from .report import write_report
from .speed import measure_speed

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("decoder_only", "samed", "gsam", "cad", "parser")
# The input size each paper trains ViT-B at (GSAM: its ISBI 2012 random crop, Table 4) and predicts at.
PAPER_SIZES = {"decoder_only": (1024, 1024), "samed": (512, 512), "gsam": (128, 512), "cad": (1024, 1024),
               "parser": (1024, 1024)}
GSAM_PAPER_GMACS = {32: 7.42, 64: 18.53, 128: 74.07, 256: 270.33}  # GSAM Table 4 (ViT-B, ISBI 2012)


@dataclass(frozen=True)
class Settings:
    """What one run measures. ``backbone``/``image_size``/``batch``: the CPU-feasible setting shared by the
    memory, speed and accuracy sections; ``paper_backbone``: what parameters and FLOPs are counted on at
    the papers' sizes (random weights are fine for counts)."""

    name: str
    methods: tuple[str, ...] = METHODS
    backbone: str = "lite_medsam"
    paper_backbone: str = "vit_b"
    paper_sizes: dict | None = None  # None: PAPER_SIZES
    gsam_crops: tuple[int, ...] = (32, 64, 128, 256)
    image_size: int = 64
    batch: int = 4
    memory_steps: int = 2
    slice_batch: int = 16
    warmup: int = 2
    repeats: int = 5
    phantom_cases: int = 12
    budget_s: float = 40.0
    lr: float = 1e-3
    keep_empty_slices: float = 0.1
    device: str = "cpu"


QUICK = Settings("quick", warmup=1, repeats=3, phantom_cases=6, budget_s=20.0)
FULL = Settings("full", repeats=9, phantom_cases=30, budget_s=360.0)


def machine(device: str) -> dict:
    """CPU model, cores, memory, torch and device of this run."""
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor() or platform.machine()) \
        if Path("/proc/cpuinfo").exists() else platform.processor()
    memory_kib = next((int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                       if line.startswith("MemTotal")), 0) if Path("/proc/meminfo").exists() else 0
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "memory_gib": round(memory_kib / 2**20, 1), "python": platform.python_version(), "torch": torch.__version__,
            "medsam_ft": medsam_ft.__version__, "device": torch.cuda.get_device_name(0) if device.startswith("cuda") else "cpu",
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="minutes")}


def count_parameters(method: str, backbone: str, image_size: int) -> dict:
    """Total and trainable parameters and the size of the trainable checkpoint file (9 classes)."""
    net = medsam_ft.build_network(method, backbone=backbone, num_classes=9, image_size=image_size)
    buffer = io.BytesIO()
    torch.save(TrainableCheckpoint(net, ["background"] + [f"organ_{c}" for c in range(1, 9)], [-125.0, 275.0]).state_dict(),
               buffer)
    return {"method": method, "backbone": backbone, "image_size": image_size, "total": net.num_parameters(),
            "trainable": net.num_parameters(trainable_only=True), "checkpoint_bytes": buffer.getbuffer().nbytes}


def count_flops(method: str, backbone: str, train_size: int, infer_size: int, **options) -> dict:
    """GFLOPs of one training step (batch 1, forward + backward) and one inference, 9 classes."""
    def build(size: int):
        return medsam_ft.build_network(method, backbone=backbone, num_classes=9, image_size=size, method_options=options)

    return {"method": method, "backbone": backbone, "train_size": train_size, "infer_size": infer_size,
            "train_step_gflops": training_step_flops(build(train_size), train_size) / 1e9,
            "inference_gflops": forward_flops(build(infer_size), infer_size) / 1e9}


def _timed(label: str, function, *args, **kwargs):
    started = time.perf_counter()
    result = function(*args, **kwargs)
    print(f"[benchmarks] {label}: {time.perf_counter() - started:.1f} s", flush=True)
    return result


def run(settings: Settings, report_path: Path, assets_dir: Path, work_dir: Path) -> dict:
    """Measure everything ``settings`` asks for; write ``report_path`` (markdown), plots and
    ``results.json`` in ``assets_dir``; scratch data (phantoms, checkpoints) in ``work_dir``."""
    started = time.perf_counter()
    sizes = settings.paper_sizes or PAPER_SIZES
    results: dict = {"settings": asdict(settings), "machine": machine(settings.device)}
    results["parameters"] = [_timed(f"parameters {m} {b}", count_parameters, m, b, s) for m in settings.methods
                             for b, s in ((settings.paper_backbone, sizes[m][1]), (settings.backbone, settings.image_size))]
    results["flops"] = [_timed(f"flops {m}", count_flops, m, settings.paper_backbone, *sizes[m]) for m in settings.methods]
    results["flops_cpu_setting"] = [count_flops(m, settings.backbone, settings.image_size, settings.image_size)
                                    for m in settings.methods]
    if "gsam" in settings.methods:
        results["gsam_crops"] = [
            {"crop": crop, "patch_stride": stride, "paper_gmacs": GSAM_PAPER_GMACS.get(crop),
             "gmacs": forward_flops(medsam_ft.build_network("gsam", backbone=settings.paper_backbone, num_classes=2,
                                                            method_options={"patch_stride": stride}), crop) / 2e9}
            for stride in (16, 8) for crop in settings.gsam_crops]
    results["memory"] = [_timed(f"memory {m}", measure_in_fresh_process, m, settings.backbone, settings.image_size,
                                settings.batch, settings.memory_steps, settings.device) for m in settings.methods]

    data = work_dir / "phantom"
    if not (data / "datalist.json").is_file():
        generate(data, cases=settings.phantom_cases, seed=0)
        make_datalist(["--raw", str(data), "--out", str(data / "datalist.json"), "--val_cases", "1"])
    volume = data / "img" / "img0001.nii.gz"
    results["speed"] = [_timed(f"speed {m}", measure_speed, m, settings.backbone, settings.image_size, settings.batch,
                               settings.slice_batch, settings.warmup, settings.repeats, settings.device, volume)
                        for m in settings.methods]
    overrides = {"backbone": settings.backbone, "image_size": settings.image_size, "batch_size": settings.batch,
                 "lr": settings.lr, "warmup_iters": 10, "augment": "none", "keep_empty_slices": settings.keep_empty_slices,
                 "seed": 0, "device": settings.device}
    results["accuracy"] = [_timed(f"accuracy {m}", train_and_evaluate, m, data, work_dir / f"train_{m}",
                                  settings.budget_s, overrides) for m in settings.methods]
    results["accuracy_bundles"] = {m: BUNDLES[m] for m in settings.methods}
    results["wall_s"] = round(time.perf_counter() - started, 1)
    write_report(results, report_path, assets_dir)
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--quick", action="store_true", help=f"{QUICK.phantom_cases} phantom cases, {QUICK.budget_s:.0f} s "
                                                            "training budget per method, fewer timing runs (under 10 "
                                                            "min on 2 CPU cores; too short a budget to learn much)")
    mode.add_argument("--full", action="store_true", help=f"{FULL.phantom_cases} phantom cases, {FULL.budget_s:.0f} s "
                                                           "budget per method (about 45 min on 2 CPU cores)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--report", type=Path, default=ROOT / "BENCHMARKS.md")
    parser.add_argument("--assets", type=Path, default=ROOT / "docs" / "benchmarks", help="plots and results.json")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "benchmarks", help="phantoms and checkpoints")
    args = parser.parse_args(argv)
    settings = replace(FULL if args.full else QUICK, device=args.device)
    results = run(settings, args.report, args.assets, args.work / settings.name)
    print(f"[benchmarks] wrote {args.report} and {args.assets} in {results['wall_s']:.0f} s")
