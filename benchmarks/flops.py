"""FLOPs of a network's forward pass and of a training step, counted with ``torch.utils.flop_counter``.

The network is built on the CPU (weights random or loaded) and moved to PyTorch's ``meta`` device, so
counting runs no arithmetic: a ViT-B at 1024 px counts in about a second on any machine. The counter
counts matrix multiplications and convolutions, 2 FLOPs per multiply-accumulate (MACs = FLOPs / 2);
FFTs, norms and element-wise operations are not counted.
"""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from medsam_ft.losses import SegmentationLoss
from medsam_ft.networks import SemanticSAM


def _counted(network: SemanticSAM, size: int, batch: int, train: bool) -> int:
    net = network.to("meta").train(train)
    image = torch.rand(batch, 3, size, size, device="meta")
    with FlopCounterMode(display=False) as counter:
        logits = net(image)
        if train:
            label = torch.zeros(batch, 1, size, size, dtype=torch.long, device="meta")
            SegmentationLoss()(logits, label).backward()
    return counter.get_total_flops()


def forward_flops(network: SemanticSAM, size: int, batch: int = 1) -> int:
    """FLOPs of ``network(float[batch, 3, size, size])`` in eval mode (one inference). Moves ``network`` to ``meta``."""
    return _counted(network, size, batch, train=False)


def training_step_flops(network: SemanticSAM, size: int, batch: int = 1) -> int:
    """FLOPs of a forward and backward pass (loss included, optimiser step not) in train mode. Moves ``network`` to ``meta``."""
    return _counted(network, size, batch, train=True)
