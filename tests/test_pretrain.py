"""`omnimae pretrain` end to end through the real composed config (a few steps on CPU)."""
import csv
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from PIL import Image

from omnimae.config.build import validate
from omnimae.checkpoint.format import load_model, read_checkpoint
from omnimae.errors import ConfigError
from omnimae.cli import compose, main
from omnimae.train.pretrain import pretrain
from omnimae.train.callbacks import NonFiniteError

FAST = ["model=vit_tiny", "modalities.image.batch_size=32", "trainer.log_every_n_steps=1",
        "trainer.limit_val_batches=1", "trainer.enable_progress_bar=false", "callbacks.reconstruction_samples=2"]


def losses(run_dir: Path) -> dict[int, float]:
    rows = list(csv.DictReader(open(next(run_dir.glob("logs/version_*/metrics.csv")))))
    return {int(r["step"]): float(r["train/loss"]) for r in rows if r.get("train/loss")}


def learning_rates(run_dir: Path) -> dict[int, float]:
    """The logged lr per step: one column per AdamW parameter group (decayed, undecayed), equal at every step."""
    rows = list(csv.DictReader(open(next(run_dir.glob("logs/version_*/metrics.csv")))))
    columns = [c for c in rows[0] if c.startswith("lr-AdamW")]
    out = {}
    for r in rows:
        values = {float(r[c]) for c in columns if r.get(c)}
        if values:
            assert len(values) == 1, r
            out[int(r["step"])] = values.pop()
    return out


def mae_lr(t: int, peak: float, lo: float, warmup: int, total: int) -> float:
    """The MAE recipe's schedule in closed form: linear warm-up from peak / (warmup + 1), then cosine to lo."""
    if t < warmup:
        return peak * (1 / (warmup + 1) + (1 - 1 / (warmup + 1)) * t / warmup)
    return lo + (peak - lo) * (1 + np.cos(np.pi * (t - warmup) / (total - warmup))) / 2


def test_default_demo_config_runs_and_writes_everything(tmp_path):
    cfg = compose("pretrain", FAST + ["trainer.max_steps=6", "trainer.check_val_every_n_epoch=1",
                                      "trainer.limit_train_batches=3", f"run_dir={tmp_path}",
                                      "callbacks.reconstruction_every_n_steps=3"])
    result = pretrain(cfg)
    assert result["steps"] == 6
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    assert (tmp_path / "checkpoints" / "best.ckpt").is_file()
    for png in ("step_0000003.png", "step_0000006.png", "final.png"):
        im = Image.open(tmp_path / "reconstructions" / png)
        assert im.format == "PNG" and im.size[0] > 100
    assert len(losses(tmp_path)) == 6
    assert list((tmp_path / "tensorboard").glob("version_*/events.out.tfevents*"))
    assert not list(tmp_path.rglob("*.tmp"))  # atomic writes leave nothing behind
    # the checkpoint rebuilds its model from the stored config alone
    model, cfg2 = load_model(tmp_path / "checkpoints" / "last.ckpt")
    assert cfg2.modalities.image.adapter.img_size == 16 and model.embed_dim == 64
    meta = read_checkpoint(tmp_path / "checkpoints" / "last.ckpt")["omnimae"]
    assert meta["modalities"] == ["image"] and meta["version"]


def test_pretrain_on_a_folder_of_images(image_folder, tmp_path):
    code = main(["pretrain", "experiment=none", "model=vit_tiny", "trainer=debug", f"data.root={image_folder}",
                 "modalities.image.adapter.img_size=32", "modalities.image.adapter.patch_size=8",
                 "modalities.image.batch_size=8", "modalities.image.num_workers=0", f"run_dir={tmp_path}"])
    assert code == 0
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    assert (tmp_path / "reconstructions" / "final.png").is_file()


@pytest.mark.parametrize("stop_at", [3, 4, 5])  # epochs are 3 steps: at an epoch end and twice in the middle
def test_resume_gives_the_same_losses_as_an_uninterrupted_run(tmp_path, stop_at):
    common = FAST + ["trainer.max_steps=8", "trainer.limit_train_batches=3", "trainer.check_val_every_n_epoch=100",
                     "callbacks.reconstruction_every_n_steps=0", f"callbacks.checkpoint_every_n_steps={stop_at}"]
    full = tmp_path / "full"
    pretrain(compose("pretrain", common + [f"run_dir={full}"]))
    snapshot = full / "checkpoints" / f"step-{stop_at:07d}.ckpt"
    resumed = tmp_path / "resumed"
    pretrain(compose("pretrain", common + [f"run_dir={resumed}", f"resume={snapshot}"]))
    a, b = losses(full), losses(resumed)
    assert sorted(b) == list(range(stop_at, 8))
    for step in b:
        assert b[step] == pytest.approx(a[step], abs=1e-6), step
    wa = read_checkpoint(full / "checkpoints" / "last.ckpt")["state_dict"]
    wb = read_checkpoint(resumed / "checkpoints" / "last.ckpt")["state_dict"]
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=1e-6, rtol=0, msg=k)


class KeepLastAt(Callback):
    """Copies last.ckpt as it stands when training reaches a step: what a kill -9 there leaves."""

    def __init__(self, step: int, dest: Path):
        self.step, self.dest = step, dest

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            shutil.copy(Path(trainer.checkpoint_callback.dirpath) / "last.ckpt", self.dest)


@pytest.mark.parametrize("validation", ["every epoch", "off"])
def test_resume_from_last_ckpt_written_at_an_epoch_end_is_exact(tmp_path, validation):
    """The file a user picks: last.ckpt as ModelCheckpoint wrote it at the end of the first epoch (step 3,
    after that epoch's validation, or at the epoch's end when there is none), with training gone on to
    step 5. Resumed from it, every logged step and loss and the final weights equal the uninterrupted run's."""
    common = FAST + ["trainer.max_steps=8", "trainer.limit_train_batches=3", "trainer.check_val_every_n_epoch=1",
                     "callbacks.reconstruction_every_n_steps=0"]
    common += ["trainer.limit_val_batches=0"] if validation == "off" else []
    snapshot = tmp_path / "last-at-step-5.ckpt"
    pretrain(compose("pretrain", common + [f"run_dir={tmp_path / 'full'}"]), extra_callbacks=[KeepLastAt(5, snapshot)])
    ckpt = torch.load(snapshot, weights_only=False)
    epochs = ckpt["loops"]["fit_loop"]["epoch_progress"]["total"]
    assert ckpt["global_step"] == 3 and epochs["processed"] == epochs["completed"] + 1  # written in the epoch's end
    pretrain(compose("pretrain", common + [f"run_dir={tmp_path / 'resumed'}", f"resume={snapshot}"]))
    a, b = losses(tmp_path / "full"), losses(tmp_path / "resumed")
    assert sorted(a) == list(range(8)) and sorted(b) == list(range(3, 8))
    for step in b:
        assert b[step] == pytest.approx(a[step], abs=1e-6), step
    wa = read_checkpoint(tmp_path / "full" / "checkpoints" / "last.ckpt")["state_dict"]
    wb = read_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.ckpt")["state_dict"]
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=1e-6, rtol=0, msg=k)


class Poison(Callback):
    """Turns the batches of the given steps into NaN, as a corrupt sample would."""

    def __init__(self, steps):
        self.steps, self.weights = set(steps), {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step in self.steps:
            batch["image"].fill_(float("nan"))
            self.weights[trainer.global_step] = {k: v.clone() for k, v in pl_module.state_dict().items()}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        step = trainer.global_step - 1
        if step in self.weights:  # the poisoned step changed nothing
            for k, v in pl_module.state_dict().items():
                assert torch.equal(v, self.weights[step][k]), k


def test_non_finite_steps_are_skipped(tmp_path):
    poison = Poison({2, 3})
    cfg = compose("pretrain", FAST + ["trainer.max_steps=6", "trainer.limit_train_batches=3", f"run_dir={tmp_path}",
                                      "callbacks.reconstruction_every_n_steps=0"])
    pretrain(cfg, extra_callbacks=[poison])
    assert set(poison.weights) == {2, 3}
    sd = read_checkpoint(tmp_path / "checkpoints" / "last.ckpt")["state_dict"]
    assert all(torch.isfinite(v).all() for v in sd.values())



def test_best_checkpoint_follows_the_training_loss_when_validation_is_off(tmp_path):
    cfg = compose("pretrain", FAST + ["trainer.max_steps=2", "trainer.limit_val_batches=0", f"run_dir={tmp_path}",
                                      "callbacks.reconstruction_every_n_steps=0"])
    result = pretrain(cfg)
    assert (tmp_path / "checkpoints" / "best.ckpt").is_file() and result["best"].endswith("best.ckpt")

@pytest.mark.parametrize("every,stop", [(1, 3), (5, 4)])
def test_training_stops_after_consecutive_non_finite_steps(tmp_path, every, stop):
    """The host reads the device-side counters every N steps: it stops at the first read after the
    third bad step in a row (every step skipped, unchanged weights, until then)."""
    cfg = compose("pretrain", FAST + ["trainer.max_steps=10", f"run_dir={tmp_path}", "callbacks.max_nonfinite_steps=3",
                                      f"callbacks.nonfinite_check_every_n_steps={every}",
                                      "callbacks.reconstruction_every_n_steps=0"])
    poison = Poison(range(1, 10))
    with pytest.raises(NonFiniteError, match=f"{stop} steps in a row had a non-finite loss or gradient .last at step {stop}."):
        pretrain(cfg, extra_callbacks=[poison])
    assert max(poison.weights) == stop


def test_unreadable_resume_checkpoint_fails_before_training(tmp_path, capsys):
    bad = tmp_path / "garbage.ckpt"
    bad.write_bytes(b"definitely not a checkpoint")
    assert main(["pretrain", f"resume={bad}", f"run_dir={tmp_path / 'run'}"]) == 1
    err = capsys.readouterr().err
    assert f"{bad}: cannot read checkpoint" in err
    assert not (tmp_path / "run").exists()


def test_optimizer_groups_lr_scaling_and_schedule_follow_the_mae_recipe(tmp_path):
    cfg = compose("pretrain", FAST + ["trainer.max_steps=10", "optim.warmup_steps=3", "optim.base_lr=1e-3",
                                      "optim.min_lr=1e-5", f"run_dir={tmp_path}", "callbacks.reconstruction_every_n_steps=0"])
    result = pretrain(cfg)
    # AdamW groups: decay only on >= 2-D weights; norms, biases, tokens and modality embeddings undecayed
    ckpt = read_checkpoint(result["checkpoint"])
    state, groups = ckpt["optimizer_states"][0]["state"], ckpt["optimizer_states"][0]["param_groups"]
    model, _ = load_model(result["checkpoint"])
    decayed = [state[i]["exp_avg"].shape for g in groups if g["weight_decay"] > 0 for i in g["params"]]
    linear_weights = [m.weight.shape for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert groups[0]["betas"] == (0.9, 0.95) and {g["weight_decay"] for g in groups} == {0.0, 0.05}
    assert all(g["fused"] for g in groups)  # the fused kernel where the device has one (here, the CPU)
    # exactly the Linear weights decay: no norm, bias, CLS/mask token or modality embedding
    assert sorted(decayed) == sorted(linear_weights)
    # lr = base_lr x batch / 256, linear warm-up over 3 steps, then cosine to min_lr over the other 7
    peak, lo = 1e-3 * 32 / 256, 1e-5
    lrs = learning_rates(tmp_path)
    assert sorted(lrs) == list(range(10))
    for t, lr in lrs.items():
        assert lr == pytest.approx(mae_lr(t, peak, lo, warmup=3, total=10), rel=1e-6), t


def _as_before_the_fix(ckpt_path: Path, peak: float, warmup: int, total: int) -> None:
    """Rewrite a checkpoint's scheduler state as omnimae wrote it before the schedule was a closed form
    (a LinearLR warm-up then CosineAnnealingLR in a SequentialLR, stepped as often)."""
    ckpt = torch.load(ckpt_path, weights_only=False)
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([param], lr=peak)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total - warmup)
    ramp = torch.optim.lr_scheduler.LinearLR(opt, start_factor=1 / (warmup + 1), total_iters=warmup)
    old = torch.optim.lr_scheduler.SequentialLR(opt, [ramp, cosine], milestones=[warmup])
    for _ in range(ckpt["global_step"]):
        opt.step()
        old.step()
    ckpt["lr_schedulers"] = [old.state_dict()]
    torch.save(ckpt, ckpt_path)


@pytest.mark.parametrize("layout", ["current", "before the fix"])
def test_a_run_resumed_with_more_steps_continues_the_cosine_of_the_new_length(tmp_path, layout):
    """Extending a run (resume= with a larger trainer.max_steps): from the resumed step on, the lr is
    that of the longer run's schedule, not the old cosine's end followed by a restart."""
    common = FAST + ["optim.warmup_steps=2", "optim.base_lr=1e-3", "optim.min_lr=1e-5", "trainer.limit_val_batches=0",
                     "callbacks.reconstruction_every_n_steps=0"]
    pretrain(compose("pretrain", common + ["trainer.max_steps=4", f"run_dir={tmp_path / 'short'}"]))
    ckpt = tmp_path / "short" / "checkpoints" / "last.ckpt"
    peak = 1e-3 * 32 / 256
    if layout != "current":
        _as_before_the_fix(ckpt, peak, warmup=2, total=4)
    pretrain(compose("pretrain", common + ["trainer.max_steps=10", f"run_dir={tmp_path / 'long'}", f"resume={ckpt}"]))
    lrs = learning_rates(tmp_path / "long")
    assert sorted(lrs) == list(range(4, 10))
    for t, lr in lrs.items():
        assert lr == pytest.approx(mae_lr(t, peak, 1e-5, warmup=2, total=10), rel=1e-6), t


def test_accumulated_micro_batches_get_their_own_masks_and_resume_exactly(tmp_path, monkeypatch):
    """trainer.accumulate_grad_batches=2: the two micro-batches of an optimizer step are masked apart
    (not the same mask twice), and a run resumed from a mid-epoch checkpoint sees the same masks and
    ends with the same weights as the uninterrupted run."""
    from omnimae.model import MaskedAutoencoder

    masks = []
    forward = MaskedAutoencoder.forward_modality

    def recording(self, x, modality, **kwargs):
        out = forward(self, x, modality, **kwargs)
        if self.training:
            masks.append(out.mask.detach().clone())
        return out

    monkeypatch.setattr(MaskedAutoencoder, "forward_modality", recording)
    # 6 micro-batches an epoch = 3 optimizer steps; the checkpoint at step 2 lies in the middle of the first epoch
    common = FAST + ["+trainer.accumulate_grad_batches=2", "trainer.max_steps=4", "trainer.limit_train_batches=6",
                     "trainer.check_val_every_n_epoch=100", "callbacks.reconstruction_every_n_steps=0",
                     "callbacks.checkpoint_every_n_steps=2"]
    pretrain(compose("pretrain", common + [f"run_dir={tmp_path / 'full'}"]))
    full, masks[:] = list(masks), []
    assert len(full) == 8
    for step in range(4):
        assert not torch.equal(full[2 * step], full[2 * step + 1]), step
    pretrain(compose("pretrain", common + [f"run_dir={tmp_path / 'resumed'}",
                                           f"resume={tmp_path / 'full' / 'checkpoints' / 'step-0000002.ckpt'}"]))
    assert len(masks) == 4 and all(torch.equal(a, b) for a, b in zip(masks, full[4:]))
    wa = read_checkpoint(tmp_path / "full" / "checkpoints" / "last.ckpt")["state_dict"]
    wb = read_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.ckpt")["state_dict"]
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=1e-6, rtol=0, msg=k)


def test_resuming_into_a_model_the_weights_do_not_fit_names_the_keys_before_training(tmp_path):
    common = FAST + ["callbacks.reconstruction_every_n_steps=0", "trainer.limit_val_batches=0"]
    pretrain(compose("pretrain", common + ["trainer.max_steps=2", f"run_dir={tmp_path / 'a'}"]))
    ckpt = tmp_path / "a" / "checkpoints" / "last.ckpt"
    other = compose("pretrain", common + ["trainer.max_steps=4", f"run_dir={tmp_path / 'b'}", f"resume={ckpt}",
                                          "model.embed_dim=32", "modalities.image.adapter.patch_size=8"])
    with pytest.raises(ConfigError, match=r"^model[.]embed_dim, modalities[.]image[.]adapter[.]patch_size: .*"
                                          r"trained with model[.]embed_dim=64, modalities[.]image[.]adapter[.]patch_size=4; "
                                          r"this config has model[.]embed_dim=32, modalities[.]image[.]adapter[.]patch_size=8"):
        pretrain(other)
    assert not (tmp_path / "b").exists()  # refused before anything was written
    # a setting that leaves the weights' shapes alone may change on resume
    same = compose("pretrain", common + ["trainer.max_steps=3", f"run_dir={tmp_path / 'c'}", f"resume={ckpt}",
                                         "modalities.image.adapter.mask_ratio=0.6"])
    assert pretrain(same)["steps"] == 3


def test_min_lr_is_checked_against_the_batch_scaled_lr(tmp_path):
    """lr = base_lr x batch / 256 = 1.5e-3 x 32 / 256 = 1.875e-4 here: a min_lr above it (though below
    base_lr) would turn the cosine 'decay' into a climb; above 256 samples a step the lr exceeds base_lr."""
    from types import SimpleNamespace

    from omnimae.config.schema import OptimConfig
    from omnimae.train.module import MAEPretrainer

    cfg = compose("pretrain", FAST + ["optim.base_lr=1.5e-3", "optim.min_lr=1e-3", f"run_dir={tmp_path / 'run'}"])
    validate(cfg)
    with pytest.raises(ConfigError, match=r"^optim[.]min_lr: must lie in \[0, lr\].* = 0.0015 x 32 / 256 = 0.000188"):
        pretrain(cfg)
    assert not (tmp_path / "run" / "config.yaml").exists()
    big = compose("pretrain", FAST + ["optim.base_lr=1e-4", "optim.min_lr=2e-4", "modalities.image.batch_size=1024"])
    validate(big)
    module = MAEPretrainer(torch.nn.Linear(1, 1), OptimConfig(base_lr=1e-4, min_lr=2e-4), batch_size=1024)
    assert module.peak_lr(SimpleNamespace(world_size=1, accumulate_grad_batches=1)) == pytest.approx(1e-4 * 1024 / 256)


def test_bf16_autocast_switch_trains_on_cpu(tmp_path, monkeypatch):
    # a tiny model trains in bf16 even where the CPU emulates it; tell omnimae bf16 is fast here
    monkeypatch.setenv("OMNIMAE_CPU_BF16", "1")
    cfg = compose("pretrain", FAST + ["trainer.max_steps=3", "trainer.precision=bf16-mixed", f"run_dir={tmp_path}",
                                      "callbacks.reconstruction_every_n_steps=0"])
    assert pretrain(cfg)["steps"] == 3
    assert all(np.isfinite(v) for v in losses(tmp_path).values())


def test_grouped_batches_hold_one_group_cover_the_epoch_and_split_across_ranks():
    from omnimae.data.samplers import GroupedBatchSampler

    groups = ["rgb"] * 10 + ["five"] * 7 + ["two"] * 5
    s = GroupedBatchSampler(groups, batch_size=3, seed=0, drop_last=False)
    batches = list(s)
    assert all(len({groups[i] for i, _ in b}) == 1 for b in batches)
    assert sorted(i for b in batches for i, _ in b) == list(range(22))  # every sample once per epoch
    assert [list(b) for b in GroupedBatchSampler(groups, 3, 0, drop_last=False)] == batches  # deterministic
    s.set_epoch(1)
    assert list(s) != batches
    full = GroupedBatchSampler(groups, 3, 0, drop_last=True)
    assert all(len(b) == 3 for b in full)
    ranks = [GroupedBatchSampler(groups, 3, 0, rank=r, world_size=2) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1])
    seen = [tuple(i for i, _ in b) for r in ranks for b in r]
    assert len(set(seen)) == len(full) == 3 + 2 + 1  # disjoint, all of the full batches


def test_lightning_reaches_the_epoch_of_every_training_loader():
    """Lightning sets a new epoch through `loader.sampler` / `loader.batch_sampler.sampler`; a
    sampler it cannot reach would replay the first epoch's order forever."""
    from lightning.fabric.utilities.data import _set_sampler_epoch

    from omnimae.data.samplers import GroupedBatchSampler, SeededSampler
    from omnimae.train.loaders import MixedLoader, ResumableLoader

    plain = ResumableLoader(list(range(8)), batch_size=2, sampler=SeededSampler(8, seed=0))
    grouped = ResumableLoader(list(range(8)), batch_sampler=GroupedBatchSampler(["a"] * 8, 2, seed=0))
    mixed = MixedLoader({"a": [1], "b": [2]}, {"a": 1.0, "b": 1.0}, seed=0)
    for loader, sampler in ((plain, plain.sampler), (grouped, grouped.batch_sampler), (mixed, mixed)):
        _set_sampler_epoch(loader, 5)
        assert sampler.epoch == 5, type(sampler).__name__


@pytest.mark.parametrize("algorithm,value", [("norm", 0.05), ("value", 1e-3)])
def test_clipping_with_the_fused_optimizer_under_bf16_matches_lightnings_fp32_clipping(tiny_model, algorithm, value):
    """Lightning's mixed-precision plugin refuses to clip for a fused optimizer; omnimae clips the
    (unscaled) bf16 gradients itself, exactly as Lightning's own fp32 path does."""
    import lightning as L
    from lightning.pytorch.plugins.precision import Precision
    from lightning.pytorch.utilities import GradClipAlgorithmType

    from omnimae.config.schema import OptimConfig
    from omnimae.train.module import MAEPretrainer

    module = MAEPretrainer(tiny_model, OptimConfig(), batch_size=4)
    module.trainer = L.Trainer(accelerator="cpu", precision="bf16-mixed", gradient_clip_val=value, logger=False)
    grads = {n: torch.randn_like(p) for n, p in module.named_parameters()}
    opt = torch.optim.AdamW(module.parameters(), fused=True)
    results = []
    for clip in (lambda: module.configure_gradient_clipping(opt, value, GradClipAlgorithmType(algorithm)),
                 lambda: Precision().clip_gradients(opt, value, GradClipAlgorithmType(algorithm))):
        for n, p in module.named_parameters():
            p.grad = grads[n].clone()
        clip()
        results.append({n: p.grad.clone() for n, p in module.named_parameters()})
    for n in grads:
        torch.testing.assert_close(results[0][n], results[1][n], msg=n)
    assert not torch.equal(results[0][n], grads[n])  # it did clip


def test_a_checkpoint_between_checks_does_not_hide_a_run_of_bad_steps():
    """Saving the guard's state folds the device counters into the host; the next check still sees
    the three bad steps in a row that ended before the save."""
    from types import SimpleNamespace

    from omnimae.train.callbacks import NonFiniteGuard

    param = torch.nn.Parameter(torch.ones(4))
    opt = torch.optim.AdamW([param], lr=0.1, fused=True)
    guard = NonFiniteGuard(max_consecutive=3, check_every_n_steps=100)
    for step, value in enumerate([1.0, float("nan"), float("inf"), float("nan"), 1.0]):
        param.grad = torch.full((4,), value)
        guard.on_before_optimizer_step(SimpleNamespace(precision_plugin=SimpleNamespace(scaler=None), global_step=step), param_owner(param), opt)
        opt.step()
    state = guard.state_dict()  # a checkpoint, between two checks
    assert state == {"consecutive": 0, "skipped": 3}
    assert torch.isfinite(param).all() and opt.state[param]["step"] == 2  # the flagged steps changed nothing
    with pytest.raises(NonFiniteError, match="3 steps in a row had a non-finite loss or gradient .last at step 3."):
        guard.check(4)


def param_owner(param):
    module = torch.nn.Module()
    module.p = param
    return module


def test_a_bad_guard_interval_is_refused_naming_the_key():
    cfg = compose("pretrain", FAST + ["callbacks.nonfinite_check_every_n_steps=0"])
    with pytest.raises(ConfigError, match="callbacks.nonfinite_check_every_n_steps: expected a positive integer"):
        validate(cfg)


def test_samplers_and_embed_load_without_lightning():
    """Inference batches by group with the seeded samplers; it must not pull in Lightning's training code."""
    code = ("import sys; import omnimae.data.samplers, omnimae.embedding; "
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] == 'lightning' or m.startswith('omnimae.train')); "
            "sys.exit(f'imported {heavy}' if heavy else 0)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]


def test_warm_up_is_a_fraction_of_the_run_unless_set_and_leaves_the_cosine_a_step():
    from omnimae.config.schema import OptimConfig
    from omnimae.train.schedule import warmup_steps

    assert warmup_steps(OptimConfig(warmup_fraction=0.05), total=200) == 10
    assert warmup_steps(OptimConfig(warmup_steps=3), total=20) == 3
    assert warmup_steps(OptimConfig(warmup_steps=50), total=20) == 19
