"""What the bundle configs compute, checked without training: the validation key metric."""

from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser

BUNDLES = Path(__file__).resolve().parents[1] / "bundles"
VOLUME_BUNDLES = ["samed_synapse", "gsam_synapse", "cad_synapse", "parser_synapse"]


@pytest.mark.parametrize("bundle", VOLUME_BUNDLES)
def test_validation_dice_penalises_organs_absent_from_the_case(bundle):
    """best.pt is chosen by this metric: predicting an organ the case does not have must cost Dice
    (MONAI's default skips organs absent from the ground truth, so false positives went unseen)."""
    parser = ConfigParser()
    parser.read_config(BUNDLES / bundle / "train.json")
    metric = parser.get_parsed_content("validate#key_metric#val_mean_dice")
    label = torch.zeros(1, 8, 8, 4, dtype=torch.long)
    label[0, 2:5, 2:5] = 1  # organ 1 present, organ 2 absent
    perfect = label.clone()
    false_positive = label.clone()
    false_positive[0, 6:8, 6:8] = 2  # organ 2 predicted where the case has none

    def score(prediction):
        onehot = [torch.nn.functional.one_hot(t[0], 3).permute(3, 0, 1, 2).float() for t in (prediction, label)]
        dice = metric.metric_fn  # the handler's per-iteration metric, as the evaluator calls it
        dice.reset()
        dice(y_pred=[onehot[0]], y=[onehot[1]])
        return float(dice.aggregate())

    assert score(perfect) == pytest.approx(1.0)
    assert score(false_positive) == pytest.approx(0.5)  # organ 1: 1, organ 2: 0


def _parser(bundle: str, **overrides) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config(BUNDLES / bundle / "train.json")
    for key, value in overrides.items():
        parser[key] = value
    return parser


def test_samed_synapse_builds_the_decoder_only_baseline(synapse_dataset):
    """The baseline on CT from the same bundle: --method decoder_only gets no LoRA rank."""
    net = _parser("samed_synapse", dataset_dir=str(synapse_dataset), method="decoder_only",
                  image_size=32).get_parsed_content("network_def")
    assert net.config["method"] == "decoder_only" and "rank" not in net.config
    assert not any("lora" in k for k in net.trainable_state_dict())


@pytest.mark.parametrize("bundle,overrides", [("samed_synapse", {}), ("gsam_synapse", {"cnn": "resnet18"}),
                                              ("cad_synapse", {"stem": "strided", "adapter_size": 32})])
def test_seed_governs_network_initialisation(synapse_dataset, bundle, overrides):
    """--seed is set before anything is built: the same seed gives the same initial network, another
    seed another one (LoRA factors, adapters)."""

    def initial(seed: int) -> dict[str, torch.Tensor]:
        parser = _parser(bundle, dataset_dir=str(synapse_dataset), image_size=32, seed=seed, output_dir="/tmp/unused",
                         **overrides)
        parser.get_parsed_content("initialize")
        return parser.get_parsed_content("network_def").trainable_state_dict()

    first, again, other = initial(1), initial(1), initial(2)
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert any(not torch.equal(first[k], other[k]) for k in first)


def test_folder_2d_wires_gsam_like_gsam_isbi2012(tmp_path, shapes_dataset):
    """GSAM in folder_2d: crops cut from the resized image and the checkpoint's resize_to, so that
    evaluation slides its windows over the image at the training scale."""
    data = shapes_dataset(tmp_path / "shapes", "background,disc", count=4, seed=0, val_fraction=0.5)
    parser = ConfigParser()
    parser.read_config(BUNDLES / "folder_2d" / "train.json")
    parser.update({"dataset_dir": str(data), "method": "gsam", "method_options": {"cnn": "resnet18"},
                   "image_size": 64, "crop_size": 32})
    checkpoint = parser.get_parsed_content("checkpoint_state")
    assert checkpoint.resize_to == 64 and checkpoint.sliding_window == 32
    sample = parser.get_parsed_content("train#dataset")[0]
    assert sample["image"].shape == (3, 32, 32)  # a 32-px crop of the image resized to 64, fed as it is
