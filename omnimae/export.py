"""`omnimae export`: an omnimae checkpoint as safetensors, official MAE or timm ViT weights, or its encoder as ONNX."""
from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig

from omnimae.checkpoint.convert import omnimae_to_official, to_timm_vit
from omnimae.checkpoint.format import load_model, save_safetensors
from omnimae.errors import ConfigError
from omnimae.io import atomic_path, refuse_overwrite


def run_export(cfg: DictConfig) -> Path:
    refuse_overwrite(cfg.output, cfg.checkpoint, overwrite=cfg.overwrite)
    model, mcfg = load_model(cfg.checkpoint, trust_checkpoint=cfg.trust_checkpoint)
    out = Path(cfg.output)
    dtypes = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
    if cfg.dtype not in dtypes:
        raise ConfigError("dtype", f"must be one of {sorted(dtypes)}, got {cfg.dtype!r}")
    if cfg.format == "safetensors":
        save_safetensors(model, mcfg, out, dtype=dtypes[cfg.dtype])
    elif cfg.format in ("official", "timm"):
        sd = omnimae_to_official(model, cfg.modality) if cfg.format == "official" else to_timm_vit(model, cfg.modality)
        with atomic_path(out) as tmp:
            torch.save({"model": sd} if cfg.format == "official" else sd, tmp)
    elif cfg.format == "onnx":
        from omnimae.serve.onnx import export_onnx

        worst = export_onnx(model, cfg.modality, out)
        print(f"onnxruntime's features match PyTorch's to {worst:.1e} (dynamic batch)")
    else:
        raise ConfigError("format", f"must be safetensors, official, timm or onnx, got {cfg.format!r}")
    print(f"wrote {cfg.format} weights to {out}")
    return out
