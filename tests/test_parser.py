"""SAM-PARSER: reconstruction at initialisation, merge, trainable counts, what trains, the focal term,
box prompts (jitter bounds, the data path, the box-prompted forward)."""

import io

import monai.data
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.nn.utils import parametrize

import medsam_ft
from medsam_ft.checkpoint import CHECKPOINT_FORMAT, load_checkpoint
from medsam_ft.data import BoxPromptDataset, grow_box, mask_box
from medsam_ft.inference import SlicePredictor
from medsam_ft.losses import SegmentationLoss
from medsam_ft.networks import SemanticSAM


def _pair(backbone, **options):
    torch.manual_seed(0)
    base = medsam_ft.build_network("decoder_only", backbone=backbone, num_classes=3, image_size=64).eval()
    torch.manual_seed(0)  # the same random vit_tiny weights for both
    parser = medsam_ft.build_network("parser", backbone=backbone, num_classes=3, image_size=64, method_options=options).eval()
    return base, parser


@pytest.mark.parametrize("backbone,layers", [("vit_tiny", "conv"), ("vit_tiny", "all"), ("lite_medsam", "conv")])
def test_untrained_parser_equals_the_base_network(backbone, layers):
    base, parser = _pair(backbone, layers=layers)
    image = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert (parser(image) - base(image)).abs().max() < 1e-4


def test_merge_folds_the_coefficients_into_plain_weights():
    _, parser = _pair("vit_tiny", layers="all")
    with torch.no_grad():
        for coefficients in parser.coefficients:
            coefficients.mul_(torch.linspace(0.5, 1.5, coefficients.numel()))
    merged = parser.merge()
    assert type(merged) is SemanticSAM and not any(parametrize.is_parametrized(m) for m in merged.modules())
    assert "image_encoder.neck.0.weight" in merged.state_dict()
    assert not any("parametrizations" in k for k in merged.state_dict())
    image = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(merged(image), parser(image))
    # rebuildable and savable: its config builds the structure, its whole state dict fills it
    buffer = io.BytesIO()
    torch.save(merged.state_dict(), buffer)
    rebuilt = medsam_ft.build_network(**merged.config).eval()
    rebuilt.load_state_dict(torch.load(io.BytesIO(buffer.getvalue()), weights_only=True))
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(image), parser(image))


def test_only_coefficients_and_decoder_train():
    _, parser = _pair("vit_tiny")
    parser.train()
    parser(torch.rand(2, 3, 64, 64)).logsumexp(1).mean().backward()
    for layer in parser.svd_layers:
        assert layer.parametrizations.weight.original.grad is not None
        assert layer.parametrizations.weight[0].u.grad is None
        assert layer.bias is None or not layer.bias.requires_grad
    coefficient_ids = {id(c) for c in parser.coefficients}
    assert all(p.grad is None for p in parser.image_encoder.parameters() if id(p) not in coefficient_ids)
    state = parser.trainable_state_dict()
    assert {k for k in state if k.startswith("image_encoder.")} == {
        "image_encoder.neck.0.parametrizations.weight.original", "image_encoder.neck.2.parametrizations.weight.original"}


def test_vit_b_conv_layers_add_512_coefficients():
    decoder_only = medsam_ft.build_network("decoder_only", backbone="vit_b", num_classes=9, image_size=64)
    parser = medsam_ft.build_network("parser", backbone="vit_b", num_classes=9, image_size=64)
    assert parser.num_parameters(trainable_only=True) - decoder_only.num_parameters(trainable_only=True) == 512
    half = medsam_ft.build_network("parser", backbone="vit_tiny", num_classes=3, image_size=64,
                                   method_options={"rank_ratio": 0.5})
    assert [c.numel() for c in half.coefficients] == [16, 16]  # 32 -> 16 per neck conv
    with pytest.raises(ValueError, match="unknown SAM-PARSER layers"):
        medsam_ft.build_network("parser", backbone="vit_tiny", num_classes=3, image_size=64,
                                method_options={"layers": "attention"})


def test_focal_term():
    torch.manual_seed(0)
    logits, label = torch.randn(2, 3, 4, 4), torch.randint(0, 3, (2, 1, 4, 4))
    ce = F.cross_entropy(logits, label[:, 0], reduction="none")
    expected = ((1 - torch.exp(-ce)) ** 2 * ce).mean()
    focal_only = SegmentationLoss(ce_weight=0.0, dice_weight=0.0, focal_weight=1.0)
    torch.testing.assert_close(focal_only(logits, label), expected)
    mixed = SegmentationLoss(ce_weight=0.75, dice_weight=1.0, focal_weight=0.25)  # SAM-PARSER, lambda 0.25
    dice_only = SegmentationLoss(ce_weight=0.0, dice_weight=1.0)
    torch.testing.assert_close(mixed(logits, label), 0.75 * ce.mean() + 0.25 * expected + dice_only(logits, label))


def test_box_jitter_bounds_and_the_box_prompt_data_path():
    mask = torch.zeros(40, 50, dtype=torch.bool)
    mask[10:20, 30:35] = True
    tight = mask_box(mask)
    assert tight.tolist() == [30.0, 10.0, 34.0, 19.0]
    rng = np.random.default_rng(0)
    for _ in range(200):
        box = grow_box(tight, rng.integers(0, 21, size=4), 40, 50)
        assert 10.0 <= box[0] <= 30.0 and 0.0 <= box[1] <= 10.0 and 34.0 <= box[2] <= 49.0 and 19.0 <= box[3] <= 39.0
    label = torch.zeros(1, 40, 50, dtype=torch.long)
    label[0, 10:20, 30:35] = 3
    label[0, 25:30, 5:10] = 1
    label[0, 0, 0] = 255
    samples = [{"image": torch.rand(3, 40, 50), "label": label}, {"image": torch.rand(3, 40, 50), "label": label * 0}]
    fixed = BoxPromptDataset(samples, fixed=True, eval_jitter=2)
    assert [fixed[k]["organ"] for k in range(len(fixed))] == [1, 3]  # one item per class present; empty samples none
    item = fixed[1]
    assert item["box"].tolist() == [28.0, 8.0, 36.0, 21.0]
    assert item["label"].sum() == 50 + 255 and item["label"][0, 0, 0] == 255  # 1 inside class 3 only; ignore kept
    random_boxes = BoxPromptDataset(samples, max_jitter=20, seed=1)
    assert len({tuple(random_boxes[1]["box"].tolist()) for _ in range(10)}) > 1


def test_box_prompted_forward():
    torch.manual_seed(0)
    net = medsam_ft.build_network("parser", backbone="vit_tiny", num_classes=2, image_size=64, prompt="box").eval()
    boxes = torch.tensor([[4.0, 8.0, 40.0, 60.0], [0.0, 0.0, 79.0, 63.0]])
    with torch.no_grad():
        logits = net(torch.rand(2, 3, 64, 80), boxes)
        upsampled = SlicePredictor(net)(torch.rand(2, 3, 64, 80), boxes)
    assert logits.shape == (2, 2, 16, 20) and upsampled.shape == (2, 2, 64, 80)
    with pytest.raises(ValueError, match="box prompts need a 2-class network"):
        medsam_ft.build_network("parser", backbone="vit_tiny", num_classes=3, image_size=64, prompt="box")
    semantic = medsam_ft.build_network("parser", backbone="vit_tiny", num_classes=2, image_size=64)
    with pytest.raises(ValueError, match="takes no boxes"):
        semantic(torch.rand(1, 3, 64, 64), boxes[:1])
    with pytest.raises(ValueError, match="is box-prompted"):
        net(torch.rand(1, 3, 64, 64))


def test_box_jitter_reseeded_per_worker_and_small_objects_left_out():
    label = torch.zeros(1, 40, 50, dtype=torch.long)
    label[0, 10:30, 10:30] = 1  # 400 px
    label[0, 35:38, 40:44] = 2  # 12 px
    samples = [{"image": torch.rand(3, 40, 50), "label": label}] * 8
    assert {BoxPromptDataset(samples, min_pixels=100)[k]["organ"] for k in range(8)} == {1}
    boxes = BoxPromptDataset(samples, max_jitter=20, seed=0, min_pixels=100)
    loader = monai.data.DataLoader(boxes, batch_size=4, num_workers=2)
    first, second = (batch["box"] for batch in loader)  # one batch from each worker
    assert not torch.equal(first, second)  # each worker has its own jitter stream


def test_checkpoints_of_version_0_1_still_load(tmp_path):
    """medsam_ft 0.1 stored SAM-PARSER's coefficients as ``<layer>.coefficients`` and the method's
    options beside the common config keys: such a checkpoint rebuilds the same network."""
    _, parser = _pair("vit_tiny")
    with torch.no_grad():
        parser.coefficients[0].mul_(1.5)
    state = {k.replace(".parametrizations.weight.original", ".coefficients"): v
             for k, v in parser.trainable_state_dict().items()}
    old_config = {k: v for k, v in parser.config.items() if k not in ("weights", "method_options", "pixel_norm")}
    old_config |= {"checkpoint": None, **parser.config["method_options"], "pixel_norm": parser.config["pixel_norm"]}
    old = {"format": CHECKPOINT_FORMAT, "config": old_config, "state": state, "backbone_sha256": parser.backbone_sha256,
           "hu_window": [-125.0, 275.0]}
    torch.save(old, tmp_path / "old.pt")
    torch.manual_seed(0)  # the same random vit_tiny weights as _pair's
    loaded, checkpoint = load_checkpoint(tmp_path / "old.pt")
    assert checkpoint["intensity"] == {"kind": "window", "window": [-125.0, 275.0]} and checkpoint["axcodes"] == "RAS"
    image = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(image), parser.eval()(image))
