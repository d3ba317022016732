import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from ignite.engine import Engine
from monai.data import MetaTensor

from medsam_ft.handlers import ConfusionMatrixMeanIoU, ImageMetricsHandler, VolumeMetricsHandler
from medsam_ft.losses import SegmentationLoss, downsample_label
from medsam_ft.metrics import case_metrics, class_scores, confusion_matrix, organ_metrics
from medsam_ft.schedule import warmup_poly
from medsam_ft.transforms import IGNORE_INDEX


def test_samed_loss_matches_its_definition():
    torch.manual_seed(0)
    logits = torch.randn(3, 4, 8, 8)
    label = torch.randint(0, 4, (3, 1, 32, 32))
    small = label[:, :, ::4, ::4]  # nearest downsampling by 4 picks these pixels
    assert torch.equal(downsample_label(label, (8, 8)), small)
    probs = logits.softmax(1)
    onehot = F.one_hot(small[:, 0], 4).permute(0, 3, 1, 2).float()
    inter = (probs * onehot).sum(dim=(0, 2, 3))
    denom = (probs**2).sum(dim=(0, 2, 3)) + (onehot**2).sum(dim=(0, 2, 3))  # squared, over the batch
    dice_loss = (1 - (2 * inter + 1e-5) / (denom + 1e-5)).mean()  # background included
    ce = F.cross_entropy(logits, small[:, 0])
    expected = 0.2 * ce + 0.8 * dice_loss
    torch.testing.assert_close(SegmentationLoss()(logits, label), expected, rtol=1e-5, atol=1e-6)


def test_warmup_poly_schedule():
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([param], lr=0.005)
    schedule = warmup_poly(optimizer, max_iterations=1000, warmup=250)
    lrs = []
    for _ in range(1000):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert lrs[0] == pytest.approx(0.005 / 250)
    assert lrs[249] == pytest.approx(0.005)
    assert lrs[250] == pytest.approx(0.005)
    assert lrs[600] == pytest.approx(0.005 * (1 - 350 / 1000) ** 0.9)
    assert all(a <= b for a, b in zip(lrs[:250], lrs[1:251]))
    # resume: a new schedule loaded from the state continues where it stopped (last.pt holds both
    # the schedule's and the optimizer's state, the current lr being the optimizer's)
    state = schedule.state_dict()
    optimizer2 = torch.optim.AdamW([param], lr=0.005)
    resumed = warmup_poly(optimizer2, max_iterations=1000, warmup=250)
    optimizer2.load_state_dict(optimizer.state_dict())
    resumed.load_state_dict(state)
    resumed.step()
    schedule.step()
    assert optimizer2.param_groups[0]["lr"] == pytest.approx(optimizer.param_groups[0]["lr"])


def _random_blobs(rng, shape, n):
    mask = np.zeros(shape, dtype=bool)
    for _ in range(n):
        c = [rng.integers(2, s - 2) for s in shape]
        r = rng.integers(1, 5)
        sl = tuple(slice(max(0, ci - r), ci + r) for ci in c)
        mask[sl] = True
    return mask


def test_transunet_protocol_equals_medpy():
    medpy = pytest.importorskip("medpy.metric.binary")
    rng = np.random.default_rng(0)
    for _ in range(8):
        pred = _random_blobs(rng, (24, 20, 12), 3)
        truth = _random_blobs(rng, (24, 20, 12), 3)
        d, h = organ_metrics(pred, truth, (0.7, 0.7, 3.0), "transunet")
        assert d == pytest.approx(medpy.dc(pred, truth))
        assert h == pytest.approx(medpy.hd95(pred, truth))  # voxels: spacing is ignored
    empty = np.zeros((8, 8, 8), dtype=bool)
    some = _random_blobs(rng, (8, 8, 8), 1)
    assert organ_metrics(some, empty, (1, 1, 1), "transunet") == (1.0, 0.0)
    assert organ_metrics(empty, some, (1, 1, 1), "transunet") == (0.0, 0.0)
    assert organ_metrics(empty, empty, (1, 1, 1), "transunet") == (0.0, 0.0)


def test_clinical_protocol_uses_spacing_and_states_empty_cases():
    truth = np.zeros((20, 20, 10), dtype=bool)
    truth[5:15, 5:15, 3:7] = True
    shifted = np.roll(truth, 2, axis=0)
    d, h = organ_metrics(shifted, truth, (0.5, 0.5, 2.0), "clinical")
    assert d == pytest.approx(2 * 8 * 10 * 4 / (2 * 400))
    assert h == pytest.approx(2 * 0.5)  # a 2-voxel shift along a 0.5 mm axis
    empty = np.zeros_like(truth)
    d, h = organ_metrics(empty, empty, (1, 1, 1), "clinical")
    assert math.isnan(d) and math.isnan(h)
    d, h = organ_metrics(empty, truth, (0.5, 0.5, 2.0), "clinical")
    assert d == 0.0 and h == pytest.approx(np.linalg.norm([10.0, 10.0, 20.0]))
    with pytest.raises(ValueError, match="unknown protocol"):
        organ_metrics(truth, truth, (1, 1, 1), "nope")


def test_volume_metrics_tables_and_csv(tmp_path):

    class State:
        output = None
        metrics: dict = {}

    class FakeEngine:
        state = State()

    truth = np.zeros((12, 12, 6), dtype=np.int64)
    truth[2:6, 2:6, 1:4] = 1
    truth[7:11, 7:11, 2:5] = 2
    pred = truth.copy()
    pred[7:11, 7:11, 2:5] = 0  # organ 2 missed
    handler = VolumeMetricsHandler(["background", "spleen", "kidney"], tmp_path)
    engine = FakeEngine()
    handler.reset()
    label = MetaTensor(torch.as_tensor(truth)[None], affine=torch.diag(torch.tensor([0.8, 0.8, 3.0, 1.0])),
                       meta={"filename_or_obj": "/d/label0001.nii.gz"})
    engine.state.output = [{"pred": torch.as_tensor(pred)[None], "label": label}]
    handler.update(engine)
    handler.complete(engine)
    assert engine.state.metrics["mean_dice_transunet"] == pytest.approx(0.5)
    assert engine.state.metrics["mean_dice_clinical"] == pytest.approx(0.5)
    rows = (tmp_path / "metrics_clinical.csv").read_text().splitlines()
    assert rows[0].startswith("case,spleen_dice,kidney_dice,spleen_hd95,kidney_hd95")
    assert rows[1].startswith("label0001,1.000000,0.000000,0.000000,")
    assert rows[-1].startswith("mean,")
    assert case_metrics(pred, truth, (1, 1, 1), 3, "transunet") == [(1.0, 0.0), (0.0, 0.0)]
    # spacing comes from the affine of the (reoriented) label: a 2-voxel shift along a 3 mm axis is 6 mm
    shifted = np.roll(truth, 2, axis=1)  # array axis 1 is the 3 mm axis of this permuted affine
    permuted = MetaTensor(torch.as_tensor(truth)[None], affine=torch.tensor(
        [[0.0, 0.8, 0.0, 0.0], [0.0, 0.0, 3.0, 0.0], [0.8, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]]).T,
        meta={"filename_or_obj": "/d/case0007.npy.h5", "pixdim": [1.0, 9.0, 9.0, 9.0, 1.0]})
    handler.reset()
    engine.state.output = [{"pred": torch.as_tensor(shifted)[None], "label": permuted}]
    handler.update(engine)
    (d1, h1), _ = handler.collected["case0007"]["clinical"]
    assert h1 == pytest.approx(6.0)


def test_samed_loss_skips_ignored_pixels():
    torch.manual_seed(1)
    logits = torch.randn(2, 3, 8, 8)
    label = torch.randint(0, 3, (2, 1, 8, 8))
    ignored = label.clone()
    ignored[:, :, :4] = IGNORE_INDEX
    changed = logits.clone()
    changed[:, :, :4] = 50.0 * torch.randn(2, 3, 4, 8)  # whatever the network says where nothing is labelled
    loss = SegmentationLoss()
    assert torch.allclose(loss(logits, ignored), loss(changed, ignored))
    assert not torch.allclose(loss(logits, label), loss(changed, label))
    # CE is the mean over labelled pixels only; an all-ignored batch gives a finite loss
    ce_only = SegmentationLoss(ce_weight=1.0, dice_weight=0.0)
    expected = F.cross_entropy(logits[:, :, 4:], label[:, 0, 4:])
    torch.testing.assert_close(ce_only(logits, ignored), expected)
    assert torch.isfinite(loss(logits, torch.full_like(label, IGNORE_INDEX)))


def test_confusion_matrix_scores_and_ignore():
    truth = np.array([[0, 0, 1, 1], [2, 2, 255, 255]])
    pred = np.array([[0, 1, 1, 1], [2, 0, 2, 0]])
    matrix = confusion_matrix(pred, truth, 3)
    np.testing.assert_array_equal(matrix, [[1, 1, 0], [0, 2, 0], [1, 0, 1]])  # rows: truth; ignored pixels not counted
    scores = class_scores(matrix)
    np.testing.assert_allclose(scores["iou"], [1 / 3, 2 / 3, 1 / 2])
    np.testing.assert_allclose(scores["f1"], [2 / 4, 4 / 5, 2 / 3])
    np.testing.assert_allclose(scores["precision"], [1 / 2, 2 / 3, 1])
    assert math.isnan(class_scores(np.array([[4, 0], [0, 0]]))["iou"][1])  # absent everywhere: undefined
    with pytest.raises(ValueError, match="class ids outside 0..2"):
        confusion_matrix(pred + 1, truth, 3)
    metric = ConfusionMatrixMeanIoU(num_classes=3)
    metric.reset()
    metric.update(([torch.nn.functional.one_hot(torch.as_tensor(pred), 3).permute(2, 0, 1)], [torch.as_tensor(truth)[None]]))
    assert metric.compute() == pytest.approx(np.mean([1 / 3, 2 / 3, 1 / 2]))


def test_image_metrics_per_image_and_dataset_level(tmp_path):
    """Data-set mIoU pools pixels; per-image Dice averages images (a small image counts as much as a large one)."""
    big_truth = np.zeros((1, 10, 10), np.int64)
    big_truth[0, :5] = 1
    big_pred = big_truth.copy()  # perfect on 50 foreground pixels
    small_truth = np.array([[[1, 1, 0, 0]]])
    small_pred = np.array([[[1, 0, 0, 0]]])  # Dice 2/3 on 2 foreground pixels
    empty = np.zeros((1, 3, 3), np.int64)  # no foreground anywhere: not scored per image
    engine = Engine(lambda e, b: b)
    handler = ImageMetricsHandler(["background", "polyp"], output_dir=tmp_path)
    handler.attach(engine)
    batches = [[{"pred": torch.as_tensor(p), "label": MetaTensor(torch.as_tensor(t), meta={"filename_or_obj": f"/d/{n}.png"})}]
               for n, p, t in (("big", big_pred, big_truth), ("small", small_pred, small_truth), ("empty", empty, empty))]
    engine.run(batches)
    metrics = engine.state.metrics
    assert metrics["mean_image_dice"] == pytest.approx((1 + 2 / 3) / 2)
    assert metrics["mean_image_iou"] == pytest.approx((1 + 1 / 2) / 2)
    foreground_iou = 51 / 52  # pooled: 51 of 52 foreground pixels (union) right
    background_iou = (50 + 2 + 9) / (50 + 2 + 9 + 1)
    assert metrics["miou"] == pytest.approx((foreground_iou + background_iou) / 2)
    assert metrics["miou_foreground"] == pytest.approx(foreground_iou)
    rows = (tmp_path / "metrics_images.csv").read_text().splitlines()
    assert rows[0] == "image,polyp_dice,polyp_iou" and rows[1].startswith("big,1.000000") and rows[3] == "empty,nan,nan"
    classes = (tmp_path / "metrics_classes.csv").read_text().splitlines()
    assert classes[0] == "class,iou,f1,precision,recall,image_dice,image_iou" and classes[-1].startswith("mean,")


def test_loss_on_upsampled_logits_sees_thin_structures():
    """A 1-px membrane vanishes from a label downsampled x4 (SAMed's way); on logits upsampled to the
    label (GSAM's and CAD's way) a network that misses it pays for it."""
    label = torch.zeros(1, 1, 64, 64, dtype=torch.long)
    label[..., 33, :] = 1  # not on the x4 nearest-sampling grid
    logits = torch.zeros(1, 2, 16, 16)
    logits[:, 0] = 5.0  # background everywhere: the membrane missed
    low = SegmentationLoss(ce_weight=1.0, dice_weight=0.0)(logits, label)
    full = SegmentationLoss(ce_weight=1.0, dice_weight=0.0, upsample_logits=True)(logits, label)
    assert low < 0.01 and full > 0.05  # the membrane: 64 of 4096 pixels at CE ~5
