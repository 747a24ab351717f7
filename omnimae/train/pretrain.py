"""`omnimae pretrain`: compose, validate, build, fit, and say where everything went."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from omegaconf import DictConfig, OmegaConf

from omnimae.config.build import build_data, build_model, check_mask_ratios, validate
from omnimae.checkpoint.format import read_checkpoint
from omnimae.config.schema import ModalityRun, OptimConfig
from omnimae.errors import CheckpointError, ConfigError, OmniMAEError
from omnimae.hardware import apply_threads
from omnimae.io import atomic_path
from omnimae.probe import probe_ready
from omnimae.train.callbacks import NonFiniteGuard, ReconstructionCallback
from omnimae.train.checkpoint_io import AtomicCheckpointIO
from omnimae.train.loaders import MAEDataModule
from omnimae.train.module import MAEPretrainer
from omnimae.train.run_dir import claim_run_dir

log = logging.getLogger("omnimae")


def _run_dir(cfg: DictConfig) -> Path:
    if cfg.get("run_dir"):
        return Path(cfg.run_dir).expanduser()
    if cfg.get("resume"):  # .../<run>/checkpoints/last.ckpt -> .../<run>
        return Path(cfg.resume).expanduser().resolve().parent.parent
    return Path("runs") / str(cfg.run_name) / time.strftime("%Y%m%d-%H%M%S")


def _end_process_group() -> None:
    """Close the distributed process group ourselves: left to interpreter exit, gloo aborts the process."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def check_ranks_in_sync(trainer, module) -> bool:
    """Every rank must end with the same weights: compare per-parameter sums across ranks."""
    import torch

    sums = torch.stack([p.detach().double().sum() for p in module.parameters()]).to(module.device)
    gathered = trainer.strategy.all_gather(sums)  # [world, P]
    diverged = (gathered - gathered[0]).abs().max().item()
    if diverged > 1e-6:
        raise OmniMAEError(f"ranks ended with different weights (largest difference of parameter sums {diverged:.3g})")
    log.info("all %d ranks hold identical weights", trainer.world_size)
    return True


def _flat(node: Any, prefix: str) -> dict[str, Any]:
    if isinstance(node, dict):
        return {k: v for key, child in node.items() for k, v in _flat(child, f"{prefix}.{key}").items()}
    return {prefix: node}


def check_resumable(ckpt: dict, path: str) -> None:
    """resume= continues a run: it needs the training state (optimizer, step, data position) that only
    the .ckpt files omnimae pretrain writes hold, not weights alone."""
    if all(k in ckpt for k in ("omnimae", "optimizer_states", "loops")):
        return
    if str(path).endswith(".safetensors"):
        what = "a safetensors file of weights only"
    elif "model" in ckpt:
        what = "an official MAE checkpoint ({'model': weights}), weights only"
    else:
        what = "not a checkpoint of an omnimae pretrain run (it holds no optimizer state or step)"
    raise CheckpointError(f"{path}: resume= takes a .ckpt that omnimae pretrain wrote (<run_dir>/checkpoints/"
                          f"last.ckpt) and continues that run; this is {what}")


def check_resume_fits(cfg: DictConfig, model, ckpt: dict, path: str) -> None:
    """resume= continues the same run: the model this config builds must take the checkpoint's weights.
    Where it does not, name the model and adapter keys that differ from the run's stored config."""
    theirs = {k[len("model."):]: tuple(v.shape) for k, v in (ckpt.get("state_dict") or {}).items() if k.startswith("model.")}
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if not theirs or theirs == ours:  # no omnimae training weights at all: Lightning says what it misses
        return
    stored = (ckpt.get("omnimae") or {}).get("config") or {}
    now = OmegaConf.to_container(cfg, resolve=True)
    was_mods, now_mods = stored.get("modalities") or {}, now["modalities"]
    differ = {}
    if sorted(was_mods) != sorted(now_mods):
        differ["modalities"] = (sorted(was_mods), sorted(now_mods))
    nodes = [("model", stored.get("model"), now["model"])]
    nodes += [(f"modalities.{m}.adapter", was_mods[m].get("adapter"), now_mods[m].get("adapter"))
              for m in sorted(set(was_mods) & set(now_mods))]
    missing = object()
    for prefix, was, is_ in nodes:
        was, is_ = _flat(was or {}, prefix), _flat(is_ or {}, prefix)
        for key in sorted(set(was) | set(is_)):
            a, b = was.get(key, missing), is_.get(key, missing)
            if a != b:
                differ[key] = ("(unset)" if a is missing else a, "(unset)" if b is missing else b)
    if not stored or not differ:
        name = next(k for k in sorted(set(theirs) | set(ours)) if theirs.get(k) != ours.get(k))
        raise CheckpointError(f"{path}: its weights do not fit the model this config builds "
                              f"({name}: {theirs.get(name)} in the checkpoint, {ours.get(name)} here)")
    raise ConfigError(
        ", ".join(differ),
        f"the run in {path} was trained with " + ", ".join(f"{k}={a}" for k, (a, _) in differ.items())
        + "; this config has " + ", ".join(f"{k}={b}" for k, (_, b) in differ.items())
        + ", and the checkpoint's weights do not fit that model. resume= continues the same run: "
        "keep the run's values (its config.yaml), or leave out resume= to start a new run",
    )


def _allow_unused_parameters(trainer, modalities) -> None:
    """A joint run trains one modality per step, so the other adapters get no gradient in it: under DDP
    (however chosen: strategy=ddp, or auto on several devices) that needs find_unused_parameters=True."""
    from lightning.pytorch.strategies import DDPStrategy

    if len(modalities) > 1 and isinstance(trainer.strategy, DDPStrategy):
        trainer.strategy._ddp_kwargs["find_unused_parameters"] = True  # what DDPStrategy(find_unused_parameters=True) sets


def _read_resume(cfg: DictConfig) -> dict | None:
    """The checkpoint resume= names, read and checked to hold a run's training state; None without resume=."""
    if not cfg.get("resume"):
        return None
    ckpt = read_checkpoint(cfg.resume)  # unreadable or missing: fail now, naming the file
    check_resumable(ckpt, cfg.resume)
    return ckpt


def _data(cfg: DictConfig) -> tuple[dict[str, Any], dict[str, ModalityRun]]:
    """Each modality's data source, its files listed and checked before training starts, and its run settings."""
    data = build_data(cfg)
    for d in data.values():
        d.splits()  # lists and checks every file
    runs = {m: ModalityRun(**OmegaConf.to_container(n, resolve=True)) for m, n in cfg.modalities.items()}
    return data, runs


def _module(model, runs: dict[str, ModalityRun], config: dict[str, Any], seed: int) -> MAEPretrainer:
    """The LightningModule around the model. The lr scales with the batch a step sees: for joint runs,
    the sampling-weighted mean batch size."""
    total_weight = sum(r.sampling_weight for r in runs.values())
    step_batch = round(sum(r.batch_size * r.sampling_weight for r in runs.values()) / total_weight)
    return MAEPretrainer(
        model,
        OptimConfig(**config["optim"]),
        batch_size=step_batch,
        loss_weights={m: r.loss_weight for m, r in runs.items()},
        seed=seed,
        config=config,
    )


def _validates(cfg: DictConfig, data: dict) -> bool:
    """Whether the run will log val/loss: some modality has validation samples and validation is on."""
    has_val = any(len(d.splits()["val"].labels) > 0 for d in data.values())
    return has_val and cfg.trainer.get("limit_val_batches", 1) != 0


def _best_and_last(ckpt_dir: Path, has_val: bool) -> ModelCheckpoint:
    """best.ckpt by val/loss (train/loss without validation) and last.ckpt."""
    return ModelCheckpoint(
        dirpath=ckpt_dir, filename="best", monitor="val/loss" if has_val else "train/loss",
        mode="min", save_last=True, save_top_k=1, auto_insert_metric_name=False,
        save_on_train_epoch_end=None if has_val else True,  # else it waits for a validation that never comes
    )


def _callbacks(cfg: DictConfig, run_dir: Path, checkpoint: ModelCheckpoint) -> list:
    """The run's callbacks from cfg.callbacks: checkpoints, the non-finite guard, reconstructions, lr, progress."""
    cb = cfg.callbacks
    callbacks = [
        checkpoint,
        NonFiniteGuard(cb.max_nonfinite_steps, cb.get("nonfinite_check_every_n_steps", 50)),
        ReconstructionCallback(run_dir / "reconstructions", cb.reconstruction_every_n_steps, cb.reconstruction_samples),
        LearningRateMonitor(logging_interval="step"),
    ]
    if cfg.trainer.get("enable_progress_bar", True):
        callbacks.append(TQDMProgressBar(refresh_rate=10))
    if cb.get("checkpoint_every_n_steps"):
        callbacks.append(ModelCheckpoint(
            dirpath=run_dir / "checkpoints", filename="step-{step:07d}", every_n_train_steps=cb.checkpoint_every_n_steps,
            save_top_k=-1, auto_insert_metric_name=False))
    return callbacks


def _trainer(cfg: DictConfig, run_dir: Path, callbacks: list, loggers: list) -> L.Trainer:
    """The Lightning Trainer of cfg.trainer; a Trainer argument it refuses is a ConfigError naming trainer."""
    trainer_args = OmegaConf.to_container(cfg.trainer, resolve=True)
    trainer_args.pop("threads", None)  # omnimae's setting, applied before the model is built: not a Trainer argument
    try:
        return instantiate(
            trainer_args, callbacks=callbacks, logger=loggers, plugins=[AtomicCheckpointIO()],
            default_root_dir=str(run_dir), use_distributed_sampler=False,
        )
    except Exception as e:
        raise ConfigError("trainer", str(e)) from e


def _fit(cfg: DictConfig, trainer: L.Trainer, module: MAEPretrainer, dm: MAEDataModule, run_dir: Path,
         config: dict[str, Any]) -> Path:
    """Claim run_dir, write its config.yaml, train, and save the final state; returns last.ckpt."""
    with claim_run_dir(run_dir, cfg.get("resume"), bool(cfg.get("overwrite")), primary=trainer.is_global_zero):
        if trainer.is_global_zero:
            with atomic_path(run_dir / "config.yaml") as tmp:
                tmp.write_text(OmegaConf.to_yaml(config))
        trainer.fit(module, datamodule=dm, ckpt_path=cfg.get("resume"))
        last = run_dir / "checkpoints" / "last.ckpt"
        trainer.save_checkpoint(last, weights_only=False)  # the final state, also when the run stopped between saves
    return last


def pretrain(cfg: DictConfig, extra_callbacks: list | None = None) -> dict[str, Any]:
    """Train as configured; returns where the checkpoint, reconstructions and logs went."""
    chosen = validate(cfg)  # trainer.precision and trainer.threads settled for this machine
    apply_threads(chosen["threads"].value)  # before the model is built and the data loaded
    ckpt = _read_resume(cfg)
    L.seed_everything(cfg.seed, workers=True, verbose=False)  # before the model's weights are drawn
    run_dir = _run_dir(cfg)
    model = build_model(cfg)
    check_mask_ratios(model)
    if ckpt is not None:
        check_resume_fits(cfg, model, ckpt, cfg.resume)
        del ckpt
    data, runs = _data(cfg)
    config = OmegaConf.to_container(cfg, resolve=True)
    module = _module(model, runs, config, cfg.seed)
    checkpoint = _best_and_last(run_dir / "checkpoints", _validates(cfg, data))
    callbacks = _callbacks(cfg, run_dir, checkpoint) + (extra_callbacks or [])
    loggers = [CSVLogger(run_dir, name="logs"), TensorBoardLogger(run_dir, name="tensorboard")]
    trainer = _trainer(cfg, run_dir, callbacks, loggers)
    module.peak_lr(trainer)  # optim.min_lr against the lr of this batch and process count, before anything is written
    _allow_unused_parameters(trainer, runs)
    start = time.time()
    last = _fit(cfg, trainer, module, MAEDataModule(data, runs, cfg.seed), run_dir, config)
    in_sync = check_ranks_in_sync(trainer, module) if trainer.world_size > 1 else None
    _end_process_group()
    return {
        "rank": trainer.global_rank,
        "run_dir": run_dir,
        "checkpoint": last,
        "best": checkpoint.best_model_path or None,  # None: no best.ckpt was written (no monitored value yet)
        "reconstructions": run_dir / "reconstructions",
        "logs": Path(loggers[0].log_dir) / "metrics.csv",
        "tensorboard": loggers[1].log_dir,
        "steps": trainer.global_step,
        **{name: str(choice) for name, choice in chosen.items()},
        **({"ranks_in_sync": in_sync} if in_sync is not None else {}),
        "minutes": f"{(time.time() - start) / 60:.1f}",
        "labeled": {m: probe_ready(d.splits()) for m, d in data.items()},  # per modality: can the probe run on it
    }
