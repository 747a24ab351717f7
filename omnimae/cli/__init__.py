"""`omnimae VERB [key=value ...]`: one command, Hydra-style overrides for every verb."""
from __future__ import annotations

import logging
import sys

from omegaconf import OmegaConf, open_dict

from omnimae.cli.verbs import VERBS
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
