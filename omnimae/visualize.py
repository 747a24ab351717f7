"""Reconstruction grids: original | masked | reconstruction | reconstruction + visible."""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import torch

from omnimae.io import atomic_path
from omnimae.model import MaskedAutoencoder

COLUMNS = ("original", "masked", "reconstruction", "reconstruction + visible")


class Reconstructed(NamedTuple):
    """A batch after masking and reconstruction, all in the input's model space and shape."""

    original: torch.Tensor
    reconstruction: torch.Tensor  # every patch as the decoder predicts it (target normalization undone)
    hidden: torch.Tensor  # 1 where a patch was masked
    loss: torch.Tensor


@torch.no_grad()
def reconstruct_batch(model: MaskedAutoencoder, x, modality: str, generator: torch.Generator | None = None,
                      mask: torch.Tensor | None = None) -> Reconstructed:
    """Mask x (the given token mask [B, N], 1 = hidden, else the adapter's masking from generator) and reconstruct it."""
    adapter = model.adapters[modality]
    out = model.forward_modality(x, modality, mask=mask, generator=generator)
    patches = out.patches
    recon = adapter.untokenize(patches.replace(adapter.prediction_to_values(patches, out.pred.float())))
    hidden = adapter.untokenize(patches.replace(out.mask.unsqueeze(-1).expand_as(patches.values).to(patches.values)))
    return Reconstructed(adapter.pixels(x), recon, hidden, out.loss)


@torch.no_grad()
def reconstruction_panels(
    model: MaskedAutoencoder, x, modality: str, generator: torch.Generator | None = None, mask: torch.Tensor | None = None
) -> list[torch.Tensor]:
    """Four displayable tensors [B, H, W, C] in [0, 1] for the columns of COLUMNS."""
    return panels_of(model.adapters[modality], reconstruct_batch(model, x, modality, generator, mask))


def panels_of(adapter, r: Reconstructed) -> list[torch.Tensor]:
    """The four columns of a reconstructed batch, drawn by its adapter."""
    x, recon, hidden = r.original, r.reconstruction, r.hidden
    pasted = x * (1 - hidden) + recon * hidden
    shown = adapter.to_display(x)
    m = adapter.to_display(hidden, mask=True)  # [B, H, W, 1]
    masked = shown * (1 - m) + 0.5 * m  # hidden patches in grey
    # on the original's scale: the visible patches of the last panel look as in the first
    return [shown, masked, adapter.to_display(recon, reference=x), adapter.to_display(pasted, reference=x)]


def save_grid(panels: list[torch.Tensor], path: str | Path, title: str = "") -> Path:
    """Write the panels as a PNG grid (one row per sample), atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, cols = panels[0].shape[0], len(panels)
    height, width = panels[0].shape[1:3]
    cell_w = min(8.0, 2.0 * max(1.0, width / height))  # wide panels (spectrograms, frame strips) get wide cells
    fig, axes = plt.subplots(rows, cols, figsize=(cell_w * cols, 2.0 * rows + 0.4), squeeze=False)
    for r in range(rows):
        for c in range(cols):
            img = panels[c][r].cpu().numpy()
            ax = axes[r][c]
            ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray" if img.shape[-1] == 1 else None,
                      vmin=0, vmax=1, aspect="auto", interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(COLUMNS[c] if c < len(COLUMNS) else "", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)
    return Path(path)
