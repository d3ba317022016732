"""BENCHMARKS.md and its plots from the results of :func:`benchmarks.run.run` (and only from them)."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)

from medsam_ft.io import atomic_path, write_json  # noqa: E402


def _table(header: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _by_method(rows: list[dict]) -> dict[str, dict]:
    return {row["method"]: row for row in rows}


def _save(figure: plt.Figure, path: Path) -> None:
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=120)
    plt.close(figure)


def _plot_gsam_flops(results: dict, path: Path) -> None:
    figure, axes = plt.subplots(figsize=(5.5, 4))
    rows = results["gsam_crops"]
    for stride, marker in ((16, "o"), (8, "s")):
        points = [(r["crop"], r["gmacs"]) for r in rows if r["patch_stride"] == stride]
        axes.plot(*zip(*points), marker=marker, label=f"measured, patch stride {stride}")
    paper = [(r["crop"], r["paper_gmacs"]) for r in rows if r["patch_stride"] == 16 and r["paper_gmacs"] is not None]
    if paper:
        axes.plot(*zip(*paper), marker="^", linestyle="--", label="GSAM paper, Table 4")
    axes.set(xscale="log", yscale="log", xlabel="crop size (px)", ylabel="GMACs per forward (batch 1)",
             title=f"GSAM forward cost vs crop ({results['settings']['paper_backbone']})")
    crops = sorted({r["crop"] for r in rows})
    axes.set_xticks(crops, [str(c) for c in crops])
    axes.minorticks_off()
    axes.legend()
    _save(figure, path)


def _plot_against_dice(results: dict, value: dict[str, float], xlabel: str, title: str, path: Path, log: bool) -> None:
    figure, axes = plt.subplots(figsize=(5.5, 4))
    dice = {r["method"]: r["mean_dice"] for r in results["accuracy"]}
    for i, (method, x) in enumerate(value.items()):
        axes.scatter(x, dice[method])
        axes.annotate(method, (x, dice[method]), textcoords="offset points", xytext=(5, 4 + 10 * (i % 2)))
    axes.set(xlabel=xlabel, ylabel="mean organ Dice (test cases)", title=title, xscale="log" if log else "linear")
    _save(figure, path)


def write_report(results: dict, report_path: Path, assets_dir: Path) -> None:
    """Write ``results.json`` and the PNG plots to ``assets_dir`` and the markdown report to ``report_path``."""
    assets_dir.mkdir(parents=True, exist_ok=True)
    write_json(assets_dir / "results.json", results)
    s, m = results["settings"], results["machine"]
    link = Path(os.path.relpath(assets_dir, report_path.parent)).as_posix()
    methods = s["methods"]
    memory, speed, accuracy = _by_method(results["memory"]), _by_method(results["speed"]), _by_method(results["accuracy"])
    cpu_params = {r["method"]: r for r in results["parameters"] if r["backbone"] == s["backbone"]}

    if "gsam_crops" in results:
        _plot_gsam_flops(results, assets_dir / "gsam_flops_vs_crop.png")
    _plot_against_dice(results, {k: memory[k]["step_peak_mib"] for k in methods}, "training-step peak memory (MiB)",
                       f"memory vs Dice ({s['backbone']}, {s['image_size']} px, batch {s['batch']}, {s['device']})",
                       assets_dir / "memory_vs_dice.png", log=False)
    _plot_against_dice(results, {k: cpu_params[k]["trainable"] for k in methods}, "trainable parameters",
                       f"trainable parameters vs Dice ({s['backbone']})", assets_dir / "parameters_vs_dice.png", log=True)

    ref = {name: memory[name]["step_peak_mib"] for name in ("decoder_only", "samed") if name in memory}
    organs = list(results["accuracy"][0]["dice"])
    sections = [
        "# Benchmarks",
        f"Written by `python -m benchmarks --{s['name']}` ({results['wall_s'] / 60:.0f} min); every figure below "
        f"was measured in that run (raw values: [{link}/results.json]({link}/results.json)). Nothing here is typed "
        "by hand: change the code or the settings and run the command again.",
        f"Machine: {m['cpu']}, {m['cores']} cores ({m['torch_threads']} torch threads), {m['memory_gib']} GiB; "
        f"Python {m['python']}, torch {m['torch']}, medsam_ft {m['medsam_ft']}; device: {m['device']}; {m['date']}."
        + ("" if s["device"].startswith("cuda") else " No GPU took part in this run: GPU rows (bf16) appear when "
           "`--device cuda` is given on a machine with one."),
        "## Parameters",
        f"Each network built with random weights, 9 classes; checkpoint = the `TrainableCheckpoint` state that "
        f"`best.pt` holds (trainable tensors + config), serialised with `torch.save`. {s['paper_backbone']} at the "
        f"size its paper uses, {s['backbone']} at the CPU setting ({s['image_size']} px).",
        _table(["method", "backbone", "input (px)", "total", "trainable", "trainable share", "checkpoint"],
               [[r["method"], r["backbone"], r["image_size"], f"{r['total'] / 1e6:.2f} M", f"{r['trainable'] / 1e6:.3f} M",
                 f"{100 * r['trainable'] / r['total']:.2f} %", f"{r['checkpoint_bytes'] / 2**20:.2f} MiB"]
                for r in results["parameters"]]),
        "## FLOPs",
        "`torch.utils.flop_counter.FlopCounterMode` on PyTorch's meta device (no arithmetic runs): matrix "
        "multiplications and convolutions, 2 FLOPs per multiply-accumulate (GMACs = GFLOPs / 2); FFTs and "
        "element-wise operations are not counted. Training step = forward + loss + backward of batch 1 (the "
        "optimiser step not counted); inference = one forward of one image. Papers' sizes: the training size "
        "and the size predicted at (GSAM trains on random crops and predicts whole images).",
        _table(["method", "backbone", "train input", "training step GFLOPs", "inference input", "inference GFLOPs"],
               [[r["method"], r["backbone"], r["train_size"], f"{r['train_step_gflops']:.1f}", r["infer_size"],
                 f"{r['inference_gflops']:.1f}"] for r in results["flops"] + results["flops_cpu_setting"]]),
    ]
    if "gsam_crops" in results:
        rows = results["gsam_crops"]
        largest = {st: max(r["gmacs"] for r in rows if r["patch_stride"] == st) for st in (16, 8)}
        paper_largest = max((v for v in (r["paper_gmacs"] for r in rows) if v), default=None)
        sections += [
            f"### GSAM: forward cost per crop size ({s['paper_backbone']} + ResNet-101, batch 1, 2 classes)",
            "Patch stride 16 is this project's default (SAM's token grid); stride 8 is the authors' code "
            "(4x the tokens). The paper's GMACs (Table 4) are given beside ours; compare the trend (share of the "
            "256-px cost), the absolute values depend on the counter and on what the authors counted.",
            _table(["crop (px)", "GMACs, stride 16", "share", "GMACs, stride 8", "share", "paper GMACs", "paper share"],
                   [[c, f"{g16:.2f}", f"{100 * g16 / largest[16]:.1f} %", f"{g8:.2f}", f"{100 * g8 / largest[8]:.1f} %",
                     pg if pg is not None else "", f"{100 * pg / paper_largest:.1f} %" if pg and paper_largest else ""]
                    for c, g16, g8, pg in (
                        (crop, next(r["gmacs"] for r in rows if r["crop"] == crop and r["patch_stride"] == 16),
                         next(r["gmacs"] for r in rows if r["crop"] == crop and r["patch_stride"] == 8),
                         next(r["paper_gmacs"] for r in rows if r["crop"] == crop))
                        for crop in sorted({r["crop"] for r in rows}))]),
            f"![GSAM FLOPs vs crop]({link}/gsam_flops_vs_crop.png)",
        ]
    sections += [
        "## Memory",
        f"Peak memory of a training step (forward, loss, backward, AdamW step; {s['memory_steps']} steps), "
        f"{s['backbone']}, {s['image_size']} px, batch {s['batch']}, 9 classes, each method in a fresh process. "
        + ("CUDA: `torch.cuda.max_memory_allocated` minus the allocation before the steps."
           if s["device"].startswith("cuda") else
           "CPU: peak resident memory during the steps (Linux `VmHWM`, reset through `/proc/self/clear_refs` "
           "just before) minus the resident memory before them (weights, inputs)."),
        _table(["method", "step peak"] + [f"vs {name}" for name in ref],
               [[k, f"{memory[k]['step_peak_mib']:.1f} MiB"] + [f"{memory[k]['step_peak_mib'] / v:.2f}" for v in ref.values()]
                for k in methods]),
        "## Speed",
        f"{s['device']}, {s['backbone']}, {s['image_size']} px, median of {s['repeats']} timed runs after "
        f"{s['warmup']} warm-up runs. Training: forward + loss + backward + AdamW step, batch {s['batch']}. "
        f"Inference: `SlicePredictor` on {s['slice_batch']} grey slices. Volume: `VolumePredictor` (what "
        "`medsam-ft predict` runs: reorientation, windowing, every axial slice, labels back) on phantom case 1 "
        f"(shape {speed[methods[0]].get('volume_shape')}), slices resized to {s['image_size']} px.",
        _table(["method", "training images/s", "training step", "inference slices/s", "volume prediction"],
               [[k, f"{speed[k]['train_images_per_s']:.2f}", f"{speed[k]['train_step_s']:.3f} s",
                 f"{speed[k]['inference_slices_per_s']:.2f}", f"{speed[k].get('volume_prediction_s', '')} s"] for k in methods]),
        "## Accuracy in a fixed time budget",
        f"Each method's volume bundle (`{'`, `'.join(sorted(set(results['accuracy_bundles'].values())))}`; "
        f"decoder_only = `samed_synapse` with the method switched) trained for {s['budget_s']:.0f} s of training "
        f"loop on {s['phantom_cases']} synthetic phantom cases (`data_prep.phantom`, TransUNet split, 1 validation "
        f"case unused), then `evaluate.json` on the test cases (clinical protocol, Dice per organ, mean over cases). "
        f"Same overrides for all: {s['backbone']}, {s['image_size']} px, batch {s['batch']}, lr {s['lr']}, "
        f"no augmentation, {s['keep_empty_slices']:.0%} of organ-free slices, seed 0, {s['device']}; the rest of "
        "each recipe (optimiser, loss, schedule) is the bundle's. Phantoms are easier than real CT: compare the "
        "methods with each other, not with published Synapse tables.",
        _table(["method", "iterations", "epochs"] + organs + ["mean Dice"],
               [[k, accuracy[k]["iterations"], accuracy[k]["epochs"]] + [f"{accuracy[k]['dice'][o]:.3f}" for o in organs]
                + [f"**{accuracy[k]['mean_dice']:.3f}**"] for k in methods]),
        f"![memory vs Dice]({link}/memory_vs_dice.png) ![trainable parameters vs Dice]({link}/parameters_vs_dice.png)",
    ]
    with atomic_path(report_path) as tmp:
        tmp.write_text("\n\n".join(sections) + "\n")
