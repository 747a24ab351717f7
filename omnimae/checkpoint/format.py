"""omnimae's own checkpoint format: reading, the metadata every file carries, rebuilding, saving.

A Lightning .ckpt (written by training) and a .safetensors export carry the same metadata
(checkpoint_metadata): the resolved config, so the model is rebuilt from the file alone, and a
checksum of the weights. Other layouts (official MAE, Hugging Face, timm) are in convert.py.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from omnimae import __version__
from omnimae.checkpoint.trust import stored_model_config, verify_weights, weights_sha256
from omnimae.errors import CheckpointError
from omnimae.io import atomic_path
from omnimae.model import MaskedAutoencoder

StateDict = dict[str, torch.Tensor]


# --- reading -------------------------------------------------------------------------------
def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The raw checkpoint dict; safetensors files give {'state_dict': ..., 'omnimae': metadata}."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                state = {k: f.get_tensor(k) for k in f.keys()}
            ckpt: dict[str, Any] = {"state_dict": state}
            if "omnimae" in meta:
                ckpt["omnimae"] = json.loads(meta["omnimae"])
        else:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{path}: cannot read checkpoint ({type(e).__name__}: {str(e)[:300]})") from e
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path}: expected a dict of tensors, got {type(ckpt).__name__}")
    meta = ckpt.get("omnimae")
    if isinstance(meta, dict) and isinstance(ckpt.get("state_dict"), dict):
        verify_weights(ckpt["state_dict"], meta.get("weights_sha256"), str(path))
    return ckpt


def state_dict_of(ckpt: dict[str, Any]) -> StateDict:
    """The tensors of a checkpoint dict, under the MaskedAutoencoder's own names where omnimae wrote it."""
    for key in ("state_dict", "model"):
        if key in ckpt and isinstance(ckpt[key], dict):
            sd = ckpt[key]
            break
    else:
        sd = ckpt
    if "omnimae" in ckpt:  # a Lightning checkpoint holds the MaskedAutoencoder under 'model.'
        sd = {k[len("model."):]: v for k, v in sd.items() if k.startswith("model.")} or sd
    return {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}


# --- loading into a model ------------------------------------------------------------------
def load_weights(model: MaskedAutoencoder, sd: StateDict, source: str, strict: bool = True) -> None:
    """Load sd into model, or raise a CheckpointError that names the file and the keys that do not fit.

    The adapters of modalities the model does not have are left out: a joint checkpoint loads into
    a model of any subset of its modalities."""
    own = model.state_dict()
    sd = {k: v for k, v in sd.items() if not (k.startswith("adapters.") and k.split(".")[1] not in model.adapters)}
    wrong = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in sd.items()
        if k in own and v.shape != own[k].shape
    ]
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    problems = []
    if wrong:
        problems.append("shapes do not fit the config: " + "; ".join(wrong[:5]) + (" ..." if len(wrong) > 5 else ""))
    if strict and missing:
        problems.append(f"missing keys: {', '.join(missing[:6])}" + (" ..." if len(missing) > 6 else ""))
    if unexpected:
        problems.append(f"unexpected keys: {', '.join(unexpected[:6])}" + (" ..." if len(unexpected) > 6 else ""))
    if problems:
        raise CheckpointError(f"{source}: " + " | ".join(problems))
    model.load_state_dict(sd, strict=strict)


def load_model(path: str | Path, trust_checkpoint: bool = False) -> tuple[MaskedAutoencoder, DictConfig]:
    """Rebuild a model from an omnimae checkpoint alone (its stored config), with its weights.

    The stored config may build only omnimae's own classes (see checkpoint_trust); trust_checkpoint=True
    lets a file you trust build others, e.g. your plugin adapters. Returns the model and the config's
    `model` and `modalities` parts (what rebuilds the model and its data)."""
    return rebuild_model(read_checkpoint(path), str(path), trust_checkpoint)


def rebuild_model(ckpt: dict[str, Any], source: str, trust_checkpoint: bool = False) -> tuple[MaskedAutoencoder, DictConfig]:
    """load_model for a checkpoint dict already read (read_checkpoint) from `source`."""
    from omnimae.config.build import build_model

    meta = ckpt.get("omnimae")
    if not isinstance(meta, dict) or "config" not in meta:
        raise CheckpointError(
            f"{source}: not an omnimae checkpoint (no stored config); official and Hugging Face weights "
            "load into a model built from a config with load_pretrained"
        )
    cfg = stored_model_config(meta["config"], source, trust=trust_checkpoint)
    model = build_model(cfg)
    if not isinstance(model, MaskedAutoencoder):
        raise CheckpointError(f"{source}: the stored config built a {type(model).__name__}, not a MaskedAutoencoder")
    load_weights(model, state_dict_of(ckpt), source)
    return model, cfg


def checkpoint_metadata(model: MaskedAutoencoder, config: DictConfig | Mapping[str, Any] | None,
                        state: Mapping[str, Any]) -> dict[str, Any]:
    """The `omnimae` entry of every checkpoint omnimae writes (.ckpt and .safetensors alike): the library
    version, the resolved config that rebuilds the model (rebuild_model; the target type is its
    adapters' norm_pix_loss), the model's modalities, and the SHA-256 of `state`, the weights as
    stored in the file, which read_checkpoint checks."""
    if isinstance(config, DictConfig):
        config = OmegaConf.to_container(config, resolve=True)
    return {"version": __version__, "config": config, "modalities": list(model.adapters),
            "weights_sha256": weights_sha256(state)}


def save_safetensors(model: MaskedAutoencoder, cfg: DictConfig | dict, path: str | Path, dtype: torch.dtype | None = None) -> Path:
    """Weights as safetensors with the resolved config in the metadata, written atomically.

    dtype (e.g. torch.float16) halves the file; loading casts back to the model's dtype.
    """
    from safetensors.torch import save_file

    tensors = {k: v.detach().to(dtype or v.dtype).contiguous().cpu() for k, v in model.state_dict().items()}
    meta = {"omnimae": json.dumps(checkpoint_metadata(model, cfg, tensors))}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return Path(path)
