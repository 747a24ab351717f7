"""Decoding video files with PyAV (bundled FFmpeg): header checks, frame counts, clip sampling.

Frames are numbered by presentation timestamp where the container has them and they rise in
output order; AVI files (no presentation timestamps) and streams whose timestamps do not rise are
numbered by counting decoded frames. Every failure is a DataError naming the file.
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Literal

import av
import numpy as np
import torch

from omnimae.data.crop import crop_starts
from omnimae.data.files import check_file
from omnimae.errors import ConfigError, DataError

VIDEO_SUFFIXES = {".mp4", ".m4v", ".mov", ".webm", ".mkv", ".avi"}


def _why(e: Exception) -> str:
    return f"{type(e).__name__}: {e}"


def _open(path: Path):
    check_file(path)
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
    else:
        first = crop_starts([total], [window], generator, start == "random")[0]
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
    # long: one decoding state machine (seek, number by timestamp or by count) over shared locals
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
