"""Callbacks of a pretraining run: skip and stop on non-finite steps, draw reconstructions."""
from __future__ import annotations

import logging
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback
from torch.utils.data import default_collate

from omnimae.data.batch import to_device
from omnimae.data.samplers import mix_seed
from omnimae.errors import OmniMAEError
from omnimae.visualize import reconstruction_panels, save_grid

log = logging.getLogger("omnimae")


class NonFiniteError(OmniMAEError, RuntimeError):
    """Training stopped: too many steps in a row had a non-finite loss or gradient."""


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
