"""Video clips following VideoMAE: PyAV decoding, strided frame sampling, 2x16x16 tubes, tube masking at 0.9.

A clip is `num_frames` frames taken every `sampling_rate` frames from a window of
`num_frames * sampling_rate` frames (VideoMAE's `new_length` x `new_step`): the window starts at
a random frame in training (from the per-sample seed) and in the middle otherwise. The short side
is resized to `short_side` (default `img_size`), then a random (training) or centre square of
`img_size` is cut, and ImageNet mean/std applied: one sample is a float tensor [C, T, H, W].

Frames are numbered by timestamp at the stream's average frame rate (exact for constant-rate
video; for variable-rate video a number is a time slot). Only the frames up to the clip's last
are decoded, after a seek to the key frame before its first. The frame count comes from the
header where the container stores it (MP4, MOV, AVI), else from counting packets (WebM, MKV: one
extra pass over the file that reads but does not decode).

Reconstruction target (norm_pix_loss): VideoMAE's, each tube normalized per channel over its
t*p*p pixels in [0, 1] pixel space, with the unbiased std and `(x - mean) / (std + 1e-6)`.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Literal, Sequence

import av
import numpy as np
import torch
from einops import rearrange
from torch.utils.data import Dataset
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from omnimae.adapter import ModalityAdapter, check_channels, register_modality
from omnimae.files import folder_splits
from omnimae.errors import ConfigError, DataError
from omnimae.patches import Patches
from omnimae.tokenizers.tube import TubeTokenizer

from .image import IMAGE_SUFFIXES, IMAGENET_MEAN, IMAGENET_STD, _header_channels, read_image

log = logging.getLogger("omnimae")

VIDEO_SUFFIXES = {".mp4", ".m4v", ".mov", ".webm", ".mkv", ".avi"}
NORM_EPS = 1.0e-6  # VideoMAE's: (x - mean) / (std + eps)


# --- the adapter ---------------------------------------------------------------------------
@register_modality("video")
class VideoAdapter(ModalityAdapter):
    """Clips [B, C, T, H, W] (normalized) <-> tubes of tubelet_size x patch_size x patch_size x C."""

    max_display_frames = 8
    maskings = ("tube", "random")  # VideoMAE's tube masking by default

    def __init__(
        self,
        *,
        embed_dim: int,
        decoder_embed_dim: int,
        img_size: int = 224,
        patch_size: int = 16,
        num_frames: int = 16,
        tubelet_size: int = 2,
        in_chans: int = 3,
        mask_ratio: float = 0.9,
        masking: str | None = None,
        norm_pix_loss: bool = True,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ):
        if patch_size < 1:
            raise ConfigError("patch_size", f"must be at least 1, got {patch_size}")
        if img_size < patch_size or img_size % patch_size:
            raise ConfigError("img_size", f"{img_size} must be a positive multiple of patch_size {patch_size}")
        if tubelet_size < 1:
            raise ConfigError("tubelet_size", f"must be at least 1, got {tubelet_size}")
        if num_frames < tubelet_size or num_frames % tubelet_size:
            raise ConfigError("num_frames", f"{num_frames} must be a positive multiple of tubelet_size {tubelet_size}")
        check_channels(in_chans, mean, std)
        super().__init__(
            embed_dim=embed_dim,
            decoder_embed_dim=decoder_embed_dim,
            tokenizer=TubeTokenizer(tubelet_size, patch_size, in_chans),
            mask_ratio=mask_ratio,
            masking=masking,
            norm_pix_loss=norm_pix_loss,
        )
        self.img_size, self.patch_size, self.in_chans = img_size, patch_size, in_chans
        self.num_frames, self.tubelet_size = num_frames, tubelet_size
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32), persistent=False)  # [C]
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32), persistent=False)

    # --- VideoMAE's target: per tube, per channel, in [0, 1] pixel space --------------------
    def _pixels(self, values: torch.Tensor) -> torch.Tensor:
        """[B, N, t*p*p*C] normalized values -> [B, N, t*p*p, C] pixels (mean/std undone)."""
        v = values.float().unflatten(-1, (-1, self.in_chans))
        return v * self.std + self.mean

    def _tube_stats(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = pixels.mean(dim=-2, keepdim=True)
        std = pixels.var(dim=-2, unbiased=True, keepdim=True).sqrt() + NORM_EPS
        return mean, std

    def target(self, patches: Patches) -> torch.Tensor:
        if not self.norm_pix_loss:
            return patches.values
        pixels = self._pixels(patches.values)
        mean, std = self._tube_stats(pixels)
        return ((pixels - mean) / std).flatten(-2)

    def prediction_to_values(self, patches: Patches, pred: torch.Tensor) -> torch.Tensor:
        if not self.norm_pix_loss:
            return pred
        mean, std = self._tube_stats(self._pixels(patches.values))
        pixels = pred.float().unflatten(-1, (-1, self.in_chans)) * std + mean
        return ((pixels - self.mean) / self.std).flatten(-2)

    # --- display ----------------------------------------------------------------------------
    def display_frames(self, num_frames: int) -> torch.Tensor:
        """Indices of the (up to 8) evenly spaced frames shown in a strip."""
        k = min(self.max_display_frames, num_frames)
        return torch.linspace(0, num_frames - 1, k).round().long()

    def to_display(self, x: torch.Tensor, mask: bool = False, reference: torch.Tensor | None = None) -> torch.Tensor:
        """[B, C, T, H, W] -> a strip of frames side by side [B, H, W*k, C] in [0, 1] ([B, H, W*k, 1] for a mask);
        a fixed mapping (the data normalization undone), so reference is not needed."""
        if x.ndim != 5:
            raise ValueError(f"expected a clip [B, C, T, H, W], got shape {tuple(x.shape)}")
        x = x.float()[:, :, self.display_frames(x.shape[2]).to(x.device)]  # [B, C, k, H, W]
        if mask:
            x = x.amax(dim=1, keepdim=True)
        else:
            x = (x * self.std.view(1, -1, 1, 1, 1) + self.mean.view(1, -1, 1, 1, 1)).clamp(0, 1)
        return rearrange(x, "b c k h w -> b h (k w) c")


# --- reading video files -------------------------------------------------------------------
def _why(e: Exception) -> str:
    return f"{type(e).__name__}: {e}"


def _open(path: Path):
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty file (0 bytes)")
    try:
        return av.open(str(path), mode="r")
    except Exception as e:
        raise DataError(
            f"{path}: cannot open as a video container ({_why(e)}); the file is truncated, damaged or not a video"
        ) from e


def _video_stream(container, path: Path):
    streams = container.streams
    if not streams.video:
        kinds = sorted({s.type for s in streams}) or ["none"]
        raise DataError(f"{path}: no video stream (streams found: {', '.join(kinds)})")
    stream = streams.video[0]
    if stream.codec_context is None:
        raise DataError(f"{path}: unsupported video codec {stream.codec.name!r}: no decoder in this FFmpeg build")
    return stream


def _rate(stream) -> Fraction | None:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return Fraction(rate) if rate else None


def _header_frames(container, stream) -> tuple[int | None, bool]:
    """(frame count, exact) from the header: exact where the container stores it (MP4, AVI),
    else estimated as duration x frame rate (WebM, MKV), else (None, False)."""
    if stream.frames and stream.frames > 0:
        return int(stream.frames), True
    rate = _rate(stream)
    if rate is None:
        return None, False
    if stream.duration and stream.time_base:
        seconds = float(stream.duration * stream.time_base)
    elif container.duration:
        seconds = container.duration / av.time_base
    else:
        return None, False
    return int(round(seconds * rate)), False


@dataclass(frozen=True)
class VideoInfo:
    frames: int | None  # the header's count or estimate; None when the header holds neither
    exact: bool  # frames is the header's count, not an estimate from the duration
    width: int
    height: int
    codec: str


def probe_video(path: str | Path) -> VideoInfo:
    """Open the file, find its video stream and decode the first frame: cheap checks before training."""
    path = Path(path)
    with _open(path) as container:
        stream = _video_stream(container, path)
        try:
            first = next(container.decode(stream), None)
        except Exception as e:
            raise DataError(
                f"{path}: cannot decode the {stream.codec_context.name} video stream ({_why(e)}); "
                "the file is truncated, damaged or in an unsupported format"
            ) from e
        if first is None:
            raise DataError(f"{path}: the video stream holds no decodable frame (truncated or damaged?)")
        frames, exact = _header_frames(container, stream)
        return VideoInfo(frames, exact, first.width, first.height, stream.codec_context.name)


def count_frames(path: str | Path) -> int:
    """Exact frame count: the header's where the container stores it (MP4, AVI), else packets counted
    by demuxing (WebM, MKV; no decoding). A count far below the header's duration means a cut file."""
    path = Path(path)
    with _open(path) as container:
        stream = _video_stream(container, path)
        estimate, exact = _header_frames(container, stream)
        if exact:
            return estimate
        try:
            n = sum(1 for packet in container.demux(stream) if packet.size)
        except Exception as e:
            raise DataError(f"{path}: cannot read the video stream ({_why(e)}); the file is truncated or damaged") from e
    if estimate and n < 0.9 * estimate - 2:
        raise DataError(
            f"{path}: the header's duration gives ~{estimate} frames but the stream holds {n}; the file is truncated"
        )
    return n


def clip_indices(
    total: int,
    num_frames: int,
    sampling_rate: int,
    *,
    start: Literal["center", "random"] = "center",
    generator: torch.Generator | None = None,
    pad_short: bool = False,
    path: str | Path = "<video>",
) -> list[int]:
    """Frame indices start + i * sampling_rate (i < num_frames) in a window of num_frames * sampling_rate.

    The window starts uniformly in [0, total - window] ("random", drawn from generator) or in the
    middle ("center"). A video shorter than the window is an error unless pad_short: then the
    window starts at frame 0 and indices past the end repeat the last frame (as VideoMAE's loader).
    """
    window = num_frames * sampling_rate
    if total < 1:
        raise DataError(f"{path}: the video has no frames")
    if total < window:
        if not pad_short:
            raise DataError(
                f"{path}: {total} frames is shorter than the {window} asked for (num_frames {num_frames} x "
                f"sampling_rate {sampling_rate}); lower sampling_rate, or set pad_short=true to repeat the last frame"
            )
        first = 0
    elif start == "random":
        first = int(torch.randint(total - window + 1, (1,), generator=generator))
    else:
        first = (total - window) // 2
    return [min(first + i * sampling_rate, total - 1) for i in range(num_frames)]


class _SeekFailed(Exception):
    pass


class _Untimed(Exception):
    """Timestamps cannot number the frames (AVI, or out of order): count them from the start instead."""


def _decode(path: Path, wanted: list[int], fmt: str, mode: Literal["seek", "pts", "count"]) -> dict[int, np.ndarray]:
    """Decode the frames of the sorted, distinct indices in wanted; stop after the last one.

    "seek": the demuxer jumps to the key frame before the first wanted frame and frames are
    identified by timestamp (index = (pts - start_time) x time_base x frame rate); "pts": from the
    start, identified from the first decoded frame's timestamp, or counted where timestamps are
    missing; "count": from the start, numbered by their position in decode output. AVI stores no
    presentation timestamps (PyAV's come out of order with B-frames), so it is always counted, in
    the same pass; elsewhere, timestamps that do not rise strictly in output order raise _Untimed.
    """
    got: dict[int, np.ndarray] = {}
    with _open(path) as container:
        stream = _video_stream(container, path)
        if "avi" in (container.format.name or "").split(","):
            mode = "count"  # no presentation timestamps to seek by or number with
        tb, rate = stream.time_base, _rate(stream)
        timed = bool(tb and rate) and mode != "count"
        seek = mode == "seek"
        origin = stream.start_time if seek else None
        if seek and (not timed or origin is None):
            raise _SeekFailed
        if seek:
            try:
                container.seek(origin + int(wanted[0] / (rate * tb)), stream=stream, backward=True)
            except Exception as e:  # not seekable: decode from the start instead
                raise _SeekFailed from e
        ptr, last, prev = 0, -1, None
        try:
            for count, frame in enumerate(container.decode(stream)):
                if timed and frame.pts is not None:
                    if prev is not None and frame.pts <= prev:
                        raise _Untimed  # not presentation timestamps: they cannot number the frames
                    prev = frame.pts
                    if origin is None:
                        origin = frame.pts
                    idx = round((frame.pts - origin) * tb * rate)
                elif seek:
                    raise _SeekFailed  # no timestamps: the position after a seek is unknown
                else:
                    idx = count
                if seek and count == 0 and idx > wanted[0]:
                    raise _SeekFailed  # landed past the first wanted frame
                last = max(last, idx)
                if idx >= wanted[ptr]:
                    arr = frame.to_ndarray(format=fmt)
                    while ptr < len(wanted) and idx >= wanted[ptr]:
                        got[wanted[ptr]] = arr
                        ptr += 1
                if ptr == len(wanted):
                    break
        except (_SeekFailed, _Untimed):
            raise
        except Exception as e:
            raise DataError(
                f"{path}: cannot decode the {stream.codec_context.name} video stream near frame {last + 1} "
                f"({_why(e)}); the file is truncated or damaged"
            ) from e
    if ptr < len(wanted):
        where = f"ends after frame {last}" if last >= 0 else "holds no decodable frame"
        raise DataError(
            f"{path}: the video stream {where} but frame {wanted[ptr]} is needed; the file is truncated or damaged"
        )
    return got


def _decode_any(path: Path, wanted: list[int], fmt: str) -> dict[int, np.ndarray]:
    """Seek where the first wanted frame is not frame 0; else (or where that fails) decode from the start
    numbering frames by timestamp, or by output position where timestamps cannot (_Untimed)."""
    for mode in (["seek"] if wanted[0] > 0 else []) + ["pts"]:
        try:
            return _decode(path, wanted, fmt, mode)
        except _SeekFailed:
            continue
        except _Untimed:
            break
    return _decode(path, wanted, fmt, "count")


def read_video(
    path: str | Path,
    num_frames: int = 16,
    sampling_rate: int = 4,
    *,
    in_chans: int = 3,
    start: Literal["center", "random"] = "center",
    generator: torch.Generator | None = None,
    pad_short: bool = False,
) -> torch.Tensor:
    """Decode one clip (see clip_indices) as uint8 [T, C, H, W], or raise a DataError naming the file."""
    if in_chans not in (1, 3):
        raise ConfigError("in_chans", f"video frames are decoded as grey (1) or RGB (3), got {in_chans}")
    path = Path(path)
    total = count_frames(path)
    indices = clip_indices(
        total, num_frames, sampling_rate, start=start, generator=generator, pad_short=pad_short, path=path
    )
    wanted = sorted(set(indices))
    fmt = "rgb24" if in_chans == 3 else "gray"
    got = _decode_any(path, wanted, fmt)
    try:
        frames = np.stack([got[i] for i in indices])  # [T, H, W(, C)]
    except ValueError as e:
        raise DataError(f"{path}: frames of different sizes in one stream ({e})") from e
    if frames.ndim == 3:
        frames = frames[..., None]
    return torch.from_numpy(frames).permute(0, 3, 1, 2)  # [T, C, H, W]


# --- clips from files ----------------------------------------------------------------------
@dataclass(frozen=True)
class ClipReader:
    """Files -> normalized clips [C, T, H, W]: videos sampled as above, images repeated num_frames times."""

    num_frames: int = 16
    sampling_rate: int = 4
    img_size: int = 224
    short_side: int | None = None
    in_chans: int = 3
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    pad_short: bool = False

    def resize_crop(self, x: torch.Tensor, random: bool, generator: torch.Generator | None) -> torch.Tensor:
        """[T, C, H, W] -> short side resized to short_side (bilinear, antialiased), square img_size crop."""
        side = self.short_side or self.img_size
        h, w = x.shape[-2:]
        if min(h, w) != side:
            size = [side, max(side, round(w * side / h))] if h <= w else [max(side, round(h * side / w)), side]
            x = TF.resize(x, size, interpolation=InterpolationMode.BILINEAR, antialias=True)
            h, w = x.shape[-2:]
        s = self.img_size
        if random:
            top = int(torch.randint(h - s + 1, (1,), generator=generator))
            left = int(torch.randint(w - s + 1, (1,), generator=generator))
        else:
            top, left = (h - s) // 2, (w - s) // 2
        return x[..., top : top + s, left : left + s]

    def load(self, path: Path, train: bool, generator: torch.Generator | None = None) -> torch.Tensor:
        if path.suffix.lower() in IMAGE_SUFFIXES:
            image = read_image(path, self.in_chans, convert=True)  # [C, H, W] in [0, 1]
            x = self.resize_crop(image.unsqueeze(0), train, generator).expand(self.num_frames, -1, -1, -1)
        else:
            frames = read_video(
                path, self.num_frames, self.sampling_rate, in_chans=self.in_chans,
                start="random" if train else "center", generator=generator, pad_short=self.pad_short,
            )
            x = self.resize_crop(frames, train, generator).float() / 255.0
        mean = torch.tensor(self.mean, dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32).view(1, -1, 1, 1)
        return ((x - mean) / std).permute(1, 0, 2, 3).contiguous()  # [C, T, H, W]

    def check(self, path: Path) -> None:
        """Header checks for scan: opens, has a decodable video stream, is long enough (where the header says)."""
        if path.suffix.lower() in IMAGE_SUFFIXES:
            _header_channels(path)
            return
        info = probe_video(path)
        window = self.num_frames * self.sampling_rate
        slack = 0 if info.exact else 1  # an estimate from the duration may be one frame off
        if info.frames is not None and info.frames < window - slack and not self.pad_short:
            clip_indices(info.frames, self.num_frames, self.sampling_rate, path=path)  # raises, naming the file


class VideoDataset(Dataset):
    """Clips from files; keys are indices or (index, seed) pairs (the seed picks the window and crop).

    With skip_bad > 0 a file that fails to decode is replaced by the next readable one (index + 1, ...)
    with a warning, at most skip_bad files in all (counting those the scan dropped; counted per process),
    unless `stand_ins` is False (each item must be its own file: embeddings saved by file name).
    """

    stand_ins = True

    def __init__(self, source: list[Path], labels: list[int], reader: ClipReader, train: bool, skip_bad: int = 0, skipped: int = 0):
        self.source, self.labels, self.reader, self.train = source, labels, reader, train
        self.skip_bad, self.skipped_at_scan = skip_bad, skipped
        self.bad: set[Path] = set()

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, key):
        index, seed = key if isinstance(key, tuple) else (key, None)
        for step in range(len(self.source)):
            path = self.source[(index + step) % len(self.source)]
            if path in self.bad:
                continue
            generator = None if seed is None else torch.Generator().manual_seed(seed)
            try:
                return self.reader.load(path, self.train, generator)
            except DataError as e:
                skipped = self.skipped_at_scan + len(self.bad)
                if skipped >= self.skip_bad or not self.stand_ins:
                    if self.skip_bad:
                        raise DataError(f"{e} (skip_bad={self.skip_bad} bad files already skipped)") from e
                    raise
                self.bad.add(path)
                log.warning("skipping a bad file (%d of skip_bad=%d): %s", skipped + 1, self.skip_bad, e)
        raise DataError(f"{self.source[index]}: no readable file left in this split")


# --- finding files and splits --------------------------------------------------------------
class VideoData:
    """Train / validation clips for the video adapter from a folder of videos (and, optionally, images).

    root: videos, flat or one subfolder per class; train/ and val/ subfolders are used as given,
        otherwise a seeded val_fraction is held out.
    image_root: images that join training as still clips: each image (read_image, converted to
        in_chans) is resized and cropped like a frame and repeated num_frames times, so image and
        video clips share one shape [C, num_frames, H, W] and can share a batch. With
        num_frames == tubelet_size this is OmniMAE's image-as-2-frame-video. Their labels are -1.
    scan: before training, open every file (header and first frame) and check the clip length.
    skip_bad: how many bad files (undecodable, no video stream, too short) may be skipped, each
        with a logged warning; one more is an error.
    """

    def __init__(
        self,
        root: str | None = None,
        builtin: str | None = None,
        img_size: int = 224,
        num_frames: int = 16,
        sampling_rate: int = 4,
        in_chans: int = 3,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        short_side: int | None = None,
        pad_short: bool = False,
        val_fraction: float = 0.02,
        scan: bool = True,
        skip_bad: int = 0,
        image_root: str | None = None,
        seed: int = 0,
    ):
        if builtin is not None:
            raise ConfigError("builtin", f"there is no built-in video set ({builtin!r}); set data.root=PATH to a folder of videos")
        if root is None:
            raise ConfigError("root", "set data.root=PATH to a folder of videos (MP4, WebM, AVI, MKV), with experiment=none")
        if num_frames < 1:
            raise ConfigError("num_frames", f"must be at least 1, got {num_frames}")
        if sampling_rate < 1:
            raise ConfigError("sampling_rate", f"must be at least 1, got {sampling_rate}")
        if in_chans not in (1, 3):
            raise ConfigError("in_chans", f"video frames are decoded as grey (1) or RGB (3), got {in_chans}")
        for key, val in (("mean", mean), ("std", std)):
            if len(val) != in_chans:
                raise ConfigError(key, f"has {len(val)} values for in_chans={in_chans}")
        if short_side is not None and short_side < img_size:
            raise ConfigError("short_side", f"{short_side} must be at least img_size {img_size} (or null)")
        if not 0 <= val_fraction < 1:
            raise ConfigError("val_fraction", f"must lie in [0, 1), got {val_fraction}")
        if skip_bad < 0:
            raise ConfigError("skip_bad", f"must be >= 0, got {skip_bad}")
        self.root, self.image_root = root, image_root
        self.val_fraction, self.scan, self.skip_bad, self.seed = val_fraction, scan, skip_bad, seed
        self.reader = ClipReader(
            num_frames=num_frames, sampling_rate=sampling_rate, img_size=img_size, short_side=short_side,
            in_chans=in_chans, mean=tuple(mean), std=tuple(std), pad_short=pad_short,
        )
        self.skipped: list[str] = []  # what the scan dropped, with why
        self._splits: dict[str, tuple] | None = None

    # splits: name -> (source, labels)
    def splits(self) -> dict[str, tuple]:
        if self._splits is None:
            splits = folder_splits(self.root, VIDEO_SUFFIXES, self.val_fraction, self.seed, "video")
            if self.image_root is not None:
                images = folder_splits(self.image_root, IMAGE_SUFFIXES, self.val_fraction, self.seed, "image", "image_root")
                for s, (paths, _) in images.items():
                    splits[s] = (splits[s][0] + paths, splits[s][1] + [-1] * len(paths))
            self._splits = self._scan(splits) if self.scan else splits
        return self._splits

    def _scan(self, splits: dict[str, tuple]) -> dict[str, tuple]:
        """Check every file before training; drop up to skip_bad bad ones (warning), else raise naming them."""
        bad: list[DataError] = []
        kept = {}
        for s, (paths, labels) in splits.items():
            keep = []
            for p, label in zip(paths, labels):
                try:
                    self.reader.check(p)
                    keep.append((p, label))
                except DataError as e:
                    bad.append(e)
            kept[s] = ([p for p, _ in keep], [label for _, label in keep])
        if len(bad) > self.skip_bad:
            others = "; ".join(str(e) for e in bad[1:4]) + ("; ..." if len(bad) > 4 else "")
            more = f" [{len(bad)} bad files, skip_bad={self.skip_bad} allows {self.skip_bad}" + (f": {others}]" if others else "]")
            raise DataError(f"{bad[0]}{more}")
        for i, e in enumerate(bad, 1):
            log.warning("skipping a bad file (%d of skip_bad=%d): %s", i, self.skip_bad, e)
        self.skipped = [str(e) for e in bad]
        if not kept["train"][0]:
            raise DataError(f"data.root={self.root}: no readable training files left")
        return kept

    def dataset(self, split: str, train: bool) -> VideoDataset:
        source, labels = self.splits()[split]
        return VideoDataset(source, labels, self.reader, train, self.skip_bad, len(self.skipped))
