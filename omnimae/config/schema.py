"""Early config checks: every `_target_` node is checked against its target's signature
(unknown keys, wrong types) before anything is built, so mistakes fail naming the key."""
from __future__ import annotations

import difflib
import inspect
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Union

from hydra.utils import get_object
from omegaconf import DictConfig, ListConfig, OmegaConf

from omnimae.errors import ConfigError

_NONE = type(None)


@dataclass
class OptimConfig:
    """AdamW with a cosine schedule after a linear warm-up, as the MAE recipe."""

    base_lr: float = 1.5e-4  # lr = base_lr * effective batch / 256
    min_lr: float = 0.0
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.95)
    warmup_steps: int | None = None  # None: warmup_fraction of the run
    warmup_fraction: float = 0.05
    fused: bool | None = None  # None: torch's fused AdamW kernel where the device has one (CPU, CUDA, ...)

    def __post_init__(self) -> None:
        if self.base_lr <= 0:
            raise ConfigError("base_lr", f"must be positive, got {self.base_lr}")
        if self.min_lr < 0:  # its upper bound is the batch-scaled lr, checked once the batch is known (peak_lr)
            raise ConfigError("min_lr", f"must be >= 0, got {self.min_lr}")
        if self.weight_decay < 0:
            raise ConfigError("weight_decay", f"must be >= 0, got {self.weight_decay}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ConfigError("betas", f"must be two numbers in [0, 1), got {list(self.betas)}")
        if self.warmup_steps is not None and self.warmup_steps < 0:
            raise ConfigError("warmup_steps", f"must be >= 0, got {self.warmup_steps}")
        if not 0 <= self.warmup_fraction < 1:
            raise ConfigError("warmup_fraction", f"must lie in [0, 1), got {self.warmup_fraction}")


@dataclass
class ModalityRun:
    """How a modality takes part in a run (beside its adapter and data nodes)."""

    batch_size: int = 64
    num_workers: int = 0
    loss_weight: float = 1.0
    sampling_weight: float = 1.0  # joint runs: how often a step draws this modality
    adapter: Any = None
    data: Any = None
    loss: Any = None  # the objective's node (omnimae.objectives); none: the MAE paper's masked MSE

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError("batch_size", f"must be >= 1, got {self.batch_size}")
        if self.num_workers < 0:
            raise ConfigError("num_workers", f"must be >= 0, got {self.num_workers}")
        if self.loss_weight < 0:
            raise ConfigError("loss_weight", f"must be >= 0, got {self.loss_weight}")
        if self.sampling_weight <= 0:
            raise ConfigError("sampling_weight", f"must be positive, got {self.sampling_weight}")


# model.<key> values that count something: every width, depth and head count is a whole number >= 1
MODEL_COUNTS = ("embed_dim", "depth", "num_heads", "decoder_embed_dim", "decoder_depth", "decoder_num_heads")


def check_model(node: Mapping, path: str = "model") -> None:
    """The transformer's shape: positive counts, a positive mlp_ratio, and each width divisible by its
    head count (a head takes width / heads channels), each failure naming its key."""
    for key in MODEL_COUNTS:
        value = node.get(key, 1)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"{path}.{key}", f"must be a positive integer, got {value!r}")
    ratio = node.get("mlp_ratio", 1.0)
    if not isinstance(ratio, (int, float)) or isinstance(ratio, bool) or not ratio > 0:
        raise ConfigError(f"{path}.mlp_ratio", f"must be a positive number (the MLP width over embed_dim), got {ratio!r}")
    for width, heads in (("embed_dim", "num_heads"), ("decoder_embed_dim", "decoder_num_heads")):
        if width in node and heads in node and node[width] % node[heads]:
            raise ConfigError(f"{path}.{width}", f"{node[width]} is not divisible by {path}.{heads}={node[heads]} "
                                                 f"(each attention head takes {width} / {heads} channels)")


def _matches(value: Any, hint: Any) -> bool:
    """Loose runtime check of a config value against a type hint; unknown hints pass."""
    if hint is Any or hint is inspect.Parameter.empty:
        return True
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is Union or (origin is not None and str(origin) == "<class 'types.UnionType'>"):
        return any(_matches(value, a) for a in args)
    if hint is _NONE:
        return value is None
    if origin is Literal:
        return value in args
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin in (list, tuple, Sequence, typing.Sequence) or hint in (list, tuple):
        if not isinstance(value, (list, tuple, ListConfig)):
            return False
        inner = [a for a in args if a is not Ellipsis]
        return all(_matches(v, inner[0]) for v in value) if len(inner) == 1 else True
    if origin in (dict, Mapping) or hint is dict:
        return isinstance(value, (dict, DictConfig))
    return True  # classes, callables, forward references: not checked here


def _hints(obj: Any) -> dict[str, Any]:
    target = obj.__init__ if inspect.isclass(obj) else obj
    try:
        return typing.get_type_hints(target)
    except Exception:  # unresolvable forward references: check names only
        return {}


def check_node(node: Mapping, target: Any, path: str, provided: Sequence[str] = (), own: Sequence[str] = ()) -> None:
    """Check node's keys and value types against target's signature; provided = kwargs given in code,
    own = omnimae's settings kept in the node and removed before it is instantiated."""
    sig = inspect.signature(target)
    params = sig.parameters
    accepts_kwargs = any(p.kind is p.VAR_KEYWORD for p in params.values())
    hints = _hints(target)
    name = getattr(target, "__qualname__", str(target))
    for key in node:
        if (key.startswith("_") and key.endswith("_")) or key in own:
            continue
        full = f"{path}.{key}" if path else key
        if key not in params:
            if accepts_kwargs:
                continue
            close = difflib.get_close_matches(key, list(params), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ConfigError(full, f"unknown key for {name}{hint}")
        value = node[key]
        if OmegaConf.is_config(value):
            value = OmegaConf.to_container(value, resolve=True)
        if key in hints and not _matches(value, hints[key]):
            raise ConfigError(full, f"expected {_type_name(hints[key])}, got {value!r} ({type(value).__name__})")
    for pname, p in params.items():
        if (
            p.default is p.empty
            and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
            and pname not in node
            and pname not in provided
            and pname != "self"
        ):
            raise ConfigError(f"{path}.{pname}" if path else pname, f"missing required value for {name}")


def _type_name(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin is Union or str(origin) == "<class 'types.UnionType'>":
        return " or ".join(_type_name(a) for a in args)
    if hint is _NONE:
        return "None"
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def check_targets(cfg: DictConfig, path: str = "", provided: Mapping[str, Sequence[str]] = {},
                  own: Mapping[str, Sequence[str]] = {}) -> None:
    """Walk the config; check every node that has a `_target_`."""
    if not isinstance(cfg, DictConfig):
        return
    if "_target_" in cfg:
        try:
            target = get_object(cfg._target_)
        except Exception as e:
            raise ConfigError(f"{path}._target_" if path else "_target_", f"cannot import {cfg._target_!r} ({e})") from e
        check_node(cfg, target, path, provided.get(path, ()), own.get(path, ()))
    for key in cfg:
        child = cfg._get_node(key)
        if isinstance(child, DictConfig):
            check_targets(child, f"{path}.{key}" if path else str(key), provided, own)
