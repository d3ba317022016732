"""Learning-rate schedules built from ``torch.optim.lr_scheduler`` parts."""

from __future__ import annotations

import torch
from torch.optim.lr_scheduler import LinearLR, PolynomialLR, SequentialLR


def warmup_poly(optimizer: torch.optim.Optimizer, max_iterations: int, warmup: int = 250,
                power: float = 0.9) -> SequentialLR:
    """SAMed's per-iteration schedule: linear warm-up, then polynomial decay.

    Iteration t (0-based): ``lr * (t + 1) / warmup`` for t < warmup (from lr/warmup up to lr), then
    ``lr * (1 - (t - warmup) / max_iterations) ** power``, 0 from ``warmup + max_iterations`` on.
    Step it once per iteration.

    Args:
        optimizer: the optimizer whose ``lr`` is the peak learning rate.
        max_iterations: iterations of the decay (SAMed: epochs x iterations per epoch).
        warmup: warm-up iterations (>= 1).
        power: the decay's exponent.

    Returns:
        ``SequentialLR(LinearLR, PolynomialLR)`` switching at ``warmup``.

    Raises:
        ValueError: ``max_iterations`` or ``warmup`` below 1.
    """
    if max_iterations < 1 or warmup < 1:
        raise ValueError(f"max_iterations and warmup must be >= 1, got {max_iterations} and {warmup}")
    ramp = LinearLR(optimizer, start_factor=1.0 / warmup, end_factor=1.0, total_iters=max(warmup - 1, 1))
    decay = PolynomialLR(optimizer, total_iters=max_iterations, power=power)
    return SequentialLR(optimizer, [ramp, decay], milestones=[warmup])
