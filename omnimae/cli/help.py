"""`omnimae VERB --help`: what the verb does, its main options with the defaults of its composed
config (read from the config, so the help cannot drift from it), the comments its YAML file
carries, and an example."""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from importlib import resources
from typing import Any

import yaml
from omegaconf import OmegaConf

_KEY = re.compile(r"^(?P<indent>\s*)(?:- )?(?P<key>[\w-]+):(?P<rest>.*)$")
_PLAIN = re.compile(r"[\w./:@+~-]+")


def yaml_comments(text: str) -> dict[str, str]:
    """Dotted key -> its comment in a YAML file: the one on its line, else the comment lines just above it.
    The file's opening comment describes the file, not its first key. Keys of the defaults list are
    `defaults.<group>`."""
    notes: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    above: list[str] = []
    seen_key = False
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            above += [stripped.lstrip("#").strip()] if seen_key else []
            continue
        match = _KEY.match(line)
        if not match:
            above = []
            continue
        seen_key = True
        indent = len(match["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, match["key"]))
        inline = match["rest"].split(" #", 1)[1].strip() if " #" in match["rest"] else ""
        note = inline or " ".join(above)
        if note:
            notes[".".join(k for _, k in stack)] = note
        above = []
    return notes


def as_override(value: Any) -> str:
    """A config value written as a key=VALUE override would write it (so it can be pasted back)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, Sequence) and not isinstance(value, str):
        return "[" + ",".join(as_override(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{k}:{as_override(v)}" for k, v in value.items()) + "}"
    text = str(value)
    if _PLAIN.fullmatch(text) and yaml.safe_load(text) == text:  # would read back as this same string
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def default_of(cfg, key: str) -> tuple[Any, bool]:
    """(value, required) of a dotted key in a composed config; required where it is ??? (MISSING)."""
    parent, _, last = key.rpartition(".")
    node = OmegaConf.select(cfg, parent) if parent else cfg
    if OmegaConf.is_missing(node, last):
        return None, True
    value = node[last]
    return (OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value), False


def leaf_keys(cfg, prefix: str = "") -> list[str]:
    """Every dotted key of a config that holds a value (not a node of keys)."""
    out = []
    for key in cfg:
        if OmegaConf.is_dict(cfg._get_node(key)):
            out += leaf_keys(cfg[key], f"{prefix}{key}.")
        else:
            out.append(f"{prefix}{key}")
    return out


def config_text(*parts: str) -> str:
    """The text of one of omnimae's config files, e.g. ("embed.yaml",) or ("model", "vit_tiny.yaml")."""
    return resources.files("omnimae.configs").joinpath(*parts).read_text()


def comments_of(config: str, choices: Mapping[str, Any]) -> dict[str, str]:
    """The comments of a verb's config file and of the group configs chosen, by the key they describe."""
    notes = yaml_comments(config_text(f"{config}.yaml"))
    for group, choice in choices.items():
        try:
            text = config_text(group, f"{choice}.yaml")
        except (FileNotFoundError, TypeError):  # a config of OMNIMAE_CONFIG_PATH, or a list of choices
            continue
        package = re.search(r"#\s*@package\s+(\S+)", text)
        prefix = package[1] if package else group
        if prefix != "_global_":
            notes.update({f"{prefix}.{k}": v for k, v in yaml_comments(text).items() if f"{prefix}.{k}" not in notes})
    return notes


def render_help(name: str, purpose: str, example: str, rows: list[tuple[str, str]] | None) -> str:
    """The help page of one verb: rows are (key=default, what it means); None for a verb without options."""
    if rows is None:
        return "\n".join([f"omnimae {name}: {purpose}", "", f"usage: omnimae {name}", "", "example:", f"  {example}"])
    width = min(max((len(r[0]) for r in rows), default=0) + 2, 34)
    lines = [f"omnimae {name}: {purpose}", "", f"usage: omnimae {name} [key=value ...]   (--key value is the same)"]
    if rows:
        lines += ["", "main options (key=default):"]
        for setting, note in rows:
            pad = " " * (width - len(setting)) if len(setting) < width else "\n" + " " * (width + 2)
            lines.append(f"  {setting}{pad}{note}".rstrip())
    lines += ["", "example:", f"  {example}", "",
              f"`omnimae {name} --cfg` prints the whole composed config (every key, with its value)."]
    return "\n".join(lines)


def option_rows(cfg, choices: Mapping[str, str], group_options: Mapping[str, list[str]], options: Mapping[str, str],
                comments: Mapping[str, str]) -> list[tuple[str, str]]:
    """(key=default, note) per option: config groups from Hydra's choices, other keys from the config;
    required keys (???) are always listed, first."""
    keys = [k for k in leaf_keys(cfg) if default_of(cfg, k)[1] and k not in options] + list(options)
    rows = []
    for key in keys:
        if key in group_options:
            note = options.get(key) or comments.get(f"defaults.{key}", "")
            chosen = "null" if choices[key] is None else choices[key]  # a group with no default config (e.g. study)
            rows.append((f"{key}={chosen}", "; ".join(filter(None, [note, "one of " + ", ".join(group_options[key])]))))
            continue
        value, required = default_of(cfg, key)
        note = options.get(key) or comments.get(key) or comments.get(key.rpartition(".")[0], "")
        rows.append((f"{key}=???", f"required: {note}".rstrip(": ")) if required else (f"{key}={as_override(value)}", note))
    return rows
