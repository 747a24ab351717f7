"""`omnimae masks`: sample masks of each masking strategy on a modality's token grid, as PNGs.

Hidden tokens are dark, visible ones light, one square per token of the (h, w) plane. Grids with a
leading axis ((t, h, w) tubes, (c, h, w) channels) show their first frame or channel: the plane
strategies and tube masking repeat it over that axis.
"""
from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from omnimae.config.build import build_model
from omnimae.config.compose import compose
from omnimae.errors import ConfigError, OutputError
from omnimae.io import atomic_path
from omnimae.masking import masking_choice, masking_strategy


def sample_masks(adapter, strategies: dict[str, dict], samples: int, seed: int, mask_ratio: float) -> dict[str, torch.Tensor]:
    """{strategy: [samples, h, w] masks (1 = hidden)} on the first plane of the adapter's example input."""
    patches = adapter.tokenize(adapter.example_input(samples, torch.Generator().manual_seed(seed)))
    h, w = patches.grid[-2:] if len(patches.grid) > 1 else (1, patches.grid[0])
    out = {}
    for name, options in strategies.items():
        adapter.masking = name  # the adapter's own parameters for it (masking_params) follow its name
        params = {**adapter.masking_params(), **options}
        mask = masking_strategy(name)(patches, mask_ratio, generator=torch.Generator().manual_seed(seed), **params).mask
        out[name] = mask.view(samples, -1, h, w)[:, 0]  # [S, h, w]: the first frame or channel
    return out


def draw_masks(masks: dict[str, torch.Tensor], path: Path, title: str) -> Path:
    """One row per strategy, one column per sample, written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, cols = len(masks), next(iter(masks.values())).shape[0]
    h, w = next(iter(masks.values())).shape[1:]
    cell = 1.6
    fig, axes = plt.subplots(rows, cols, figsize=(cell * cols * max(1.0, w / h) + 1.0, cell * rows + 0.5), squeeze=False)
    for r, (name, m) in enumerate(masks.items()):
        for c in range(cols):
            ax = axes[r][c]
            ax.imshow(1 - m[c].float().numpy(), cmap="gray", vmin=-0.3, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r][0].set_ylabel(name, fontsize=10)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)
    return path


def _strategies(value, fitting: tuple[str, ...], modality: str) -> dict[str, dict]:
    if value == "all":
        return {name: {} for name in fitting}
    name, options = masking_choice(OmegaConf.to_container(value) if OmegaConf.is_config(value) else value)
    masking_strategy(name)  # an unknown name lists the registered ones
    if name not in fitting:
        raise ConfigError("masking", f"{name!r} does not fit the {modality} modality's tokens; choose from all, {', '.join(fitting)}")
    return {name: options}


def run_masks(cfg: DictConfig) -> list[str]:
    """Draw cfg.samples masks of the chosen strategies and write one PNG each (and an overview for all)."""
    if not isinstance(cfg.samples, int) or cfg.samples < 1:
        raise ConfigError("samples", f"expected a positive integer, got {cfg.samples!r}")
    model_cfg = compose("pretrain", ["experiment=none", "model=vit_tiny", f"modality={cfg.modality}"])
    adapter = build_model(model_cfg).adapters[cfg.modality].eval()
    ratio = adapter.mask_ratio if cfg.mask_ratio is None else cfg.mask_ratio
    if not isinstance(ratio, (int, float)) or not 0 < ratio < 1:
        raise ConfigError("mask_ratio", f"must lie in (0, 1), got {ratio!r}")
    strategies = _strategies(cfg.masking, tuple(adapter.maskings), cfg.modality)
    masks = sample_masks(adapter, strategies, cfg.samples, cfg.seed, float(ratio))
    out = Path(cfg.output)
    paths = {out / f"{cfg.modality}_{name}.png": {name: m} for name, m in masks.items()}
    if cfg.masking == "all":
        paths[out / f"{cfg.modality}_all.png"] = masks
    taken = [str(p) for p in paths if p.exists()]
    if taken and not cfg.overwrite:
        raise OutputError(f"{', '.join(taken)}: already exist; pass overwrite=true to replace them")
    grid = "x".join(map(str, next(iter(masks.values())).shape[1:]))
    for path, rows in paths.items():
        draw_masks(rows, path, f"{cfg.modality}: {grid} tokens, mask_ratio {ratio:g}, seed {cfg.seed}")
        print(f"omnimae masks: wrote {path}")
    return [str(p) for p in paths]
