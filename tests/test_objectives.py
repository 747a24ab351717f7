"""Objectives (omnimae/objectives.py), each against an independent computation: torch.nn.functional's losses
on the masked tokens alone, numpy's FFT patch by patch, and a double loop for the uniformity."""
from __future__ import annotations

import csv
import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

import omnimae.modalities  # noqa: F401 - registers the adapters
from omnimae.adapter import MODALITIES
from omnimae.checkpoint.format import load_model, save_safetensors
from omnimae.config.build import build_model, validate
from omnimae.config.compose import compose
from omnimae.errors import CheckpointError, ConfigError
from omnimae.objectives import OBJECTIVES, LossInput, MaskedL1, MaskedMSE, MaskedSmoothL1, Objective
from omnimae.train.pretrain import pretrain

TINY = ["experiment=none", "model=vit_tiny", "modality=image", "modalities.image.adapter.img_size=16",
        "modalities.image.adapter.patch_size=4", "modalities.image.adapter.in_chans=1",
        "modalities.image.adapter.mean=[0.5]", "modalities.image.adapter.std=[0.25]"]
LOSS = "modalities.image.loss"


def inputs(b=3, n=10, patch_shape=(4, 4, 3), d=8, seed=0) -> LossInput:
    g = torch.Generator().manual_seed(seed)
    p = math.prod(patch_shape)
    mask = torch.zeros(b, n)
    mask[:, : n * 3 // 4] = 1
    mask = torch.stack([row[torch.randperm(n, generator=g)] for row in mask])  # the same count per sample
    return LossInput(torch.randn(b, n, p, generator=g), torch.randn(b, n, p, generator=g), mask,
                     torch.randn(b, 5, d, generator=g), patch_shape)


def on(x: LossInput, visible: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    keep = (x.mask == 0) if visible else (x.mask == 1)
    return x.pred[keep], x.target[keep]  # [tokens, P]: every token has P values, so a plain mean is the token mean


@pytest.mark.parametrize("objective, reference", [
    (MaskedMSE(), F.mse_loss),
    (MaskedL1(), F.l1_loss),
    (MaskedSmoothL1(beta=0.5), lambda a, b: F.smooth_l1_loss(a, b, beta=0.5)),
    (MaskedSmoothL1(), F.smooth_l1_loss),
])
def test_each_distance_is_torch_functionals_loss_over_the_masked_tokens(objective, reference):
    x = inputs()
    loss = objective(x)
    torch.testing.assert_close(loss.total, reference(*on(x)))
    assert set(loss.terms) == {"masked"}


def test_visible_weight_adds_the_same_loss_over_the_visible_tokens():
    x = inputs()
    loss = MaskedL1(visible_weight=0.3)(x)
    torch.testing.assert_close(loss.terms["visible"], F.l1_loss(*on(x, visible=True)))
    torch.testing.assert_close(loss.total, F.l1_loss(*on(x)) + 0.3 * F.l1_loss(*on(x, visible=True)))


@pytest.mark.parametrize("patch_shape", [(4, 4, 3), (2, 4, 4, 3), (4, 4, 1), (2, 3, 1)])  # 2D, tube, one channel, p != q
def test_frequency_term_is_the_l1_of_per_patch_fft_amplitudes_over_masked_tokens(patch_shape):
    x = inputs(patch_shape=patch_shape)
    loss = MaskedMSE(frequency_weight=0.7)(x)
    b, n, _ = x.pred.shape
    gaps = []
    for i, j in itertools.product(range(b), range(n)):  # patch by patch, with numpy's FFT
        if x.mask[i, j]:
            a = np.fft.fft2(x.pred[i, j].numpy().reshape(patch_shape), axes=(-3, -2), norm="ortho")
            t = np.fft.fft2(x.target[i, j].numpy().reshape(patch_shape), axes=(-3, -2), norm="ortho")
            gaps.append(np.abs(np.abs(a) - np.abs(t)).mean())
    assert loss.terms["frequency"].item() == pytest.approx(np.mean(gaps), rel=1e-5)
    assert loss.total.item() == pytest.approx(F.mse_loss(*on(x)).item() + 0.7 * np.mean(gaps), rel=1e-5)


def test_a_patchs_fft_amplitudes_are_blind_to_a_circular_shift():
    """A closed form: shifting a patch circularly changes only the DFT's phase, so the term is 0."""
    x = inputs(patch_shape=(4, 4, 3))
    shifted = x.pred.reshape(3, 10, 4, 4, 3).roll(shifts=(1, 2), dims=(2, 3)).reshape(3, 10, -1)
    loss = MaskedMSE(frequency_weight=1.0)(LossInput(x.pred, shifted, x.mask, x.latent, x.patch_shape))
    assert loss.terms["frequency"].item() == pytest.approx(0.0, abs=1e-6)
    assert loss.terms["masked"] > 0


@pytest.mark.parametrize("t", [2.0, 0.5])
def test_uniformity_is_log_mean_exp_over_pairs_of_normalized_pooled_features(t):
    x = inputs(b=4, d=6)
    loss = MaskedMSE(uniformity_weight=0.01, uniformity_t=t)(x)
    z = [v / np.linalg.norm(v) for v in x.latent[:, 1:].mean(dim=1).numpy().astype(np.float64)]
    pairs = [np.exp(-t * np.sum((z[i] - z[j]) ** 2)) for i in range(4) for j in range(4) if i < j]
    assert loss.terms["uniformity"].item() == pytest.approx(np.log(np.mean(pairs)), rel=1e-5)
    assert loss.total.item() == pytest.approx(F.mse_loss(*on(x)).item() + 0.01 * np.log(np.mean(pairs)), rel=1e-5)


def test_uniformity_of_one_sample_is_zero_and_of_collapsed_features_has_finite_gradients():
    assert MaskedMSE(uniformity_weight=1.0)(inputs(b=1)).terms["uniformity"].item() == 0.0
    latent = torch.ones(3, 5, 8, requires_grad=True)  # every sample the same feature: distance 0
    x = inputs(b=3)
    loss = MaskedMSE(uniformity_weight=1.0)(LossInput(x.pred, x.target, x.mask, latent, x.patch_shape))
    assert loss.terms["uniformity"].item() == pytest.approx(0.0, abs=1e-6)  # log exp(0): the collapsed maximum
    loss.total.backward()
    assert torch.isfinite(latent.grad).all()


def test_the_default_loss_node_is_the_mae_papers_masked_mse_for_every_modality():
    for name in sorted(MODALITIES):
        cfg = compose("pretrain", ["experiment=none", f"modality={name}", "model=vit_tiny"])
        assert cfg.modalities[name].loss._target_ == "omnimae.objectives.MaskedMSE"
        model = build_model(cfg)
        assert model.objectives[name] == MaskedMSE()


@pytest.mark.parametrize("name", sorted(MODALITIES))
def test_every_term_runs_on_every_modality_with_finite_gradients(name):
    overrides = [f"modalities.{name}.loss._target_=omnimae.objectives.MaskedSmoothL1", f"+modalities.{name}.loss.beta=0.5"]
    overrides += [f"modalities.{name}.loss.{k}_weight=0.1" for k in ("visible", "frequency", "uniformity")]
    model = build_model(compose("pretrain", ["experiment=none", f"modality={name}", "model=vit_tiny", *overrides]))
    x = model.adapters[name].example_input(3, torch.Generator().manual_seed(0))
    out = model.forward_modality(x, name, generator=torch.Generator().manual_seed(1))
    assert set(out.terms) == {"masked", "visible", "frequency", "uniformity"}
    target = model.adapters[name].target(out.patches)
    keep = out.mask == 1
    masked = F.smooth_l1_loss(out.pred[keep].float(), target[keep].float(), beta=0.5)
    torch.testing.assert_close(out.terms["masked"], masked)
    weighted = masked + 0.1 * (out.terms["visible"] + out.terms["frequency"] + out.terms["uniformity"])
    torch.testing.assert_close(out.loss, weighted)
    out.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("override, key, words", [
    (f"{LOSS}._target_=omnimae.objectives.MaskedHuber", f"{LOSS}._target_",
     "unknown loss 'omnimae.objectives.MaskedHuber'; known: omnimae.objectives.MaskedMSE, omnimae.objectives.MaskedL1"),
    (f"{LOSS}._target_=torch.nn.MSELoss", f"{LOSS}._target_", "unknown loss 'torch.nn.MSELoss'"),
    (f"{LOSS}.visible_weight=-0.5", f"{LOSS}.visible_weight", "must be a finite number >= 0"),
    (f"{LOSS}.frequency_weight=-1", f"{LOSS}.frequency_weight", "must be a finite number >= 0"),
    (f"{LOSS}.uniformity_weight=-0.01", f"{LOSS}.uniformity_weight", "must be a finite number >= 0"),
    (f"+{LOSS}.uniformity_t=0", f"{LOSS}.uniformity_t", "must be a positive number"),
    (f"+{LOSS}.beta=0.5", f"{LOSS}.beta", "unknown key for MaskedMSE"),
    (f"{LOSS}.visible_weight=lots", f"{LOSS}.visible_weight", "expected float"),
])
def test_bad_loss_nodes_are_refused_by_validate_naming_the_key(override, key, words):
    cfg = compose("pretrain", [*TINY, override])
    with pytest.raises(ConfigError) as e:
        validate(cfg)
    assert e.value.key == key and words in e.value.problem


def test_a_negative_smooth_l1_beta_is_refused_naming_the_key():
    cfg = compose("pretrain", [*TINY, f"{LOSS}._target_=omnimae.objectives.MaskedSmoothL1", f"+{LOSS}.beta=-1"])
    with pytest.raises(ConfigError, match=rf"{LOSS}\.beta: must be a positive number"):
        validate(cfg)


def test_a_config_without_a_loss_node_builds_the_masked_mse():
    cfg = compose("pretrain", [*TINY, f"~{LOSS}"])  # as configs from before objectives were configurable
    assert "loss" not in cfg.modalities.image
    validate(cfg)
    assert build_model(cfg).objectives["image"] == MaskedMSE()


def _save(tmp_path, overrides, edit=None):
    torch.manual_seed(0)
    cfg = compose("pretrain", [*TINY, *overrides])
    path = save_safetensors(build_model(cfg), cfg, tmp_path / "m.safetensors")
    if edit is None:
        return path
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file
    import json

    with safe_open(str(path), "pt") as f:
        meta = json.loads(f.metadata()["omnimae"])
    edit(meta["config"])
    save_file(load_file(str(path)), str(path), metadata={"omnimae": json.dumps(meta)})
    return path


def test_a_checkpoint_keeps_its_objective_and_one_without_a_loss_node_loads_with_the_default(tmp_path):
    model, _ = load_model(_save(tmp_path, [f"{LOSS}._target_=omnimae.objectives.MaskedL1", f"{LOSS}.visible_weight=0.2"]))
    assert model.objectives["image"] == MaskedL1(visible_weight=0.2)
    model, _ = load_model(_save(tmp_path, [], edit=lambda c: c["modalities"]["image"].pop("loss")))
    assert model.objectives["image"] == MaskedMSE()


class PluginLoss(MaskedMSE):
    """A user's objective: fine in a config, but a checkpoint naming it needs trust."""


def test_the_trust_allowlist_takes_omnimaes_objectives_and_nothing_else(tmp_path):
    for name in OBJECTIVES:
        model, _ = load_model(_save(tmp_path, [f"{LOSS}._target_={name}"]))
        assert type(model.objectives["image"]) is OBJECTIVES[name]
    plugin = f"{__name__}.PluginLoss"
    validate(compose("pretrain", [*TINY, f"{LOSS}._target_={plugin}"]))  # a plug-in objective is a valid config
    for target in (plugin, "builtins.print", "omnimae.objectives.Objective"):
        path = _save(tmp_path, [], edit=lambda c: c["modalities"]["image"]["loss"].update({"_target_": target}))
        with pytest.raises(CheckpointError, match=rf"would build '{target}' \(at modalities\.image\.loss\._target_\)"):
            load_model(path)
    assert issubclass(PluginLoss, Objective)


def test_the_training_step_logs_each_term_of_an_objective_with_terms(tmp_path):
    run = tmp_path / "run"
    pretrain(compose("pretrain", ["model=vit_tiny", "trainer=debug", "trainer.max_steps=2", "trainer.log_every_n_steps=1",
                                  "trainer.enable_progress_bar=false", "modalities.image.batch_size=8",
                                  f"{LOSS}.frequency_weight=0.5", f"{LOSS}.uniformity_weight=0.1",
                                  "callbacks.reconstruction_every_n_steps=0", "callbacks.reconstruction_samples=2",
                                  f"run_dir={run}"]))
    rows = list(csv.DictReader(open(next(run.glob("logs/version_*/metrics.csv")))))
    logged = [r for r in rows if r.get("train/loss")]
    assert logged
    for r in logged:
        parts = {t: float(r[f"train/loss/image/{t}"]) for t in ("masked", "frequency", "uniformity")}
        assert "train/loss/image/visible" not in r  # a term with weight 0 is not computed
        assert float(r["train/loss"]) == pytest.approx(parts["masked"] + 0.5 * parts["frequency"] + 0.1 * parts["uniformity"],
                                                       rel=1e-5)
    model, _ = load_model(run / "checkpoints" / "last.ckpt")
    assert model.objectives["image"] == MaskedMSE(frequency_weight=0.5, uniformity_weight=0.1)
    assert OmegaConf.select(model.config, "modalities.image.loss.frequency_weight") == 0.5
