"""What a request may carry, turned into model-space samples: uploaded files and raw arrays.

The server never opens a path a client names. An uploaded file's bytes are checked against the decode
caps from their header alone, then written to a temporary file of the server's own making, and read by
the modality's data source exactly as `omnimae embed` reads that file (the same decoding, resizing and
normalization). Every problem is an InputError naming the request field.
"""
from __future__ import annotations

import copy
import io
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, open_dict

from omnimae.config.build import data_over
from omnimae.errors import ConfigError, OmniMAEError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
TIFF_SUFFIXES = (".tif", ".tiff")
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")
VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".webm", ".mkv", ".avi")


class InputError(ConfigError):
    """A request field that cannot be used: answered with 422 (413 when `too_large`), naming the field."""

    def __init__(self, field: str, problem: str, too_large: bool = False):
        super().__init__(field, problem)
        self.too_large = too_large


@dataclass(frozen=True)
class Limits:
    """The caps on one request: body bytes, inputs, decoded values, audio length, series length."""

    max_request_bytes: int = 32 * 2**20
    max_inputs: int = 64
    max_values: int = 2**26  # decoded samples of one file (pixels x channels, audio frames x channels)
    max_audio_seconds: float = 600.0
    max_series_length: int = 100_000


@dataclass
class Sample:
    """One input in model space, ready to batch: `value` as a data source yields it (a tensor, or a dict of
    tensors for microscopy), and the channel names where the modality has per-channel features."""

    value: Any
    group: tuple[str, ...] | None = None

    def key(self) -> tuple:
        """Samples of one key stack into one batch."""
        tensors = self.value.values() if isinstance(self.value, dict) else [self.value]
        return tuple(tuple(t.shape) for t in tensors), self.group


def safe_suffix(filename: str | None) -> str:
    """The upload's extension (it picks the decoder), and nothing else of the client's name."""
    suffix = Path(filename or "").suffix.lower()
    return suffix if re.fullmatch(r"\.[a-z0-9]{1,8}", suffix) else ""


def check_decode_size(data: bytes, suffix: str, field: str, limits: Limits) -> None:
    """Refuse, from the header alone, a file that would decode to more than the caps allow."""
    try:
        if suffix in TIFF_SUFFIXES:
            import tifffile

            with tifffile.TiffFile(io.BytesIO(data)) as tif:
                values = max(int(np.prod(s.shape)) for s in tif.series)
        elif suffix in AUDIO_SUFFIXES:
            import soundfile as sf

            info = sf.info(io.BytesIO(data))
            values = info.frames * info.channels
            if info.samplerate > 0 and info.frames / info.samplerate > limits.max_audio_seconds:
                raise InputError(field, f"{info.frames / info.samplerate:.0f} s of audio is over the cap of "
                                        f"{limits.max_audio_seconds:g} s", too_large=True)
        elif suffix in VIDEO_SUFFIXES:  # only the model's clip is decoded: one frame's size is what to bound
            import av

            with av.open(io.BytesIO(data)) as container:
                stream = container.streams.video[0]
                values = stream.codec_context.width * stream.codec_context.height * 3
        else:
            from PIL import Image

            with Image.open(io.BytesIO(data)) as im:  # reads the header; decodes nothing
                values = im.width * im.height * len(im.getbands())
    except InputError:
        raise
    except Exception as e:  # PIL's DecompressionBombError (an absurd header) among them
        if type(e).__name__ == "DecompressionBombError":
            raise InputError(field, f"the image header declares too many pixels ({e})", too_large=True) from None
        kinds = {TIFF_SUFFIXES: "TIFF", AUDIO_SUFFIXES: "audio", VIDEO_SUFFIXES: "video"}
        kind = next((k for suffixes, k in kinds.items() if suffix in suffixes), "image")
        raise InputError(field, f"cannot read the file's header as {kind} ({type(e).__name__}); a corrupt file, "
                                "or not one of the modality's formats") from None
    if values > limits.max_values:
        raise InputError(field, f"decodes to {values:,} values, over the cap of {limits.max_values:,}", too_large=True)


def read_upload(config: DictConfig, modality: str, data: bytes, filename: str | None, field: str, limits: Limits,
                channels: list[str] | None = None) -> Sample:
    """An uploaded file of `modality`, read by its data source with the model's settings."""
    suffix = safe_suffix(filename)
    if not data:
        raise InputError(field, "the uploaded file is empty")
    check_decode_size(data, suffix, field, limits)
    cfg = copy.deepcopy(config)
    if channels is not None:
        if "channel_names" not in cfg.modalities[modality].data:
            raise InputError("channels", f"the {modality} modality takes no channel names")
        with open_dict(cfg):
            cfg.modalities[modality].data.channel_names = list(channels)
    with tempfile.TemporaryDirectory(prefix="omnimae-serve-") as tmp:
        path = Path(tmp) / f"upload{suffix}"
        path.write_bytes(data)
        try:
            source = data_over(cfg, modality, path)
            dataset = source.dataset("train", train=False)
            dataset.stand_ins = False  # this file or an error, never another file's data
            value = dataset[0]
            groups = dataset.groups
        except OmniMAEError as e:  # the reader's words, with the client's name for the file
            raise InputError(field, str(e).replace(str(path), filename or "upload")) from None
        except Exception as e:  # a decoder's own exception: still the file's fault, not the server's
            raise InputError(field, f"cannot read {filename or 'the upload'} ({type(e).__name__}: {e})") from None
    return Sample(value, tuple(groups[0]) if groups else None)


def array_sample(example: Any, value: Any, field: str, channel_ids: torch.Tensor | None = None,
                 names: tuple[str, ...] | None = None) -> Sample:
    """A raw array in model space (one sample of what the adapter's example_input holds), checked."""
    try:
        x = torch.as_tensor(np.asarray(value, dtype=np.float32))
    except (TypeError, ValueError) as e:
        raise InputError(field, f"is not a numeric array ({e})") from None
    want = tuple((example["pixels"] if isinstance(example, dict) else example).shape[1:])
    if isinstance(example, dict):  # microscopy: any number of channels, named
        if x.ndim != len(want) or tuple(x.shape[1:]) != want[1:]:
            raise InputError(field, f"expected [channels, {', '.join(map(str, want[1:]))}], got {list(x.shape)}")
        if channel_ids is None or len(channel_ids) != x.shape[0]:
            count = 0 if channel_ids is None else len(channel_ids)
            raise InputError("channels", f"{x.shape[0]} channels in {field} but {count} channel names")
    elif tuple(x.shape) != want:
        what = "channel count" if x.ndim == len(want) and x.shape[1:] == torch.Size(want[1:]) else "shape"
        raise InputError(field, f"wrong {what}: expected {list(want)}, got {list(x.shape)}")
    if not torch.isfinite(x).all():
        raise InputError(field, f"holds {int((~torch.isfinite(x)).sum())} NaN or infinite values")
    if isinstance(example, dict):
        return Sample({"pixels": x, "channel_ids": channel_ids}, names)
    return Sample(x)
