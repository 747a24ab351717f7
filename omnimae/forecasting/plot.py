"""The forecast plot: one panel per variate with the end of the context, the forecast and the truth."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from omnimae.forecasting.series import SERIES, SeriesTable
from omnimae.forecasting.write import check_forecast
from omnimae.io import atomic_path, refuse_overwrite

MAX_PANELS = 8


def _display_scale(*arrays: np.ndarray) -> int:
    """A power of ten to divide plotted values by: matplotlib's ticks overflow within about 1e308."""
    peak = max((float(np.abs(a).max()) for a in arrays if a.size), default=0.0)
    return int(np.floor(np.log10(peak))) if peak > 1e300 else 0


def plot_forecast(
    path: str | Path,
    table: SeriesTable,
    forecast: np.ndarray,
    truth: np.ndarray | None = None,
    context_points: int | None = None,
    inputs: Sequence[str | Path] = (),
    overwrite: bool = False,
) -> Path:
    """A PNG with one panel per variate (the first 8): the end of the context, the forecast and
    the truth when given. context_points defaults to max(3 x horizon, 64), at most the whole series.
    Never written over an input, nor over an existing file unless overwrite."""
    # long: one figure, drawn top to bottom: history, truth, forecast, labels
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path).expanduser()
    forecast = check_forecast(table, forecast)
    refuse_overwrite(path, table.source, *inputs, overwrite=overwrite)
    horizon, n_var = forecast.shape
    if truth is not None:
        truth = check_forecast(table, truth, "truth")
    n_ctx = max(3 * horizon, 64) if context_points is None else int(context_points)
    n_ctx = max(0, min(n_ctx, len(table)))
    if table.time is not None:
        x_ctx = table.time[len(table) - n_ctx:]
    else:
        x_ctx = pd.RangeIndex(len(table) - n_ctx, len(table))
    x_fc = SERIES.future_index(table.time, horizon, length=len(table))
    x_truth = SERIES.future_index(table.time, len(truth), length=len(table)) if truth is not None else None

    shown = min(n_var, MAX_PANELS)
    fig = Figure(figsize=(10, 2.2 * shown + 0.6), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(shown, 1, sharex=True, squeeze=False)[:, 0]
    for j, ax in enumerate(axes):
        _draw_panel(ax, table.names[j], (x_ctx, table.values[len(table) - n_ctx:, j]), (x_fc, forecast[:, j]),
                    None if truth is None else (x_truth, truth[:, j]))
    axes[0].legend(fontsize=7, loc="upper left")
    title = f"{Path(table.source).name}: {horizon}-step forecast"
    if n_var > shown:
        title += f" (first {shown} of {n_var} variates shown)"
    fig.suptitle(title, fontsize=10)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return path


def _draw_panel(ax, name: str, context: tuple, forecast: tuple, truth: tuple | None) -> None:
    """One variate's (x, y) pairs: the context, the forecast and the truth (None: not given)."""
    (x_ctx, ctx), (x_fc, fc) = context, forecast
    tr = np.empty(0) if truth is None else truth[1]
    k = _display_scale(ctx, fc, tr)
    if len(ctx):
        ax.plot(np.asarray(x_ctx), ctx / 10.0**k, color="0.3", lw=1, label="context")
    if truth is not None:
        ax.plot(np.asarray(truth[0]), tr / 10.0**k, color="tab:green", lw=1, label="truth")
    ax.plot(np.asarray(x_fc), fc / 10.0**k, color="tab:orange", lw=1.5, label="forecast")
    if len(ctx) and len(fc):
        ax.axvline(np.asarray(x_ctx)[-1], color="0.6", lw=0.8, ls=":")
    ax.set_ylabel(name + (f" (x 1e{k})" if k else ""), fontsize=8)
    ax.tick_params(labelsize=7)
