"""The GSAM bundles end to end: gsam_isbi2012 on generated 2D images, gsam_synapse on the phantoms."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.inferers import SliceInferer
from PIL import Image

from medsam_ft.checkpoint import load_checkpoint
from medsam_ft.data import evaluation_dataset, read_dataset_spec
from medsam_ft.inference import SlicePredictor

pytestmark = pytest.mark.bundle

BUNDLES = Path(__file__).resolve().parents[1] / "bundles"
TINY = ["--cnn", "resnet18", "--batch_size", "4", "--max_epochs", "1", "--num_workers", "0", "--progress", "False"]


def test_gsam_isbi2012_trains_on_crops_and_predicts_whole_images(tmp_path, run_bundle, shapes_dataset):
    data = shapes_dataset(tmp_path / "shapes", "background,disc", count=6, seed=2, val_fraction=0.34)
    out = tmp_path / "run"
    log = run_bundle(BUNDLES / "gsam_isbi2012" / "train.json", "--dataset_dir", str(data), "--output_dir", str(out),
                     "--image_size", "64", "--crop_size", "32", *TINY)
    assert "GSAM:" in log and "val_miou" in log
    net, checkpoint = load_checkpoint(out / "best.pt")
    assert checkpoint["config"]["method"] == "gsam" and checkpoint["resize_to"] == 64
    options = checkpoint["config"]["method_options"]
    assert options["cnn_weights"] is None and options["cnn"] == "resnet18"
    run_bundle(BUNDLES / "gsam_isbi2012" / "evaluate.json", "--dataset_dir", str(data), "--checkpoint",
               str(out / "best.pt"), "--output_dir", str(tmp_path / "eval"), "--split", "validation")
    assert (tmp_path / "eval" / "metrics_classes.csv").read_text().startswith("class,iou,f1")
    inputs = tmp_path / "in"
    inputs.mkdir()
    Image.fromarray(np.zeros((90, 130, 3), np.uint8)).save(inputs / "odd.png")
    run_bundle(BUNDLES / "gsam_isbi2012" / "inference.json", "--checkpoint", str(out / "best.pt"),
               "--input_dir", str(inputs), "--output_dir", str(tmp_path / "pred"))
    assert Image.open(tmp_path / "pred" / "odd_seg.png").size == (130, 90)


def test_gsam_synapse_reports_miou_and_organ_metrics(synapse_dataset, tmp_path, run_bundle):
    out = tmp_path / "run"
    log = run_bundle(BUNDLES / "gsam_synapse" / "train.json", "--dataset_dir", str(synapse_dataset), "--output_dir",
                     str(out), "--image_size", "32", "--keep_empty_slices", "0.0", "--slice_batch_size", "64", *TINY)
    assert "val_miou" in log and "val_mean_dice" in log
    run_bundle(BUNDLES / "gsam_synapse" / "evaluate.json", "--dataset_dir", str(synapse_dataset), "--checkpoint",
               str(out / "best.pt"), "--output_dir", str(tmp_path / "eval"), "--slice_batch_size", "64")
    summary = json.loads((tmp_path / "eval" / "metrics_summary.json").read_text())
    assert "mean_dice_clinical" in summary and "mean_hd95_transunet" in summary
    # the data-set mIoU recomputed apart: every test volume predicted, one confusion matrix by bincount
    net, checkpoint = load_checkpoint(out / "best.pt")
    predictor = SlicePredictor(net, resize_to=checkpoint["resize_to"])
    confusion = np.zeros((9, 9), dtype=np.int64)
    for volume in evaluation_dataset(read_dataset_spec(synapse_dataset), "test"):
        with torch.no_grad():
            logits = SliceInferer(roi_size=(-1, -1), spatial_dim=2, sw_batch_size=64)(volume["image"][None], predictor)
        truth, prediction = volume["label"][0].numpy().ravel(), logits[0].argmax(0).numpy().ravel()
        confusion += np.bincount(9 * truth.astype(np.int64) + prediction, minlength=81).reshape(9, 9)
    union = confusion.sum(0) + confusion.sum(1) - np.diag(confusion)
    iou = np.diag(confusion)[union > 0] / union[union > 0]
    assert summary["miou"] == pytest.approx(float(iou.mean()), abs=1e-4)
    assert (tmp_path / "eval" / "metrics_clinical.csv").is_file()
