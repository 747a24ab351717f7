"""Forecasts equal the `visionts` package's with the same official-layout checkpoint (no network)."""
from functools import partial

import numpy as np
import pytest
import torch

visionts = pytest.importorskip("visionts")
from visionts import models_mae  # noqa: E402

from omnimae.forecasting.forecaster import Forecaster  # noqa: E402

SMALL = dict(patch_size=16, embed_dim=64, depth=2, num_heads=4, decoder_embed_dim=32, decoder_depth=1,
             decoder_num_heads=4, mlp_ratio=4, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6))


@pytest.fixture(scope="module")
def checkpoint_dir(tmp_path_factory):
    """A small MAE in the official layout, written where visionts looks for mae_base."""
    torch.manual_seed(0)
    mae = models_mae.MaskedAutoencoderViT(**SMALL)
    with torch.no_grad():  # trained-looking weights: random norms and biases too
        for name, p in mae.named_parameters():
            if "pos_embed" not in name:
                p.add_(0.05 * torch.randn_like(p))
    d = tmp_path_factory.mktemp("ckpt")
    torch.save({"model": mae.state_dict()}, d / "mae_visualize_vit_base.pth")
    return d


@pytest.fixture
def reference(checkpoint_dir, monkeypatch):
    monkeypatch.setitem(visionts.model.MAE_ARCH, "mae_base", [partial(models_mae.MaskedAutoencoderViT, **SMALL), "mae_visualize_vit_base.pth"])
    ref = visionts.VisionTS("mae_base", ckpt_dir=str(checkpoint_dir)).eval()
    # eps="visionts": its absolute +1e-5 on the variance (the default, relative, is scale-true instead)
    ours = Forecaster.from_checkpoint(checkpoint_dir / "mae_visualize_vit_base.pth", num_heads=4, decoder_num_heads=4, eps="visionts")
    return ref, ours


@pytest.mark.parametrize(
    "context,horizon,periodicity,interpolation,nvars",
    [
        (96, 24, 24, "bilinear", 1),   # whole periods both sides
        (100, 30, 24, "bilinear", 3),  # left padding, a horizon of partial periods, multivariate
        (300, 48, 7, "bicubic", 2),
        (200, 17, 1, "nearest", 1),    # no seasonality
        (512, 96, 12, "bilinear", 4),
    ],
)
def test_forecast_equals_visionts(reference, context, horizon, periodicity, interpolation, nvars):
    ref, ours = reference
    rng = np.random.default_rng(context + nvars)
    t = np.arange(context)
    x = np.stack([np.sin(2 * np.pi * t / max(periodicity, 2) + k) * (k + 1) + 0.01 * t + rng.normal(0, 0.2, context)
                  for k in range(nvars)], axis=1)[None].repeat(2, 0)  # [2, T, V]
    x[1] += 5.0
    ref.update_config(context_len=context, pred_len=horizon, periodicity=periodicity, interpolation=interpolation)
    with torch.no_grad():
        expected = ref(torch.tensor(x, dtype=torch.float32)).numpy()
    ours.raster["interpolation"] = interpolation
    got = ours.predict(x, horizon, periodicity)
    assert got.shape == expected.shape == (2, horizon, nvars)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


@pytest.mark.parametrize("level", [1e6, 1e9])
def test_a_series_far_from_zero_keeps_its_detail(reference, level):
    """Forecasting commutes with adding a constant, also where float32 cannot hold the detail at that
    level (a swing of 5 at 1e9): the series is normalized and read back in float64."""
    _, ours = reference
    t = np.arange(240)
    x = (5 * np.sin(2 * np.pi * t / 24) + np.random.default_rng(0).normal(0, 0.3, 240))[:, None]
    base = ours.predict(x, 24, 24)
    shifted = ours.predict(x + level, 24, 24)
    np.testing.assert_allclose(shifted - level, base, atol=1e-3)


def test_the_visionts_setting_matches_visionts_where_its_epsilon_dominates(reference):
    """At a scale of 1e-3 the variance (about 1e-6) is below VisionTS's absolute +1e-5: eps="visionts"
    still forecasts as the package does, the scale-true default does not."""
    ref, ours = reference
    t = np.arange(96)
    x = 1e-3 * (np.sin(2 * np.pi * t / 24) + np.random.default_rng(1).normal(0, 0.2, 96))[None, :, None]
    ref.update_config(context_len=96, pred_len=24, periodicity=24, interpolation="bilinear")
    ours.raster["interpolation"] = "bilinear"
    with torch.no_grad():
        expected = ref(torch.tensor(x, dtype=torch.float32)).numpy()
    np.testing.assert_allclose(ours.predict(x, 24, 24), expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())
    ours.eps = "relative"
    assert not np.allclose(ours.predict(x, 24, 24), expected, rtol=1e-3, atol=1e-3 * np.abs(expected).max())
