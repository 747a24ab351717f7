"""A study's tables and plot: one row per run, then mean and sample std over seeds per variant."""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from omnimae.io import atomic_path

if TYPE_CHECKING:
    import pandas as pd

    from omnimae.studies.run import Run

# (column, what it is): the probe of the pretrained encoder per pooling, and the loss where training ended
METRICS = {
    "linear_mean": "linear probe, mean-pooled",
    "knn_mean": "kNN probe, mean-pooled",
    "linear_cls": "linear probe, CLS",
    "knn_cls": "kNN probe, CLS",
    "train_loss": "final train loss",
}
LOSS_WINDOW = 5  # the final train loss is the mean of the last logged values: one step's loss is noisy


def final_train_loss(run_dir: Path) -> float:
    """Mean of the last LOSS_WINDOW logged `train/loss` values of the run's newest CSV log (nan: none logged)."""
    import pandas as pd

    logs = sorted(run_dir.glob("logs/version_*/metrics.csv"), key=lambda p: int(p.parent.name.split("_")[1]))
    if not logs:
        return float("nan")
    table = pd.read_csv(logs[-1])
    if "train/loss" not in table:
        return float("nan")
    values = table["train/loss"].dropna().to_numpy()
    return float(values[-LOSS_WINDOW:].mean()) if len(values) else float("nan")


def run_row(run: Run) -> dict[str, Any]:
    """A finished run's numbers, from its probe.json and its CSV log."""
    probe = json.loads((run.run_dir / "probe.json").read_text())
    pre, rnd = probe["pretrained"], probe["random"]
    row: dict[str, Any] = {"variant": run.variant, "seed": run.seed}
    for pool in ("mean", "cls"):
        for kind in ("linear", "knn"):
            row[f"{kind}_{pool}"] = pre[pool][kind] if pool in pre else float("nan")
    row["train_loss"] = final_train_loss(run.run_dir)
    # the baselines each probe measures beside the encoder: raw pixels, and random weights (mean-pooled)
    row |= {"pixels_linear": probe["pixels"]["linear"], "pixels_knn": probe["pixels"]["knn"]}
    if "mean" in rnd:
        row |= {"random_linear_mean": rnd["mean"]["linear"]["mean"], "random_knn_mean": rnd["mean"]["knn"]["mean"]}
    return row | {"run_dir": str(run.run_dir)}


def summarize(results: pd.DataFrame) -> pd.DataFrame:
    """Per variant (in first-seen order): runs, and mean and sample std (ddof=1) of every metric over seeds."""
    import pandas as pd

    rows = []
    for variant, group in results.groupby("variant", sort=False):
        row: dict[str, Any] = {"variant": variant, "runs": len(group)}
        for col in METRICS:
            values = group[col].to_numpy(dtype=float)
            row[f"{col}_mean"] = float(values.mean())
            row[f"{col}_std"] = float(values.std(ddof=1)) if len(values) > 1 else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)


def summary_markdown(summary: pd.DataFrame, results: pd.DataFrame, name: str) -> str:
    """The summary as a Markdown table (mean +- std over seeds), with the baselines under it."""
    head = ["variant", "seeds", *METRICS.values()]
    lines = [f"# Study: {name}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, row in summary.iterrows():
        cells = [row["variant"], str(row["runs"])]
        for col in METRICS:
            digits = 4 if col == "train_loss" else 3
            cells.append(f"{row[f'{col}_mean']:.{digits}f} ± {row[f'{col}_std']:.{digits}f}")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Mean ± sample standard deviation (ddof=1) over seeds; the final train loss is the mean of the last "
              f"{LOSS_WINDOW} logged values. Baselines, averaged over all runs: raw pixels linear "
              f"{results['pixels_linear'].mean():.3f}, kNN {results['pixels_knn'].mean():.3f}"]
    if "random_linear_mean" in results:
        lines[-1] += (f"; random-weight encoder (mean-pooled) linear {results['random_linear_mean'].mean():.3f}, "
                      f"kNN {results['random_knn_mean'].mean():.3f}")
    lines[-1] += "."
    return "\n".join(lines) + "\n"


def plot_summary(results: pd.DataFrame, path: Path, name: str) -> Path:
    """One panel per metric: each variant's mean (a bar) and every seed's value (a point)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = list(dict.fromkeys(results["variant"]))
    fig, axes = plt.subplots(1, len(METRICS), figsize=(3.2 * len(METRICS), 3.6), squeeze=False)
    for ax, (col, title) in zip(axes[0], METRICS.items()):
        for i, v in enumerate(variants):
            values = results.loc[results["variant"] == v, col].to_numpy(dtype=float)
            ax.bar(i, values.mean(), color="#9ecae1", width=0.6)
            ax.plot(np.full(len(values), i), values, "o", color="#08519c", markersize=4)
        finite = results[col].to_numpy(dtype=float)
        finite = finite[np.isfinite(finite)]
        if len(finite):  # zoom onto the values: seed differences are small
            pad = 0.15 * (finite.max() - finite.min()) + 1e-3
            ax.set_ylim(finite.min() - pad, finite.max() + pad)
        ax.set_xticks(range(len(variants)), variants, rotation=45, ha="right", fontsize=8)
        ax.set_title(title, fontsize=9)
    fig.suptitle(f"study {name}: bars are means over seeds, points are seeds", fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)
    return path


def write_tables(runs: list[Run], out: Path) -> dict[str, Path]:
    """results.csv (one row per run), summary.csv, summary.md and summary.png in `out`."""
    import pandas as pd

    results = pd.DataFrame([run_row(r) for r in runs])
    summary = summarize(results)
    name = out.name
    paths = {k: out / f for k, f in (("results", "results.csv"), ("summary", "summary.csv"), ("table", "summary.md"), ("plot", "summary.png"))}
    for key, frame in (("results", results), ("summary", summary)):
        with atomic_path(paths[key]) as tmp:
            frame.to_csv(tmp, index=False)
    with atomic_path(paths["table"]) as tmp:
        tmp.write_text(summary_markdown(summary, results, name))
    plot_summary(results, paths["plot"], name)
    return paths
