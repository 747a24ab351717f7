"""`omnimae VERB [key=value ...]`: one command, Hydra-style overrides for every verb."""
from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from omnimae.config.compose import compose, group_options  # noqa: F401 - compose: the CLI's config, also for tests
from omnimae.errors import ConfigError, OmniMAEError


CFG_PARTS = ("job", "hydra", "all")


def _as_overrides(args: list[str]) -> list[str]:
    """Accept `--key value` and `--key=value` beside Hydra's key=value (dashes in keys become underscores).
    A flag without a value (last, or followed by another `--flag`) is true. `--cfg [job|hydra|all]` (or `-c`)
    stays a request to print the config, as `--cfg=PART`."""
    out, i = [], 0
    while i < len(args):
        a = args[i]
        if a in ("--cfg", "-c") or a.startswith("--cfg="):
            part = a.split("=", 1)[1] if "=" in a else "job"
            if "=" not in a and i + 1 < len(args) and args[i + 1] in CFG_PARTS:
                part, i = args[i + 1], i + 1
            if part not in CFG_PARTS:
                raise ConfigError("--cfg", f"expected one of {', '.join(CFG_PARTS)}, got {part!r}")
            out.append(f"--cfg={part}")
        elif a.startswith("--"):
            key = a[2:]
            if "=" in key:
                key, value = key.split("=", 1)
            elif i + 1 < len(args) and not args[i + 1].startswith("--"):
                value, i = args[i + 1], i + 1
            else:
                value = "true"
            out.append(f"{key.replace('-', '_')}={value}")
        else:
            out.append(a)
        i += 1
    return out


def _setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


HELP_FLAGS = ("-h", "--help")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in (*HELP_FLAGS, "help"):
        if argv[1:2] and argv[1] in VERBS:  # `omnimae help VERB`
            return _help(argv[1])
        print(usage())
        return 0
    verb = argv[0]
    if verb not in VERBS:
        print(f"omnimae: unknown verb {verb!r}\n\n{usage()}", file=sys.stderr)
        return 2
    try:
        if any(a in HELP_FLAGS for a in argv[1:]):  # wherever it stands: `omnimae embed checkpoint=x --help`
            return _help(verb)
        _setup_logging()
        return _run_verb(verb, _as_overrides(argv[1:]))
    except OmniMAEError as e:
        print(f"omnimae {verb}: error: {e}", file=sys.stderr)
        return 1
    except Exception as e:
        # Hydra's composition errors (unknown keys, bad override syntax) already name the key
        if type(e).__module__.startswith(("hydra", "omegaconf")):
            print(f"omnimae {verb}: config error: {e}", file=sys.stderr)
            return 1
        raise


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


def _print_pretrain(result: dict) -> None:
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


def _print_forecast(result: dict) -> None:
    print("\n".join(["omnimae forecast:"] + [f"  {k:<12} {v}" for k, v in result.items()]))


def _stats(cfg: DictConfig) -> None:
    from omnimae.modalities.audio import run_stats

    a = cfg.modalities.audio.adapter
    if not cfg.data.root:
        raise ConfigError("data.root", "give the folder of audio files: omnimae stats data.root=PATH")
    run_stats(cfg.data.root, sample_rate=a.sample_rate, target_length=a.target_length, mel_bins=a.mel_bins)


def _modalities(_cfg: None) -> None:
    from omnimae.adapter import MODALITIES
    import omnimae.modalities  # noqa: F401 - registers the adapters

    for name, cls in sorted(MODALITIES.items()):
        print(f"{name:<12} {cls.__module__}.{cls.__qualname__}")


@dataclass(frozen=True)
class Verb:
    """One `omnimae VERB`: how it runs; its --help and the usage text are built from these fields."""

    purpose: str
    example: str
    run: str | Callable[[Any], Any]  # "module:function" (imported when it runs) or a function, given the composed config
    config: str | None = None  # the config it composes (configs/<config>.yaml); None: it takes no options
    base: tuple[str, ...] = ()  # overrides it always applies, before the user's
    # the keys its help shows (required ones always are), each with a note; "" takes the config files' comment.
    # Empty: every key of its config
    options: Mapping[str, str] = field(default_factory=dict)
    show: Callable[[Any], None] | None = None  # prints the result


VERBS = {
    "pretrain": Verb(
        "train an MAE (no arguments: the embedded digits demo)",
        "omnimae pretrain experiment=none model=vit_small data.root=/data/images trainer.max_epochs=5",
        "omnimae.train.pretrain:pretrain", "pretrain",
        options={"experiment": "", "modality": "", "model": "", "trainer": "", "data.root": "", "run_dir": "",
                 "resume": "", "seed": "", "trainer.max_steps": "training steps (or trainer.max_epochs)",
                 "optim.base_lr": "lr = base_lr x effective batch / 256", "callbacks.checkpoint_every_n_steps": ""},
        show=_print_pretrain,
    ),
    "probe": Verb("linear and kNN probe of a checkpoint's frozen encoder against raw pixels and random weights",
                  "omnimae probe checkpoint=latest", "omnimae.probe:run_probe", "probe"),
    "forecast": Verb(
        "zero-shot forecast of a CSV / netCDF / zarr file with a vision MAE (VisionTS)",
        "omnimae forecast --input sales.csv --horizon 24 --periodicity auto",
        "omnimae.forecast.run:run_forecast", "forecast",
        options={k: "" for k in ("checkpoint", "input", "horizon", "output", "context", "periodicity", "time_column",
                                 "variables", "truth", "plot", "device", "overwrite")},
        show=_print_forecast,
    ),
    "forecast-eval": Verb("rolling-origin backtest of a checkpoint on real series beside classical baselines",
                          "omnimae forecast-eval n_origins=3", "omnimae.forecast.run:run_forecast_eval", "forecast_eval"),
    "embed": Verb("per-file embeddings of a checkpoint's frozen encoder to netCDF or zarr",
                  "omnimae embed checkpoint=latest data_root=/data/images output=emb.nc", "omnimae.embed:run_embed", "embed"),
    "export": Verb("write a checkpoint as safetensors, official MAE (.pth) or timm ViT weights",
                   "omnimae export checkpoint=runs/.../last.ckpt format=timm output=vit.pth", "omnimae.export:run_export", "export"),
    "stats": Verb(
        "log-mel mean and std of a folder of audio, for modalities.audio.adapter.mean/std",
        "omnimae stats data.root=/data/audio", _stats, "pretrain", base=("experiment=none", "modality=audio"),
        options={"data.root": "the folder of audio files", **{f"modalities.audio.adapter.{k}": "" for k in
                                                              ("sample_rate", "target_length", "mel_bins")}},
    ),
    "modalities": Verb("list the registered modality adapters", "omnimae modalities", _modalities),
}


def usage() -> str:
    lines = ["usage: omnimae VERB [key=value ...]", "", "verbs:"]
    for name, v in VERBS.items():
        lines += [f"  {name:<15}{v.purpose}", f"  {'':<15}e.g. {v.example}"]
    return "\n".join(lines + [
        "",
        "Overrides use Hydra's syntax (key=value); `--key value` is the same as key=value.",
        "A `--flag` without a value is true. `omnimae VERB --cfg [job|hydra|all]` prints the composed config;",
        "`omnimae VERB --help` says what the verb does, its main options with their defaults, and an example.",
    ])


def _help(verb: str) -> int:
    """Print a verb's help. Its defaults come from composing its config: Hydra and OmegaConf only, no runner."""
    from omnimae.cli import help as cli_help

    v = VERBS[verb]
    rows = None
    if v.config is not None:
        cfg = compose(v.config, list(v.base), return_hydra_config=True)
        choices = {k: val for k, val in cfg.hydra.runtime.choices.items() if not k.startswith("hydra/")}
        with open_dict(cfg):
            cfg.pop("hydra")
        options = dict(v.options) or {k: "" for k in cli_help.leaf_keys(cfg)}
        groups = group_options(v.config, [k for k in options if k in choices])
        comments = cli_help.comments_of(v.config, choices)
        rows = cli_help.option_rows(cfg, choices, groups, options, comments)
    print(cli_help.render_help(verb, v.purpose, v.example, rows))
    return 0


def _run_verb(verb: str, overrides: list[str]) -> int:
    """Compose the verb's config (or print it with --cfg), import its runner lazily, run it."""
    import importlib

    v = VERBS[verb]
    parts = [o.split("=", 1)[1] for o in overrides if o.startswith("--cfg=")]
    overrides = [*v.base, *(o for o in overrides if not o.startswith("--cfg="))]
    if parts and v.config is not None:  # as Hydra's --cfg: job (the run's config), hydra (Hydra's own node) or all (both)
        cfg = compose(v.config, overrides, return_hydra_config=parts[-1] != "job")
        if parts[-1] == "hydra":
            cfg = OmegaConf.create({"hydra": cfg.hydra})
        print(OmegaConf.to_yaml(cfg))
        return 0
    run = v.run
    if isinstance(run, str):
        module, func = run.split(":")
        run = getattr(importlib.import_module(module), func)
    result = run(None if v.config is None else compose(v.config, overrides))
    if v.show is not None:
        v.show(result)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
