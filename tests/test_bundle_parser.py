"""The parser_synapse bundle (prompt-free mode) end to end on the phantoms."""

from pathlib import Path

import pytest

from medsam_ft.checkpoint import load_checkpoint

pytestmark = pytest.mark.bundle

BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "parser_synapse"


def test_parser_synapse_trains_only_coefficients_and_decoder(synapse_dataset, tmp_path, run_bundle):
    out = tmp_path / "run"
    log = run_bundle(BUNDLE / "train.json", "--dataset_dir", str(synapse_dataset), "--output_dir", str(out),
                     "--image_size", "32", "--batch_size", "4", "--lr", "0.001", "--focal_lambda", "0.25",
                     "--max_epochs", "1", "--keep_empty_slices", "0.0", "--num_workers", "0", "--progress", "False",
                     "--slice_batch_size", "64")
    assert "SAM-PARSER: 512 coefficients in 2 conv layers" in log and "epoch 1/1: mean loss" in log
    net, checkpoint = load_checkpoint(out / "best.pt")
    encoder_keys = {k for k in checkpoint["state"] if k.startswith("image_encoder.")}
    assert encoder_keys == {"image_encoder.neck.0.parametrizations.weight.original",
                            "image_encoder.neck.2.parametrizations.weight.original"}
    run_bundle(BUNDLE / "evaluate.json", "--dataset_dir", str(synapse_dataset), "--checkpoint", str(out / "best.pt"),
               "--output_dir", str(tmp_path / "eval"), "--slice_batch_size", "64")
    assert (tmp_path / "eval" / "metrics_transunet.csv").is_file()


def test_parser_synapse_box_prompted_variant(synapse_dataset, tmp_path, run_bundle):
    out = tmp_path / "run"
    configs = f"['{BUNDLE / 'train.json'}','{BUNDLE / 'box_prompt.json'}']"
    log = run_bundle(configs, "--dataset_dir", str(synapse_dataset), "--output_dir", str(out), "--image_size", "32",
                     "--batch_size", "16", "--lr", "0.001", "--max_epochs", "1", "--num_workers", "0",
                     "--progress", "False", "--slice_batch_size", "64")
    assert "epoch 1/1: mean loss" in log and "val_mean_dice" in log
    net, checkpoint = load_checkpoint(out / "best.pt")
    assert net.num_classes == 2 and checkpoint["class_names"][1] == "spleen"
    configs = f"['{BUNDLE / 'evaluate.json'}','{BUNDLE / 'evaluate_box.json'}']"
    run_bundle(configs, "--dataset_dir", str(synapse_dataset), "--checkpoint", str(out / "best.pt"),
               "--output_dir", str(tmp_path / "eval"), "--split", "validation", "--slice_batch_size", "64")
    rows = (tmp_path / "eval" / "metrics_boxes.csv").read_text().splitlines()
    assert rows[0] == "class,boxes,mean_dice" and rows[-1].startswith("mean,")
