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
