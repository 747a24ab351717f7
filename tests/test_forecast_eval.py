"""Forecast evaluation: metrics, rolling origins, the packaged suite, baselines and `evaluate`.

Expected numbers are worked out by hand (or from the increments of a random walk), not by
calling the module's own helpers.
"""
from __future__ import annotations

import socket

import numpy as np
import pandas as pd
import pytest

from omnimae.forecasting import eval as fe
from omnimae.forecasting.eval import baselines
from omnimae.errors import OutputError


# ---------------------------------------------------------------------------------------------
# metrics
# ---------------------------------------------------------------------------------------------


def test_metrics_match_hand_computed_values():
    y = np.array([1.0, 2.0, 3.0, 0.0])
    f = np.array([2.0, 2.0, 1.0, 0.0])  # errors 1, 0, 2, 0
    assert fe.mae(y, f) == pytest.approx(3 / 4)
    assert fe.mse(y, f) == pytest.approx(5 / 4)
    # 200*1/3, 200*0/4, 200*2/4, and 0 where both are 0
    assert fe.smape(y, f) == pytest.approx((200 / 3 + 0 + 100 + 0) / 4)
    assert fe.smape([0.0, 0.0], [0.0, 0.0]) == 0.0
    assert fe.smape([1.0], [-1.0]) == pytest.approx(200.0)

    history = np.array([1.0, 3.0, 2.0, 5.0])
    # m=2: |2-1|, |5-3| -> 1.5;  m=1: 2, 1, 3 -> 2;  m=3: |5-1| -> 4
    assert fe.mase(y, f, history, 2) == pytest.approx(0.75 / 1.5)
    assert fe.mase(y, f, history, 1) == pytest.approx(0.75 / 2)
    assert fe.mase(y, f, history, 3) == pytest.approx(0.75 / 4)
    # m=4 needs 5 points of history: falls back to m=1
    assert fe.mase(y, f, history, 4) == pytest.approx(0.75 / 2)


def test_metric_errors_are_clear():
    with pytest.raises(ValueError, match="shape"):
        fe.mae([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="empty"):
        fe.mse([], [])
    with pytest.raises(ValueError, match="MASE is undefined"):
        fe.mase([1.0], [2.0], [4.0, 4.0, 4.0], 1)
    with pytest.raises(ValueError, match="at least 2"):
        fe.mase([1.0], [2.0], [4.0], 1)


def test_seasonal_naive_on_a_purely_periodic_series_has_zero_mase():
    season = np.array([3.0, 1.0, 4.0, 1.0, 5.0])
    series = np.tile(season, 10)
    context, actual = series[:40], series[40:47]  # a horizon that wraps past one season
    f = fe.seasonal_naive(context, 7, 5)
    np.testing.assert_array_equal(f, actual)
    assert fe.mase(actual, f, context, 1) == 0.0
    # scaled by its own period the history is a perfect seasonal-naive fit: MASE is undefined
    with pytest.raises(ValueError, match="period 5"):
        fe.mase(actual, f, context, 5)


def test_naive_mase_on_a_random_walk_matches_the_increments():
    rng = np.random.default_rng(0)
    steps = rng.normal(size=300)
    walk = np.cumsum(steps)
    t, h = 250, 6
    f = fe.naive(walk[:t], h, 1)
    # walk[t-1+k] - walk[t-1] = steps[t] + ... + steps[t-1+k]; the history's lag-1 diffs are steps[1:t]
    errors = np.abs(np.cumsum(steps[t : t + h]))
    expected = errors.mean() / np.abs(steps[1:t]).mean()
    assert fe.mase(walk[t : t + h], f, walk[:t], 1) == pytest.approx(expected, rel=1e-12)


def test_naive_mase_on_random_walks_averages_mean_sqrt_k():
    # Gaussian steps: E|S_k| = sqrt(2k/pi) sigma and E|step| = sqrt(2/pi) sigma, so the expected
    # naive MASE at horizon h is mean(sqrt(k), k = 1..h) (the long history makes the scale ~ exact)
    rng = np.random.default_rng(1)
    h, n_hist, n_walks = 4, 400, 3000
    walks = np.cumsum(rng.normal(size=(n_walks, n_hist + h)), axis=1)
    values = [fe.mase(w[n_hist:], fe.naive(w[:n_hist], h), w[:n_hist], 1) for w in walks]
    assert np.mean(values) == pytest.approx(np.mean(np.sqrt(np.arange(1, h + 1))), rel=0.03)


# ---------------------------------------------------------------------------------------------
# rolling origins
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n, horizon, k", [(10, 3, 3), (100, 7, 1), (4032, 48, 5), (13, 4, 3), (2, 1, 1)])
def test_rolling_origins_are_in_range_non_overlapping_and_end_at_the_end(n, horizon, k):
    origins = fe.rolling_origins(n, horizon, k)
    assert len(origins) == k
    assert all(1 <= o and o + horizon <= n for o in origins)
    assert origins[-1] + horizon == n
    assert all(b - a == horizon for a, b in zip(origins, origins[1:]))  # disjoint and adjacent


def test_rolling_origins_refuse_what_does_not_fit():
    assert fe.rolling_origins(10, 3) == [1, 4, 7]
    with pytest.raises(ValueError, match="too short"):
        fe.rolling_origins(9, 3, 3)  # no history before the first window
    with pytest.raises(ValueError, match="horizon"):
        fe.rolling_origins(10, 0)
    with pytest.raises(ValueError, match="n_origins"):
        fe.rolling_origins(10, 2, 0)


# ---------------------------------------------------------------------------------------------
# the suite
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a suite loader tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


EXPECTED_LENGTHS = {
    "co2": 2284, "sunspots": 309, "elnino": 732, "nile": 100, "airline": 144, "lynx": 114,
    "taylor_daily": 4032, "taylor_weekly": 4032,
}


def test_every_suite_entry_loads_offline_as_a_finite_series(no_network):
    assert set(fe.SUITE) == set(EXPECTED_LENGTHS)
    n_origins = 3
    for name, entry in fe.SUITE.items():
        values, index = entry.load()
        assert values.ndim == 1 and values.dtype == np.float64, name
        assert np.all(np.isfinite(values)), name
        assert len(values) == EXPECTED_LENGTHS[name], name
        assert len(values) > entry.horizon * (n_origins + 1), name
        assert entry.periodicity >= 1 and entry.horizon >= 1, name
        assert isinstance(index, pd.DatetimeIndex) and len(index) == len(values), name
        assert index.is_monotonic_increasing and index.is_unique, name
        fe.rolling_origins(len(values), entry.horizon, n_origins)  # does not raise


def test_suite_series_are_read_in_time_order():
    import statsmodels.api as sm

    table = sm.datasets.elnino.load_pandas().data
    values, index = fe.load_elnino()
    np.testing.assert_array_equal(values[:12], table.iloc[0, 1:].to_numpy(float))  # 1950 Jan..Dec
    assert values[12] == table.iloc[1, 1]  # January 1951
    assert index[0] == pd.Timestamp("1950-01-01") and index[-1] == pd.Timestamp("2010-12-01")

    _, taylor_index = fe.load_taylor()
    assert taylor_index[0].day_name() == "Monday" and taylor_index[-1].day_name() == "Sunday"


def test_co2_gaps_are_interpolated_and_never_scored():
    import statsmodels.api as sm

    raw = sm.datasets.co2.load_pandas().data["co2"].to_numpy(float)
    values, index, gaps = fe.load_co2(with_gap_mask=True)
    assert gaps.sum() == np.isnan(raw).sum() == 59
    np.testing.assert_array_equal(values[~gaps], raw[~gaps])  # observed weeks untouched
    i = np.flatnonzero(gaps)[0]  # a one-week gap: the mean of its neighbours
    assert not gaps[i - 1] and not gaps[i + 1]
    assert values[i] == pytest.approx((raw[i - 1] + raw[i + 1]) / 2)
    assert (pd.Series(index).diff().dropna() == pd.Timedelta(weeks=1)).all()
    entry = fe.SUITE["co2"]
    first = fe.rolling_origins(len(values), entry.horizon, 3)[0]
    assert not gaps[first:].any()


def test_the_two_taylor_entries_differ_only_in_periodicity():
    daily, weekly = fe.SUITE["taylor_daily"], fe.SUITE["taylor_weekly"]
    assert (daily.periodicity, weekly.periodicity) == (48, 336)
    assert daily.horizon == weekly.horizon and daily.loader is weekly.loader
    (a, ia), (b, ib) = daily.load(), weekly.load()
    np.testing.assert_array_equal(a, b)
    assert ia.equals(ib)


# ---------------------------------------------------------------------------------------------
# evaluate
# ---------------------------------------------------------------------------------------------


def toy_suite():
    # A: 1..8, period 2, horizon 2 -> origins 4, 6.  B: period 3, horizon 3 -> origins 3, 6.
    a = np.arange(1.0, 9.0)
    b = np.array([1.0, 5.0, 3.0, 2.0, 5.0, 4.0, 2.0, 6.0, 3.0])
    return {
        "A": fe.SuiteEntry(lambda: a.copy(), periodicity=2, horizon=2),
        "B": fe.SuiteEntry(lambda: (b.copy(), None), periodicity=3, horizon=3),
    }


# by hand, per origin: (MAE, MSE, MASE, sMAPE)
HAND = {
    ("A", "naive"): [
        # origin 4: f = 4, 4 vs 5, 6; scale (m=2) of 1,2,3,4 = 2
        (1.5, 2.5, 0.75, (200 * 1 / 9 + 200 * 2 / 10) / 2),
        # origin 6: f = 6, 6 vs 7, 8; scale 2
        (1.5, 2.5, 0.75, (200 * 1 / 13 + 200 * 2 / 14) / 2),
    ],
    ("A", "seasonal_naive"): [
        (2.0, 4.0, 1.0, (200 * 2 / 8 + 200 * 2 / 10) / 2),  # f = 3, 4 vs 5, 6
        (2.0, 4.0, 1.0, (200 * 2 / 12 + 200 * 2 / 14) / 2),  # f = 5, 6 vs 7, 8
    ],
    ("B", "naive"): [
        # origin 3: history 1,5,3 is shorter than m+1 = 4, so the scale is lag-1: (4 + 2) / 2 = 3
        # f = 3, 3, 3 vs 2, 5, 4: errors 1, 2, 1
        (4 / 3, 6 / 3, (4 / 3) / 3, (200 * 1 / 5 + 200 * 2 / 8 + 200 * 1 / 7) / 3),
        # origin 6: history 1,5,3,2,5,4: scale (m=3) (1 + 0 + 1) / 3 = 2/3
        # f = 4, 4, 4 vs 2, 6, 3: errors 2, 2, 1
        (5 / 3, 9 / 3, (5 / 3) / (2 / 3), (200 * 2 / 6 + 200 * 2 / 10 + 200 * 1 / 7) / 3),
    ],
    ("B", "seasonal_naive"): [
        (2 / 3, 2 / 3, (2 / 3) / 3, (200 * 1 / 3 + 0 + 200 * 1 / 7) / 3),  # f = 1, 5, 3 vs 2, 5, 4
        (2 / 3, 2 / 3, (2 / 3) / (2 / 3), (0 + 200 * 1 / 11 + 200 * 1 / 7) / 3),  # f = 2, 5, 4 vs 2, 6, 3
    ],
}


def test_evaluate_on_a_toy_suite_gives_the_hand_computed_numbers():
    df = fe.evaluate({"naive": fe.naive, "seasonal_naive": fe.seasonal_naive}, toy_suite(), n_origins=2, progress=False)
    assert list(zip(df["series"], df["method"])) == list(HAND)
    for (series, method), per_origin in HAND.items():
        row = df[(df["series"] == series) & (df["method"] == method)].iloc[0]
        expected = np.mean(per_origin, axis=0)
        for metric, value in zip(fe.METRICS, expected):
            assert row[metric] == pytest.approx(value, rel=1e-12), (series, method, metric)
        assert row["horizon"] == {"A": 2, "B": 3}[series]

    summ = fe.summary(df)
    # mean MASE: naive (0.75 + (4/9 + 2.5)/2) / 2 = 1.111; seasonal naive (1 + (2/9 + 1)/2) / 2 = 0.806
    assert list(summ.index) == ["seasonal_naive", "naive"]
    mase = {m: np.mean([np.mean(HAND[(s, m)], axis=0)[2] for s in "AB"]) for m in ("naive", "seasonal_naive")}
    assert mase["naive"] == pytest.approx((0.75 + (4 / 9 + 2.5) / 2) / 2)
    assert summ.loc["naive", "MASE"] == pytest.approx(mase["naive"])
    text = fe.format_table(df)
    assert "A" in text and "B" in text and "mean" in text and "seasonal_naive" in text
    assert len({len(line) for line in text.splitlines()}) == 1  # fixed width


def test_max_context_truncates_the_context_but_not_the_mase_scale():
    seen = []

    def spy(context, horizon, periodicity):
        seen.append(len(context))
        return np.full(horizon, context[-1])

    suite = toy_suite()
    full = fe.evaluate({"naive": fe.naive}, suite, n_origins=2, progress=False)
    short = fe.evaluate({"spy": spy}, suite, n_origins=2, max_context=4, progress=False)
    assert seen == [4, 4, 3, 4]  # A: origins 4, 6; B: origins 3, 6
    np.testing.assert_allclose(short[list(fe.METRICS)].to_numpy(), full[list(fe.METRICS)].to_numpy())


def test_the_forecaster_gets_a_copy_of_the_history():
    def vandal(context, horizon, periodicity):
        context[:] = 1e9
        return np.zeros(horizon)

    # vandal runs first on the same loaded series: naive must still see the true history
    df = fe.evaluate({"vandal": vandal, "naive": fe.naive}, {"A": toy_suite()["A"]}, n_origins=2, progress=False)
    assert df.loc[df["method"] == "naive", "MAE"].item() == pytest.approx(1.5)


@pytest.mark.parametrize(
    "bad, what",
    [
        (lambda c, h, m: np.zeros(h + 1), "shape"),
        (lambda c, h, m: np.zeros((h, 1)), "shape"),
        (lambda c, h, m: np.r_[np.zeros(h - 1), np.nan], "non-finite"),
        (lambda c, h, m: np.full(h, np.inf), "non-finite"),
        (lambda c, h, m: ["x"] * h, "not numeric"),
    ],
)
def test_a_bad_forecast_raises_naming_the_method_and_the_series(bad, what):
    with pytest.raises(ValueError, match=rf"'broken_model'.*'B'.*{what}|{what}.*'broken_model'.*'B'"):
        fe.evaluate({"naive": fe.naive, "broken_model": bad}, {"B": toy_suite()["B"]}, n_origins=2, progress=False)


def test_an_exception_inside_a_forecaster_is_annotated():
    def boom(context, horizon, periodicity):
        raise RuntimeError("kaput")

    with pytest.raises(RuntimeError, match="kaput") as info:
        fe.evaluate({"boom": boom}, toy_suite(), n_origins=2, progress=False)
    notes = getattr(info.value, "__notes__", None)
    if notes is not None:  # Python >= 3.11
        assert "'boom'" in notes[0] and "'A'" in notes[0]


# ---------------------------------------------------------------------------------------------
# baselines
# ---------------------------------------------------------------------------------------------


def test_baselines_run_on_a_real_series():
    entry = fe.SUITE["airline"]
    values, _ = entry.load()
    origin = fe.rolling_origins(len(values), entry.horizon, 3)[0]
    context, actual = values[:origin], values[origin : origin + entry.horizon]
    for name, fn in fe.BASELINES.items():
        f = fn(context, entry.horizon, entry.periodicity)
        assert f.shape == (entry.horizon,) and np.all(np.isfinite(f)), name
        # a sane forecast of a series in the hundreds: within a factor of 2 of the truth
        assert np.all((f > actual / 2) & (f < actual * 2)), name
    np.testing.assert_array_equal(fe.seasonal_naive(context, 12, 12), context[-12:])
    np.testing.assert_array_equal(fe.naive(context, 12, 12), np.full(12, context[-1]))


@pytest.mark.parametrize("fn", [fe.ets, fe.theta], ids=["ets", "theta"])
@pytest.mark.parametrize(
    "context, periodicity",
    [
        (np.array([5.0]), 12),  # one point
        (np.array([5.0, 6.0]), 12),  # two points
        (np.full(30, 3.0), 12),  # constant
        (10 + np.sin(np.arange(20)), 12),  # shorter than two seasons
        (10 + np.sin(np.arange(30)) + 0.1 * np.arange(30), 12),  # two seasons and more
        (np.r_[0.0, 0.0, 0.0, 1.0, 0.0, 2.0, 0.0, 0.0], 1),  # zeros, no period
    ],
)
def test_model_baselines_fall_back_gracefully_and_deterministically(fn, context, periodicity):
    f = fn(context, 5, periodicity)
    assert f.shape == (5,) and np.all(np.isfinite(f))
    np.testing.assert_array_equal(f, fn(context, 5, periodicity))
    if np.all(context == context[0]):
        np.testing.assert_array_equal(f, np.full(5, context[0]))


def test_model_baselines_silence_only_convergence_warnings():
    import warnings

    from statsmodels.tools.sm_exceptions import ConvergenceWarning

    assert baselines._silenced_fit(lambda: warnings.warn("x", ConvergenceWarning)) is None
    with pytest.warns(RuntimeWarning, match="other"):
        baselines._silenced_fit(lambda: warnings.warn("other", RuntimeWarning))
    with pytest.warns(ConvergenceWarning):  # and only inside the call
        warnings.warn("outside", ConvergenceWarning)


# ---------------------------------------------------------------------------------------------
# run_forecast_eval
# ---------------------------------------------------------------------------------------------


def test_run_forecast_eval_writes_the_tables_and_the_chart(tmp_path, capsys):
    out = tmp_path / "eval"
    df = fe.run_forecast_eval({"naive": fe.naive, "seasonal_naive": fe.seasonal_naive}, out, n_origins=2, suite=toy_suite())
    printed = capsys.readouterr().out
    assert "seasonal_naive" in printed and "mean" in printed and "sorted by mean MASE" in printed
    assert sorted(p.name for p in out.iterdir()) == ["forecast_eval.csv", "forecast_eval_mase.png", "forecast_eval_summary.csv"]
    back = pd.read_csv(out / "forecast_eval.csv")
    pd.testing.assert_frame_equal(back[list(fe.METRICS)], df[list(fe.METRICS)])
    summ = pd.read_csv(out / "forecast_eval_summary.csv", index_col="method")
    assert list(summ.index) == list(fe.summary(df).index)
    assert (out / "forecast_eval_mase.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_second_run_never_replaces_the_first_runs_results_unasked(tmp_path, capsys):
    out = tmp_path / "eval"
    fe.run_forecast_eval({"naive": fe.naive}, out, n_origins=2, suite=toy_suite())
    first = {p.name: p.read_bytes() for p in out.iterdir()}
    calls = []

    def spy(context, horizon, periodicity):
        calls.append(1)
        return fe.seasonal_naive(context, horizon, periodicity)

    with pytest.raises(OutputError, match=r"eval: already holds forecast-eval results .*overwrite=true"):
        fe.run_forecast_eval({"spy": spy}, out, n_origins=2, suite=toy_suite())
    assert not calls and {p.name: p.read_bytes() for p in out.iterdir()} == first  # refused before any work
    fe.run_forecast_eval({"spy": spy}, out, n_origins=2, suite=toy_suite(), overwrite=True)
    assert set(pd.read_csv(out / "forecast_eval.csv")["method"]) == {"spy"}


def test_an_output_dir_that_cannot_be_written_is_named_before_any_work(tmp_path):
    (tmp_path / "file").write_text("x")
    calls = []
    with pytest.raises(OutputError, match=r"file/eval/forecast_eval.csv: cannot be written: .*file is a file, not a folder"):
        fe.run_forecast_eval({"naive": lambda *a: calls.append(1)}, tmp_path / "file" / "eval", suite=toy_suite())
    assert not calls
    with pytest.raises(ValueError, match="n_origins must be >= 1, got 0"):
        fe.evaluate({"naive": fe.naive}, {"boom": fe.SuiteEntry(lambda: 1 / 0, 1, 1)}, n_origins=0, progress=False)
