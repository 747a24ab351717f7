"""Time series in and out: round trips, one clear error per kind of bad input, seasonal periods,
future indexes, outputs that never replace an input, and the forecast plot."""
import re
import warnings

import numpy as np
import pandas as pd
import pytest

from omnimae.errors import DataError, OutputError
from omnimae.forecasting.plot import plot_forecast
from omnimae.forecasting.write import write_forecast
from omnimae.modalities.readers.series import SeriesTable, read_series
from omnimae.modalities.readers.series_index import future_index, periodicity_candidates

T = 60


def frame(n=T, freq="h", start="2021-03-01"):
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "date": pd.date_range(start, periods=n, freq=freq),
            "load": rng.normal(size=n).cumsum(),
            "temp": np.sin(np.arange(n) / 4.0) * 10 + rng.normal(size=n) * 1e-3,
        }
    )


def write_csv(path, df):
    df.to_csv(path, index=False)
    return path


def raises_naming(path, *parts, **kwargs):
    """read_series(path) raises a DataError that starts with the file and contains every part."""
    with pytest.raises(DataError) as info:
        read_series(path, **kwargs)
    msg = str(info.value)
    assert msg.startswith(str(path)), msg
    for part in parts:
        assert re.search(part, msg), f"{part!r} not in {msg!r}"
    return msg


# --- round trips ---------------------------------------------------------------------------
def test_csv_round_trip(tmp_path):
    df = frame()
    table = read_series(write_csv(tmp_path / "s.csv", df))
    assert table.names == ["load", "temp"]
    np.testing.assert_array_equal(table.values, df[["load", "temp"]].to_numpy())
    assert table.values.dtype == np.float64
    assert table.time.equals(pd.DatetimeIndex(df["date"]))
    assert table.time.name == "date" and table.freq == pd.offsets.Hour()
    assert table.source == str(tmp_path / "s.csv")


def test_csv_time_column_detection(tmp_path):
    df = frame(freq="D")
    # an unnamed first column of dates is the time column
    df.rename(columns={"date": "when"}).to_csv(tmp_path / "first.csv", index=False)
    table = read_series(tmp_path / "first.csv")
    assert table.names == ["load", "temp"] and table.freq == pd.offsets.Day()
    # a given time column anywhere; variables picks and orders the variates
    df[["load", "date", "temp"]].to_csv(tmp_path / "middle.csv", index=False)
    table = read_series(tmp_path / "middle.csv", time_column="date", variables=["temp", "load"])
    assert table.names == ["temp", "load"]
    np.testing.assert_array_equal(table.values[:, 0], df["temp"])
    # a numeric time column stays numeric; no time column at all gives time=None
    pd.DataFrame({"time": np.arange(0, 3 * T, 3), "x": np.arange(T, dtype=float)}).to_csv(tmp_path / "num.csv", index=False)
    table = read_series(tmp_path / "num.csv")
    assert table.names == ["x"] and list(table.time[:3]) == [0, 3, 6] and table.freq is None
    df[["load", "temp"]].to_csv(tmp_path / "bare.csv", index=False)
    table = read_series(tmp_path / "bare.csv")
    assert table.time is None and table.names == ["load", "temp"]


def test_netcdf_round_trip(tmp_path):
    xr = pytest.importorskip("xarray")
    pytest.importorskip("netCDF4")
    df = frame(freq="30min")
    ds = xr.Dataset({"load": ("time", df["load"].to_numpy()), "temp": ("time", df["temp"].to_numpy())},
                    coords={"time": df["date"].to_numpy()})
    ds.to_netcdf(tmp_path / "s.nc")
    table = read_series(tmp_path / "s.nc")
    assert table.names == ["load", "temp"]
    np.testing.assert_array_equal(table.values, df[["load", "temp"]].to_numpy())
    assert table.time.equals(pd.DatetimeIndex(df["date"])) and table.freq == pd.offsets.Minute(30)
    # a 2-D DataArray: one variate per label of its other coordinate
    da = xr.DataArray(np.arange(2.0 * T).reshape(T, 2), dims=("time", "site"),
                      coords={"time": df["date"].to_numpy(), "site": ["north", "south"]}, name="flow")
    da.to_netcdf(tmp_path / "da.nc")
    table = read_series(tmp_path / "da.nc")
    assert table.names == ["north", "south"]
    np.testing.assert_array_equal(table.values, da.values)


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_zarr_round_trip(tmp_path, zarr_format):
    xr = pytest.importorskip("xarray")
    pytest.importorskip("zarr")
    df = frame(freq="D")
    ds = xr.Dataset(
        {"load": (("time", "station"), np.stack([df["load"], -df["load"]], 1)), "temp": ("time", df["temp"].to_numpy())},
        coords={"time": df["date"].to_numpy(), "station": np.array([7, 9])},
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zarr's notes on consolidated metadata under format 3
        ds.to_zarr(tmp_path / "s.zarr", zarr_format=zarr_format)
    table = read_series(tmp_path / "s.zarr")
    assert table.names == ["load_7", "load_9", "temp"]
    np.testing.assert_array_equal(table.values[:, 1], -df["load"].to_numpy())
    assert table.time.equals(pd.DatetimeIndex(df["date"])) and table.freq == pd.offsets.Day()
    # a data variable's name keeps all its variates; a variate name keeps one
    assert read_series(tmp_path / "s.zarr", variables=["load"]).names == ["load_7", "load_9"]
    assert read_series(tmp_path / "s.zarr", variables=["temp", "load_9"]).names == ["temp", "load_9"]


# --- errors: each names the file and where ---------------------------------------------------
def test_missing_and_unparseable_files(tmp_path):
    raises_naming(tmp_path / "nope.csv", "no such file")
    bad = tmp_path / "ragged.csv"
    bad.write_text("date,x\n2020-01-01,1\n2020-01-02,2,3,4\n")
    raises_naming(bad, "cannot be parsed as CSV")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    raises_naming(empty, "empty")
    nc = tmp_path / "fake.nc"
    nc.write_bytes(b"this is not netCDF at all")
    pytest.importorskip("xarray")
    raises_naming(nc, "cannot be opened as netcdf")


def test_non_numeric_column_names_the_value(tmp_path):
    df = frame().astype({"temp": object})
    df.loc[7, "temp"] = "n/a?"
    raises_naming(write_csv(tmp_path / "s.csv", df), "column 'temp' is not numeric", r"'n/a\?'", "row 7")


def test_duplicated_time_names_the_row(tmp_path):
    df = frame()
    df.loc[11, "date"] = df.loc[10, "date"]
    raises_naming(write_csv(tmp_path / "s.csv", df), "duplicate at row 11", "row 10")


def test_unsorted_time_names_the_row(tmp_path):
    df = frame()
    df.loc[[10, 11], "date"] = df.loc[[11, 10], "date"].to_numpy()
    raises_naming(write_csv(tmp_path / "s.csv", df), "not sorted", "row 11", "row 10")


@pytest.mark.parametrize("dropped, row", [(20, 20), (1, 1), (T - 2, T - 2)])
def test_irregular_time_names_the_first_odd_step(tmp_path, dropped, row):
    df = frame().drop(index=dropped).reset_index(drop=True)
    path = write_csv(tmp_path / "s.csv", df)
    raises_naming(path, "irregular", f"from row {row - 1} .* to row {row} ", "allow_irregular")
    table = read_series(path, allow_irregular=True)
    assert table.freq is None and periodicity_candidates(table.time) == [1]
    assert len(table) == T - 1


def test_bad_time_value_is_named(tmp_path):
    df = frame().astype({"date": str})
    df.loc[5, "date"] = "yesterday"
    raises_naming(write_csv(tmp_path / "s.csv", df), "'date'", "'yesterday'", "row 5")


def test_nan_gaps_are_interpolated_like_numpy(tmp_path):
    df = frame()
    truth = df["load"].to_numpy().copy()
    holes = [3, 4, 5, 20, 40, 41]
    df.loc[holes, "load"] = np.nan
    table = read_series(write_csv(tmp_path / "s.csv", df), max_gap=3)
    known = np.setdiff1d(np.arange(T), holes)
    expected = np.interp(np.arange(T), known, truth[known])
    np.testing.assert_allclose(table.values[:, 0], expected, rtol=0, atol=1e-12)
    assert not np.isnan(table.values).any()
    np.testing.assert_array_equal(table.values[:, 1], df["temp"])


def test_long_gap_and_edges_are_errors(tmp_path):
    df = frame()
    df.loc[30:33, "temp"] = np.nan  # 4 in a row
    path = write_csv(tmp_path / "gap.csv", df)
    raises_naming(path, "column 'temp'", "gap of 4", "row 30", str(df.loc[30, "date"]), max_gap=3)
    assert not np.isnan(read_series(path, max_gap=4).values).any()

    df = frame()
    df.loc[0:1, "load"] = np.nan
    raises_naming(write_csv(tmp_path / "lead.csv", df), "column 'load' starts with 2 missing", "row 0", "row 1")
    df = frame()
    df.loc[T - 1, "temp"] = np.nan
    raises_naming(write_csv(tmp_path / "trail.csv", df), "column 'temp' ends with 1 missing", f"row {T - 1}")


def test_empty_series_and_unknown_variable(tmp_path):
    header_only = tmp_path / "header.csv"
    header_only.write_text("date,load,temp\n")
    raises_naming(header_only, "empty")
    time_only = write_csv(tmp_path / "time_only.csv", frame()[["date"]])
    raises_naming(time_only, "no value columns")
    path = write_csv(tmp_path / "s.csv", frame())
    raises_naming(path, "unknown variable 'pressure'", "'load'", "'temp'", variables=["load", "pressure"])
    raises_naming(path, "time column 'when' not found", time_column="when")


# --- frequency ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "freq, expected",
    [
        ("s", [3600, 60, 86400, 1]),
        ("15s", [240, 4, 5760, 1]),
        ("min", [1440, 10080, 60, 1]),
        ("30min", [48, 336, 2, 1]),
        ("h", [24, 168, 1]),
        ("2h", [12, 84, 1]),
        ("D", [7, 365, 30, 1]),
        ("B", [5, 1]),
        ("W", [52, 1]),
        ("W-SUN", [52, 1]),
        ("W-WED", [52, 1]),
        ("MS", [12, 1]),
        ("ME", [12, 1]),
        ("3ME", [4, 1]),
        ("QS", [4, 1]),
        ("QE", [4, 1]),
        ("YS", [1]),
        ("YE", [1]),
    ],
)
def test_periodicity_candidates(freq, expected):
    index = pd.date_range("2019-12-30", periods=40, freq=freq)
    index_without_freq = pd.DatetimeIndex(index.to_numpy())  # as read from a file: inferred
    assert index_without_freq.freq is None
    assert periodicity_candidates(index_without_freq) == expected
    assert periodicity_candidates(index) == expected


def test_periodicity_edge_cases():
    assert periodicity_candidates(None) == [1]
    assert periodicity_candidates(pd.Index([0, 1, 2, 3])) == [1]
    assert periodicity_candidates(pd.RangeIndex(10)) == [1]
    # aliases, old ones included (pandas 3 no longer parses T, H, M, Q, A)
    assert periodicity_candidates("T") == periodicity_candidates("min") == [1440, 10080, 60, 1]
    assert periodicity_candidates("H") == [24, 168, 1]
    assert periodicity_candidates("M") == [12, 1] and periodicity_candidates("Q") == [4, 1]
    assert periodicity_candidates("A") == [1]
    # a multiple that does not divide the cycle drops it rather than rounding
    assert periodicity_candidates("11min") == [1]
    assert periodicity_candidates("7min") == [1440, 1]  # a week, not a day
    assert periodicity_candidates("5D") == [73, 6, 1]


def test_future_index():
    hourly = pd.DatetimeIndex(pd.date_range("2021-01-01", periods=5, freq="h").to_numpy(), name="date")
    nxt = future_index(read_time(hourly), 3)
    assert list(nxt) == list(pd.date_range("2021-01-01 05:00", periods=3, freq="h")) and nxt.name == "date"
    month_ends = pd.date_range("2020-01-31", periods=4, freq="ME")
    assert list(future_index(month_ends, 2)) == [pd.Timestamp("2020-05-31"), pd.Timestamp("2020-06-30")]
    assert list(future_index(pd.Index([10, 20, 30]), 2)) == [40, 50]
    assert list(future_index(None, 3, length=7)) == [7, 8, 9]


def read_time(index):
    """The index as read_series leaves it (frequency inferred and set)."""
    return pd.DatetimeIndex(index, freq=pd.infer_freq(index))


# --- writing and plotting ----------------------------------------------------------------------
def test_write_forecast_csv_and_netcdf(tmp_path):
    src = write_csv(tmp_path / "s.csv", frame(freq="ME", start="2000-01-31"))
    table = read_series(src)
    forecast = np.arange(12.0).reshape(6, 2) / 7
    out = write_forecast(tmp_path / "fc.csv", table, forecast, [src])
    back = read_series(out)
    assert back.names == table.names and back.time.name == "date"
    np.testing.assert_array_equal(back.values, forecast)
    assert back.time.equals(future_index(table.time, 6)) and back.freq == pd.offsets.MonthEnd()
    assert back.time[0] == table.time[-1] + pd.offsets.MonthEnd()

    pytest.importorskip("xarray")
    pytest.importorskip("netCDF4")
    out = write_forecast(tmp_path / "fc.nc", table, forecast, [src])
    back = read_series(out)
    assert back.names == table.names
    np.testing.assert_array_equal(back.values, forecast)
    assert back.time.equals(future_index(table.time, 6))

    # no time column in: integer steps after the context out
    bare = write_csv(tmp_path / "bare.csv", frame()[["load"]])
    out = write_forecast(tmp_path / "bare_fc.csv", read_series(bare), forecast[:, :1], [bare])
    assert list(pd.read_csv(out)["time"]) == list(range(T, T + 6))


def test_output_never_replaces_an_input(tmp_path):
    src = write_csv(tmp_path / "s.csv", frame())
    before = src.read_bytes()
    table = read_series(src)
    forecast = np.zeros((4, 2))
    with pytest.raises(OutputError, match="over an input"):
        write_forecast(src, table, forecast, [src], overwrite=True)
    with pytest.raises(OutputError, match="over an input"):  # the table's own source counts as an input
        write_forecast(src, table, forecast, [])
    assert src.read_bytes() == before
    out = write_forecast(tmp_path / "fc.csv", table, forecast, [src])
    with pytest.raises(OutputError, match="already exists"):
        write_forecast(out, table, forecast + 1, [src])
    assert read_series(out).values.max() == 0
    write_forecast(out, table, forecast + 1, [src], overwrite=True)
    assert read_series(out).values.min() == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fc.csv", "s.csv"]  # no temporary left over
    with pytest.raises(ValueError, match="does not fit"):
        write_forecast(tmp_path / "x.csv", table, np.zeros((4, 3)), [src])



@pytest.mark.parametrize("suffix", [".csv", ".nc"])
def test_a_variate_named_like_the_time_axis_is_refused_naming_the_output(tmp_path, suffix):
    n = 30
    src = write_csv(tmp_path / "s.csv", pd.DataFrame({"date": pd.date_range("2020", periods=n, freq="D").astype(str),
                                                       "time": np.arange(n, dtype=float)}))
    table = read_series(src)
    assert table.names == ["time"]
    out = tmp_path / f"fc{suffix}"
    if suffix == ".csv":  # the CSV's time column is called date: no clash, the variate keeps its name
        assert list(pd.read_csv(write_forecast(out, table, np.zeros((3, 1)), [src])).columns) == ["date", "time"]
        return
    with pytest.raises(DataError, match=rf"{out.name}: a variate is named 'time'"):
        write_forecast(out, table, np.zeros((3, 1)), [src])
    assert not out.exists()

def test_plot_opens_with_pil(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(1)
    table = SeriesTable(rng.normal(size=(200, 10)), [f"v{i}" for i in range(10)],
                        pd.date_range("2022-01-01", periods=200, freq="h"), "many.csv")
    out = plot_forecast(tmp_path / "fc.png", table, rng.normal(size=(24, 10)), truth=rng.normal(size=(24, 10)),
                        context_points=48)
    with Image.open(out) as im:
        im.verify()
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size[0] > 100 and im.size[1] > 100
    single = SeriesTable(np.arange(30.0)[:, None], ["y"], None, "one.csv")
    with Image.open(plot_forecast(tmp_path / "one.png", single, np.ones(5))) as im:
        assert im.format == "PNG"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fc.png", "one.png"]


def test_a_plot_follows_the_overwrite_rule_and_never_replaces_an_input(tmp_path):
    src = write_csv(tmp_path / "s.csv", frame())
    table = read_series(src)
    png = tmp_path / "fc.png"
    png.write_bytes(b"the user's own picture")
    with pytest.raises(OutputError, match="fc.png: already exists"):
        plot_forecast(png, table, np.zeros((4, 2)))
    assert png.read_bytes() == b"the user's own picture"
    with pytest.raises(OutputError, match="over an input"):
        plot_forecast(tmp_path / "truth.csv", table, np.zeros((4, 2)), inputs=[tmp_path / "truth.csv"], overwrite=True)
    plot_forecast(png, table, np.zeros((4, 2)), overwrite=True)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("level", [1.7e308, -1.7e308, 1e-300])
def test_series_at_the_ends_of_float64_plot_and_write(tmp_path, level):
    """matplotlib's ticks overflow near 1.7e308: the panel is drawn in units of a power of ten."""
    from PIL import Image

    t = pd.date_range("2020-01-01", periods=48, freq="h")
    table = SeriesTable(level * (0.5 + 0.5 * np.sin(np.arange(48) / 3.0))[:, None], ["y"], t, "huge.csv")
    forecast = np.full((6, 1), level)
    with Image.open(plot_forecast(tmp_path / "fc.png", table, forecast, truth=forecast * 0.99)) as im:
        assert im.format == "PNG"
    np.testing.assert_array_equal(read_series(write_forecast(tmp_path / "fc.csv", table, forecast)).values, forecast)


def test_nothing_non_finite_is_written_and_unwritable_outputs_are_named(tmp_path):
    src = write_csv(tmp_path / "s.csv", frame())
    table = read_series(src)
    bad = np.zeros((4, 2))
    bad[2, 1] = np.inf
    for write in (write_forecast, plot_forecast):
        with pytest.raises(DataError, match=r"s\.csv: the forecast holds 1 NaN or infinite values"):
            write(tmp_path / "fc.csv", table, bad)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.csv"]
    with pytest.raises(OutputError, match=r"s\.csv/fc\.csv: cannot be written"):  # a file where a folder should be
        write_forecast(src / "fc.csv", table, np.zeros((4, 2)))
