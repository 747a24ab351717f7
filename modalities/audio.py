"""Audio as log-mel spectrograms, following AudioMAE.

A clip is read with soundfile (WAV, FLAC, OGG), mixed down to mono and resampled to
`sample_rate`; its mean is removed and Kaldi-compatible filter banks are computed with
`torchaudio.compliance.kaldi.fbank` (128 mel bins, 25 ms frames, 10 ms shift, hanning window,
htk_compat, no energy, no dither). The [frames, mel_bins] features are zero-padded or cropped to
`target_length` frames (1024 = 10 s; a random crop in training drawn from the sample's seed, the
centre otherwise) and normalized as (x - mean) / (2 std) with dataset statistics (AudioSet's by
default). A sample is a tensor [1, target_length, mel_bins]: time along the height, frequency along
the width, so 16x16 patches and the 2D sin-cos positions follow the (time, frequency) grid.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import NamedTuple, Sequence

import torch

from omnimae.adapter import ModalityAdapter, minmax, register_modality
from omnimae.data.skip import SkipBudget, budget_for, load_or_stand_in, scan_splits
from omnimae.data.files import DecodedCache, find_files, folder_splits, walk
from omnimae.data.protocol import SampleSet
from omnimae.errors import ConfigError, DataError
from omnimae.tokenizers import PatchTokenizer2D
from omnimae.masking_plane import PLANE_MASKINGS

from .readers.audio import (
    AUDIO_SUFFIXES,
    MIN_SAMPLE_RATE,
    audio_info,
    crop_start,
    fbank_features,
    log_mel,
    read_audio,
)

log = logging.getLogger("omnimae")

AUDIOSET_MEAN = -4.2677393  # AudioSet log-mel statistics used by AST and AudioMAE
AUDIOSET_STD = 4.5689974


def normalize(feats: torch.Tensor, mean: float = AUDIOSET_MEAN, std: float = AUDIOSET_STD) -> torch.Tensor:
    return (feats - mean) / (2.0 * std)


def denormalize(x: torch.Tensor, mean: float = AUDIOSET_MEAN, std: float = AUDIOSET_STD) -> torch.Tensor:
    return x * (2.0 * std) + mean


def find_audio(root: str | Path, classes: Sequence[str] | None = None) -> tuple[list[Path], list[int], list[str]]:
    """Audio files under root: one subfolder per class gives labels, a flat folder labels -1."""
    return find_files(root, AUDIO_SUFFIXES, "audio", classes=classes)


# --- datasets ------------------------------------------------------------------------------
class AudioDataset(SampleSet):
    """Normalized log-mel features [1, target_length, mel_bins]; keys are indices or (index, seed).

    With a seed the training crop is drawn from that seed, so a resumed run sees the same crops.
    An unreadable file raises DataError naming it, unless the skip budget allows skipping it: then
    the next file in order stands in for it (unless `stand_ins` is False, as where each item must be
    its own file: embeddings saved by file name).
    """


    def __init__(
        self,
        paths: list[Path],
        labels: list[int],
        *,
        train: bool,
        sample_rate: int = 16000,
        target_length: int = 1024,
        mel_bins: int = 128,
        mean: float = AUDIOSET_MEAN,
        std: float = AUDIOSET_STD,
        budget: SkipBudget | None = None,
        offset: int = 0,
        cache_dir: str | None = None,
    ):
        self.paths, self.labels, self.train = paths, labels, train
        self.cache = DecodedCache(cache_dir) if cache_dir else None
        self.sample_rate, self.target_length, self.mel_bins = sample_rate, target_length, mel_bins
        self.mean, self.std = mean, std
        self.budget, self.offset = budget, offset  # offset: first file's index in the budget

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, index: int, seed: int | None = None) -> torch.Tensor:
        path = self.paths[index]
        if self.cache is None:
            waveform = read_audio(path, self.sample_rate)
            feats = log_mel(waveform, self.sample_rate, self.target_length, self.mel_bins, train=self.train, seed=seed)
        else:  # the whole recording's fbank is decoded once, then cropped like log_mel crops
            params = {"sample_rate": self.sample_rate, "mel_bins": self.mel_bins}
            full = self.cache.get(path, params, lambda: {"fbank": fbank_features(
                read_audio(path, self.sample_rate), self.sample_rate, self.mel_bins).numpy()})["fbank"]
            feats = torch.from_numpy(full)
            if len(feats) > self.target_length:
                start = crop_start(len(feats), self.target_length, self.train, seed)
                feats = feats[start : start + self.target_length]
            feats = torch.nn.functional.pad(feats, (0, 0, 0, self.target_length - len(feats)))
        return normalize(feats, self.mean, self.std).unsqueeze(0)  # [1, T, F]

    def __getitem__(self, key) -> torch.Tensor:
        index, seed = key if isinstance(key, tuple) else (key, None)
        return load_or_stand_in(self.paths, index, lambda i: self.load(i, seed), self.budget, self.offset, self.stand_ins)


class AudioData:
    """Train / validation / labeled audio sets for the audio adapter, from a folder.

    root: a folder of .wav/.flac/.ogg files, flat or one subfolder per class (labels for probes);
    train/ and val/ subfolders are used as given, otherwise `val_fraction` is held out by a
    seeded permutation. scan: read every header before training so a bad file fails at once.
    skip_bad: how many unreadable files may be skipped (each with a warning) instead of failing.
    """

    def __init__(
        self,
        root: str | None = None,
        sample_rate: int = 16000,
        target_length: int = 1024,
        mel_bins: int = 128,
        mean: float = AUDIOSET_MEAN,
        std: float = AUDIOSET_STD,
        val_fraction: float = 0.02,
        scan: bool = True,
        skip_bad: int = 0,
        seed: int = 0,
        cache_dir: str | None = None,
    ):
        if root is None:
            raise ConfigError("root", "no audio folder given: pass data.root=PATH (a folder of .wav/.flac/.ogg files)")
        _check_features(sample_rate, target_length, mel_bins, std)
        if not 0 <= val_fraction < 1:
            raise ConfigError("val_fraction", f"must lie in [0, 1), got {val_fraction}")
        if skip_bad < 0:
            raise ConfigError("skip_bad", f"must be >= 0, got {skip_bad}")
        self.root, self.sample_rate, self.target_length, self.mel_bins = root, sample_rate, target_length, mel_bins
        self.mean, self.std, self.val_fraction = float(mean), float(std), val_fraction
        self.scan, self.skip_bad, self.seed, self.cache_dir = scan, skip_bad, seed, cache_dir
        self._splits: dict[str, tuple] | None = None
        self._budget: SkipBudget | None = None
        self._offsets: dict[str, int] = {}

    # splits: name -> (paths, labels)
    def splits(self) -> dict[str, tuple]:
        if self._splits is None:
            self._splits = self._folder()
        return self._splits

    def _folder(self) -> dict[str, tuple]:
        splits = folder_splits(self.root, AUDIO_SUFFIXES, self.val_fraction, self.seed, "audio")
        bad: list = []
        if self.scan:  # every header before training: a bad file fails now, naming itself
            splits, bad = scan_splits(splits, audio_info, self.skip_bad, self.root)
        self._budget, self._offsets = budget_for(splits, self.skip_bad, len(bad))
        return splits

    def dataset(self, split: str, train: bool) -> AudioDataset:
        paths, labels = self.splits()[split]
        return AudioDataset(
            paths, labels, train=train, sample_rate=self.sample_rate, target_length=self.target_length,
            mel_bins=self.mel_bins, mean=self.mean, std=self.std, budget=self._budget, offset=self._offsets[split],
            cache_dir=self.cache_dir,
        )


def _check_features(sample_rate: int, target_length: int, mel_bins: int, std: float) -> None:
    if sample_rate < MIN_SAMPLE_RATE:
        raise ConfigError("sample_rate", f"must be at least {MIN_SAMPLE_RATE} Hz, got {sample_rate}")
    if target_length < 1:
        raise ConfigError("target_length", f"must be at least 1 frame, got {target_length}")
    if mel_bins < 1:
        raise ConfigError("mel_bins", f"must be at least 1, got {mel_bins}")
    if not std > 0:
        raise ConfigError("std", f"must be positive, got {std}")


# --- dataset statistics --------------------------------------------------------------------
class LogMelStats(NamedTuple):
    mean: float
    std: float
    files: int  # files read (unreadable ones skipped within skip_bad are not counted)


def compute_stats(
    root: str | Path,
    sample_rate: int = 16000,
    target_length: int = 1024,
    mel_bins: int = 128,
    *,
    skip_bad: int = 0,
    progress: bool = True,
) -> LogMelStats:
    """Mean and std of a folder's log-mel features before normalization (for adapter.mean / std).

    Over the same padded / centre-cropped [target_length, mel_bins] features the model sees, as
    the AudioSet defaults were computed; every file under root (train/ and val/ included).
    Per-file moments are merged in float64 (Chan et al.), so long runs do not lose precision.
    """
    # long: one streaming pass (Chan's merge of moments) with the skip_bad policy inline
    from tqdm import tqdm

    _check_features(sample_rate, target_length, mel_bins, 1.0)
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"{root}: no such folder")
    paths = sorted(walk(root, lambda p, is_dir: not is_dir and p.suffix.lower() in AUDIO_SUFFIXES))
    if not paths:
        raise DataError(f"{root}: no audio files ({', '.join(sorted(AUDIO_SUFFIXES))}) found")
    n, mean, m2, files, skipped = 0, 0.0, 0.0, 0, 0
    for path in tqdm(paths, desc="log-mel statistics", unit="file", disable=not progress):
        try:
            feats = log_mel(read_audio(path, sample_rate), sample_rate, target_length, mel_bins).double()
        except DataError as e:
            skipped += 1
            if skipped > skip_bad:
                raise DataError(f"{e} (skip_bad={skip_bad} allows {skip_bad} unreadable files)") from e
            log.warning("skipping an unreadable file (%d of skip_bad=%d): %s", skipped, skip_bad, e)
            continue
        k, mk = feats.numel(), float(feats.mean())
        m2k = float(((feats - mk) ** 2).sum())
        delta, total = mk - mean, n + k
        mean += delta * k / total
        m2 += m2k + delta * delta * n * k / total
        n, files = total, files + 1
    if n == 0:
        raise DataError(f"{root}: no readable audio files")
    return LogMelStats(mean, math.sqrt(m2 / n), files)


# --- the adapter ---------------------------------------------------------------------------
@register_modality("audio")
class AudioAdapter(ModalityAdapter):
    """Log-mel spectrograms [B, 1, T, F] (normalized) <-> 16x16 patches over (time, frequency)."""

    maskings = ("random", "time_frequency", *PLANE_MASKINGS)  # plane strategies over (t, f)

    def __init__(
        self,
        *,
        embed_dim: int,
        decoder_embed_dim: int,
        target_length: int = 1024,
        mel_bins: int = 128,
        patch_size: int = 16,
        mask_ratio: float | dict = 0.8,
        masking: str = "random",
        norm_pix_loss: bool = True,
        sample_rate: int = 16000,
        mean: float = AUDIOSET_MEAN,
        std: float = AUDIOSET_STD,
    ):
        if patch_size < 1:
            raise ConfigError("patch_size", f"must be at least 1, got {patch_size}")
        _check_features(sample_rate, target_length, mel_bins, std)
        if target_length % patch_size:
            raise ConfigError("target_length", f"{target_length} frames is not a multiple of patch_size {patch_size}")
        if mel_bins % patch_size:
            raise ConfigError("mel_bins", f"{mel_bins} is not a multiple of patch_size {patch_size}")
        if (target_length // patch_size) * (mel_bins // patch_size) < 2:
            raise ConfigError("target_length", f"{target_length}x{mel_bins} gives a single {patch_size}x{patch_size} patch; masking needs 2+")
        super().__init__(
            embed_dim=embed_dim,
            decoder_embed_dim=decoder_embed_dim,
            tokenizer=PatchTokenizer2D(patch_size, in_chans=1),
            mask_ratio=mask_ratio,
            masking=masking,
            norm_pix_loss=norm_pix_loss,
        )
        self.target_length, self.mel_bins, self.patch_size = target_length, mel_bins, patch_size
        self.sample_rate = sample_rate
        self.mean, self.std = float(mean), float(std)

    def example_input(self, batch_size: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.randn(batch_size, 1, self.target_length, self.mel_bins, generator=generator)  # [B, 1, T, F]

    # normalization and its inverse, and reading a file as the model expects it
    def normalize(self, feats: torch.Tensor) -> torch.Tensor:
        return normalize(feats, self.mean, self.std)

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        return denormalize(x, self.mean, self.std)

    def load(self, path: str | Path) -> torch.Tensor:
        """One file as a model input [1, target_length, mel_bins] (centre crop), e.g. for embeddings."""
        waveform = read_audio(path, self.sample_rate)
        return self.normalize(log_mel(waveform, self.sample_rate, self.target_length, self.mel_bins)).unsqueeze(0)

    def to_display(self, x: torch.Tensor, mask: bool = False, reference: torch.Tensor | None = None) -> torch.Tensor:
        """[B, 1, T, F] -> spectrogram images [B, F, T, 1] in [0, 1], low frequencies at the bottom,
        min-max scaled per sample (by the reference's range when given)."""
        img = x.float()[:, 0].transpose(1, 2).flip(1)  # [B, F, T]: frequency runs upward
        if not mask:
            ref = None if reference is None else reference.float()[:, 0]  # (its range: the layout does not matter)
            img = minmax(img, (1, 2), ref, eps=1e-12)
        return img.unsqueeze(-1)
