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
from pathlib import Path
from typing import Sequence

import torch
from einops import rearrange
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from omnimae.adapter import ModalityAdapter, check_channels, check_patch_grid, register_modality
from omnimae.data.crop import crop_starts, cut, sample_generator
from omnimae.data.skip import SkipBudget, budget_for, load_or_stand_in, scan_splits
from omnimae.data.files import folder_splits
from omnimae.data.protocol import SampleSet, Split
from omnimae.errors import ConfigError
from omnimae.patches import Patches
from omnimae.tokenizers.tube import TubeTokenizer
from omnimae.masking_plane import PLANE_MASKINGS

from .image import IMAGENET_MEAN, IMAGENET_STD
from .readers.image import IMAGE_SUFFIXES, header_channels, read_image
from .readers.video import VIDEO_SUFFIXES, clip_indices, probe_video, read_video

log = logging.getLogger("omnimae")

NORM_EPS = 1.0e-6  # VideoMAE's: (x - mean) / (std + eps)


# --- the adapter ---------------------------------------------------------------------------
@register_modality("video")
class VideoAdapter(ModalityAdapter):
    """Clips [B, C, T, H, W] (normalized) <-> tubes of tubelet_size x patch_size x patch_size x C."""

    max_display_frames = 8
    maskings = ("tube", "random", *PLANE_MASKINGS)  # VideoMAE's tube by default; plane strategies repeat over t

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
        mask_ratio: float | dict = 0.9,
        masking: str = "tube",
        norm_pix_loss: bool = True,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ):
        check_patch_grid(img_size, patch_size)
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

    def example_input(self, batch_size: int, generator: torch.Generator | None = None) -> torch.Tensor:
        size = (batch_size, self.in_chans, self.num_frames, self.img_size, self.img_size)  # [B, C, T, H, W]
        return torch.randn(size, generator=generator)

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
        return cut(x, crop_starts((h, w), (s, s), generator, random), (s, s))

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
            header_channels(path)
            return
        info = probe_video(path)
        window = self.num_frames * self.sampling_rate
        slack = 0 if info.exact else 1  # an estimate from the duration may be one frame off
        if info.frames is not None and info.frames < window - slack and not self.pad_short:
            clip_indices(info.frames, self.num_frames, self.sampling_rate, path=path)  # raises, naming the file


class VideoDataset(SampleSet):
    """Clips from files; keys are indices or (index, seed) pairs (the seed picks the window and crop).

    With skip_bad > 0 a file that fails to decode is replaced by the next readable one (index + 1, ...)
    with a warning, at most skip_bad files in all (counting those the scan dropped; one count shared by all workers),
    unless `stand_ins` is False (each item must be its own file: embeddings saved by file name).
    """


    def __init__(self, source: list[Path], labels: list[int], reader: ClipReader, train: bool,
                 budget: SkipBudget | None = None, offset: int = 0):
        self.source, self.labels, self.reader, self.train = source, labels, reader, train
        self.budget, self.offset = budget, offset  # offset: first file's index in the budget

    def __len__(self) -> int:
        return len(self.source)

    def load(self, index: int, seed: int | None) -> torch.Tensor:
        return self.reader.load(self.source[index], self.train, sample_generator(seed))

    def __getitem__(self, key):
        index, seed = key if isinstance(key, tuple) else (key, None)
        return load_or_stand_in(self.source, index, lambda i: self.load(i, seed), self.budget, self.offset, self.stand_ins)


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
        # long: one keyword argument and its check per config key
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
        self._budget: SkipBudget | None = None
        self._offsets: dict[str, int] = {}

    # splits: name -> (source, labels)
    def splits(self) -> dict[str, tuple]:
        if self._splits is None:
            splits = folder_splits(self.root, VIDEO_SUFFIXES, self.val_fraction, self.seed, "video")
            if self.image_root is not None:
                images = folder_splits(self.image_root, IMAGE_SUFFIXES, self.val_fraction, self.seed, "image", "image_root")
                for s, (paths, _) in images.items():
                    splits[s] = Split(splits[s].source + paths, list(splits[s].labels) + [-1] * len(paths))
            self._splits = self._scan(splits) if self.scan else splits
        return self._splits

    def _scan(self, splits: dict[str, tuple]) -> dict[str, tuple]:
        """Check every file before training; drop up to skip_bad bad ones (warning), else raise naming them."""
        kept, bad = scan_splits(splits, self.reader.check, self.skip_bad, self.root)
        self.skipped = [str(e) for e in bad]
        return kept

    def dataset(self, split: str, train: bool) -> VideoDataset:
        source, labels = self.splits()[split]
        if self._budget is None:
            self._budget, self._offsets = budget_for(self.splits(), self.skip_bad, len(self.skipped))
        return VideoDataset(source, labels, self.reader, train, self._budget, self._offsets[split])
