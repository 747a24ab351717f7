"""RGB / grey images: folders of PNG, JPEG or TIFF, the MAE recipe's augmentation, 2D patches."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2 as T

from omnimae.adapter import ModalityAdapter, check_channels, check_patch_grid, register_modality
from omnimae.data.crop import global_rng_from
from omnimae.data.protocol import SampleSet, Split
from omnimae.errors import ConfigError
from omnimae.masking_plane import PLANE_MASKINGS
from omnimae.data.files import find_files, folder_splits
from omnimae.tokenizers import PatchTokenizer2D

from .readers.image import IMAGE_SUFFIXES, header_channels, match_channels, read_image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@register_modality("image")
class ImageAdapter(ModalityAdapter):
    """Images [B, C, H, W] (normalized) <-> patches of patch_size x patch_size x C."""

    maskings = ("random", *PLANE_MASKINGS)  # the MAE paper's random by default; the plane strategies fit (h, w)

    def __init__(
        self,
        *,
        embed_dim: int,
        decoder_embed_dim: int,
        img_size: int = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        mask_ratio: float | dict = 0.75,
        masking: str = "random",
        norm_pix_loss: bool = True,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ):
        check_patch_grid(img_size, patch_size)
        check_channels(in_chans, mean, std)
        super().__init__(
            embed_dim=embed_dim,
            decoder_embed_dim=decoder_embed_dim,
            tokenizer=PatchTokenizer2D(patch_size, in_chans),
            mask_ratio=mask_ratio,
            masking=masking,
            norm_pix_loss=norm_pix_loss,
        )
        self.img_size, self.patch_size, self.in_chans = img_size, patch_size, in_chans
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    def example_input(self, batch_size: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.randn(batch_size, self.in_chans, self.img_size, self.img_size, generator=generator)  # [B, C, H, W]

    def to_display(self, x: torch.Tensor, mask: bool = False, reference: torch.Tensor | None = None) -> torch.Tensor:
        if mask:  # (a fixed mapping: reference is not needed)
            return x.float().amax(dim=1).unsqueeze(-1)  # [B, H, W, 1]
        x = (x.float() * self.std + self.mean).clamp(0, 1)  # undo the data normalization
        return x.permute(0, 2, 3, 1)  # [B, H, W, C]


def find_images(root: str | Path, classes: list[str] | None = None) -> tuple[list[Path], list[int], list[str]]:
    """Images under root: ImageFolder layout (root/<class>/...) gives labels, a flat folder -1."""
    return find_files(root, IMAGE_SUFFIXES, "image", classes=classes)


# --- datasets ------------------------------------------------------------------------------
class ImageDataset(SampleSet):
    """Images from files or an in-memory tensor; keys are indices or (index, seed) pairs.

    With a seed the augmentation draws from its own RNG stream, so a resumed run sees the same
    crops as an uninterrupted one.
    """

    def __init__(self, source: list[Path] | torch.Tensor, labels: list[int], transform, in_chans: int, convert: bool):
        self.source, self.labels, self.transform = source, labels, transform
        self.in_chans, self.convert = in_chans, convert

    def __len__(self) -> int:
        return len(self.source)

    def load(self, index: int) -> torch.Tensor:
        if isinstance(self.source, torch.Tensor):
            return self.source[index]
        return read_image(self.source[index], self.in_chans, self.convert)

    def __getitem__(self, key):
        index, seed = key if isinstance(key, tuple) else (key, None)
        x = self.load(index)
        if seed is None:
            return self.transform(x)
        with global_rng_from(seed):
            return self.transform(x)


class ImageData:
    """Train / validation / labeled image sets for the image adapter, from a folder or built in.

    root: a folder (ImageFolder layout or flat; train/ and val/ subfolders are used as given).
    builtin: 'digits' (scikit-learn's 8x8 handwritten digits, shipped inside the package).
    """

    BUILTINS = ("digits",)

    def __init__(
        self,
        root: str | None = None,
        builtin: str | None = None,
        img_size: int = 224,
        in_chans: int = 3,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        crop_scale: Sequence[float] = (0.2, 1.0),
        hflip: bool = True,
        val_fraction: float = 0.02,
        convert: bool = False,
        scan: bool = True,
        seed: int = 0,
    ):
        # long: one keyword argument and its check per config key
        if (root is None) == (builtin is None):
            raise ConfigError(
                "root",
                f"set exactly one of root and builtin, got root={root!r}, builtin={builtin!r}. For your own "
                "images pass data.root=PATH with experiment=none (or experiment=mae_imagenet); the default "
                "experiment=digits sets builtin=digits",
            )
        if builtin is not None and builtin not in self.BUILTINS:
            raise ConfigError("builtin", f"unknown built-in dataset {builtin!r}; choose from {self.BUILTINS}")
        if len(crop_scale) != 2 or not 0 < crop_scale[0] <= crop_scale[1] <= 1:
            raise ConfigError("crop_scale", f"must be (min, max) with 0 < min <= max <= 1, got {list(crop_scale)}")
        if not 0 <= val_fraction < 1:
            raise ConfigError("val_fraction", f"must lie in [0, 1), got {val_fraction}")
        self.root, self.builtin, self.img_size, self.in_chans = root, builtin, img_size, in_chans
        self.convert, self.scan, self.seed, self.val_fraction = convert, scan, seed, val_fraction
        norm = T.Normalize(list(mean), list(std))
        bicubic = InterpolationMode.BICUBIC
        self.train_transform = T.Compose(
            [T.RandomResizedCrop(img_size, scale=tuple(crop_scale), interpolation=bicubic, antialias=True)]
            + ([T.RandomHorizontalFlip()] if hflip else [])
            + [norm]
        )
        self.eval_transform = T.Compose(
            [T.Resize(img_size, interpolation=bicubic, antialias=True), T.CenterCrop(img_size), norm]
        )
        self._splits: dict[str, tuple] | None = None

    # splits: name -> (source, labels)
    def splits(self) -> dict[str, tuple]:
        if self._splits is None:
            self._splits = self._digits() if self.builtin == "digits" else self._folder()
        return self._splits

    def _digits(self) -> dict[str, tuple]:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        if self.in_chans != 1:
            raise ConfigError("in_chans", f"the built-in digits are grey: in_chans must be 1, got {self.in_chans}")
        d = load_digits()
        images = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0  # [n, 1, 8, 8] in [0, 1]
        idx = np.arange(len(images))
        tr, te = train_test_split(idx, test_size=0.25, random_state=0, stratify=d.target)
        return {"train": Split(images[tr], d.target[tr].tolist()), "val": Split(images[te], d.target[te].tolist())}

    def _folder(self) -> dict[str, tuple]:
        splits = folder_splits(self.root, IMAGE_SUFFIXES, self.val_fraction, self.seed, "image")
        if self.scan:  # every header before training: a bad file fails now, naming itself
            for paths, _ in splits.values():
                for p in paths:
                    c = header_channels(p)
                    if c != self.in_chans and not self.convert:
                        match_channels(np.zeros((1, 1, c), np.float32), self.in_chans, False, p)
        return splits

    def dataset(self, split: str, train: bool) -> ImageDataset:
        source, labels = self.splits()[split]
        transform = self.train_transform if train else self.eval_transform
        return ImageDataset(source, labels, transform, self.in_chans, self.convert)
