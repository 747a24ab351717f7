"""Every registered modality, tested the same way from its real config (as timm tests its model registry).

A new modality (an adapter registered with @register_modality plus configs/modality/<name>.yaml) is
picked up here without editing this file.
"""
from __future__ import annotations

import inspect

import pytest
import torch
from omegaconf import OmegaConf

import omnimae.modalities  # noqa: F401 - registers the adapters
from omnimae.adapter import MODALITIES
from omnimae.config.build import build_model
from omnimae.config.compose import compose
from omnimae.masking import MASKINGS, num_visible

NAMES = sorted(MODALITIES)


def tiny(name: str):
    cfg = compose("pretrain", ["experiment=none", f"modality={name}", "model=vit_tiny", "trainer=debug"])
    torch.manual_seed(0)
    return build_model(cfg), cfg


def test_every_shipped_modality_config_is_registered():
    from importlib.resources import files

    shipped = {p.name[:-5] for p in files("omnimae.configs").joinpath("modality").iterdir() if p.name.endswith(".yaml")}
    assert shipped <= set(MODALITIES) and set(NAMES) >= {"image", "audio", "video", "timeseries", "microscopy", "array"}


@pytest.mark.parametrize("name", NAMES)
def test_forward_and_backward_reach_every_parameter_with_finite_gradients(name):
    model, _ = tiny(name)
    x = model.adapters[name].example_input(2, torch.Generator().manual_seed(0))
    out = model.forward_modality(x, name, generator=torch.Generator().manual_seed(1))
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    out.loss.backward()
    others = {f"adapters.{m}." for m in model.adapters if m != name}
    for key, p in model.named_parameters():
        if any(key.startswith(o) for o in others):
            continue
        assert p.grad is not None, f"{name}: {key} gets no gradient"
        assert torch.isfinite(p.grad).all(), f"{name}: {key} has a non-finite gradient"
        assert p.grad.abs().sum() > 0, f"{name}: {key} gets an all-zero gradient"


@pytest.mark.parametrize("name", NAMES)
def test_tokenize_and_untokenize_round_trip_exactly(name):
    model, _ = tiny(name)
    adapter = model.adapters[name]
    x = adapter.example_input(2, torch.Generator().manual_seed(0))
    patches = adapter.tokenize(x)
    assert patches.values.shape == (2, patches.coords.shape[0], adapter.patch_dim)
    assert torch.equal(adapter.untokenize(patches), adapter.pixels(x))


@pytest.mark.parametrize("name", NAMES)
def test_every_fitting_masking_hides_its_share_the_same_for_every_sample(name):
    model, _ = tiny(name)
    adapter = model.adapters[name]
    assert set(adapter.maskings) <= set(MASKINGS) and adapter.masking in adapter.maskings
    patches = adapter.tokenize(adapter.example_input(3, torch.Generator().manual_seed(0)))
    b, n = 3, patches.num_tokens
    for strategy in adapter.maskings:
        adapter.masking = strategy
        shares = []
        for seed in range(16):
            ids_keep, ids_restore, mask = adapter.mask(patches, generator=torch.Generator().manual_seed(seed))
            hidden = mask.sum(1)
            assert (hidden == hidden[0]).all() and 0 < hidden[0] < n, (strategy, hidden)
            assert (mask.gather(1, ids_keep) == 0).all() and ids_keep.shape == (b, n - int(hidden[0]))
            assert torch.equal(torch.argsort(ids_restore, 1)[:, : ids_keep.shape[1]], ids_keep)
            shares.append(float(hidden[0]) / n)
        if strategy == "random":  # the MAE paper's count, exactly
            assert shares == [1 - num_visible(n, adapter.mask_ratio) / n] * 16
        else:  # structured strategies round to whole columns, tubes or channels, and some mix in other masks
            assert abs(sum(shares) / len(shares) - adapter.mask_ratio) < 0.15, (strategy, shares)


@pytest.mark.parametrize("name", NAMES)
def test_the_reconstruction_picture_renders(name, tmp_path):
    from PIL import Image

    from omnimae.visualize import reconstruction_panels, save_grid

    model, _ = tiny(name)
    x = model.adapters[name].example_input(2, torch.Generator().manual_seed(0))
    panels = reconstruction_panels(model.eval(), x, name, torch.Generator().manual_seed(0))
    assert len(panels) == 4 and all(p.shape == panels[0].shape and p.min() >= 0 and p.max() <= 1 for p in panels)
    with Image.open(save_grid(panels, tmp_path / f"{name}.png", title=name)) as im:
        assert im.format == "PNG" and im.size[0] > 100 and im.size[1] > 100


@pytest.mark.parametrize("name", NAMES)
def test_adapter_defaults_live_in_one_place(name):
    """Where the config and the constructor both give a default, they agree."""
    _, cfg = tiny(name)
    node = OmegaConf.to_container(cfg.modalities[name].adapter, resolve=True)
    cls = MODALITIES[name]
    sig = inspect.signature(cls.__init__).parameters
    differ = {k: (v, sig[k].default) for k, v in node.items()
              if k in sig and sig[k].default is not inspect.Parameter.empty
              and (list(sig[k].default) if isinstance(sig[k].default, tuple) else sig[k].default) != v}
    assert not differ, f"{name}: config value vs constructor default: {differ}"
