"""`omnimae stats`: log-mel statistics of a folder of audio, printed as the overrides that use them."""
from __future__ import annotations

from omegaconf import DictConfig

from omnimae.errors import ConfigError


def run_stats(cfg: DictConfig) -> dict:
    """Compute the folder's log-mel mean and std with the adapter's feature settings, print them as overrides."""
    from omnimae.modalities.audio import compute_stats

    a = cfg.modalities.audio.adapter
    if not cfg.data.root:
        raise ConfigError("data.root", "give the folder of audio files: omnimae stats data.root=PATH")
    mean, std, files = compute_stats(cfg.data.root, a.sample_rate, a.target_length, a.mel_bins)
    print(f"omnimae stats: log-mel features of {files} files under {cfg.data.root}")
    print(f"  mean  {mean:.7g}\n  std   {std:.7g}")
    print(f"use them: modalities.audio.adapter.mean={mean:.7g} modalities.audio.adapter.std={std:.7g}")
    return {"root": str(cfg.data.root), "files": files, "mean": mean, "std": std}
