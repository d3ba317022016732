"""2D images at full resolution: the inferers, and the folder_2d bundle end to end on generated shapes."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import medsam_ft
from medsam_ft.checkpoint import load_checkpoint
from medsam_ft.inference import SlicePredictor, full_resolution_inferer

pytestmark = pytest.mark.bundle

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "bundles" / "folder_2d"


class PixelWise(torch.nn.Module):
    """A network whose logits depend on each pixel alone (records the sizes it is called with)."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, kernel_size=1)
        self.sizes = []

    def forward(self, image):
        self.sizes.append(tuple(image.shape[-2:]))
        return self.conv(image)


def test_sliding_window_predicts_at_full_resolution():
    torch.manual_seed(0)
    net = PixelWise()
    image = torch.rand(1, 1, 150, 230)  # grey, larger than a window, not a multiple of it
    whole = SlicePredictor(net)(image)
    windows = full_resolution_inferer(64, overlap=0.25)(image, SlicePredictor(net))
    assert windows.shape == (1, 4, 150, 230)
    torch.testing.assert_close(windows, whole, rtol=1e-4, atol=1e-5)  # blending identical values changes nothing
    assert set(net.sizes[1:]) == {(64, 64)}  # windows at native resolution, nothing shrunk


def test_windows_slide_over_the_image_at_its_training_scale():
    """GSAM trains on crops of images resized to R: a 512-px image is resized to R = 256 whole, 128-px
    windows slide over that (3 x 3, not 5 x 5 over the original) and each reaches the network as it is
    (not resized to R: that would be 4x the training magnification); the logits are resized back."""
    torch.manual_seed(0)
    net = PixelWise()
    image = torch.rand(1, 1, 512, 512)
    with torch.no_grad():
        logits = full_resolution_inferer(128, overlap=0.25, sw_batch_size=1, resize_to=256)(image, SlicePredictor(net))
        assert logits.shape == (1, 4, 512, 512)
        assert net.sizes == [(128, 128)] * 9
        resized = torch.nn.functional.interpolate(image, size=(256, 256), mode="bilinear", align_corners=False)
        expected = torch.nn.functional.interpolate(SlicePredictor(net)(resized), size=(512, 512), mode="bilinear",
                                                   align_corners=False)
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-5)
    net.sizes.clear()
    with torch.no_grad():
        whole = full_resolution_inferer(None, resize_to=256)(image, SlicePredictor(net))
    assert net.sizes == [(256, 256)] and whole.shape == (1, 4, 512, 512)


def test_resize_predict_resize_returns_the_image_size():
    net = medsam_ft.build_network("decoder_only", backbone="vit_tiny", num_classes=3, image_size=32).eval()
    image = torch.rand(1, 3, 45, 70)
    with torch.no_grad():
        resized = full_resolution_inferer(None)(image, SlicePredictor(net))
        windowed = full_resolution_inferer(40)(image, SlicePredictor(net))
    assert resized.shape == windowed.shape == (1, 3, 45, 70)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, run_bundle, shapes_dataset):
    """Eight generated images (96-192 px) trained on random 64 px crops, LiteMedSAM at 32 px."""
    data = shapes_dataset(tmp_path_factory.mktemp("shapes"), "background,disc,rectangle", count=8, seed=1,
                          val_fraction=0.25)
    out = tmp_path_factory.mktemp("run2d")
    log = run_bundle(BUNDLE / "train.json", "--dataset_dir", str(data), "--output_dir", str(out), "--max_epochs", "2",
                     "--image_size", "32", "--crop_size", "64", "--batch_size", "3", "--warmup_iters", "2",
                     "--num_workers", "0", "--progress", "False", "--method", "samed", "--method_options", "{'rank': 2}")
    return data, out, log


def test_train_2d_writes_checkpoints(trained):
    _, out, log = trained
    assert "epoch 2/2: mean loss" in log and "val_miou" in log
    net, checkpoint = load_checkpoint(out / "best.pt")
    assert checkpoint["config"]["method"] == "samed" and checkpoint["config"]["method_options"]["rank"] == 2
    assert checkpoint["class_names"] == ["background", "disc", "rectangle"] and checkpoint["sliding_window"] == 64
    assert net.num_classes == 3


def test_evaluate_2d_writes_metric_tables(trained, tmp_path, run_bundle):
    data, out, _ = trained
    log = run_bundle(BUNDLE / "evaluate.json", "--dataset_dir", str(data), "--checkpoint", str(out / "best.pt"),
                     "--output_dir", str(tmp_path), "--split", "validation")
    classes = (tmp_path / "metrics_classes.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in classes] == ["class", "background", "disc", "rectangle", "mean"]
    images = (tmp_path / "metrics_images.csv").read_text().splitlines()
    assert images[0] == "image,disc_dice,rectangle_dice,disc_iou,rectangle_iou" and len(images) == 3
    assert "miou" in log and "mean_image_dice" in log


def test_inference_2d_writes_full_size_pngs(trained, tmp_path, run_bundle):
    data, out, _ = trained
    inputs = tmp_path / "in"
    inputs.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (150, 230), dtype=np.uint8)).save(inputs / "wide.png")
    Image.open(data / "images" / "shape_000.png").save(inputs / "rgb.jpg")
    (inputs / "readme.txt").write_text("ignored")
    run_bundle(BUNDLE / "inference.json", "--checkpoint", str(out / "best.pt"), "--input_dir", str(inputs),
               "--output_dir", str(tmp_path / "out"))
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == ["labels.json", "rgb_overlay.png", "rgb_seg.png", "wide_overlay.png", "wide_seg.png"]
    seg = Image.open(tmp_path / "out" / "wide_seg.png")
    assert seg.size == (230, 150) and seg.mode == "L" and np.asarray(seg).max() <= 2
    overlay = Image.open(tmp_path / "out" / "rgb_overlay.png")
    assert overlay.mode == "RGB" and overlay.size == Image.open(data / "images" / "shape_000.png").size
    labels = json.loads((tmp_path / "out" / "labels.json").read_text())["labels"]
    assert labels["1"]["name"] == "disc" and labels["0"]["color"] == [0, 0, 0]
