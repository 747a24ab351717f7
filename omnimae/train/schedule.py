"""The learning-rate schedule of pretraining: the MAE recipe's peak lr, a linear warm-up and a cosine.

Everything here is a closed form of the step and the run's length, so a checkpoint needs to hold
only the step to resume the schedule.
"""
from __future__ import annotations

import math

from omnimae.config.schema import OptimConfig
from omnimae.errors import ConfigError


def peak_lr(optim: OptimConfig, effective_batch: int) -> float:
    """lr = base_lr x effective batch / 256 (the MAE recipe); optim.min_lr must not lie above it."""
    lr = optim.base_lr * effective_batch / 256
    if optim.min_lr > lr:
        raise ConfigError(
            "optim.min_lr",
            f"must lie in [0, lr], where lr = base_lr x effective batch / 256 = {optim.base_lr:.3g} x "
            f"{effective_batch} / 256 = {lr:.3g}; got {optim.min_lr:.3g} (the cosine would climb to it)",
        )
    return lr


def warmup_steps(optim: OptimConfig, total: int) -> int:
    """optim.warmup_steps, at most total - 1; unset, optim.warmup_fraction of the `total` steps."""
    if optim.warmup_steps is None:
        return int(optim.warmup_fraction * total)
    return min(optim.warmup_steps, total - 1)


def lr_factor(step: int, *, warmup: int, total: int, floor: float) -> float:
    """The lr at a step as a fraction of the peak: a linear warm-up from 1 / (warmup + 1) over `warmup`
    steps, then a cosine from 1 down to `floor` (min_lr / peak) at step `total`, held after it."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    progress = min(step - warmup, total - warmup) / max(1, total - warmup)
    return floor + (1 - floor) * (1 + math.cos(math.pi * progress)) / 2
