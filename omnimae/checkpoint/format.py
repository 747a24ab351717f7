"""Reading, converting and writing checkpoints.

Layouts: omnimae's own (a Lightning .ckpt or a .safetensors export, both carrying the resolved
config, so the model is rebuilt from the file alone); the official facebookresearch/mae layout
({'model': state_dict}); Hugging Face ViTMAE (old hub names and transformers>=5 names); and,
for export, timm's VisionTransformer.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from omnimae import __version__
from omnimae.checkpoint.trust import stored_model_config, verify_weights, weights_sha256
from omnimae.errors import CheckpointError, ConfigError
from omnimae.io import atomic_path
from omnimae.model import MaskedAutoencoder
from omnimae.pos_embed import sincos_pos_embed
from omnimae.tokenizers.patch2d import grid_coords

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
    for key in ("state_dict", "model"):
        if key in ckpt and isinstance(ckpt[key], dict):
            sd = ckpt[key]
            break
    else:
        sd = ckpt
    if "omnimae" in ckpt:  # a Lightning checkpoint holds the MaskedAutoencoder under 'model.'
        sd = {k[len("model."):]: v for k, v in sd.items() if k.startswith("model.")} or sd
    return {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}


def detect_layout(sd: StateDict) -> str:
    keys = set(sd)
    if any(k.startswith("adapters.") for k in keys):
        return "omnimae"
    if any(re.match(r"^(vit\.)?(embeddings|encoder\.layer|layers)\.", k) for k in keys) or any(k.startswith("decoder.decoder_") for k in keys):
        return "hf"
    if "patch_embed.proj.weight" in keys and any(k.startswith("blocks.") for k in keys):
        return "official"
    return "unknown"


# --- conversions ---------------------------------------------------------------------------
_HF_LAYER = [
    (r"layernorm_before\.", "norm1."),
    (r"layernorm_after\.", "norm2."),
    (r"attention\.(attention\.)?(query|q_proj)\.", "attn.q."),
    (r"attention\.(attention\.)?(key|k_proj)\.", "attn.k."),
    (r"attention\.(attention\.)?(value|v_proj)\.", "attn.v."),
    (r"attention\.(output\.dense|o_proj)\.", "attn.proj."),
    (r"(intermediate\.dense|mlp\.fc1)\.", "mlp.fc1."),
    (r"(output\.dense|mlp\.fc2)\.", "mlp.fc2."),
]
_HF_TOP = {
    "embeddings.cls_token": "cls_token",
    "embeddings.position_embeddings": "pos_embed",
    "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
    "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
    "layernorm.weight": "norm.weight",
    "layernorm.bias": "norm.bias",
    "decoder.mask_token": "mask_token",
    "decoder.decoder_pos_embed": "decoder_pos_embed",
}


def hf_to_official(sd: StateDict) -> StateDict:
    """Hugging Face ViTMAE names (separate q/k/v) -> the official layout (fused qkv)."""
    out: StateDict = {}
    for key, value in sd.items():
        k = key[4:] if key.startswith("vit.") else key
        if k in _HF_TOP:
            out[_HF_TOP[k]] = value
            continue
        m = re.match(r"^(?:encoder\.layer|layers)\.(\d+)\.(.*)$", k) or re.match(r"^decoder\.decoder_layers\.(\d+)\.(.*)$", k)
        if m:
            prefix = "blocks" if not k.startswith("decoder.") else "decoder_blocks"
            rest = m.group(2)
            for pattern, repl in _HF_LAYER:
                if re.match(pattern, rest):
                    rest = re.sub(pattern, repl, rest, count=1)
                    break
            out[f"{prefix}.{m.group(1)}.{rest}"] = value
        elif k.startswith("decoder."):
            out[k[len("decoder."):]] = value  # decoder_embed, decoder_norm, decoder_pred
        else:
            out[k] = value
    for prefix in {k.rsplit(".attn.", 1)[0] for k in out if ".attn.q." in k}:
        for kind in ("weight", "bias"):
            parts = [out.pop(f"{prefix}.attn.{n}.{kind}") for n in "qkv" if f"{prefix}.attn.{n}.{kind}" in out]
            if len(parts) == 3:
                out[f"{prefix}.attn.qkv.{kind}"] = torch.cat(parts, dim=0)
    return out


def _fixed_pos_offset(sd: StateDict, key: str, source: str, cls_has_offset: bool) -> torch.Tensor | None:
    """omnimae builds positions from coordinates: a stored embedding must be the fixed 2D sin-cos,
    plus at most one constant vector (a modality embedding folded in by export), which is returned."""
    if key not in sd:
        return None
    pos = sd[key][0].float()  # [1 + N, D]
    side = int(round((pos.shape[0] - 1) ** 0.5))
    if side * side != pos.shape[0] - 1:
        raise CheckpointError(f"{source}: {key} has {pos.shape[0] - 1} positions, not a square grid")
    diff = pos[1:] - sincos_pos_embed(grid_coords(side, side), pos.shape[1])  # [N, D]
    offset = diff.mean(0)
    cls_expected = offset if cls_has_offset else torch.zeros_like(offset)
    if (diff - offset).abs().max() > 1e-4 or (pos[0] - cls_expected).abs().max() > 1e-4:
        raise CheckpointError(
            f"{source}: {key} is not the fixed 2D sin-cos embedding; omnimae builds positions from "
            "token coordinates and cannot load learned position embeddings"
        )
    return offset.view(1, 1, -1)


def official_to_omnimae(sd: StateDict, modality: str = "image", source: str = "checkpoint") -> StateDict:
    """Official facebookresearch/mae layout -> omnimae (conv stem -> linear stem in (p, q, c) order)."""
    enc_offset = _fixed_pos_offset(sd, "pos_embed", source, cls_has_offset=False)
    dec_offset = _fixed_pos_offset(sd, "decoder_pos_embed", source, cls_has_offset=True)
    out: StateDict = {}
    a = f"adapters.{modality}."
    for k, v in sd.items():
        if k in ("pos_embed", "decoder_pos_embed"):
            continue
        if k == "patch_embed.proj.weight":  # [D, C, p, q] -> [D, p*q*C]
            out[a + "stem.weight"] = v.permute(0, 2, 3, 1).reshape(v.shape[0], -1)
        elif k == "patch_embed.proj.bias":
            out[a + "stem.bias"] = v
        elif k.startswith("decoder_pred."):
            out[a + "head." + k.split(".", 1)[1]] = v
        else:
            out[k] = v
    if "cls_token" in sd:
        out[a + "modality_embed"] = enc_offset if enc_offset is not None else torch.zeros_like(sd["cls_token"])
    if "mask_token" in sd:
        out[a + "decoder_modality_embed"] = dec_offset if dec_offset is not None else torch.zeros_like(sd["mask_token"])
    return out


def _image_adapter(model: MaskedAutoencoder, modality: str):
    if modality not in model.adapters:
        raise ConfigError("modality", f"{modality!r} is not in the checkpoint (it has {list(model.adapters)})")
    adapter = model.adapters[modality]
    if not hasattr(adapter, "patch_size") or not hasattr(adapter, "img_size"):
        raise CheckpointError(f"modality {modality!r} has no 2D image grid to export")
    return adapter


def omnimae_to_official(model: MaskedAutoencoder, modality: str = "image") -> StateDict:
    """omnimae -> the official facebookresearch/mae layout (what `{'model': ...}` holds)."""
    adapter = _image_adapter(model, modality)
    p, c, side = adapter.patch_size, adapter.in_chans, adapter.img_size // adapter.patch_size
    coords = grid_coords(side, side)
    out: StateDict = {}
    a = f"adapters.{modality}."
    for k, v in model.state_dict().items():
        if k.startswith("adapters."):
            continue
        out[k] = v.detach().clone()
    w = model.state_dict()[a + "stem.weight"]
    out["patch_embed.proj.weight"] = w.reshape(w.shape[0], p, p, c).permute(0, 3, 1, 2).contiguous()
    out["patch_embed.proj.bias"] = model.state_dict()[a + "stem.bias"].clone()
    out["decoder_pred.weight"] = model.state_dict()[a + "head.weight"].clone()
    out["decoder_pred.bias"] = model.state_dict()[a + "head.bias"].clone()
    zero = lambda d: torch.zeros(1, d)  # noqa: E731 - the CLS position
    out["pos_embed"] = torch.cat([zero(model.embed_dim), sincos_pos_embed(coords, model.embed_dim)]).unsqueeze(0)
    out["decoder_pos_embed"] = torch.cat(
        [zero(model.decoder_embed_dim), sincos_pos_embed(coords, model.decoder_embed_dim)]
    ).unsqueeze(0)
    # the official layout has no modality embedding: fold it into the positions (exactly invertible)
    out["pos_embed"][:, 1:] += model.state_dict()[a + "modality_embed"][0]
    out["decoder_pos_embed"] += model.state_dict()[a + "decoder_modality_embed"][0]
    return out


def to_timm_vit(model: MaskedAutoencoder, modality: str = "image") -> StateDict:
    """The encoder as a timm VisionTransformer state dict (global_pool='token' or 'avg', num_classes=0)."""
    official = omnimae_to_official(model, modality)
    keep = ("cls_token", "pos_embed", "patch_embed.", "blocks.", "norm.")
    return {k: v for k, v in official.items() if k.startswith(keep)}


def timm_vit_kwargs(model: MaskedAutoencoder, modality: str = "image") -> dict[str, Any]:
    """Arguments for timm.models.VisionTransformer that fit to_timm_vit's state dict."""
    adapter = _image_adapter(model, modality)
    blk = model.blocks[0]
    return dict(
        img_size=adapter.img_size,
        patch_size=adapter.patch_size,
        in_chans=adapter.in_chans,
        embed_dim=model.embed_dim,
        depth=len(model.blocks),
        num_heads=blk.attn.num_heads,
        mlp_ratio=blk.mlp.fc1.out_features / model.embed_dim,
        qkv_bias=True,
        num_classes=0,
        global_pool="token",
        fc_norm=False,  # the final norm before pooling, as omnimae's mean-pooled features
    )


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


def convert_to_omnimae(sd: StateDict, source: str, modality: str = "image") -> StateDict:
    layout = detect_layout(sd)
    if layout == "omnimae":
        return sd
    if layout == "hf":
        return official_to_omnimae(hf_to_official(sd), modality, source)
    if layout == "official":
        return official_to_omnimae(sd, modality, source)
    raise CheckpointError(f"{source}: unrecognized checkpoint layout (keys such as {list(sd)[:4]})")


def load_pretrained(model: MaskedAutoencoder, path: str | Path, modality: str = "image", strict: bool = True) -> None:
    """Load an omnimae, official MAE or Hugging Face ViTMAE checkpoint into an existing model."""
    sd = convert_to_omnimae(state_dict_of(read_checkpoint(path)), str(path), modality)
    load_weights(model, sd, str(path), strict=strict)


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


def save_safetensors(model: MaskedAutoencoder, cfg: DictConfig | dict, path: str | Path, dtype: torch.dtype | None = None) -> Path:
    """Weights as safetensors with the resolved config in the metadata, written atomically.

    dtype (e.g. torch.float16) halves the file; loading casts back to the model's dtype.
    """
    from safetensors.torch import save_file

    config = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
    tensors = {k: v.detach().to(dtype or v.dtype).contiguous().cpu() for k, v in model.state_dict().items()}
    meta = {"omnimae": json.dumps({"version": __version__, "config": config, "modalities": list(model.adapters),
                                   "weights_sha256": weights_sha256(tensors)})}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return Path(path)
