"""Conversions between omnimae's layout and the others: the official facebookresearch/mae layout
({'model': state_dict}), Hugging Face ViTMAE (old hub names and transformers>=5 names) and, for
export, timm's VisionTransformer."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from omnimae.checkpoint.format import StateDict, load_weights, read_checkpoint, state_dict_of
from omnimae.errors import CheckpointError, ConfigError
from omnimae.model import MaskedAutoencoder
from omnimae.patches import grid_coords
from omnimae.pos_embed import sincos_pos_embed
from omnimae.tokenizers import PatchTokenizer2D


def detect_layout(sd: StateDict) -> str:
    """The layout a state dict's names follow: omnimae, hf, official or unknown."""
    keys = set(sd)
    if any(k.startswith("adapters.") for k in keys):
        return "omnimae"
    if any(re.match(r"^(vit\.)?(embeddings|encoder\.layer|layers)\.", k) for k in keys) or any(k.startswith("decoder.decoder_") for k in keys):
        return "hf"
    if "patch_embed.proj.weight" in keys and any(k.startswith("blocks.") for k in keys):
        return "official"
    return "unknown"


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
    """Hugging Face ViTMAE names (separate q/k/v) -> the official layout (fused qkv). The decoder's blocks are
    `decoder.decoder_layers.N` in memory and in old hub files, `decoder.decoder_encoder.layer.N` in files that
    transformers 5 writes with save_pretrained."""
    out: StateDict = {}
    for key, value in sd.items():
        k = key[4:] if key.startswith("vit.") else key
        if k in _HF_TOP:
            out[_HF_TOP[k]] = value
            continue
        m = re.match(r"^(?:encoder\.layer|layers)\.(\d+)\.(.*)$", k) or re.match(r"^decoder\.(?:decoder_layers|decoder_encoder\.layer)\.(\d+)\.(.*)$", k)
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


@dataclass(frozen=True)
class SquareGrid:
    """What the official MAE and timm layouts hold of a modality: square images of img_size pixels and
    in_chans channels, cut into patch_size x patch_size patches (a Conv2d stem, 2D sin-cos positions)."""

    img_size: int
    patch_size: int
    in_chans: int


def official_grid(model: MaskedAutoencoder, modality: str) -> SquareGrid:
    """The square grid of `modality`'s adapter, read from what every adapter declares (its tokenizer
    and its example_input), or a CheckpointError naming the modality and why the layout cannot hold it."""
    if modality not in model.adapters:
        raise ConfigError("modality", f"{modality!r} is not in the checkpoint (it has {list(model.adapters)})")
    adapter = model.adapters[modality]
    tokenizer = adapter.tokenizer
    cannot = f"modality {modality!r} cannot be written in the official MAE or timm layout"
    if not isinstance(tokenizer, PatchTokenizer2D):
        raise CheckpointError(f"{cannot}: it tokenizes with {type(tokenizer).__name__}, and the layout holds 2D patches only")
    p, q = tokenizer.patch_size
    if p != q:
        raise CheckpointError(f"{cannot}: its patches are {p}x{q}, and the layout holds square patches only")
    x = adapter.example_input(1)
    height, width = adapter.pixels(x).shape[-2:]
    if height != width or height % p:
        raise CheckpointError(f"{cannot}: its inputs are {height}x{width}, and the layout holds square images "
                              f"of whole {p}x{p} patches only")
    if adapter.position_axes not in (None, (0, 1)) or adapter.token_embeddings(adapter.tokenize(x), False) is not None:
        raise CheckpointError(f"{cannot}: its tokens carry embeddings beyond the 2D sin-cos positions")
    return SquareGrid(img_size=height, patch_size=p, in_chans=tokenizer.in_chans)


def omnimae_to_official(model: MaskedAutoencoder, modality: str = "image") -> StateDict:
    """omnimae -> the official facebookresearch/mae layout (what `{'model': ...}` holds)."""
    grid = official_grid(model, modality)
    p, c, side = grid.patch_size, grid.in_chans, grid.img_size // grid.patch_size
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
    grid = official_grid(model, modality)
    blk = model.blocks[0]
    return dict(
        img_size=grid.img_size,
        patch_size=grid.patch_size,
        in_chans=grid.in_chans,
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
def convert_to_omnimae(sd: StateDict, source: str, modality: str = "image") -> StateDict:
    """sd in omnimae's layout, from any layout detect_layout knows; the official layout's stem goes to `modality`."""
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
