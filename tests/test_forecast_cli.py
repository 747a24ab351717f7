"""`omnimae forecast` end to end on files the tests write, and its errors."""
import functools
import http.server
import threading

import numpy as np
import pandas as pd
import pytest
import torch

from omnimae.config.build import build_model
from omnimae.checkpoint.convert import omnimae_to_official
from omnimae.checkpoint.format import save_safetensors
from omnimae.cli import compose, main

A = "modalities.timeseries.adapter"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """An (untrained) omnimae forecaster at 64 px, saved as a self-describing safetensors file."""
    cfg = compose("pretrain", ["experiment=none", "modality=timeseries", "model=vit_tiny", f"{A}.img_size=64", f"{A}.patch_size=8"])
    torch.manual_seed(0)
    model = build_model(cfg)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    save_safetensors(model, cfg, path)
    return path, model


@pytest.fixture
def airline_csv(tmp_path):
    t = pd.date_range("1949-01-01", periods=144, freq="MS")
    y = 120 + 2 * np.arange(144) + 30 * np.sin(2 * np.pi * np.arange(144) / 12)
    df = pd.DataFrame({"month": t, "passengers": y, "doubled": 2 * y + 1})
    path = tmp_path / "airline.csv"
    df.to_csv(path, index=False)
    return path


def test_forecast_csv_in_csv_and_png_out(checkpoint, airline_csv, tmp_path, capsys):
    before = airline_csv.read_bytes()
    out = tmp_path / "fc.csv"
    assert main(["forecast", "--checkpoint", str(checkpoint[0]), "--input", str(airline_csv), "--output", str(out), "--horizon", "18"]) == 0
    fc = pd.read_csv(out)
    assert list(fc.columns) == ["month", "passengers", "doubled"] and len(fc) == 18
    assert pd.to_datetime(fc["month"]).tolist() == list(pd.date_range("1961-01-01", periods=18, freq="MS"))
    assert np.isfinite(fc[["passengers", "doubled"]].to_numpy()).all()
    assert (tmp_path / "fc.csv.png").is_file()
    assert airline_csv.read_bytes() == before
    text = capsys.readouterr().out
    assert "periodicity  12" in text  # from the monthly index


def test_forecast_matches_the_python_api_and_writes_netcdf(checkpoint, airline_csv, tmp_path):
    import xarray as xr

    from omnimae.forecasting.forecaster import Forecaster

    out = tmp_path / "fc.nc"
    assert main(["forecast", f"checkpoint={checkpoint[0]}", f"input={airline_csv}", f"output={out}", "horizon=6",
                 "periodicity=12", "context=96", "plot=false"]) == 0
    ds = xr.open_dataset(out)
    values = np.stack([ds["passengers"].values, ds["doubled"].values], axis=1)
    series = pd.read_csv(airline_csv)[["passengers", "doubled"]].to_numpy()
    expected = Forecaster(checkpoint[1]).predict(series[-96:], 6, 12)[0]
    np.testing.assert_allclose(values, expected, rtol=1e-6)


def test_auto_periodicity_and_truth(checkpoint, airline_csv, tmp_path, capsys):
    df = pd.read_csv(airline_csv)
    df.iloc[:120].to_csv(tmp_path / "history.csv", index=False)
    df.iloc[120:].to_csv(tmp_path / "future.csv", index=False)
    assert main(["forecast", f"checkpoint={checkpoint[0]}", f"input={tmp_path / 'history.csv'}", "horizon=24",
                 "periodicity=auto", f"truth={tmp_path / 'future.csv'}"]) == 0
    text = capsys.readouterr().out
    assert "mae" in text and (tmp_path / "history.forecast.csv").is_file()


def test_named_official_checkpoint_is_downloaded_once(checkpoint, airline_csv, tmp_path, monkeypatch, capsys):
    serve = tmp_path / "serve"
    serve.mkdir()
    torch.save({"model": omnimae_to_official(checkpoint[1], "timeseries")}, serve / "mae_visualize_vit_base.pth")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(serve))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("OMNIMAE_CHECKPOINT_URL", f"http://127.0.0.1:{server.server_address[1]}/")
    monkeypatch.setenv("OMNIMAE_CACHE", str(tmp_path / "cache"))
    try:
        args = ["forecast", "checkpoint=mae_base", f"input={airline_csv}", "horizon=6", "num_heads=4",
                "decoder_num_heads=4", f"output={tmp_path / 'a.csv'}", "plot=false"]
        assert main(args) == 0
        assert (tmp_path / "cache" / "mae_visualize_vit_base.pth").is_file()
    finally:
        server.shutdown()
    args[-2] = f"output={tmp_path / 'b.csv'}"
    assert main(args) == 0  # served from the cache: the server is gone
    np.testing.assert_allclose(pd.read_csv(tmp_path / "a.csv").iloc[:, 1:], pd.read_csv(tmp_path / "b.csv").iloc[:, 1:])


@pytest.mark.parametrize(
    "change,override,message",
    [
        (lambda df: df.assign(passengers=df.passengers.astype(object).where(df.index != 7, "abc")), [], "passengers"),
        (lambda df: df.assign(doubled=df.doubled.where((df.index < 40) | (df.index > 50))), [], "doubled"),
        (lambda df: df.iloc[:8], ["periodicity=12"], "shorter than one period"),
        (lambda df: df, ["horizon=0"], "horizon: must be a positive integer"),
        (lambda df: df.iloc[::-1], [], "unsorted|not sorted|order"),
    ],
)
def test_bad_inputs_are_named(checkpoint, airline_csv, tmp_path, capsys, change, override, message):
    df = change(pd.read_csv(airline_csv))
    bad = tmp_path / "bad.csv"
    df.to_csv(bad, index=False)
    args = ["forecast", f"checkpoint={checkpoint[0]}", f"input={bad}", "horizon=6", *override]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert pytest.importorskip("re").search(message, err), err


def test_output_never_overwrites_the_input(checkpoint, airline_csv, capsys):
    before = airline_csv.read_bytes()
    assert main(["forecast", f"checkpoint={checkpoint[0]}", f"input={airline_csv}", f"output={airline_csv}", "horizon=6"]) == 1
    assert "over an input" in capsys.readouterr().err
    assert airline_csv.read_bytes() == before


def test_forecast_eval_scores_the_checkpoint_beside_baselines(checkpoint, tmp_path, capsys):
    out = tmp_path / "eval"
    assert main(["forecast-eval", f"checkpoint={checkpoint[0]}", f"output_dir={out}", "series=[airline,lynx]",
                 "baselines=[naive,seasonal_naive]", "n_origins=2"]) == 0
    df = pd.read_csv(out / "forecast_eval.csv")
    assert set(df["method"]) == {"omnimae", "naive", "seasonal_naive"} and set(df["series"]) == {"airline", "lynx"}
    assert np.isfinite(df["MASE"]).all()
    assert (out / "forecast_eval_summary.csv").is_file() and (out / "forecast_eval_mase.png").is_file()
    assert main(["forecast-eval", f"checkpoint={checkpoint[0]}", "series=[nope]"]) == 1
    assert "series: unknown series" in capsys.readouterr().err


def test_the_shipped_forecaster_is_the_default_and_beats_naive_on_a_seasonal_series(airline_csv, tmp_path, capsys):
    """The packaged checkpoint loads from the install with no argument and forecasts a clean seasonal series."""
    from omnimae.forecasting.run import default_checkpoint

    path = default_checkpoint()
    assert path.stat().st_size < 10 * 2**20  # a few MB (float16 weights)
    df = pd.read_csv(airline_csv)
    df.iloc[:120].to_csv(tmp_path / "h.csv", index=False)
    df.iloc[120:].to_csv(tmp_path / "f.csv", index=False)
    assert main(["forecast", f"input={tmp_path / 'h.csv'}", "horizon=24", f"truth={tmp_path / 'f.csv'}", "plot=false"]) == 0
    fc = pd.read_csv(tmp_path / "h.forecast.csv")[["passengers", "doubled"]].to_numpy()
    truth = df.iloc[120:][["passengers", "doubled"]].to_numpy()
    naive = np.repeat(df.iloc[119:120][["passengers", "doubled"]].to_numpy(), 24, axis=0)
    assert np.abs(fc - truth).mean() < np.abs(naive - truth).mean()


def test_the_truth_is_an_input_never_replaced_nor_the_input(checkpoint, airline_csv, tmp_path, capsys):
    df = pd.read_csv(airline_csv)
    df.iloc[:120].to_csv(tmp_path / "history.csv", index=False)
    df.iloc[120:].to_csv(tmp_path / "future.csv", index=False)
    before = (tmp_path / "future.csv").read_bytes()
    args = ["forecast", "--checkpoint", str(checkpoint[0]), "--input", str(tmp_path / "history.csv"), "--horizon", "24",
            "--truth", str(tmp_path / "future.csv")]
    assert main(args + ["--output", str(tmp_path / "future.csv"), "--overwrite"]) == 1
    assert "future.csv: refusing to write the output over an input" in capsys.readouterr().err
    assert (tmp_path / "future.csv").read_bytes() == before
    assert main(args[:-1] + [str(tmp_path / "history.csv")]) == 1
    assert "truth: " in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["airline.csv", "future.csv", "history.csv"]


def test_the_plot_follows_the_outputs_overwrite_rule_before_any_work(checkpoint, airline_csv, tmp_path, capsys):
    out, png = tmp_path / "fc.csv", tmp_path / "fc.csv.png"
    png.write_bytes(b"the user's own picture")
    args = ["forecast", f"checkpoint={checkpoint[0]}", f"input={airline_csv}", f"output={out}", "horizon=6"]
    assert main(args) == 1
    assert "fc.csv.png: already exists" in capsys.readouterr().err
    assert png.read_bytes() == b"the user's own picture" and not out.exists()
    assert main(args + ["plot=false"]) == 0 and png.read_bytes() == b"the user's own picture"
    assert main(args + ["overwrite=true"]) == 0 and png.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    "args,message",
    [
        (["--periodicity"], "periodicity: needs a value: a bare --periodicity reads as true"),
        (["--periodicity", "--plot", "false"], "periodicity: needs a value"),
        (["--horizon"], "horizon: needs a value: a bare --horizon reads as true"),
        (["--batch-size", "0"], "batch_size: must be a positive integer, got 0"),
        (["--max-gap", "-1"], "max_gap: must be an integer >= 0, got -1"),
        (["--device", "tpu"], "device: must be auto, cpu, cuda, cuda:N or mps, got 'tpu'"),
        (["--device", "cuda:99"], "device: cuda:99 asked for, but torch sees"),
        (["--eps", "absolute"], "eps: must be one of relative, visionts"),
        (["--context", "0"], "context: must be null or a positive integer"),
        (["--plot", "maybe"], "plot: must be true or false"),
    ],
)
def test_options_are_checked_naming_the_key_before_the_model_loads(airline_csv, tmp_path, capsys, args, message):
    """The checkpoint does not exist: an option error shows the checks come first."""
    base = ["forecast", "--checkpoint", str(tmp_path / "missing.safetensors"), "--input", str(airline_csv)]
    assert main(base + (["--horizon", "6"] if "--horizon" not in args else []) + args) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err


def test_unwritable_outputs_are_named_before_the_model_loads(airline_csv, tmp_path, capsys, monkeypatch):
    import os

    base = ["forecast", f"checkpoint={tmp_path / 'missing.safetensors'}", f"input={airline_csv}", "horizon=6"]
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    assert main(base + [f"output={blocker / 'sub' / 'fc.csv'}"]) == 1
    assert f"{blocker / 'sub' / 'fc.csv'}: cannot be written: {blocker} is a file, not a folder" in capsys.readouterr().err
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    if os.geteuid() == 0:  # root writes anywhere: let the folder look read-only
        real = os.access
        monkeypatch.setattr(os, "access", lambda p, mode, **kw: real(p, mode, **kw) and str(p) != str(locked))
    assert main(base + [f"output={locked / 'fc.csv'}"]) == 1
    assert f"{locked / 'fc.csv'}: cannot be written: no permission to write in {locked}" in capsys.readouterr().err
    assert main(["forecast-eval", f"checkpoint={tmp_path / 'missing.safetensors'}", f"output_dir={blocker / 'eval'}"]) == 1
    assert "is a file, not a folder" in capsys.readouterr().err
    assert main(["forecast-eval", f"checkpoint={tmp_path / 'missing.safetensors'}", "n_origins=0"]) == 1
    assert "n_origins: must be a positive integer, got 0" in capsys.readouterr().err


def test_huge_series_forecast_finite_or_fail_naming_the_file(checkpoint, tmp_path, capsys):
    t = pd.date_range("2000-01-01", periods=96, freq="MS")
    y = 3 + np.sin(2 * np.pi * np.arange(96) / 12) + np.arange(96) / 50
    args = ["forecast", f"checkpoint={checkpoint[0]}", "horizon=12", "periodicity=12"]
    for name, values in (("unit", y), ("huge", y * 1e154), ("flat", np.full(96, 1.7e308))):
        pd.DataFrame({"month": t, "v": values}).to_csv(tmp_path / f"{name}.csv", index=False)
        assert main(args + [f"input={tmp_path / name}.csv"]) == 0
        assert (tmp_path / f"{name}.forecast.csv.png").is_file()
    fc = {n: pd.read_csv(tmp_path / f"{n}.forecast.csv")["v"].to_numpy() for n in ("unit", "huge", "flat")}
    np.testing.assert_allclose(fc["huge"], fc["unit"] * 1e154, rtol=1e-6)
    assert (fc["flat"] == 1.7e308).all()
    # a model that draws every future pixel far out: scaled back from a series at +-1e308 it overflows
    model = checkpoint[1]
    cfg = compose("pretrain", ["experiment=none", "modality=timeseries", "model=vit_tiny", f"{A}.img_size=64", f"{A}.patch_size=8"])
    wild = build_model(cfg)
    wild.load_state_dict(model.state_dict())
    with torch.no_grad():
        wild.adapters["timeseries"].head.weight.zero_()
        wild.adapters["timeseries"].head.bias.fill_(100.0)
    save_safetensors(wild, cfg, tmp_path / "wild.safetensors")
    pd.DataFrame({"month": t, "v": np.resize([1e308, -1e308], 96)}).to_csv(tmp_path / "edge.csv", index=False)
    capsys.readouterr()
    assert main(["forecast", f"checkpoint={tmp_path / 'wild.safetensors'}", f"input={tmp_path / 'edge.csv'}", "horizon=12"]) == 1
    err = capsys.readouterr().err
    assert f"{tmp_path / 'edge.csv'}: the forecast leaves float64's range" in err and "Traceback" not in err
    assert not (tmp_path / "edge.forecast.csv").exists() and not (tmp_path / "edge.forecast.csv.png").exists()


def test_forecast_eval_never_replaces_an_earlier_run_unasked(checkpoint, tmp_path, capsys):
    out = tmp_path / "eval"
    args = ["forecast-eval", f"checkpoint={checkpoint[0]}", f"output_dir={out}", "series=[lynx]", "baselines=[naive]", "n_origins=1"]
    assert main(args) == 0
    first = (out / "forecast_eval.csv").read_bytes()
    assert main(args[:1] + [f"checkpoint={tmp_path / 'missing'}"] + args[2:]) == 1  # refused before the model loads
    assert "already holds forecast-eval results (forecast_eval.csv, " in capsys.readouterr().err
    assert (out / "forecast_eval.csv").read_bytes() == first
    assert main(args + ["overwrite=true", "baselines=[seasonal_naive]"]) == 0
    assert set(pd.read_csv(out / "forecast_eval.csv")["method"]) == {"omnimae", "seasonal_naive"}
