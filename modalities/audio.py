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
import multiprocessing
import struct
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from omnimae.adapter import ModalityAdapter, minmax, register_modality
from omnimae.files import DecodedCache, find_files, folder_splits
from omnimae.errors import ConfigError, DataError
from omnimae.tokenizers import PatchTokenizer2D

log = logging.getLogger("omnimae")

AUDIOSET_MEAN = -4.2677393  # AudioSet log-mel statistics used by AST and AudioMAE
AUDIOSET_STD = 4.5689974
AUDIO_SUFFIXES = {".wav", ".flac", ".ogg"}
FRAME_LENGTH_MS = 25.0
FRAME_SHIFT_MS = 10.0
MIN_SAMPLE_RATE = 1000  # below this a header is far more likely corrupt than meaningful


# --- features ------------------------------------------------------------------------------
def frame_geometry(sample_rate: int) -> tuple[int, int]:
    """(window, shift) in samples, computed as torchaudio's Kaldi compliance code does."""
    window = int(sample_rate * FRAME_LENGTH_MS * 0.001)
    shift = int(sample_rate * FRAME_SHIFT_MS * 0.001)
    return window, shift


def num_frames(num_samples: int, sample_rate: int) -> int:
    """Frames Kaldi's fbank gives for num_samples (snip_edges: only whole windows)."""
    window, shift = frame_geometry(sample_rate)
    return 0 if num_samples < window else 1 + (num_samples - window) // shift


def kaldi_fbank(waveform: torch.Tensor, sample_rate: int, mel_bins: int = 128) -> torch.Tensor:
    """The AudioMAE call of Kaldi's fbank on a waveform [N] or [1, N]: -> [frames, mel_bins]."""
    import torchaudio.compliance.kaldi as kaldi

    return kaldi.fbank(
        waveform.reshape(1, -1),
        htk_compat=True,
        sample_frequency=sample_rate,
        use_energy=False,
        window_type="hanning",
        num_mel_bins=mel_bins,
        dither=0.0,
        frame_length=FRAME_LENGTH_MS,
        frame_shift=FRAME_SHIFT_MS,
    )


def fbank_features(waveform: torch.Tensor, sample_rate: int, mel_bins: int = 128) -> torch.Tensor:
    """Log-mel filter banks of the whole clip, after removing its mean: [frames, mel_bins]."""
    waveform = waveform.reshape(1, -1).float()
    return kaldi_fbank(waveform - waveform.mean(), sample_rate, mel_bins)


def crop_start(frames: int, target_length: int, train: bool, seed: int | None = None) -> int:
    """First frame of the crop: random in training (from the seed when given), else the centre."""
    extra = frames - target_length
    if extra <= 0:
        return 0
    if not train:
        return extra // 2
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    return int(torch.randint(0, extra + 1, (1,), generator=generator))


def log_mel(
    waveform: torch.Tensor,
    sample_rate: int,
    target_length: int = 1024,
    mel_bins: int = 128,
    *,
    train: bool = False,
    seed: int | None = None,
) -> torch.Tensor:
    """Un-normalized features [target_length, mel_bins]: fbank, then zero-pad or crop.

    Equal to cropping `fbank_features(waveform)`; only the frames kept are computed (each Kaldi
    frame depends on its own window of samples alone), so long recordings stay cheap.
    """
    waveform = waveform.reshape(-1).float()
    waveform = waveform - waveform.mean()  # over the whole clip, as the recipe
    frames = num_frames(waveform.numel(), sample_rate)
    if frames > target_length:
        window, shift = frame_geometry(sample_rate)
        start = crop_start(frames, target_length, train, seed)
        waveform = waveform[start * shift : (start + target_length - 1) * shift + window]
    feats = kaldi_fbank(waveform, sample_rate, mel_bins)  # at most target_length frames
    pad = target_length - feats.shape[0]
    if pad > 0:
        feats = torch.nn.functional.pad(feats, (0, 0, 0, pad))  # zeros at the end, as AST / AudioMAE
    return feats


def normalize(feats: torch.Tensor, mean: float = AUDIOSET_MEAN, std: float = AUDIOSET_STD) -> torch.Tensor:
    return (feats - mean) / (2.0 * std)


def denormalize(x: torch.Tensor, mean: float = AUDIOSET_MEAN, std: float = AUDIOSET_STD) -> torch.Tensor:
    return x * (2.0 * std) + mean


# --- reading files -------------------------------------------------------------------------
def _wav_header(path: Path) -> dict | None:
    """Sample rate, block size and the byte counts declared and present in a RIFF/WAVE file.

    libsndfile quietly shortens a truncated WAV to the samples that are there (and reports that
    shortened length as the frame count), so the declared length is read from the header here.
    None for non-RIFF files or a data chunk of unknown length (streamed WAVs write 0 or 2^32-1).
    """
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(12)
        if len(head) < 12 or head[:4] not in (b"RIFF", b"RIFX") or head[8:12] != b"WAVE":
            return None
        order = "<" if head[:4] == b"RIFF" else ">"
        out: dict = {}
        pos = 12
        while True:
            fh.seek(pos)
            chunk = fh.read(8)
            if len(chunk) < 8:
                return out or None
            cid, csize = chunk[:4], struct.unpack(order + "I", chunk[4:])[0]
            if cid == b"fmt " and csize >= 16:
                fmt = fh.read(16)
                if len(fmt) == 16:
                    _, channels, rate, _, block = struct.unpack(order + "HHIIH", fmt[:14])
                    out.update(channels=channels, sample_rate=rate, block_align=block)
            elif cid == b"data":
                if csize in (0, 0xFFFFFFFF):
                    return out or None
                out.update(declared_bytes=csize, present_bytes=size - pos - 8)
                return out
            pos += 8 + csize + (csize & 1)


def audio_info(path: str | Path):
    """Read and check one file's header (cheap): returns soundfile's info or raises DataError."""
    import soundfile as sf

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty file (0 bytes)")
    try:
        wav = _wav_header(path)
    except OSError as e:
        raise DataError(f"{path}: cannot read file ({e})") from e
    if wav and wav.get("sample_rate") == 0:
        raise DataError(f"{path}: the header's sample rate is 0")
    try:
        info = sf.info(str(path))
    except Exception as e:  # LibsndfileError, RuntimeError: unknown format, corrupt header
        raise DataError(f"{path}: cannot read audio header ({type(e).__name__}: {e})") from e
    if info.samplerate <= 0:
        raise DataError(f"{path}: the header's sample rate is {info.samplerate}")
    if info.samplerate < MIN_SAMPLE_RATE:
        raise DataError(f"{path}: sample rate {info.samplerate} Hz is below {MIN_SAMPLE_RATE} Hz (a corrupt header?)")
    if info.channels < 1:
        raise DataError(f"{path}: the header declares {info.channels} channels")
    if info.frames <= 0:
        raise DataError(f"{path}: no audio frames (an empty or truncated file)")
    if wav and "declared_bytes" in wav and wav.get("block_align"):
        declared = wav["declared_bytes"] // wav["block_align"]
        if wav["present_bytes"] < wav["declared_bytes"]:
            raise DataError(
                f"{path}: truncated: the header declares {declared} frames, the file holds "
                f"{wav['present_bytes'] // wav['block_align']}"
            )
    return info


def read_audio(path: str | Path, sample_rate: int = 16000) -> torch.Tensor:
    """Decode one file to a mono float32 waveform [N] at sample_rate, or raise naming the file."""
    import soundfile as sf
    import torchaudio.functional as AF

    path = Path(path)
    info = audio_info(path)
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)  # [frames, channels]
    except Exception as e:
        raise DataError(f"{path}: cannot decode audio ({type(e).__name__}: {e})") from e
    if data.shape[0] < info.frames:  # soundfile returns what it could decode without an error
        raise DataError(f"{path}: truncated: the header declares {info.frames} frames, {data.shape[0]} decoded")
    if data.shape[0] == 0:
        raise DataError(f"{path}: no audio frames (an empty or truncated file)")
    if not np.isfinite(data).all():
        raise DataError(f"{path}: holds NaN or infinite samples")
    mono = data.mean(axis=1)
    if mono.max() == mono.min():
        raise DataError(f"{path}: silent: every sample equals {float(mono[0])} (zero energy after removing the mean)")
    waveform = torch.from_numpy(np.ascontiguousarray(mono))
    if rate != sample_rate:
        waveform = AF.resample(waveform, rate, sample_rate)
    window, _ = frame_geometry(sample_rate)
    if waveform.numel() < window:
        raise DataError(f"{path}: {waveform.numel() / sample_rate * 1000:.1f} ms is shorter than one {FRAME_LENGTH_MS:g} ms frame")
    return waveform


def find_audio(root: str | Path, classes: Sequence[str] | None = None) -> tuple[list[Path], list[int], list[str]]:
    """Audio files under root: one subfolder per class gives labels, a flat folder labels -1."""
    return find_files(root, AUDIO_SUFFIXES, "audio", classes=classes)


# --- skipping unreadable files, never silently ---------------------------------------------
class SkipBudget:
    """Up to `limit` unreadable files may be skipped, each with a logged warning; more is an error.

    Files dropped by the header scan count against the limit; files that fail later, while
    decoding, are marked in shared memory, so the count holds across DataLoader workers and epochs.
    """

    def __init__(self, limit: int, num_files: int, already: int = 0):
        self.limit, self.already = limit, already
        ctx = multiprocessing.get_context()
        self._lock = ctx.Lock() if limit > already else None
        self._flags = ctx.Array("b", num_files, lock=False) if self._lock else None
        self._count = ctx.Value("i", 0, lock=False) if self._lock else None

    def allow(self, file_index: int, error: DataError) -> bool:
        """May this file be skipped? Logs the skip; False when the limit is used up."""
        if self._lock is None:
            return False
        with self._lock:
            if self._flags[file_index]:
                return True  # known bad, warned about when first seen
            used = self.already + self._count.value
            if used >= self.limit:
                return False
            self._flags[file_index] = 1
            self._count.value += 1
            used += 1
        log.warning("skipping an unreadable file (%d of skip_bad=%d): %s", used, self.limit, error)
        return True


# --- datasets ------------------------------------------------------------------------------
class AudioDataset(Dataset):
    """Normalized log-mel features [1, target_length, mel_bins]; keys are indices or (index, seed).

    With a seed the training crop is drawn from that seed, so a resumed run sees the same crops.
    An unreadable file raises DataError naming it, unless the skip budget allows skipping it: then
    the next file in order stands in for it (unless `stand_ins` is False, as where each item must be
    its own file: embeddings saved by file name).
    """

    stand_ins = True

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
        for step in range(len(self.paths)):
            i = (index + step) % len(self.paths)
            try:
                return self.load(i, seed)
            except DataError as e:
                if self.budget is None or not self.stand_ins or not self.budget.allow(self.offset + i, e):
                    raise
        raise DataError(f"no readable audio file among the {len(self.paths)} of this split")


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
        skipped = 0
        if self.scan:  # every header before training: a bad file fails now, naming itself
            bad: list[DataError] = []
            for name, (paths, labels) in splits.items():
                keep = []
                for i, p in enumerate(paths):
                    try:
                        audio_info(p)
                        keep.append(i)
                    except DataError as e:
                        bad.append(e)
                splits[name] = ([paths[i] for i in keep], [labels[i] for i in keep])
            if len(bad) > self.skip_bad:
                more = f"; and {len(bad) - 1} more unreadable files: " + "; ".join(map(str, bad[1:4])) if len(bad) > 1 else ""
                hint = f" ({len(bad)} unreadable, skip_bad={self.skip_bad} allows {self.skip_bad})"
                raise DataError(f"{bad[0]}{more}{hint}")
            for e in bad:
                log.warning("skipping an unreadable file (skip_bad=%d): %s", self.skip_bad, e)
            skipped = len(bad)
            if not splits["train"][0]:
                raise DataError(f"data.root={self.root}: no readable audio files left for training")
        total = sum(len(p) for p, _ in splits.values())
        self._budget = SkipBudget(self.skip_bad, total, already=skipped)
        self._offsets = {"train": 0, "val": len(splits["train"][0])}
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
def compute_stats(
    root: str | Path,
    sample_rate: int = 16000,
    target_length: int = 1024,
    mel_bins: int = 128,
    *,
    skip_bad: int = 0,
    progress: bool = True,
) -> tuple[float, float]:
    """Mean and std of a folder's log-mel features before normalization (for adapter.mean / std).

    Over the same padded / centre-cropped [target_length, mel_bins] features the model sees, as
    the AudioSet defaults were computed; every file under root (train/ and val/ included).
    Per-file moments are merged in float64 (Chan et al.), so long runs do not lose precision.
    """
    mean, std, _ = _stats(root, sample_rate, target_length, mel_bins, skip_bad, progress)
    return mean, std


def _stats(root, sample_rate, target_length, mel_bins, skip_bad, progress) -> tuple[float, float, int]:
    from tqdm import tqdm

    _check_features(sample_rate, target_length, mel_bins, 1.0)
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"{root}: no such folder")
    paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
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
    return mean, math.sqrt(m2 / n), files


def run_stats(root: str | Path, sample_rate: int = 16000, target_length: int = 1024, mel_bins: int = 128) -> dict:
    """`omnimae stats`: print and return a folder's log-mel mean and std, with the overrides to use them."""
    mean, std, files = _stats(root, sample_rate, target_length, mel_bins, skip_bad=0, progress=True)
    result = {"root": str(root), "files": files, "sample_rate": sample_rate, "target_length": target_length,
              "mel_bins": mel_bins, "mean": mean, "std": std}
    print(f"omnimae stats: log-mel features of {files} files under {root}")
    print(f"  mean  {mean:.7g}\n  std   {std:.7g}")
    print(f"use them: modalities.audio.adapter.mean={mean:.7g} modalities.audio.adapter.std={std:.7g}")
    return result


# --- the adapter ---------------------------------------------------------------------------
@register_modality("audio")
class AudioAdapter(ModalityAdapter):
    """Log-mel spectrograms [B, 1, T, F] (normalized) <-> 16x16 patches over (time, frequency)."""

    maskings = ("random", "time_frequency")

    def __init__(
        self,
        *,
        embed_dim: int,
        decoder_embed_dim: int,
        target_length: int = 1024,
        mel_bins: int = 128,
        patch_size: int = 16,
        mask_ratio: float = 0.8,
        masking: str | None = None,
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
