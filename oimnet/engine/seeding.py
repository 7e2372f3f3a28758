"""Seeds: what makes a run and its resumption repeatable (no RNG state is saved; epochs reseed)."""

from __future__ import annotations

import random

import numpy as np
import torch


def resolve_seed(seed: int) -> int:
    """SEED < 0 means "pick one"; the picked seed is returned so it can be logged."""
    if seed >= 0:
        return int(seed)
    return int(np.random.SeedSequence().entropy % (2**31 - 1))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of one epoch. Every epoch reseeds all RNGs from (seed, epoch), so a
    run resumed after epoch k draws exactly what the uninterrupted run drew."""
    return (int(seed) * 100003 + int(epoch) * 7919) % (2**31 - 1)
