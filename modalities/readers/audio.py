"""Reading audio files (WAV, FLAC, OGG through soundfile) and AudioMAE's Kaldi filter banks.

A clip is mixed down to mono and resampled; its mean is removed and Kaldi-compatible filter banks
are computed with `torchaudio.compliance.kaldi.fbank` (25 ms frames, 10 ms shift, hanning window,
htk_compat, no energy, no dither), then zero-padded or cropped to a fixed number of frames.
"""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import torch

from omnimae.data.crop import crop_starts, sample_generator
from omnimae.data.files import check_file
from omnimae.errors import DataError

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg"}
FRAME_LENGTH_MS = 25.0
FRAME_SHIFT_MS = 10.0
MIN_SAMPLE_RATE = 1000  # below this a header is far more likely corrupt than meaningful


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
    if frames <= target_length:
        return 0  # zero-padded instead
    return crop_starts([frames], [target_length], sample_generator(seed), train)[0]


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
    check_file(path)
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
