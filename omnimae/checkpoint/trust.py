"""What a checkpoint file may make omnimae do, and whether its weights are the ones written.

A checkpoint carries the config its model was built from, and omnimae rebuilds the model by
instantiating that config. A file from elsewhere is someone else's config: `_target_` may name any
callable (builtins.open, shutil.copyfile, torch.load of a pickle), so every node is checked against
the classes omnimae knows before anything is imported or called. Only the parts that rebuild a
model and its data (`model`, `modalities`) are kept; the rest is never built from a file.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from functools import lru_cache
from importlib.resources import files
from typing import Any

import torch
import yaml
from omegaconf import DictConfig, OmegaConf

from omnimae.errors import CheckpointError, ConfigError

TRUST_KEY = "trust_checkpoint"
REBUILT = ("model", "modalities")  # the only parts of a stored config omnimae builds objects from
SHIPPED_CONFIGS = ("model", "modality")  # config groups whose targets are omnimae's own classes


def _leaves(node: Any, path: str = "") -> Iterator[tuple[str, Any, bool]]:
    """(key path, value, is a `_target_`) of every leaf at any depth: dicts, lists, `_args_` and
    `_partial_` nodes alike. A `_target_` is a leaf whatever its value."""
    if isinstance(node, Mapping):
        children = [(f"{path}.{k}" if path else str(k), v, k == "_target_") for k, v in node.items()]
    elif isinstance(node, (list, tuple)):
        children = [(f"{path}[{i}]", v, False) for i, v in enumerate(node)]
    else:
        yield path, node, False
        return
    for here, child, is_target in children:
        if is_target:
            yield here, child, True
        else:
            yield from _leaves(child, here)


def _targets(node: Any) -> list[tuple[str, Any]]:
    return [(path, value) for path, value, is_target in _leaves(node) if is_target]


def _dotted(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


@lru_cache(maxsize=1)
def _shipped_targets() -> frozenset[str]:
    """The model and modality classes (adapters, data sources) named by omnimae's own config files."""
    found: set[str] = set()
    root = files("omnimae.configs")
    for group in SHIPPED_CONFIGS:
        for item in root.joinpath(group).iterdir():
            if item.name.endswith(".yaml"):
                found |= {t for _, t in _targets(yaml.safe_load(item.read_text()) or {}) if isinstance(t, str)}
    return frozenset(found)


def known_targets() -> frozenset[str]:
    """Dotted names a stored config may build: the classes omnimae's model and modality configs name,
    every registered adapter (also those a user's code registered by importing it), the tokenizers and
    omnimae's own objectives (a plug-in objective needs trust)."""
    from omnimae import tokenizers
    from omnimae.adapter import MODALITIES
    from omnimae.objectives import OBJECTIVES

    names = set(_shipped_targets()) | {_dotted(cls) for cls in MODALITIES.values()} | set(OBJECTIVES)
    for name in tokenizers.__all__:
        names |= {_dotted(getattr(tokenizers, name)), f"omnimae.tokenizers.{name}"}
    return frozenset(names)


def check_trust_flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(TRUST_KEY, f"expected true or false, got {value!r}")
    return value


def stored_model_config(config: Any, source: str, trust: bool = False) -> DictConfig:
    """The parts of a checkpoint's stored config that rebuild its model and data (`model`, `modalities`,
    plus plain settings without any `_target_`), checked before anything is built: unless trust is
    true, every `_target_` at any depth must be one of known_targets() and no value may be an
    interpolation. Raises a CheckpointError that names the file, the key and the target."""
    if not isinstance(config, Mapping) or not all(isinstance(config.get(k), Mapping) for k in REBUILT):
        raise CheckpointError(f"{source}: the stored config has no model and modalities nodes to rebuild the model from")
    kept = {k: v for k, v in config.items() if k in REBUILT or not _targets(v)}
    if not check_trust_flag(trust):
        known = known_targets()
        for path, target in _targets(kept):
            if not isinstance(target, str) or target not in known:
                raise CheckpointError(
                    f"{source}: the stored config would build {target!r} (at {path}), which is not one of omnimae's "
                    f"model, adapter, tokenizer, data or objective classes. A checkpoint's config runs code when built: "
                    f"only if you trust this file and the classes it names (e.g. your own plugin), pass {TRUST_KEY}=true"
                )
        # a resolver such as oc.create would turn a string into a new node after the check above
        for path, value, _ in _leaves(kept):
            if isinstance(value, str) and "${" in value:
                raise CheckpointError(
                    f"{source}: the stored config holds an interpolation at {path} (omnimae stores resolved configs, so "
                    f"the file was edited); only if you trust this file, pass {TRUST_KEY}=true"
                )
    try:
        return OmegaConf.create(kept)
    except Exception as e:
        raise CheckpointError(f"{source}: the stored config cannot be read ({type(e).__name__}: {str(e)[:200]})") from e


# --- checksum of the weights -----------------------------------------------------------------
def weights_sha256(state: Mapping[str, Any]) -> str | None:
    """SHA-256 over the tensors of a state dict in key order: per tensor its name, dtype and shape, then
    its bytes as stored in memory. None where a tensor is sharded (an FSDP sharded state dict), as
    there are no whole bytes to hash."""
    tensors = {k: v.detach() for k, v in state.items() if isinstance(v, torch.Tensor)}
    if any(type(t) is not torch.Tensor for t in tensors.values()):
        return None
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].cpu().contiguous()
        digest.update(json.dumps([name, str(t.dtype), list(t.shape)]).encode() + b"\n")
        digest.update(t.reshape(-1).view(torch.uint8).numpy())  # no copy: the tensor's own bytes
    return digest.hexdigest()


def verify_weights(state: Mapping[str, Any], expected: Any, source: str) -> None:
    """Raise a CheckpointError naming the file when its weights do not hash to the stored checksum.
    Files without one (omnimae 0.1.0 and other writers) are not checked."""
    if expected is None:
        return
    found = weights_sha256(state)
    if found != expected:
        raise CheckpointError(
            f"{source}: the weights do not match the SHA-256 stored with them ({str(found)[:12]}... instead of "
            f"{str(expected)[:12]}...): the file was changed or damaged after omnimae wrote it"
        )
