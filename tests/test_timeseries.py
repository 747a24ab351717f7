"""The timeseries adapter: geometry, masks, synthetic windows, pretraining."""
import numpy as np
import pandas as pd
import pytest
import torch

from omnimae.config.build import build_data, build_model
from omnimae.config.compose import compose
from omnimae.errors import ConfigError
from omnimae.forecasting.forecaster import Forecaster
from omnimae.modalities.raster import RasterGeometry, rasterize, read_back
from omnimae.modalities.timeseries import synthetic_series
from omnimae.train.pretrain import pretrain

TS = ["experiment=none", "modality=timeseries", "model=vit_tiny", "modalities.timeseries.adapter.img_size=64",
      "modalities.timeseries.adapter.patch_size=8", "modalities.timeseries.adapter.max_visible_columns=5"]


def test_geometry_follows_the_visionts_rules():
    g = RasterGeometry(context_len=100, pred_len=30, periodicity=24)
    assert g.pad_left == 20 and g.pad_right == 18
    assert g.num_patch_input == int(120 / 168 * 14 * 0.4) == 4
    assert g.input_width == 64
    assert g.output_width == round(224 * (120 // 24) / 64)
    m = g.mask().view(14, 14)
    assert (m[:, :4] == 0).all() and (m[:, 4:] == 1).all()


def test_rasterize_then_read_back_returns_the_series_when_the_image_is_the_truth():
    """With the true future drawn into the masked columns, reading back recovers it (a round trip)."""
    period, ctx, horizon = 8, 64, 32
    g = RasterGeometry(ctx, horizon, period, img_size=64, patch_size=8, align_const=0.8, interpolation="nearest")
    assert (g.num_patch_input, g.input_width, g.output_width) == (4, 32, 16)  # 4 px per period, exactly
    t = np.arange(g.output_width * period)
    series = torch.tensor(np.sin(2 * np.pi * t / period) + 0.02 * t, dtype=torch.float32).view(1, -1, 1)
    images, scale = rasterize(series[:, :ctx], g)
    # the "perfect" reconstruction: the whole series drawn at the scale the context got
    x = scale.apply(series).view(1, 1, g.output_width, period).transpose(2, 3)  # [1, 1, f, p]
    truth_image = torch.nn.functional.interpolate(x, size=(64, 64), mode="nearest").expand(1, 3, 64, 64)
    torch.testing.assert_close(images[..., : g.input_width], truth_image[..., : g.input_width])  # same context pixels
    assert (images[..., g.input_width :] == 0).all()  # the future is blank
    y = read_back(truth_image, g, scale)
    np.testing.assert_allclose(y[0, :, 0].numpy(), series[0, ctx : ctx + horizon, 0].numpy(), atol=1e-5)


def test_bad_geometry_names_the_setting():
    with pytest.raises(ConfigError, match="horizon: must be at least 1"):
        RasterGeometry(100, 0, 24)
    with pytest.raises(ConfigError, match="context: 10 points is shorter than one period"):
        RasterGeometry(10, 5, 24)
    with pytest.raises(ConfigError, match="interpolation"):
        RasterGeometry(100, 5, 4, interpolation="lanczos")


def test_training_masks_are_forecast_or_random():
    model = build_model(compose("pretrain", TS + ["modalities.timeseries.adapter.future_mask_prob=1.0"]))
    adapter = model.adapters["timeseries"]
    patches = adapter.tokenize(torch.randn(3, 3, 64, 64))
    for seed in range(5):
        _, _, mask = adapter.mask(patches, generator=torch.Generator().manual_seed(seed))
        grid = mask.view(3, 8, 8)
        visible = int((grid[0, 0] == 0).sum())
        assert 2 <= visible <= 5
        assert (grid[:, :, :visible] == 0).all() and (grid[:, :, visible:] == 1).all()  # a right-hand block
    adapter.future_mask_prob = 0.0
    _, _, mask = adapter.mask(patches, generator=torch.Generator().manual_seed(0))
    assert (mask.sum(1) == 48).all()  # plain random masking at 0.75


def test_synthetic_windows_are_seeded_and_finite():
    data = build_data(compose("pretrain", TS))["timeseries"]
    ds = data.dataset("train", train=True)
    a, b, c = ds[(0, 11)], ds[(0, 11)], ds[(0, 12)]
    assert a.shape == (3, 64, 64) and torch.equal(a, b) and not torch.equal(a, c)
    assert torch.isfinite(a).all()
    y = synthetic_series(np.random.default_rng(0), 500, 12)
    assert y.shape == (500,) and np.isfinite(y).all()


def test_pretrain_timeseries_then_forecast_with_the_checkpoint(tmp_path):
    cfg = compose("pretrain", TS + ["trainer=debug", "trainer.max_steps=3", f"run_dir={tmp_path}",
                                    "modalities.timeseries.batch_size=4", "modalities.timeseries.data.val_samples=4"])
    result = pretrain(cfg)
    assert (tmp_path / "reconstructions" / "final.png").is_file()
    f = Forecaster.from_checkpoint(result["checkpoint"])
    y = f.predict(np.sin(np.arange(96) / 3.0)[:, None], horizon=12, periodicity=12)
    assert y.shape == (1, 12, 1) and np.isfinite(y).all()


def test_a_norm_pix_checkpoint_cannot_forecast(tmp_path):
    model = build_model(compose("pretrain", TS + ["modalities.timeseries.adapter.norm_pix_loss=true"]))
    with pytest.raises(Exception, match="norm_pix_loss"):
        Forecaster(model, "timeseries")


def test_pretraining_windows_from_series_files(tmp_path):
    t = pd.date_range("2020-01-01", periods=24 * 40, freq="h")
    pd.DataFrame({"time": t, "load": np.sin(2 * np.pi * np.arange(len(t)) / 24), "temp": np.cos(np.arange(len(t)) / 50)}).to_csv(tmp_path / "a.csv", index=False)
    data = build_data(compose("pretrain", TS + [f"data.root={tmp_path}"]))["timeseries"]
    assert data.builtin is None and data._load()[0][1] == 24  # the hourly index's daily cycle
    img = data.dataset("train", train=True)[(3, 5)]
    assert img.shape == (3, 64, 64) and torch.isfinite(img).all()
    # any case of suffix, tab-separated files too, as read_series reads them
    frame = pd.DataFrame({"time": t, "x": np.cos(2 * np.pi * np.arange(len(t)) / 24)})
    frame.to_csv(tmp_path / "B.CSV", index=False)
    frame.to_csv(tmp_path / "c.tsv", index=False, sep="\t")
    assert len(build_data(compose("pretrain", TS + [f"data.root={tmp_path}"]))["timeseries"]._load()) == 2 + 1 + 1
    (tmp_path / "short.csv").write_text("time,x\n2020-01-01,1\n2020-01-02,2\n")
    with pytest.raises(Exception, match=r"short\.csv"):
        build_data(compose("pretrain", TS + [f"data.root={tmp_path}"]))["timeseries"].splits()


def test_hugging_face_weights_forecast_like_the_official_layout(tmp_path):
    from omnimae.checkpoint.convert import omnimae_to_official

    model = build_model(compose("pretrain", TS))
    official = omnimae_to_official(model, "timeseries")
    # the same weights under Hugging Face ViTMAE names (transformers >= 5), as a hub file would hold them
    hf = {}
    for k, v in official.items():
        k = (k.replace("cls_token", "vit.embeddings.cls_token").replace("decoder_pos_embed", "decoder.decoder_pos_embed")
             .replace("patch_embed.proj", "vit.embeddings.patch_embeddings.projection"))
        if k == "pos_embed":
            k = "vit.embeddings.position_embeddings"
        elif k.startswith("blocks."):
            k = "vit.layers." + k[len("blocks."):]
        elif k.startswith("decoder_blocks."):
            k = "decoder.decoder_layers." + k[len("decoder_blocks."):]
        elif k.startswith(("decoder_embed", "decoder_norm", "decoder_pred", "mask_token")):
            k = "decoder." + k
        elif k.startswith("norm."):
            k = "vit.layernorm." + k[len("norm."):]
        for a, b in (("norm1", "layernorm_before"), ("norm2", "layernorm_after"), ("attn.proj", "attention.o_proj")):
            k = k.replace(a, b)
        if k.endswith(("attn.qkv.weight", "attn.qkv.bias")):
            for name, part in zip(("q_proj", "k_proj", "v_proj"), v.chunk(3)):
                hf[k.replace("attn.qkv", f"attention.{name}")] = part
            continue
        hf[k] = v
    torch.save(hf, tmp_path / "pytorch_model.bin")
    torch.save({"model": official}, tmp_path / "official.pth")
    x = np.sin(np.arange(120) / 4.0)[:, None] + np.arange(120)[:, None] / 50
    a = Forecaster.from_checkpoint(tmp_path / "pytorch_model.bin", num_heads=4, decoder_num_heads=4).predict(x, 10, 12)
    b = Forecaster.from_checkpoint(tmp_path / "official.pth", num_heads=4, decoder_num_heads=4).predict(x, 10, 12)
    c = Forecaster(model).predict(x, 10, 12)
    np.testing.assert_allclose(a, b, rtol=1e-6)
    np.testing.assert_allclose(a, c, rtol=1e-5, atol=1e-6)


def test_period_one_windows_fit_the_series_and_short_series_fail_at_load(tmp_path):
    """At period 1 a window is 4 points per patch column up to max_length, never longer than the series."""
    from omnimae.errors import DataError
    from omnimae.modalities.timeseries import TimeSeriesData

    kw = dict(img_size=64, patch_size=8, periodicity=1, samples_per_epoch=40, val_samples=0)  # 8 columns: >= 32 points
    pd.DataFrame({"time": np.arange(200), "y": np.sin(np.arange(200) / 7.0)}).to_csv(tmp_path / "s.csv", index=False)
    ds = TimeSeriesData(root=str(tmp_path), **kw).dataset("train", train=True)
    for i in range(40):
        img = ds[(i, 100 + i)]
        assert img.shape == (3, 64, 64) and torch.isfinite(img).all()
        torch.testing.assert_close(img, img[:, :1].expand_as(img), atol=1e-6, rtol=0)  # unfolded: one row, stretched
    pd.DataFrame({"time": np.arange(20), "y": np.arange(20.0) % 3}).to_csv(tmp_path / "short.csv", index=False)
    with pytest.raises(DataError, match=r"short\.csv: .*20 points, fewer than the 32"):
        TimeSeriesData(root=str(tmp_path), **kw).splits()


def test_synthetic_windows_when_max_length_is_below_the_shortest_window():
    from omnimae.modalities.timeseries import TimeSeriesData

    ds = TimeSeriesData(img_size=64, patch_size=8, max_length=16).dataset("train", train=True)
    images = [ds[(i, i)] for i in range(60)]
    assert all(img.shape == (3, 64, 64) and torch.isfinite(img).all() for img in images)
    assert any((img - img[:, :1]).abs().max() < 1e-6 for img in images)  # some are period 1 (unfolded)


@pytest.fixture(scope="module")
def tiny_forecaster():
    torch.manual_seed(0)
    return Forecaster(build_model(compose("pretrain", TS)))


def seasonal(n: int = 96) -> np.ndarray:
    t = np.arange(n)
    return (np.sin(2 * np.pi * t / 12) + 0.02 * t + np.random.default_rng(0).normal(0, 0.1, n))[:, None]


@pytest.mark.parametrize("a", [1e-9, 1e-3, 1.0, 1e3, 1e9])
@pytest.mark.parametrize("b", [0.0, 100.0, -1e4])
def test_forecasts_scale_with_the_series(tiny_forecaster, a, b):
    """forecast(a x + a b) = a forecast(x) + a b: the variance gets no absolute epsilon (VisionTS's
    +1e-5 flattened a series scaled by 1e-6 to nearly a constant)."""
    x = seasonal()
    base = tiny_forecaster.predict(x, 12, 12)
    got = tiny_forecaster.predict(a * x + a * b, 12, 12)
    np.testing.assert_allclose(got, a * base + a * b, rtol=0, atol=1e-5 * a * x.std())


def test_the_visionts_setting_keeps_its_absolute_epsilon():
    from omnimae.modalities.raster import series_scale

    x = torch.tensor(seasonal(), dtype=torch.float64)[None] * 1e-3  # [1, T, 1]: var 5e-7, beside 1e-5
    v = series_scale(x, 0.4, "visionts")
    expected = np.sqrt(x.var(unbiased=False).item() + 1e-5) / 0.4
    np.testing.assert_allclose((v.std * v.unit).item(), expected, rtol=1e-12)
    np.testing.assert_allclose((v.mean * v.unit).item(), x.mean().item(), rtol=1e-12)
    r = series_scale(x, 0.4, "relative")
    np.testing.assert_allclose((r.std * r.unit).item(), x.std(unbiased=False).item() / 0.4, rtol=1e-12)
    with pytest.raises(ConfigError, match="eps: must be one of relative, visionts"):
        Forecaster(build_model(compose("pretrain", TS)), eps="absolute")


def test_series_near_the_float64_limit_forecast_finite_or_fail_naming_the_problem(tiny_forecaster):
    from omnimae.errors import DataError

    x = seasonal()
    np.testing.assert_allclose(tiny_forecaster.predict(x * 1e154, 12, 12), tiny_forecaster.predict(x, 12, 12) * 1e154, rtol=1e-6)
    np.testing.assert_allclose(tiny_forecaster.predict(x * 1e-300, 12, 12), tiny_forecaster.predict(x, 12, 12) * 1e-300, rtol=1e-6)
    for level in (1.7e308, -1.7e308, 0.0, -3.5):  # a constant history forecasts as that constant
        assert (tiny_forecaster.predict(np.full((48, 1), level), 12, 12) == level).all()
    # a model that draws every future pixel far out: scaled back from a series at +-1e308 it overflows
    model = build_model(compose("pretrain", TS))
    with torch.no_grad():
        model.adapters["timeseries"].head.weight.zero_()
        model.adapters["timeseries"].head.bias.fill_(100.0)
    wild = Forecaster(model)
    assert np.allclose(wild.predict(x, 12, 12), x.mean() + 100 * x.std() / 0.4, rtol=1e-4)  # closed form at scale 1
    with pytest.raises(DataError, match="leaves float64's range"):
        wild.predict(np.resize([1e308, -1e308], 48)[:, None], 12, 12)


def test_forecasting_finds_the_time_series_modality_through_the_registry():
    """The forecast room's SERIES is the registered time-series adapter class, and it offers every member
    the forecasting contract (SeriesModality) declares, callable with the declared parameters."""
    import inspect

    from omnimae.adapter import MODALITIES
    from omnimae.forecasting.series import SERIES, SeriesModality

    assert SERIES is MODALITIES["timeseries"]
    for name in SeriesModality.__annotations__:
        assert isinstance(getattr(SERIES, name), tuple) and getattr(SERIES, name), name
    methods = [n for n, v in vars(SeriesModality).items() if isinstance(v, staticmethod)]
    assert len(methods) == 7
    for name in methods:
        declared = list(inspect.signature(getattr(SeriesModality, name)).parameters)
        offered = list(inspect.signature(getattr(SERIES, name)).parameters)
        assert offered == declared, name
