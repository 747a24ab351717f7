"""Config -> objects, with every check done before training starts."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from hydra.utils import get_object, instantiate
from omegaconf import DictConfig, OmegaConf

from omnimae.config.schema import ModalityRun, OptimConfig, check_model, check_node, check_targets
from omnimae.errors import ConfigError
from omnimae.hardware import Choice, settle
from omnimae.model import MaskedAutoencoder
from omnimae.objectives import OBJECTIVES, MaskedMSE, Objective

ADAPTER_DIMS = ("embed_dim", "decoder_embed_dim")
log = logging.getLogger("omnimae")


def _prefixed(path: str, fn, *args, **kwargs):
    """Call fn; re-raise a ConfigError (or a constructor's TypeError) with the node's key path."""
    try:
        return fn(*args, **kwargs)
    except Exception as e:
        cause = e
        while not isinstance(cause, ConfigError) and cause.__cause__ is not None:
            cause = cause.__cause__
        if isinstance(cause, ConfigError):
            raise ConfigError(f"{path}.{cause.key}", cause.problem) from None
        if type(e).__name__ in ("InstantiationException", "TypeError"):
            raise ConfigError(path, str(e)) from e
        raise


def validate(cfg: DictConfig) -> dict[str, Choice]:
    """Check the whole composed config: keys, types and ranges, naming the offending key.
    `trainer.precision` and `trainer.threads` are resolved here, in place, to what this machine runs
    fast; returns both choices with their reasons."""
    # long: each part of the config checked in the order a reader meets it, every check naming its key
    for key in ("model", "modalities", "trainer", "optim"):
        if key not in cfg or cfg[key] is None:
            raise ConfigError(key, "missing from the config")
    chosen = settle(cfg)  # before the Trainer's keys are checked: precision=auto is not a Lightning value
    if not cfg.modalities:
        raise ConfigError("modalities", "no modality selected (e.g. modality=image)")
    provided = {f"modalities.{m}.adapter": ADAPTER_DIMS for m in cfg.modalities}
    provided["model"] = ("adapters",)
    for m, node in cfg.modalities.items():  # before check_targets, whose message for a bad target lists nothing
        build_objective(node.get("loss"), f"modalities.{m}.loss")
    check_targets(cfg, provided=provided, own={"trainer": ("threads",)})
    check_model(cfg.model)
    check_node(cfg.optim, OptimConfig, "optim")
    _prefixed("optim", lambda: OptimConfig(**OmegaConf.to_container(cfg.optim, resolve=True)))
    for m, node in cfg.modalities.items():
        check_node(node, ModalityRun, f"modalities.{m}")
        _prefixed(f"modalities.{m}", lambda: ModalityRun(**OmegaConf.to_container(node, resolve=True)))
        if "adapter" not in node or node.adapter is None:
            raise ConfigError(f"modalities.{m}.adapter", "missing")
        for part in ("adapter", "data"):
            if isinstance(node.get(part), DictConfig) and "_target_" not in node[part]:
                # the likely cause leads: an experiment preset's settings for a modality that is not selected
                selected = [k for k, n in cfg.modalities.items() if "_target_" in (n.get("adapter") or {})] or ["..."]
                asked = selected[0] if len(selected) == 1 else f"[{','.join(selected)}]"
                raise ConfigError(
                    "experiment",
                    f"pass experiment=none with modality={asked}: the experiment preset (experiment=digits by default) "
                    f"sets up the {m} modality too, leaving modalities.{m} with settings but no modality config behind "
                    f"them (modalities.{m}.{part}._target_ is missing). To train {m} as well, list it: "
                    f"modality=[{','.join([*selected, m])}]",
                )
    _check_callbacks(cfg.get("callbacks") or {})
    if not isinstance(cfg.get("seed"), int) or isinstance(cfg.get("seed"), bool):
        raise ConfigError("seed", f"expected an integer, got {cfg.get('seed')!r}")
    if not isinstance(cfg.get("overwrite", False), bool):
        raise ConfigError("overwrite", f"expected true or false, got {cfg.get('overwrite')!r}")
    return chosen


# callbacks.<key>: (smallest value, what it means; None where null is allowed too)
CALLBACK_KEYS = {
    "reconstruction_every_n_steps": (0, "0 writes reconstructions only at the end"),
    "reconstruction_samples": (1, None),
    "max_nonfinite_steps": (1, None),
    "nonfinite_check_every_n_steps": (1, None),
    "checkpoint_every_n_steps": (1, "null keeps no step checkpoints"),
}


def _check_callbacks(node) -> None:
    import difflib

    for key in node:
        if key not in CALLBACK_KEYS:
            close = difflib.get_close_matches(key, list(CALLBACK_KEYS), n=1)
            raise ConfigError(f"callbacks.{key}", "unknown key" + (f"; did you mean '{close[0]}'?" if close else ""))
    for key, (low, note) in CALLBACK_KEYS.items():
        value = node.get(key, low)
        if value is None and key == "checkpoint_every_n_steps":
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            expected = "a positive integer" if low == 1 else f"an integer >= {low}"
            raise ConfigError(f"callbacks.{key}", f"expected {expected}, got {value!r}" + (f" ({note})" if note else ""))


def build_objective(node: DictConfig | None, path: str) -> Objective:
    """A modality's loss node -> its objective; no node (configs and checkpoints from before objectives
    were configurable) is the MAE paper's masked MSE. The target must be an omnimae.objectives.Objective
    (omnimae's own or a plug-in's subclass); else a ConfigError at path listing omnimae's own."""
    if node is None:
        return MaskedMSE()
    known = ", ".join(OBJECTIVES)
    if not isinstance(node, DictConfig) or "_target_" not in node:
        raise ConfigError(path, f"expected a node with a _target_, one of {known}; got {node!r}")
    try:
        target = get_object(node._target_)
    except Exception:
        target = None
    if not (isinstance(target, type) and issubclass(target, Objective)):
        raise ConfigError(f"{path}._target_", f"unknown loss {node._target_!r}; known: {known} (or a subclass of "
                                              "omnimae.objectives.Objective)")
    check_node(node, target, path)
    return _prefixed(path, instantiate, node)


def build_model(cfg: DictConfig) -> MaskedAutoencoder:
    adapters, objectives = {}, {}
    for m, node in cfg.modalities.items():
        dims = {k: cfg.model[k] for k in ADAPTER_DIMS}
        adapters[m] = _prefixed(f"modalities.{m}.adapter", instantiate, node.adapter, **dims)
        objectives[m] = build_objective(node.get("loss"), f"modalities.{m}.loss")
    model = _prefixed("model", instantiate, cfg.model, adapters=adapters, objectives=objectives, _convert_="object")
    model.config = OmegaConf.create({k: OmegaConf.to_container(cfg[k], resolve=True) for k in ("model", "modalities")})
    return model


def check_mask_ratios(model: MaskedAutoencoder) -> None:
    """Each modality's mask_ratio must leave tokens visible and hide some at its token count N (the
    MAE rule keeps int(N x (1 - ratio)); else a masking keeps one token anyway, or hides nothing), at
    every step of its schedule: tried on the adapter's example input at the schedule's least and
    greatest ratios (its ends and plateaus), before training, naming the key with the counts."""
    generator = torch.Generator().manual_seed(0)
    for m, adapter in model.adapters.items():
        patches = adapter.tokenize(adapter.example_input(1, generator))
        n = patches.values.shape[1]
        for key, ratio in adapter.mask_ratio_schedule.corners():
            problem = _mask_ratio_problem(adapter, patches, ratio, generator)
            if problem:
                raise ConfigError(f"modalities.{m}.adapter.{key}", problem)


def _mask_ratio_problem(adapter, patches, ratio: float, generator: torch.Generator) -> str | None:
    """Why this ratio fails at the adapter's token count (None: it fits), its mask drawn at this ratio."""
    n = patches.values.shape[1]
    hidden = int(adapter.mask(patches, generator=generator, mask_ratio=ratio).mask.sum())
    if int(n * (1 - ratio)) < 1 or hidden == n:
        return (f"{ratio} leaves no visible token of the {n}: int({n} x (1 - {ratio})) = {int(n * (1 - ratio))}; "
                f"at {n} tokens it can be at most {1 - 1 / n:.4g}")
    if hidden == 0:
        return f"{ratio} hides none of the {n} tokens with {adapter.masking} masking; raise it"
    return None


def build_data(cfg: DictConfig) -> dict[str, Any]:
    out = {}
    for m, node in cfg.modalities.items():
        if node.get("data") is None:
            raise ConfigError(f"modalities.{m}.data", "no data source configured for this modality")
        out[m] = _prefixed(f"modalities.{m}.data", instantiate, node.data)
    return out


def data_over(cfg: DictConfig, modality: str, root: str | Path):
    """The modality's data source (as cfg configures it) over one folder or file alone: no held-out split, no
    built-in set, no extra image folder, no manifest. What embed and the Python API read files with."""
    import copy

    from omegaconf import open_dict

    cfg = copy.deepcopy(cfg)
    if cfg.modalities[modality].get("data") is None:
        raise ConfigError(f"modalities.{modality}.data", "no data source configured to read files with")
    with open_dict(cfg):
        cfg.modalities = {modality: cfg.modalities[modality]}  # the model's other modalities have no files here
        node = cfg.modalities[modality].data
        node.root, node.val_fraction = str(Path(root).expanduser()), 0.0
        for extra in ("builtin", "image_root", "manifest"):
            if extra in node:
                node[extra] = None
    return build_data(cfg)[modality]
