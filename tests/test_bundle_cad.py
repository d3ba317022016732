"""The CAD bundles end to end: cad_2d (binary folder, box prompt) and cad_synapse (CT, embedding cache)."""

from pathlib import Path

import pytest

from medsam_ft.checkpoint import load_checkpoint

pytestmark = pytest.mark.bundle

BUNDLES = Path(__file__).resolve().parents[1] / "bundles"
TINY = ["--image_size", "32", "--batch_size", "4", "--max_epochs", "2", "--num_workers", "0", "--progress", "False"]


def test_cad_2d_trains_and_reports_per_image_dice(tmp_path, run_bundle, shapes_dataset):
    data = shapes_dataset(tmp_path / "polyps", "background,polyp", count=6, seed=3, val_fraction=0.34)
    out = tmp_path / "run"
    log = run_bundle(BUNDLES / "cad_2d" / "train.json", "--dataset_dir", str(data), "--output_dir", str(out),
                     "--stem", "strided", "--adapter_size", "32", *TINY)
    assert "epoch 2/2: mean loss" in log and "embedding cache off" not in log
    net, checkpoint = load_checkpoint(out / "best.pt")
    assert checkpoint["config"]["method"] == "cad" and checkpoint["config"]["prompt"] == "whole_image_box"
    assert set(checkpoint["state"]) == set(net.trainable_state_dict())
    run_bundle(BUNDLES / "cad_2d" / "evaluate.json", "--dataset_dir", str(data), "--checkpoint", str(out / "best.pt"),
               "--output_dir", str(tmp_path / "eval"), "--split", "validation")
    header = (tmp_path / "eval" / "metrics_images.csv").read_text().splitlines()[0]
    assert header == "image,polyp_dice,polyp_iou"


def test_cad_synapse_trains_with_the_cache(synapse_dataset, tmp_path, run_bundle):
    out = tmp_path / "run"
    log = run_bundle(BUNDLES / "cad_synapse" / "train.json", "--dataset_dir", str(synapse_dataset), "--output_dir",
                     str(out), "--keep_empty_slices", "0.0", "--slice_batch_size", "64", *TINY)
    assert "epoch 2/2: mean loss" in log and "val_mean_dice" in log and "embedding cache off" not in log
    net, checkpoint = load_checkpoint(out / "best.pt")
    assert checkpoint["config"]["prompt"] == "none" and not any(k.startswith("image_encoder.") for k in checkpoint["state"])
