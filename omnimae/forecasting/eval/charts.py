"""Reports of the scores: the mean per method, a fixed-width text table and the mean-MASE bar chart."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from omnimae.forecasting.eval.metrics import METRICS
from omnimae.io import atomic_path


def summary(df: pd.DataFrame) -> pd.DataFrame:
    """Mean of each metric over the series, one row per method, sorted by mean MASE (best first)."""
    out = df.groupby("method", sort=False)[list(METRICS)].mean()
    out.insert(0, "n_series", df.groupby("method", sort=False)["series"].nunique())
    return out.sort_values("MASE", kind="stable")


def _fmt(col: str, x: float) -> str:
    if col in ("MASE", "sMAPE"):
        return f"{x:.3f}" if col == "MASE" else f"{x:.2f}"
    return f"{x:.4g}"


def format_table(df: pd.DataFrame) -> str:
    """A fixed-width text table: the metrics of each (series, method), then the mean per method."""
    head = ["series", "method", *METRICS]
    body: list[list[str] | None] = []
    for series, group in df.groupby("series", sort=False):
        for i, (_, r) in enumerate(group.iterrows()):
            body.append([series if i == 0 else "", str(r["method"]), *(_fmt(c, r[c]) for c in METRICS)])
        body.append(None)  # a rule between series
    for i, (method, r) in enumerate(summary(df).iterrows()):
        body.append(["mean" if i == 0 else "", str(method), *(_fmt(c, r[c]) for c in METRICS)])
    rows = [r for r in body if r is not None]
    widths = [max(len(x) for x in col) for col in zip(head, *rows)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if j < 2 else c.rjust(w) for j, (c, w) in enumerate(zip(cells, widths)))

    rule = "-" * len(line(head))
    return "\n".join([line(head), rule, *(rule if r is None else line(r) for r in body)])


def mase_bar_chart(summ: pd.DataFrame, path: Path, title: str) -> None:
    from matplotlib.figure import Figure  # no pyplot: no global backend or figure state

    fig = Figure(figsize=(1.2 * len(summ) + 2.5, 3.6))
    ax = fig.add_subplot()
    bars = ax.bar(summ.index.astype(str), summ["MASE"], color="#4c72b0")
    ax.bar_label(bars, fmt="%.3f", fontsize=8)
    ax.axhline(1.0, color="grey", linestyle="--", linewidth=1)
    ax.set_ylabel("mean MASE (lower is better)")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
