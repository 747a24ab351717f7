"""Objectives: a modality's pretraining loss, a plug-in built from config (`modalities.<m>.loss`).

An objective is a per-value reconstruction distance (the class: MaskedMSE, MaskedL1, MaskedSmoothL1)
plus optional terms, each with a weight (0 = off: the term is not computed at all):

    loss = masked + visible_weight * visible + frequency_weight * frequency + uniformity_weight * uniformity

- masked:     the distance, averaged over each token's P values, then over the masked tokens only
              (the MAE paper's loss; with MaskedMSE and every weight 0 it is exactly that loss).
- visible:    the same average over the visible tokens (the MAE paper's ablation of a loss on them).
- frequency:  an FFT amplitude L1 ("high-frequency-aware" term, not the focal frequency loss): each
              patch is unflattened to its tokenizer's `patch_shape` (..., p, q, c), and the orthonormal
              2D DFT over its two spatial axes (p, q) is taken per channel (and per frame of a tube);
              the term is mean |abs(F pred) - abs(F target)| over those coefficients, then over the
              masked tokens. Amplitudes only: the pixel terms already carry the phase.
- uniformity: U-MAE's regularizer against dimensional collapse, Wang & Isola's uniformity
              log mean_{i<j} exp(-t ||z_i - z_j||^2) over the batch (each process's own batch under
              DDP), z_i the L2-normalized mean of sample i's encoded visible tokens (CLS left out).
              It needs two samples: a batch of one adds 0. It is <= 0 and lower is more uniform.

The target is the adapter's (per-patch normalized where norm_pix_loss is set); everything is computed
in float32. Each term's unweighted value is returned beside the total, for logging.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from omnimae.errors import ConfigError


@dataclass(frozen=True)
class LossInput:
    """What an objective sees of one modality's forward pass."""

    pred: torch.Tensor  # [B, N, P] prediction, in target space
    target: torch.Tensor  # [B, N, P] the adapter's target
    mask: torch.Tensor  # [B, N], 1 = masked
    latent: torch.Tensor  # [B, 1 + K, D] the encoder's output on the visible tokens, CLS first
    patch_shape: tuple[int, ...]  # one token's P values unflattened in value order, ending (p, q, c)


@dataclass(frozen=True)
class Loss:
    total: torch.Tensor  # scalar: what is minimized
    terms: dict[str, torch.Tensor]  # each term's unweighted value by name: masked, visible, frequency, uniformity


def masked_mean(per_token: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """per_token [B, N] averaged over the tokens where mask [B, N] is 1."""
    return (per_token * mask).sum() / mask.sum()


def patch_amplitudes(values: torch.Tensor, patch_shape: tuple[int, ...]) -> torch.Tensor:
    """[B, N, P] -> [B, N, ..., p, q, c]: amplitudes of each patch's orthonormal 2D DFT over (p, q)."""
    patches = values.float().reshape(*values.shape[:2], *patch_shape)  # [B, N, ..., p, q, c]
    return torch.fft.fft2(patches, dim=(-3, -2), norm="ortho").abs()


def uniformity(latent: torch.Tensor, t: float) -> torch.Tensor:
    """log mean_{i<j} exp(-t ||z_i - z_j||^2) of the normalized mean-pooled features of latent [B, 1 + K, D]."""
    z = F.normalize(latent[:, 1:].float().mean(dim=1), dim=-1)  # [B, D], unit length
    b = z.shape[0]
    if b < 2:
        return z.new_zeros(())
    # ||zi - zj||^2 = 2 - 2 zi.zj for unit vectors: no square root, so no undefined gradient at zi == zj
    sq = (2 - 2 * z @ z.T).clamp_min(0)  # [B, B]
    i, j = torch.triu_indices(b, b, offset=1, device=z.device)
    return torch.logsumexp(-t * sq[i, j], dim=0) - math.log(i.numel())


@dataclass
class Objective:
    """The masked reconstruction loss plus weighted terms (see the module's docstring); subclasses
    define the per-value distance."""

    visible_weight: float = 0.0
    frequency_weight: float = 0.0
    uniformity_weight: float = 0.0
    uniformity_t: float = 2.0  # Wang & Isola's t

    def __post_init__(self) -> None:
        for key in ("visible_weight", "frequency_weight", "uniformity_weight"):
            value = getattr(self, key)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ConfigError(key, f"must be a finite number >= 0 (0 turns the term off), got {value!r}")
        if not (math.isfinite(self.uniformity_t) and self.uniformity_t > 0):
            raise ConfigError("uniformity_t", f"must be a positive number, got {self.uniformity_t!r}")

    def distance(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-value distance [B, N, P] between float32 prediction and target."""
        raise NotImplementedError

    def __call__(self, x: LossInput) -> Loss:
        per_token = self.distance(x.pred.float(), x.target.float()).mean(dim=-1)  # [B, N]
        terms = {"masked": masked_mean(per_token, x.mask)}
        total = terms["masked"]
        if self.visible_weight:
            terms["visible"] = masked_mean(per_token, 1 - x.mask)
            total = total + self.visible_weight * terms["visible"]
        if self.frequency_weight:
            gap = patch_amplitudes(x.pred, x.patch_shape) - patch_amplitudes(x.target, x.patch_shape)
            terms["frequency"] = masked_mean(gap.abs().flatten(2).mean(dim=-1), x.mask)
            total = total + self.frequency_weight * terms["frequency"]
        if self.uniformity_weight:
            terms["uniformity"] = uniformity(x.latent, self.uniformity_t)
            total = total + self.uniformity_weight * terms["uniformity"]
        return Loss(total, terms)


@dataclass
class MaskedMSE(Objective):
    """Squared error: the MAE paper's loss (the default)."""

    def distance(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return (pred - target).pow(2)


@dataclass
class MaskedL1(Objective):
    """Absolute error."""

    def distance(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return (pred - target).abs()


@dataclass
class MaskedSmoothL1(Objective):
    """Huber-like smooth L1, as torch's smooth_l1_loss: 0.5 d^2 / beta below beta, |d| - 0.5 beta above."""

    beta: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (math.isfinite(self.beta) and self.beta > 0):
            raise ConfigError("beta", f"must be a positive number, got {self.beta!r}")

    def distance(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.smooth_l1_loss(pred, target, reduction="none", beta=self.beta)


# omnimae's own objectives by dotted name: the `_target_`s a checkpoint's stored config may build
OBJECTIVES: dict[str, type[Objective]] = {f"{c.__module__}.{c.__qualname__}": c for c in (MaskedMSE, MaskedL1, MaskedSmoothL1)}
