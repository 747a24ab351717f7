"""`omnimae VERB [key=value ...]`: one command, Hydra-style overrides for every verb."""
from __future__ import annotations

import logging
import sys

from pathlib import Path

import yaml
from omegaconf import DictConfig, OmegaConf

from omnimae.errors import ConfigError, OmniMAEError

USAGE = """usage: omnimae VERB [key=value ...]

verbs:
  pretrain    train an MAE (no arguments: the embedded digits demo)
              e.g. omnimae pretrain experiment=none model=vit_small data.root=/data/images trainer.max_epochs=5
  probe       linear and kNN probe of a checkpoint's frozen encoder against raw pixels and random weights
              e.g. omnimae probe checkpoint=latest
  forecast    zero-shot forecast of a CSV / netCDF / zarr file with a vision MAE (VisionTS)
              e.g. omnimae forecast --input sales.csv --horizon 24 --periodicity auto
  forecast-eval  rolling-origin backtest of a checkpoint on real series beside classical baselines
  embed       per-file embeddings of a checkpoint's frozen encoder to netCDF or zarr
              e.g. omnimae embed checkpoint=latest data_root=/data/images output=emb.nc
  export      write a checkpoint as safetensors, official MAE (.pth) or timm ViT weights
              e.g. omnimae export checkpoint=runs/.../last.ckpt format=timm output=vit.pth
  stats       log-mel mean and std of a folder of audio, for modalities.audio.adapter.mean/std
              e.g. omnimae stats data.root=/data/audio
  modalities  list the registered modality adapters

Overrides use Hydra's syntax (key=value); `--key value` is the same as key=value.
A `--flag` without a value is true. `omnimae VERB --cfg [job|hydra|all]` prints the composed config.
"""


def compose(config_name: str, overrides: list[str], return_hydra_config: bool = False) -> DictConfig:
    """Compose a config from omnimae's own groups plus the folders in OMNIMAE_CONFIG_PATH (os.pathsep-separated),
    where a researcher's own configs (e.g. modality/<name>.yaml for a new modality) live."""
    import os

    from hydra import compose as hydra_compose
    from hydra import initialize_config_module

    extra = [str(Path(p).expanduser().resolve()) for p in os.environ.get("OMNIMAE_CONFIG_PATH", "").split(os.pathsep) if p]
    if extra:
        overrides = [f"hydra.searchpath=[{','.join('file://' + p for p in extra)}]", *overrides]
    # `modality` is a config group for pretrain, but a plain key of embed, probe and export: Hydra
    # would read modality=audio there as a group that is not in their defaults, so it is set after
    plain = [] if config_name == "pretrain" else [o for o in overrides if o.split("=", 1)[0] in PLAIN_KEYS]
    overrides = [o for o in overrides if o not in plain]
    with initialize_config_module("omnimae.configs", version_base="1.3"):
        cfg = hydra_compose(config_name, overrides=overrides, return_hydra_config=return_hydra_config)
    for o in plain:
        key, value = o.split("=", 1)
        OmegaConf.update(cfg, key, yaml.safe_load(value) if value else None)
    return cfg


PLAIN_KEYS = ("modality",)


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


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    verb = argv[0]
    verbs = {v: (lambda o, v=v: _run_verb(v, o)) for v in CONFIG_VERBS} | {"modalities": _modalities, "stats": _stats}
    if verb not in verbs:
        print(f"omnimae: unknown verb {verb!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    _setup_logging()
    try:
        return verbs[verb](_as_overrides(argv[1:])) or 0
    except OmniMAEError as e:
        print(f"omnimae {verb}: error: {e}", file=sys.stderr)
        return 1
    except Exception as e:
        # Hydra's composition errors (unknown keys, bad override syntax) already name the key
        if type(e).__module__.startswith(("hydra", "omegaconf")):
            print(f"omnimae {verb}: config error: {e}", file=sys.stderr)
            return 1
        raise


def _print_pretrain(result: dict) -> None:
    if result.get("rank", 0) == 0:
        print("\n".join(["", "omnimae pretrain finished:"] + [f"  {k:<16} {v}" for k, v in result.items() if k != "rank"]))
        print(f"\nnext: omnimae probe checkpoint={result['checkpoint']}")


def _print_forecast(result: dict) -> None:
    print("\n".join(["omnimae forecast:"] + [f"  {k:<12} {v}" for k, v in result.items()]))


# verb -> (config name, "module:function" run on the composed config, what prints its result)
CONFIG_VERBS = {
    "pretrain": ("pretrain", "omnimae.pretrain:pretrain", _print_pretrain),
    "probe": ("probe", "omnimae.probe:run_probe", None),
    "export": ("export", "omnimae.export:run_export", None),
    "embed": ("embed", "omnimae.embed:run_embed", None),
    "forecast": ("forecast", "omnimae.forecast_cli:run_forecast", _print_forecast),
    "forecast-eval": ("forecast_eval", "omnimae.forecast_cli:run_forecast_eval", None),
}


def _run_verb(verb: str, overrides: list[str]) -> int:
    """Compose the verb's config (or print it with --cfg), import its runner lazily, run it."""
    import importlib

    name, target, show = CONFIG_VERBS[verb]
    parts = [o.split("=", 1)[1] for o in overrides if o.startswith("--cfg=")]
    if parts:  # as Hydra's --cfg: job (the run's config), hydra (Hydra's own node) or all (both)
        overrides = [o for o in overrides if not o.startswith("--cfg=")]
        cfg = compose(name, overrides, return_hydra_config=parts[-1] != "job")
        if parts[-1] == "hydra":
            cfg = OmegaConf.create({"hydra": cfg.hydra})
        print(OmegaConf.to_yaml(cfg))
        return 0
    module, func = target.split(":")
    result = getattr(importlib.import_module(module), func)(compose(name, overrides))
    if show is not None:
        show(result)
    return 0


def _stats(overrides: list[str]) -> int:
    from omnimae.modalities.audio import run_stats

    cfg = compose("pretrain", ["experiment=none", "modality=audio", *overrides])
    a = cfg.modalities.audio.adapter
    if not cfg.data.root:
        raise ConfigError("data.root", "give the folder of audio files: omnimae stats data.root=PATH")
    run_stats(cfg.data.root, sample_rate=a.sample_rate, target_length=a.target_length, mel_bins=a.mel_bins)
    return 0


def _modalities(overrides: list[str]) -> int:
    from omnimae.adapter import MODALITIES
    import omnimae.modalities  # noqa: F401 - registers the adapters

    for name, cls in sorted(MODALITIES.items()):
        print(f"{name:<12} {cls.__module__}.{cls.__qualname__}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
