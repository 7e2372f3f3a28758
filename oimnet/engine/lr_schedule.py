"""Learning-rate schedule of the paper: linear warm-up over the first epoch, then steps."""

from __future__ import annotations

import bisect

import torch


def lr_factor(iteration: int, iters_per_epoch: int, warmup_factor: float, milestones, gamma: float) -> float:
    """Multiplier of BASE_LR at a global iteration (0-based).

    During epoch 0 the factor rises linearly from ``warmup_factor`` to 1; after
    that it is ``gamma ** (number of milestones <= epoch)`` (epochs 0-based, so a
    milestone 16 decays from the 17th epoch on, as upstream's MultiStepLR).
    """
    epoch = iteration // max(iters_per_epoch, 1)
    factor = gamma ** bisect.bisect_right(sorted(milestones), epoch)
    if epoch == 0 and iters_per_epoch > 1:
        alpha = iteration / (iters_per_epoch - 1)
        factor *= warmup_factor * (1 - alpha) + alpha
    return factor


def build_scheduler(optimizer, cfg, iters_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-iteration LambdaLR (call .step() after every optimizer step)."""
    s = cfg.SOLVER
    milestones = list(s.LR_DECAY_MILESTONES)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda it: lr_factor(it, iters_per_epoch, float(s.WARMUP_FACTOR), milestones, float(s.GAMMA)),
    )
