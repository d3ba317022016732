"""Every method learns: a short training run on tiny data beats its untrained start by a clear
margin, in loss and in Dice, with SAMed's warm-up + poly schedule stepped once per iteration."""

import numpy as np
import pytest
import torch
from ignite.engine import Events
from monai.engines import SupervisedTrainer
from monai.handlers import LrScheduleHandler

import medsam_ft
from medsam_ft.losses import SegmentationLoss
from medsam_ft.schedule import warmup_poly

pytestmark = pytest.mark.slow

SIZE, ITERATIONS, WARMUP, LR, BATCH = 32, 40, 4, 1e-3, 2


def _discs(count: int, seed: int) -> list[dict[str, torch.Tensor]]:
    """Grey images with one bright disc each (radius 5-9 px, anywhere) on textured background."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[:SIZE, :SIZE]
    samples = []
    for _ in range(count):
        r, y, x = rng.uniform(5, 9), rng.uniform(9, SIZE - 9), rng.uniform(9, SIZE - 9)
        disc = (rows - y) ** 2 + (cols - x) ** 2 < r**2
        image = 0.3 + 0.1 * rng.standard_normal((SIZE, SIZE)) + 0.4 * disc
        samples.append({"image": torch.tensor(np.clip(image, 0, 1), dtype=torch.float32).expand(3, -1, -1),
                        "label": torch.tensor(disc, dtype=torch.long)[None]})
    return samples


def _dice(network: torch.nn.Module, samples) -> float:
    network.eval()
    with torch.no_grad():
        images = torch.stack([s["image"] for s in samples])
        labels = torch.stack([s["label"] for s in samples])[:, 0]
        logits = network(images)
        logits = torch.nn.functional.interpolate(logits, size=(SIZE, SIZE), mode="bilinear")
        predicted = logits.argmax(1) == 1
    truth = labels == 1
    return float(2 * (predicted & truth).sum() / (predicted.sum() + truth.sum()).clamp(min=1))


def _loss(network, loss_function, samples) -> float:
    network.eval()
    with torch.no_grad():
        return float(loss_function(network(torch.stack([s["image"] for s in samples])),
                                   torch.stack([s["label"] for s in samples])))


METHODS = {
    "decoder_only": {},
    "samed": {"rank": 4},
    "gsam": {"cnn": "resnet18"},
    "cad": {"stem": "strided", "adapter_size": SIZE},
    "parser": {},
}


@pytest.mark.parametrize("method", list(METHODS))
def test_short_training_beats_the_untrained_start(method):
    torch.manual_seed(0)
    network = medsam_ft.build_network(method, backbone="lite_medsam", num_classes=2, image_size=SIZE,
                                      method_options=METHODS[method])
    samples = _discs(2 * BATCH, seed=1)
    loss_function = SegmentationLoss(ce_weight=0.2, dice_weight=0.8)
    start_loss, start_dice = _loss(network, loss_function, samples), _dice(network, samples)

    loader = torch.utils.data.DataLoader(samples, batch_size=BATCH, shuffle=True, drop_last=True,
                                         generator=torch.Generator().manual_seed(0))
    optimizer = torch.optim.AdamW([p for p in network.parameters() if p.requires_grad], lr=LR)
    schedule = warmup_poly(optimizer, max_iterations=ITERATIONS, warmup=WARMUP)
    seen_lr = []
    trainer = SupervisedTrainer(device=torch.device("cpu"), max_epochs=ITERATIONS // len(loader),
                                train_data_loader=loader, network=network, optimizer=optimizer,
                                loss_function=loss_function,
                                train_handlers=[LrScheduleHandler(schedule, print_lr=False, epoch_level=False)])
    trainer.add_event_handler(Events.ITERATION_STARTED, lambda e: seen_lr.append(optimizer.param_groups[0]["lr"]))
    trainer.run()

    # the schedule: warm-up from lr/warmup to lr, then poly decay, one step per iteration
    expected = [LR * (t + 1) / WARMUP if t < WARMUP else LR * (1 - (t - WARMUP) / ITERATIONS) ** 0.9
                for t in range(ITERATIONS)]
    np.testing.assert_allclose(seen_lr, expected, rtol=1e-9)
    end_loss, end_dice = _loss(network, loss_function, samples), _dice(network, samples)
    assert end_loss < 0.7 * start_loss, (start_loss, end_loss)
    assert end_dice > start_dice + 0.3 and end_dice > 0.6, (start_dice, end_dice)
