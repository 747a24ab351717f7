"""What the CLI prints when a verb finishes: paths that exist, in one style, and what can run next."""
from __future__ import annotations

from pathlib import Path


# what the pretrain summary lists as paths: only those that exist, in one style (shown_path)
SUMMARY_PATHS = ("run_dir", "checkpoint", "best", "reconstructions", "logs", "tensorboard")


def shown_path(path: str | Path) -> str:
    """A path as the CLI prints it: relative to the current folder when under it, else absolute."""
    full, here = Path(path).expanduser().resolve(), Path.cwd().resolve()
    return str(full.relative_to(here)) if full.is_relative_to(here) else str(full)


def next_steps(result: dict) -> list[str]:
    """Commands that can run on a finished run's checkpoint: the probe where the trained data has the
    labels it needs (result["labeled"], per modality), else embed, which needs none."""
    import shlex

    ckpt, labeled = shown_path(result["checkpoint"]), result["labeled"]
    joint = len(labeled) > 1  # the probe and embed take the first modality unless told
    steps = []
    for m, has_labels in labeled.items():
        args = [f"checkpoint={ckpt}"] + ([f"modality={m}"] if joint else [])
        if not has_labels:
            out = Path(result["run_dir"]) / (f"embeddings_{m}.nc" if joint else "embeddings.nc")
            args.append(f"output={shown_path(out)}")
        steps.append(shlex.join(["omnimae", "probe" if has_labels else "embed", *args]))
    return steps


def print_pretrain(result: dict) -> None:
    if result.get("rank", 0) != 0:
        return
    lines = ["", "omnimae pretrain finished:"]
    for key, value in result.items():
        if key in SUMMARY_PATHS:
            if not value or not Path(value).exists():  # e.g. no metrics.csv before the first logged step
                continue
            value = shown_path(value)
        if key not in ("rank", "labeled"):
            lines.append(f"  {key:<16} {value}")
    print("\n".join(lines + [""] + [f"next: {step}" for step in next_steps(result)]))


def print_forecast(result: dict) -> None:
    print("\n".join(["omnimae forecast:"] + [f"  {k:<12} {v}" for k, v in result.items()]))
