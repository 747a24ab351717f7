"""The LightningModule of pretraining: seeded masks per step, the loss, AdamW and its schedule.

Data loading lives in `loaders`, the run's callbacks in `callbacks`, the lr schedule in `schedule`.
"""
from __future__ import annotations

import logging
from functools import partial
from typing import Mapping

import lightning as L
import torch
from timm.optim import param_groups_weight_decay

from omnimae.checkpoint.format import checkpoint_metadata
from omnimae.config.schema import OptimConfig
from omnimae.data.batch import batch_size
from omnimae.data.samplers import mix_seed
from omnimae.errors import ConfigError
from omnimae.model import MaskedAutoencoder
from omnimae.train.schedule import lr_factor, peak_lr, warmup_steps

log = logging.getLogger("omnimae")


class MAEPretrainer(L.LightningModule):
    """Wraps a MaskedAutoencoder: per-step seeded masks, AdamW, warm-up + cosine, logging."""

    def __init__(
        self,
        model: MaskedAutoencoder,
        optim: OptimConfig,
        batch_size: int,
        loss_weights: Mapping[str, float] | None = None,
        seed: int = 0,
        config: dict | None = None,
    ):
        super().__init__()
        self.model, self.optim, self.batch_size, self.seed = model, optim, batch_size, seed
        self.loss_weights = dict(loss_weights or {})
        self.config = config  # the resolved run config, stored in every checkpoint
        self._generator: torch.Generator | None = None
        self._run_steps: int | None = None  # set at the start of fit, see run_steps

    def mask_generator(self, *parts: int) -> torch.Generator:
        """A generator seeded by (seed, parts..., rank): the same masks after resume or re-sharding."""
        if self._generator is None or self._generator.device != self.device:
            self._generator = torch.Generator(device=self.device)
        return self._generator.manual_seed(mix_seed(self.seed, *parts, self.global_rank))

    def _step(self, batch: Mapping[str, torch.Tensor], generator: torch.Generator, stage: str) -> torch.Tensor:
        """The loss-weighted sum of the batch's losses, logged as <stage>/loss (and per modality in joint runs)."""
        outputs = self.model(batch, generator=generator)
        loss = sum(self.loss_weights.get(m, 1.0) * out.loss for m, out in outputs.items())
        bsz = batch_size(next(iter(batch.values())))
        on_step = stage == "train"
        self.log(f"{stage}/loss", loss, prog_bar=True, on_step=on_step, on_epoch=not on_step, batch_size=bsz, sync_dist=not on_step)
        if len(self.model.adapters) > 1:  # a joint run: each modality's own loss too
            for m, out in outputs.items():
                self.log(f"{stage}/loss_{m}", out.loss, on_step=on_step, on_epoch=not on_step, batch_size=bsz)
        for m, out in outputs.items():  # an objective with added terms: each term, unweighted (already computed)
            if len(out.terms) > 1:
                for term, value in out.terms.items():
                    self.log(f"{stage}/loss/{m}/{term}", value, on_step=on_step, on_epoch=not on_step, batch_size=bsz)
        return loss

    def run_steps(self) -> int:
        """The run's length in optimizer steps (Lightning's estimate: trainer.max_steps, or max_epochs x
        steps per epoch where that ends first): the lr cosine and a mask-ratio ramp without `steps` span it."""
        return max(1, int(self.trainer.estimated_stepping_batches))

    def set_mask_ratios(self, modalities, batch_size: int) -> None:
        """Each of the batch's modalities masks at its schedule's ratio for this optimizer step (a closed
        form of the step, so a resumed run draws the same ratios), logged as train/mask_ratio/<modality>."""
        for m in modalities:
            adapter = self.model.adapters[m]
            adapter.train_mask_ratio = ratio = adapter.mask_ratio_schedule(self.global_step, self._run_steps)
            self.log(f"train/mask_ratio/{m}", ratio, on_step=True, on_epoch=False, batch_size=batch_size)

    def on_fit_start(self) -> None:
        self._run_steps = self.run_steps()

    def on_train_end(self) -> None:
        # the model outlives the fit (reconstructions at its end, the Python API): it masks at the schedule's end again
        for adapter in self.model.adapters.values():
            adapter.train_mask_ratio = None

    def training_step(self, batch, batch_idx):
        self.set_mask_ratios(batch, batch_size(next(iter(batch.values()))))
        # with gradient accumulation, the micro-batches of one optimizer step each get their own masks:
        # their position in Lightning's accumulation window (batch_idx counts within the epoch, as the window does)
        accumulate = self.trainer.accumulate_grad_batches
        micro = (batch_idx % accumulate,) if accumulate > 1 else ()
        return self._step(batch, self.mask_generator(0, self.global_step, *micro), "train")

    def validation_step(self, batch, batch_idx):
        return self._step(batch, self.mask_generator(1, batch_idx), "val")  # the same masks every time

    def effective_batch(self, trainer) -> int:
        """Samples per optimizer step over all processes: batch x processes x accumulated batches."""
        return self.batch_size * trainer.world_size * trainer.accumulate_grad_batches

    def peak_lr(self, trainer) -> float:
        """The peak lr of this run's batch and process count (see `schedule.peak_lr`)."""
        return peak_lr(self.optim, self.effective_batch(trainer))

    def _fused(self, trainer) -> bool:
        """Whether AdamW runs fused: optim.fused, or where unset, wherever torch has the kernel and no
        fp16 scaler must clip after unscaling. Fused is one kernel per parameter group instead of a
        dozen passes over memory (ViT-B on CPU: 0.09 s against 0.3-0.5 s per step), and it skips a
        step on a device-side flag (NonFiniteGuard)."""
        try:
            from torch.optim.optimizer import _get_fused_kernels_supported_devices

            has_kernel = self.device.type in _get_fused_kernels_supported_devices()
        except ImportError:  # a torch that moved the list: ask for fused only when told to
            has_kernel = bool(self.optim.fused)
        if self.optim.fused is None:
            scaled = getattr(trainer.precision_plugin, "scaler", None) is not None  # fp16: clip after unscaling
            return has_kernel and not (scaled and trainer.gradient_clip_val)
        if self.optim.fused and not has_kernel:
            raise ConfigError("optim.fused", f"torch has no fused AdamW kernel for {self.device.type}; use null or false")
        return bool(self.optim.fused)

    def configure_optimizers(self):
        trainer = self.trainer
        lr = self.peak_lr(trainer)
        groups = param_groups_weight_decay(
            self.model, weight_decay=self.optim.weight_decay, no_weight_decay_list=self.model.no_weight_decay()
        )
        optimizer = torch.optim.AdamW(groups, lr=lr, betas=tuple(self.optim.betas), fused=self._fused(trainer))
        total = self.run_steps()
        warmup = warmup_steps(self.optim, total)
        # the schedule is a closed form of the step, built from this run's length: a checkpoint holds only
        # the step, so a run resumed with a larger trainer.max_steps continues the longer cosine
        schedule = partial(lr_factor, warmup=warmup, total=total, floor=self.optim.min_lr / lr)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        log.info("lr %.3g (base_lr %.3g x effective batch %d / 256), %d warm-up of %d steps",
                 lr, self.optim.base_lr, self.effective_batch(trainer), warmup, total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Schedulers resume from their step alone (see `lr_factor`); checkpoints written before the
        schedule was a closed form hold a warm-up + cosine scheduler's state: keep its step."""
        for i, state in enumerate(checkpoint.get("lr_schedulers", [])):
            if "lr_lambdas" not in state:
                checkpoint["lr_schedulers"][i] = {"last_epoch": state["last_epoch"], "lr_lambdas": []}
        resume_after_last_batch(checkpoint)

    def on_train_start(self) -> None:
        """The lr of this run's schedule at the current step: a resumed checkpoint holds the lr of the
        schedule it was saved under, which differs when the run grew longer."""
        for config in self.trainer.lr_scheduler_configs:
            s = config.scheduler
            if isinstance(s, torch.optim.lr_scheduler.LambdaLR):
                for group, base, fn in zip(s.optimizer.param_groups, s.base_lrs, s.lr_lambdas):
                    group["lr"] = base * fn(s.last_epoch)

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        """Unscaled gradients (fp32, bf16) on one device or under DDP are clipped here directly:
        Lightning's mixed-precision plugin refuses any clipping with a fused optimizer, a check
        meant for fp16 loss scaling. Everything else goes the Lightning way."""
        from lightning.pytorch.strategies import DDPStrategy, SingleDeviceStrategy

        plain = getattr(self.trainer.precision_plugin, "scaler", None) is None
        if not gradient_clip_val or not plain or not isinstance(self.trainer.strategy, (SingleDeviceStrategy, DDPStrategy)):
            return super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)
        if gradient_clip_algorithm == "value":  # Lightning passes a str enum
            torch.nn.utils.clip_grad_value_(self.parameters(), gradient_clip_val)
        else:
            torch.nn.utils.clip_grad_norm_(self.parameters(), gradient_clip_val)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # the weights as stored: read_checkpoint refuses flipped bytes
        checkpoint["omnimae"] = checkpoint_metadata(self.model, self.config, checkpoint["state_dict"])


def resume_after_last_batch(checkpoint: dict) -> None:
    """A checkpoint written in a training epoch's end hooks (ModelCheckpoint's last.ckpt and best.ckpt
    when validation runs every epoch, or when there is none) holds that epoch as processed but not
    completed. Lightning resumes such a state by ending the epoch a second time, which moves the
    sampler one epoch ahead and the logged steps one on. Rewrite it, in place, as the state after the
    epoch's last batch (what a step checkpoint there holds), which Lightning resumes exactly: on to
    the next epoch, without repeating the epoch's validation, which already ran."""
    fit = (checkpoint.get("loops") or {}).get("fit_loop") or {}
    epochs, batches = fit.get("epoch_progress"), fit.get("epoch_loop.batch_progress")
    if not epochs or not batches:
        return
    total = epochs["total"]
    if not (total["ready"] == total["started"] == total["processed"] == total["completed"] + 1):
        return
    for scope in ("total", "current"):
        epochs[scope]["processed"] -= 1
        batches[scope]["completed"] -= 1  # its last batch as at on_train_batch_end, before on_advance_end
    stepped = fit.get("epoch_loop.state_dict") or {}
    if "_batches_that_stepped" in stepped:  # the logged step: counted in on_advance_end
        stepped["_batches_that_stepped"] -= 1
