"""Smoke test of the benchmark code (not a measurement): the whole run on tiny networks, tiny data, seconds of budget."""

from __future__ import annotations

import json

import pytest

from benchmarks.run import Settings, run

pytestmark = pytest.mark.slow


def test_benchmark_run_writes_report_and_plots(tmp_path):
    settings = Settings("smoke", methods=("decoder_only", "samed", "gsam"), backbone="vit_tiny", paper_backbone="vit_tiny",
                        paper_sizes={m: (32, 48) for m in ("decoder_only", "samed", "gsam")}, gsam_crops=(16, 32),
                        image_size=32, memory_steps=1, slice_batch=4, warmup=1, repeats=1, phantom_cases=6, budget_s=2.0)
    report, assets = tmp_path / "BENCHMARKS.md", tmp_path / "assets"
    results = run(settings, report, assets, tmp_path / "work")
    text = report.read_text()
    for heading in ("## Parameters", "## FLOPs", "### GSAM", "## Memory", "## Speed", "## Accuracy in a fixed time budget"):
        assert heading in text
    assert sorted(p.name for p in assets.iterdir()) == [
        "gsam_flops_vs_crop.png", "memory_vs_dice.png", "parameters_vs_dice.png", "results.json"]
    assert json.loads((assets / "results.json").read_text())["accuracy"] == results["accuracy"]
    for row in results["accuracy"]:
        assert row["iterations"] >= 1 and len(row["dice"]) == 8
        assert row["mean_dice"] == pytest.approx(sum(row["dice"].values()) / 8, abs=1e-4)  # the mean of the organs
    gsam = {(r["crop"], r["patch_stride"]): r["gmacs"] for r in results["gsam_crops"]}
    assert gsam[(16, 16)] < gsam[(32, 16)] < gsam[(32, 8)]
    flops = {r["method"]: r for r in results["flops"]}
    # LoRA backpropagates through the encoder
    assert flops["decoder_only"]["train_step_gflops"] < flops["samed"]["train_step_gflops"]
    assert all(r["step_peak_mib"] > 0 for r in results["memory"])
    assert all(r["train_images_per_s"] > 0 and r["volume_prediction_s"] > 0 for r in results["speed"])
