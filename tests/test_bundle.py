"""The samed_synapse bundle end to end on tiny phantoms (LiteMedSAM at 32 px, one short epoch)."""

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from medsam_ft.checkpoint import load_checkpoint
from medsam_ft.io import write_nifti

pytestmark = pytest.mark.bundle

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "bundles" / "samed_synapse"
TINY = ["--image_size", "32", "--batch_size", "4", "--warmup_iters", "2", "--keep_empty_slices", "0.0",
        "--num_workers", "0", "--progress", "False", "--slice_batch_size", "64"]


@pytest.fixture(scope="module")
def trained(synapse_dataset, tmp_path_factory, run_bundle):
    out = tmp_path_factory.mktemp("run")
    log = run_bundle(str(BUNDLE / "train.json"), "--dataset_dir", str(synapse_dataset), "--output_dir", str(out),
                     "--max_epochs", "1", *TINY)
    return out, log


def test_train_writes_small_checkpoints_and_logs(trained):
    out, log = trained
    assert (out / "best.pt").is_file() and (out / "last.pt").is_file()
    assert "epoch 1/1: mean loss" in log and "val_mean_dice" in log
    net, checkpoint = load_checkpoint(out / "best.pt")
    assert checkpoint["class_names"][1] == "spleen" and checkpoint["intensity"] == {"kind": "window", "window": [-125.0, 275.0]}
    assert checkpoint["config"]["method"] == "samed" and checkpoint["config"]["image_size"] == 32
    # only the trainable tensors: LoRA, mask decoder, no-prompt embedding (not the 10M-parameter backbone)
    assert set(checkpoint["state"]) == set(net.trainable_state_dict())
    assert sum(v.numel() for v in checkpoint["state"].values()) == net.num_parameters(trainable_only=True)
    assert any(list(out.glob("events.out.tfevents*")))


def test_monai_ckpt_export_reproduces_the_trained_network(trained, synapse_dataset, tmp_path):
    """model.pt (the whole network's state dict, written with best.pt) is what MONAI's tools load:
    `monai.bundle ckpt_export` builds network_def from train.json, loads it, and the TorchScript file
    gives best.pt's logits (MONAI copies matching keys only, so a format mismatch would show here)."""
    out, _ = trained
    exported = tmp_path / "model.ts"
    cmd = [sys.executable, "-m", "monai.bundle", "ckpt_export", "network_def", "--filepath", str(exported),
           "--ckpt_file", str(out / "model.pt"), "--meta_file", str(BUNDLE / "metadata.json"),
           "--config_file", str(BUNDLE / "train.json"), "--dataset_dir", str(synapse_dataset), "--image_size", "32",
           "--use_trace", "True", "--input_shape", "[1, 3, 32, 32]"]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    network, _ = load_checkpoint(out / "best.pt")
    image = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.load(str(exported))(image), network(image), atol=1e-5, rtol=1e-4)


def test_resume_continues_the_schedule(trained, synapse_dataset, run_bundle):
    out, _ = trained
    first = torch.load(out / "last.pt", weights_only=True)
    epochs = lambda trainer: trainer["iteration"] // trainer["epoch_length"]  # noqa: E731 (Ignite's Engine.state_dict)
    assert epochs(first["trainer"]) == 1
    log = run_bundle(str(BUNDLE / "train.json"), "--dataset_dir", str(synapse_dataset), "--output_dir", str(out),
                     "--max_epochs", "2", "--resume", "True", *TINY)
    assert "Restored all variables from" in log and "epoch 2/2" in log and "epoch 1/2" not in log
    second = torch.load(out / "last.pt", weights_only=True)
    assert epochs(second["trainer"]) == 2
    assert second["trainer"]["iteration"] == 2 * first["trainer"]["iteration"]
    assert second["lr_scheduler"]["last_epoch"] == 2 * first["lr_scheduler"]["last_epoch"]


def test_evaluate_writes_both_protocols(trained, synapse_dataset, tmp_path, run_bundle):
    out, _ = trained
    log = run_bundle(str(BUNDLE / "evaluate.json"), "--dataset_dir", str(synapse_dataset), "--checkpoint",
                     str(out / "best.pt"), "--output_dir", str(tmp_path), "--slice_batch_size", "64")
    for protocol in ("clinical", "transunet"):
        rows = (tmp_path / f"metrics_{protocol}.csv").read_text().splitlines()
        assert rows[0].startswith("case,spleen_dice,right_kidney_dice")
        assert [r.split(",")[0] for r in rows[1:]] == ["label0001", "label0002", "label0003", "label0004", "mean"]
    assert "Dice (transunet)" in log and "HD95 in mm (clinical)" in log
    # the same evaluation as two processes (torchrun, gloo): each predicts its share of the cases, rank 0
    # reports them all, the same numbers
    run_bundle(str(BUNDLE / "evaluate.json"), "--dataset_dir", str(synapse_dataset), "--checkpoint",
               str(out / "best.pt"), "--output_dir", str(tmp_path / "ddp"), "--slice_batch_size", "64",
               env={"OMP_NUM_THREADS": "1"}, torchrun=True)
    for protocol in ("clinical", "transunet"):
        name = f"metrics_{protocol}.csv"
        assert (tmp_path / "ddp" / name).read_text() == (tmp_path / name).read_text()


def test_inference_keeps_patient_geometry(trained, tmp_path, run_bundle):
    out, _ = trained
    inputs = tmp_path / "in"
    rng = np.random.default_rng(0)
    volume = rng.integers(-200, 300, size=(40, 36, 7)).astype(np.int16)
    # LPS-like axis codes, anisotropic, rotated and permuted: not RAS at all
    angle = np.deg2rad(20)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.array([[0, -0.8, 0], [-0.7, 0, 0], [0, 0, 3.5]])
    affine[:3, 3] = [12.0, -40.0, 7.5]
    write_nifti(inputs / "patient_a.nii.gz", volume, affine)
    write_nifti(inputs / "patient_b.nii", volume[:, :, :5], np.diag([0.9, 0.9, 2.5, 1.0]))
    (inputs / "notes.txt").write_text("not an image: ignored")
    predictions = tmp_path / "out"
    run_bundle(str(BUNDLE / "inference.json"), "--checkpoint", str(out / "best.pt"), "--input_dir", str(inputs),
               "--output_dir", str(predictions), "--slice_batch_size", "64")
    assert sorted(p.name for p in predictions.iterdir()) == [
        "patient_a_seg.json", "patient_a_seg.nii.gz", "patient_b_seg.json", "patient_b_seg.nii.gz"]
    label = nib.load(predictions / "patient_a_seg.nii.gz")
    assert label.shape == (40, 36, 7) and label.get_data_dtype() == np.uint8
    np.testing.assert_allclose(label.affine, affine, atol=1e-5)
    assert nib.aff2axcodes(label.affine) == nib.aff2axcodes(affine)
    assert nib.load(predictions / "patient_b_seg.nii.gz").shape == (40, 36, 5)
    names = json.loads((predictions / "patient_a_seg.json").read_text())["labels"]
    assert names["0"] == "background" and names["8"] == "pancreas"


def test_inference_prediction_is_oriented_like_its_input(trained, synapse_dataset, tmp_path, run_bundle):
    """The same volume stored in two orientations gives the same labels per physical voxel."""
    out, _ = trained
    image = nib.load(synapse_dataset / "img" / "img0002.nii.gz")
    data, affine = np.asanyarray(image.dataobj), image.affine
    flipped_affine = affine @ np.array([[-1, 0, 0, data.shape[0] - 1], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    write_nifti(tmp_path / "in" / "a.nii.gz", data, affine)
    write_nifti(tmp_path / "in" / "b.nii.gz", data[::-1].copy(), flipped_affine)
    run_bundle(str(BUNDLE / "inference.json"), "--checkpoint", str(out / "best.pt"), "--input_dir",
               str(tmp_path / "in"), "--output_dir", str(tmp_path / "out"), "--slice_batch_size", "64")
    a = np.asanyarray(nib.load(tmp_path / "out" / "a_seg.nii.gz").dataobj)
    b = np.asanyarray(nib.load(tmp_path / "out" / "b_seg.nii.gz").dataobj)
    np.testing.assert_array_equal(a, b[::-1])


def test_multi_gpu_config_runs_ddp_on_cpu(synapse_dataset, tmp_path, run_bundle):
    configs = f"['{BUNDLE / 'train.json'}','{BUNDLE / 'multi_gpu_train.json'}']"
    log = run_bundle(configs, "--dataset_dir", str(synapse_dataset), "--output_dir", str(tmp_path), "--max_epochs", "1",
                     *TINY, "--global_batch_size", "8", env={"OMP_NUM_THREADS": "1"}, torchrun=True)
    assert (tmp_path / "best.pt").is_file() and (tmp_path / "last.pt").is_file()
    assert log.count("epoch 1/1: mean loss") == 1  # rank 0 logs, rank 1 trains silently
    assert "8 samples per optimiser step: 4 per process x 2 process(es)" in log  # the global batch, split
