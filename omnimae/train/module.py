"""Pretraining with Lightning: the module, the data module, and the callbacks a run needs."""
from __future__ import annotations

import logging
import math
from collections import Counter
from functools import partial
from pathlib import Path
from typing import Any, Iterator, Mapping

import lightning as L
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import Callback
from timm.optim import param_groups_weight_decay
from torch.utils.data import DataLoader, Sampler, default_collate

from omnimae import __version__
from omnimae.data.batch import batch_size, to_device
from omnimae.checkpoint.trust import weights_sha256
from omnimae.config.schema import OptimConfig
from omnimae.errors import ConfigError, OmniMAEError
from omnimae.io import atomic_path
from omnimae.model import MaskedAutoencoder
from omnimae.visualize import reconstruction_panels, save_grid

log = logging.getLogger("omnimae")
_MIX = 1_000_003


def mix_seed(*parts: int) -> int:
    """A deterministic 63-bit seed from integers (seed, epoch, index / step, rank)."""
    s = 0
    for p in parts:
        s = (s * _MIX + int(p) + 1) % (2**63 - 1)
    return s


def lr_factor(step: int, *, warmup: int, total: int, floor: float) -> float:
    """The lr at a step as a fraction of the peak: a linear warm-up from 1 / (warmup + 1) over `warmup`
    steps, then a cosine from 1 down to `floor` (min_lr / peak) at step `total`, held after it."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    progress = min(step - warmup, total - warmup) / max(1, total - warmup)
    return floor + (1 - floor) * (1 + math.cos(math.pi * progress)) / 2


class NonFiniteError(OmniMAEError, RuntimeError):
    """Training stopped: too many steps in a row had a non-finite loss or gradient."""


# --- data ----------------------------------------------------------------------------------
class SeededSampler(Sampler):
    """Shuffles by (seed, epoch), shards across ranks, and yields (index, sample seed) keys.

    The per-sample seed drives the augmentation, so the same run always sees the same crops,
    also after a resume or with another number of data workers.
    """

    def __init__(self, size: int, seed: int, shuffle: bool = True, rank: int = 0, world_size: int = 1):
        self.size, self.seed, self.shuffle = size, seed, shuffle
        self.rank, self.world_size, self.epoch = rank, world_size, 0
        self.skip = 0  # samples of this epoch already trained on (a mid-epoch resume), skipped once

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return math.ceil(self.size / self.world_size)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        skip, self.skip = self.skip, 0
        for n, key in enumerate(self._keys()):
            if n >= skip:
                yield key

    def _keys(self) -> Iterator[tuple[int, int]]:
        if self.shuffle:
            g = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch))
            order = torch.randperm(self.size, generator=g).tolist()
        else:
            order = list(range(self.size))
        order += order[: len(self) * self.world_size - self.size]  # pad so every rank has len(self)
        for i in order[self.rank :: self.world_size]:
            yield i, mix_seed(self.seed, self.epoch, i)


class GroupedBatchSampler(Sampler):
    """Batches whose samples share a group key (e.g. a channel set, so their token counts agree):
    shuffled by (seed, epoch) within and across groups, sharded across ranks, keys (index, seed)."""

    def __init__(self, groups: list, batch_size: int, seed: int, shuffle: bool = True, drop_last: bool = True,
                 rank: int = 0, world_size: int = 1):
        self.groups, self.batch_size, self.seed, self.shuffle, self.drop_last = groups, batch_size, seed, shuffle, drop_last
        self.rank, self.world_size, self.epoch = rank, world_size, 0
        self.skip = 0  # batches of this epoch already trained on (a mid-epoch resume), skipped once

    @property
    def sampler(self) -> "GroupedBatchSampler":
        """Lightning sets the epoch through `loader.batch_sampler.sampler.set_epoch`: here, on this one."""
        return self

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _batches(self) -> list[list[int]]:
        g = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch))
        members: dict = {}
        for i, key in enumerate(self.groups):
            members.setdefault(key, []).append(i)
        batches = []
        for key in sorted(members, key=str):
            idx = members[key]
            if self.shuffle:
                idx = [idx[j] for j in torch.randperm(len(idx), generator=g).tolist()]
            stop = len(idx) - len(idx) % self.batch_size if self.drop_last else len(idx)
            batches += [idx[i : i + self.batch_size] for i in range(0, stop, self.batch_size)]
        if self.shuffle:
            batches = [batches[j] for j in torch.randperm(len(batches), generator=g).tolist()]
        per_rank = math.ceil(len(batches) / self.world_size)
        batches += batches[: per_rank * self.world_size - len(batches)]  # every rank the same count
        return batches[self.rank :: self.world_size]

    def __len__(self) -> int:
        return len(self._batches())

    def __iter__(self):
        skip, self.skip = self.skip, 0
        for batch in self._batches()[skip:]:
            yield [(i, mix_seed(self.seed, self.epoch, i)) for i in batch]


class ResumableLoader(DataLoader):
    """A DataLoader whose position inside an epoch goes into checkpoints, so a run resumed mid-epoch
    sees the rest of that epoch's data in the same order.

    The position is the number of batches the trainer has processed this epoch (not what the
    loader has yielded, which runs ahead by Lightning's prefetch); on resume, the sampler skips them
    without loading anything.
    """

    def __init__(self, *args, progress=None, **kwargs):
        super().__init__(*args, **kwargs)
        self._progress = progress  # () -> batches processed in the current epoch

    def state_dict(self) -> dict:
        return {"batches": int(self._progress()) if self._progress else 0}

    def load_state_dict(self, state: dict) -> None:
        batches = int(state.get("batches", 0))
        if self.batch_sampler is not None and isinstance(self.batch_sampler, GroupedBatchSampler):
            self.batch_sampler.skip = batches
        elif isinstance(self.sampler, SeededSampler):
            self.sampler.skip = batches * self.batch_size


class MixedLoader:
    """Joint pretraining: each step draws one modality by its sampling weight (from a generator
    seeded by seed and epoch) and takes that modality's next batch; a modality's loader that runs
    out starts over with a fresh order. An epoch is as many steps as all modalities' batches together.

    Stateful like `ResumableLoader`: its position is the number of steps the trainer processed this
    epoch. On resume the draws of the skipped steps are replayed by counting (which round of each
    modality's loader, how far into it), so nothing is loaded twice and the rest of the epoch comes
    in the same order as in an uninterrupted run.
    """

    def __init__(self, loaders: Mapping[str, DataLoader], weights: Mapping[str, float], seed: int, progress=None):
        self.loaders, self.seed, self.epoch = dict(loaders), seed, 0
        self.names = sorted(self.loaders)
        self.weights = torch.tensor([float(weights[m]) for m in self.names])
        self._progress = progress  # () -> steps processed in the current epoch
        self.skip = 0  # steps of this epoch already trained on (a mid-epoch resume), skipped once

    @property
    def sampler(self) -> "MixedLoader":
        """Lightning sets the epoch through `loader.sampler.set_epoch`: here, on the mix itself."""
        return self

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return sum(len(loader) for loader in self.loaders.values())

    def state_dict(self) -> dict:
        return {"batches": int(self._progress()) if self._progress else 0}

    def load_state_dict(self, state: dict) -> None:
        self.skip = int(state.get("batches", 0))

    def _picks(self) -> list[str]:
        g = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch, 7))
        picks = torch.multinomial(self.weights, len(self), replacement=True, generator=g).tolist()
        return [self.names[k] for k in picks]

    def _start(self, m: str, round_: int, skip: int = 0) -> Iterator:
        """An iterator over round `round_` of modality m's loader (a fresh, reproducible order each
        round), `skip` batches in."""
        loader = self.loaders[m]
        for sampler in (getattr(loader, "sampler", None), getattr(loader, "batch_sampler", None)):
            if hasattr(sampler, "set_epoch"):
                sampler.set_epoch(self.epoch * 1000 + round_)
        if skip and hasattr(loader, "load_state_dict"):
            loader.load_state_dict({"batches": skip})
            return iter(loader)
        it = iter(loader)
        for _ in range(skip):  # a plain iterable: skip by drawing
            next(it)
        return it

    def __iter__(self):
        picks = self._picks()
        skip, self.skip = min(self.skip, len(picks)), 0
        taken = {m: picks[:skip].count(m) for m in self.names}
        rounds, iters = {}, {}
        for m in self.names:
            rounds[m], pos = divmod(taken[m], len(self.loaders[m]))
            iters[m] = self._start(m, rounds[m], pos)
        for m in picks[skip:]:
            try:
                yield next(iters[m])
            except StopIteration:
                rounds[m] += 1
                iters[m] = self._start(m, rounds[m])
                yield next(iters[m])


class ChainedLoader:
    """Validation over several modalities: every modality's loader in turn."""

    def __init__(self, loaders: Mapping[str, DataLoader]):
        self.loaders = [loaders[m] for m in sorted(loaders)]

    def __len__(self) -> int:
        return sum(len(loader) for loader in self.loaders)

    def __iter__(self):
        for loader in self.loaders:
            yield from loader


class MAEDataModule(L.LightningDataModule):
    """One modality per batch, batches as {modality: tensor}; several modalities mix by sampling weight."""

    def __init__(self, data: Mapping[str, Any], runs: Mapping[str, Any], seed: int):
        super().__init__()
        self.data, self.runs, self.seed = dict(data), dict(runs), seed
        self.modalities = sorted(self.data)

    def setup(self, stage: str | None = None) -> None:
        self.train_sets = {m: d.dataset("train", train=True) for m, d in self.data.items()}
        self.val_sets = {m: d.dataset("val", train=False) for m, d in self.data.items()}
        for m, ds in self.train_sets.items():
            if len(ds) < self.runs[m].batch_size:
                raise OmniMAEError(
                    f"modalities.{m}.batch_size={self.runs[m].batch_size} is larger than the {len(ds)} training samples"
                )

    def _loader(self, modality: str, dataset, shuffle: bool, drop_last: bool) -> DataLoader:
        trainer = self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        run = self.runs[modality]
        groups = dataset.groups  # datasets whose samples differ in shape group them
        if groups is not None:
            batching = dict(batch_sampler=GroupedBatchSampler(
                groups, run.batch_size, self.seed, shuffle=shuffle, drop_last=drop_last, rank=rank, world_size=world))
        else:
            sampler = SeededSampler(len(dataset), self.seed, shuffle=shuffle, rank=rank, world_size=world)
            batching = dict(batch_size=run.batch_size, sampler=sampler, drop_last=drop_last)
        return ResumableLoader(
            dataset,
            **batching,
            progress=self._batches_done if shuffle else None,
            num_workers=run.num_workers,
            persistent_workers=run.num_workers > 0,
            # tensors, or nests of them (dicts of pixels and ids), keyed by their modality
            collate_fn=partial(_collate_as, modality),
            pin_memory=torch.cuda.is_available(),
        )

    def _batches_done(self) -> int:
        """Batches processed in the current epoch; 0 once the epoch is complete (the next one starts whole)."""
        done = self.trainer.fit_loop.epoch_loop.batch_progress.current.processed
        return 0 if done >= self.trainer.num_training_batches else done

    def train_dataloader(self):
        loaders = {m: self._loader(m, ds, shuffle=True, drop_last=True) for m, ds in self.train_sets.items()}
        for m, loader in loaders.items():
            if len(loader) == 0:  # e.g. channel groups each smaller than a batch, or too few samples per rank
                groups = self.train_sets[m].groups
                sizes = "" if groups is None else f" in groups of {sorted(Counter(groups).values(), reverse=True)}"
                raise ConfigError(f"modalities.{m}.batch_size", f"{self.runs[m].batch_size} leaves no whole batch of the "
                                  f"{len(self.train_sets[m])} training samples{sizes} on each of {self.trainer.world_size if self.trainer else 1} process(es)")
        if len(loaders) == 1:
            return next(iter(loaders.values()))
        weights = {m: self.runs[m].sampling_weight for m in loaders}
        return MixedLoader(loaders, weights, self.seed, progress=self._batches_done)

    def val_dataloader(self):
        loaders = {m: self._loader(m, ds, shuffle=False, drop_last=False) for m, ds in self.val_sets.items() if len(ds)}
        if not loaders:
            return []
        return next(iter(loaders.values())) if len(loaders) == 1 else ChainedLoader(loaders)


def _collate_as(modality: str, items: list) -> dict:
    return {modality: default_collate(items)}


# --- the module ----------------------------------------------------------------------------
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

    def mask_generator(self, *parts: int) -> torch.Generator:
        """A generator seeded by (seed, parts..., rank): the same masks after resume or re-sharding."""
        if self._generator is None or self._generator.device != self.device:
            self._generator = torch.Generator(device=self.device)
        return self._generator.manual_seed(mix_seed(self.seed, *parts, self.global_rank))

    def _step(self, batch: Mapping[str, torch.Tensor], generator: torch.Generator, stage: str) -> torch.Tensor:
        outputs = self.model(batch, generator=generator)
        loss = sum(self.loss_weights.get(m, 1.0) * out.loss for m, out in outputs.items())
        bsz = batch_size(next(iter(batch.values())))
        on_step = stage == "train"
        self.log(f"{stage}/loss", loss, prog_bar=True, on_step=on_step, on_epoch=not on_step, batch_size=bsz, sync_dist=not on_step)
        if len(self.model.adapters) > 1:  # a joint run: each modality's own loss too
            for m, out in outputs.items():
                self.log(f"{stage}/loss_{m}", out.loss, on_step=on_step, on_epoch=not on_step, batch_size=bsz)
        return loss

    def training_step(self, batch, batch_idx):
        # with gradient accumulation, the micro-batches of one optimizer step each get their own masks:
        # their position in Lightning's accumulation window (batch_idx counts within the epoch, as the window does)
        accumulate = self.trainer.accumulate_grad_batches
        micro = (batch_idx % accumulate,) if accumulate > 1 else ()
        return self._step(batch, self.mask_generator(0, self.global_step, *micro), "train")

    def validation_step(self, batch, batch_idx):
        return self._step(batch, self.mask_generator(1, batch_idx), "val")  # the same masks every time

    def effective_batch(self, trainer) -> int:
        return self.batch_size * trainer.world_size * trainer.accumulate_grad_batches

    def peak_lr(self, trainer) -> float:
        """lr = base_lr x effective batch / 256 (the MAE recipe); optim.min_lr must not lie above it."""
        effective_batch = self.effective_batch(trainer)
        lr = self.optim.base_lr * effective_batch / 256
        if self.optim.min_lr > lr:
            raise ConfigError(
                "optim.min_lr",
                f"must lie in [0, lr], where lr = base_lr x effective batch / 256 = {self.optim.base_lr:.3g} x "
                f"{effective_batch} / 256 = {lr:.3g}; got {self.optim.min_lr:.3g} (the cosine would climb to it)",
            )
        return lr

    def configure_optimizers(self):
        trainer = self.trainer
        lr = self.peak_lr(trainer)
        groups = param_groups_weight_decay(
            self.model, weight_decay=self.optim.weight_decay, no_weight_decay_list=self.model.no_weight_decay()
        )
        try:
            from torch.optim.optimizer import _get_fused_kernels_supported_devices

            has_kernel = self.device.type in _get_fused_kernels_supported_devices()
        except ImportError:  # a torch that moved the list: ask for fused only when told to
            has_kernel = bool(self.optim.fused)
        fused = self.optim.fused
        if fused is None:
            scaled = getattr(trainer.precision_plugin, "scaler", None) is not None  # fp16: clip after unscaling
            fused = has_kernel and not (scaled and trainer.gradient_clip_val)
        elif fused and not has_kernel:
            raise ConfigError("optim.fused", f"torch has no fused AdamW kernel for {self.device.type}; use null or false")
        # fused: one kernel per parameter group instead of a dozen passes over memory (ViT-B on CPU:
        # 0.09 s against 0.3-0.5 s per step), and it skips a step on a device-side flag (NonFiniteGuard)
        optimizer = torch.optim.AdamW(groups, lr=lr, betas=tuple(self.optim.betas), fused=bool(fused))
        total = max(1, int(trainer.estimated_stepping_batches))
        warmup = self.optim.warmup_steps
        warmup = int(self.optim.warmup_fraction * total) if warmup is None else min(warmup, total - 1)
        # the schedule is a closed form of the step, built from this run's length: a checkpoint holds only
        # the step, so a run resumed with a larger trainer.max_steps continues the longer cosine
        schedule = partial(lr_factor, warmup=warmup, total=total, floor=self.optim.min_lr / lr)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        log.info("lr %.3g (base_lr %.3g x effective batch %d / 256), %d warm-up of %d steps", lr, self.optim.base_lr, self.effective_batch(trainer), warmup, total)
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
        checkpoint["omnimae"] = {
            "version": __version__,
            "config": self.config,
            "modalities": list(self.model.adapters),
            "targets": {m: ("norm_pix" if a.norm_pix_loss else "pix") for m, a in self.model.adapters.items()},
            "weights_sha256": weights_sha256(checkpoint["state_dict"]),  # read_checkpoint refuses flipped bytes
        }


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


# --- callbacks -----------------------------------------------------------------------------
class NonFiniteGuard(Callback):
    """Skips an optimizer step whose gradients hold NaN/inf; stops after max_consecutive in a row.

    Runs after gradients are all-reduced, so every DDP rank takes the same decision. With a fused
    optimizer (the default AdamW) the decision never leaves the device: the flag goes to the fused
    kernel as `found_inf`, as torch's GradScaler does, and the kernel leaves the weights, moments
    and step count of a flagged step untouched. The host reads the counters every
    `check_every_n_steps` steps and at the end of training, so a healthy step has no host-device
    synchronization; a run gone bad wastes at most that many (skipped) steps before it stops.
    Other optimizers get the flag read at once and the gradients dropped. Under a GradScaler
    (fp16), which skips such steps itself, the guard stands aside.
    """

    def __init__(self, max_consecutive: int = 3, check_every_n_steps: int = 50):
        self.max_consecutive, self.check_every_n_steps = max_consecutive, max(1, int(check_every_n_steps))
        self.consecutive = 0  # non-finite steps in a row, as of the last check
        self.skipped = 0  # all skipped steps, as of the last check
        self._run = self._worst = self._bad = self._last = None  # device-side counters since the last sync
        self._pending = (0, 0, -1)  # host side since the last check: (longest run, bad steps, last bad step)

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if getattr(trainer.precision_plugin, "scaler", None) is not None:
            return
        grads = [p.grad for p in pl_module.parameters() if p.grad is not None]
        if not grads:
            return
        bad = ~torch.isfinite(torch.stack(torch._foreach_norm(grads)).sum())
        if optimizer.defaults.get("fused"):
            optimizer.found_inf = bad.float()  # read by the fused kernel: a flagged step changes nothing
            self._count(bad, trainer.global_step)
            if (trainer.global_step + 1) % self.check_every_n_steps == 0:
                self.check(trainer.global_step)
            return
        self._count(bad, trainer.global_step)
        if bool(bad):
            for p in pl_module.parameters():
                p.grad = None  # AdamW leaves parameters without gradients untouched
        self.check(trainer.global_step)

    def _count(self, bad: torch.Tensor, step: int) -> None:
        if self._run is None or self._run.device != bad.device:
            self._sync()
            zero = torch.zeros((), dtype=torch.long, device=bad.device)
            self._run, self._worst, self._bad, self._last = zero + self.consecutive, zero.clone(), zero.clone(), zero - 1
        self._run = torch.where(bad, self._run + 1, 0)
        self._worst = torch.maximum(self._worst, self._run)
        self._bad = self._bad + bad
        self._last = torch.where(bad, step, self._last)

    def _sync(self) -> None:
        """Fold the device counters into the host's (one synchronization); `check` judges them."""
        if self._run is None:
            return
        run, worst, bad, last = torch.stack([self._run, self._worst, self._bad, self._last]).tolist()
        self.consecutive, self.skipped = run, self.skipped + bad
        longest, count, latest = self._pending
        self._pending = (max(longest, worst), count + bad, max(latest, last))
        self._run = self._worst = self._bad = self._last = None

    def check(self, step: int) -> None:
        """Warn about the steps skipped since the last check; stop if too many came in a row."""
        self._sync()
        (worst, bad, last), self._pending = self._pending, (0, 0, -1)
        if bad:
            log.warning("non-finite loss or gradient in %d step(s) up to step %d (last at step %d): skipped; "
                        "%d skipped in all", bad, step, last, self.skipped)
        if worst >= self.max_consecutive:
            raise NonFiniteError(
                f"{worst} steps in a row had a non-finite loss or gradient (last at step {last}); "
                "stopped before the weights turned NaN. Lower optim.base_lr, "
                "check the data for NaN/inf, or use trainer.precision=32-true."
            )

    def on_train_end(self, trainer, pl_module) -> None:
        self.check(trainer.global_step)

    def state_dict(self) -> dict:
        self._sync()
        return {"consecutive": self.consecutive, "skipped": self.skipped}

    def load_state_dict(self, state: dict) -> None:
        self.consecutive, self.skipped = state["consecutive"], state["skipped"]
        self._run = self._worst = self._bad = self._last = None
        self._pending = (0, 0, -1)


class ReconstructionCallback(Callback):
    """Writes reconstruction grids of fixed validation samples with fixed masks: every N steps and at the end."""

    def __init__(self, out_dir: str | Path, every_n_steps: int = 500, num_samples: int = 8):
        self.out_dir, self.every_n_steps, self.num_samples = Path(out_dir), every_n_steps, num_samples
        self.last_path: Path | None = None

    def _samples(self, trainer, modality: str):
        dm = trainer.datamodule
        ds = dm.val_sets[modality]
        ds = ds if len(ds) else dm.data[modality].dataset("train", train=False)
        groups = ds.groups  # samples that differ in shape (channel sets): take one group's
        order = range(len(ds)) if groups is None else [i for i in range(len(ds)) if groups[i] == groups[0]]
        return default_collate([ds[i] for i in list(order)[: self.num_samples]])

    def write(self, trainer, pl_module, name: str) -> None:
        if not trainer.is_global_zero:
            return
        modalities = trainer.datamodule.modalities
        was_training = pl_module.training
        pl_module.eval()
        for modality in modalities:
            x = self._samples(trainer, modality)
            gen = torch.Generator(device=pl_module.device).manual_seed(mix_seed(pl_module.seed, 2))
            panels = reconstruction_panels(pl_module.model, to_device(x, pl_module.device), modality, gen)
            suffix = f"_{modality}" if len(modalities) > 1 else ""
            self.last_path = save_grid(panels, self.out_dir / f"{name}{suffix}.png", f"{modality}, step {trainer.global_step}")
        pl_module.train(was_training)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if self.every_n_steps > 0 and step > 0 and step % self.every_n_steps == 0:
            self.write(trainer, pl_module, f"step_{step:07d}")

    def on_fit_end(self, trainer, pl_module) -> None:
        self.write(trainer, pl_module, "final")


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints go to a temporary file that is renamed into place: never half-written."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        with atomic_path(path) as tmp:
            torch.save(checkpoint, tmp)
