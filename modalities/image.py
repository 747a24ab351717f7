"""RGB / grey images: folders of PNG, JPEG or TIFF, the MAE recipe's augmentation, 2D patches."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2 as T

from omnimae.adapter import ModalityAdapter, check_channels, register_modality
from omnimae.errors import ConfigError, DataError
from omnimae.files import find_files, folder_splits
from omnimae.tokenizers import PatchTokenizer2D

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp"}


@register_modality("image")
class ImageAdapter(ModalityAdapter):
    """Images [B, C, H, W] (normalized) <-> patches of patch_size x patch_size x C."""

    def __init__(
        self,
        *,
        embed_dim: int,
        decoder_embed_dim: int,
        img_size: int = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        mask_ratio: float = 0.75,
        masking: str | None = None,
        norm_pix_loss: bool = True,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ):
        if patch_size < 1 or img_size < patch_size or img_size % patch_size:
            raise ConfigError("img_size", f"{img_size} must be a positive multiple of patch_size {patch_size}")
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

    def to_display(self, x: torch.Tensor, mask: bool = False, reference: torch.Tensor | None = None) -> torch.Tensor:
        if mask:  # (a fixed mapping: reference is not needed)
            return x.float().amax(dim=1).unsqueeze(-1)  # [B, H, W, 1]
        x = (x.float() * self.std + self.mean).clamp(0, 1)  # undo the data normalization
        return x.permute(0, 2, 3, 1)  # [B, H, W, C]


# --- reading files -------------------------------------------------------------------------
def _to_float(arr: np.ndarray, path: Path) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    if arr.dtype == np.uint16:
        return arr.astype(np.float32) / 65535.0
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise DataError(f"{path}: image holds NaN or infinite values")
        return arr.astype(np.float32)
    if arr.dtype == bool:
        return arr.astype(np.float32)
    raise DataError(f"{path}: unsupported pixel type {arr.dtype}")


def _match_channels(arr: np.ndarray, in_chans: int, convert: bool, path: Path) -> np.ndarray:
    """arr [H, W, C] -> [H, W, in_chans]; a mismatch is an error unless conversion was asked for."""
    c = arr.shape[2]
    if c == in_chans:
        return arr
    if convert:
        if in_chans == 3 and c == 1:
            return np.repeat(arr, 3, axis=2)
        if in_chans == 3 and c == 4:
            return arr[..., :3]
        if in_chans == 1 and c in (3, 4):
            return (arr[..., :3] @ np.array([0.299, 0.587, 0.114], dtype=arr.dtype))[..., None]
    hint = "" if convert else " (set data.convert=true to convert grey/RGB/RGBA)"
    raise DataError(f"{path}: image has {c} channels but the model expects in_chans={in_chans}{hint}")


_UINT16_MODES = ("I;16", "I;16B", "I;16L")


def _decoded_mode(mode: str) -> str:
    """The PIL mode an image of this mode is read as: kept, or converted to RGB (RGBA if it has alpha)."""
    if mode in ("L", "RGB", "RGBA", "1") or mode in _UINT16_MODES:
        return mode
    return "RGBA" if "A" in mode else "RGB"


def _tiff_layout(tif, path: Path) -> tuple[list[int], tuple[int, int, int]]:
    """The TIFF's series axes -> (the transpose to [H, W, C] once size-1 axes are dropped, that
    shape): a sample or channel axis (S, C) goes last; several planes or images are an error."""
    if len(tif.series) != 1:
        shapes = [tuple(s.shape) for s in tif.series]
        raise DataError(f"{path}: the TIFF holds {len(shapes)} images {shapes}; the image modality reads files of one")
    series = tif.series[0]
    axes, shape = series.axes.upper(), tuple(series.shape)
    if "Y" not in axes or "X" not in axes:
        raise DataError(f"{path}: the TIFF's axes {axes} (shape {shape}) are not an image's (no Y and X)")
    channel = [i for i, (a, n) in enumerate(zip(axes, shape)) if a in "SC" and n > 1]
    extra = [i for i, (a, n) in enumerate(zip(axes, shape)) if a not in "YXSC" and n > 1] + channel[1:]
    if extra:
        raise DataError(
            f"{path}: a stack of {int(np.prod([shape[i] for i in extra]))} planes (axes {axes}, shape {shape}); "
            "the image modality reads single-plane images: use the microscopy or array modality for stacks"
        )
    y, x = axes.index("Y"), axes.index("X")
    order = [i for i in range(len(axes)) if i not in (y, x, *channel)] + [y, x] + channel
    return order, (shape[y], shape[x], shape[channel[0]] if channel else 1)


def _read_tiff(path: Path) -> np.ndarray:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        order, hwc = _tiff_layout(tif, path)
        expected = tuple(tif.series[0].shape)
        arr = tif.series[0].asarray()
    if arr.shape != expected:  # truncated files can decode to a wrong shape
        raise DataError(f"{path}: decoded shape {arr.shape} differs from the header's {expected}")
    return arr.transpose(order).reshape(hwc)


def read_image(path: str | Path, in_chans: int, convert: bool = False) -> torch.Tensor:
    """Decode one image file to a float tensor [C, H, W] in [0, 1], or raise naming the file.

    A TIFF is read by its axes: (H, W), (H, W, S) or planar (S, H, W); a stack of planes (pages,
    Z, time) is an error."""
    path = Path(path)
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            arr = _read_tiff(path)
        else:
            from PIL import Image

            with Image.open(path) as im:
                im.load()  # decodes fully: truncation raises here, not later
                mode = _decoded_mode(im.mode)
                if im.mode in _UINT16_MODES:
                    arr = np.asarray(im, dtype=np.uint16)
                elif mode != im.mode:
                    arr = np.asarray(im.convert(mode))
                else:
                    arr = np.asarray(im)
    except DataError:
        raise
    except Exception as e:  # PIL and tifffile errors do not name the file
        raise DataError(f"{path}: cannot decode image ({type(e).__name__}: {e})") from e
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[2] > 4:
        raise DataError(
            f"{path}: expected an (H, W) or (H, W, C<=4) image, got shape {arr.shape}; "
            "multi-channel stacks belong to the microscopy modality"
        )
    arr = _match_channels(_to_float(arr, path), in_chans, convert, path)
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1)  # [C, H, W]


def _header_channels(path: Path) -> int:
    """Channel count from the header only (cheap), as read_image will decode it: validates a whole
    folder before training."""
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            with tifffile.TiffFile(path) as tif:
                return _tiff_layout(tif, path)[1][2]
        from PIL import Image

        with Image.open(path) as im:
            return Image.getmodebands(_decoded_mode(im.mode))
    except DataError:
        raise
    except Exception as e:
        raise DataError(f"{path}: cannot read image header ({type(e).__name__}: {e})") from e


def find_images(root: str | Path, classes: list[str] | None = None) -> tuple[list[Path], list[int], list[str]]:
    """Images under root: ImageFolder layout (root/<class>/...) gives labels, a flat folder -1."""
    return find_files(root, IMAGE_SUFFIXES, "image", classes=classes)


# --- datasets ------------------------------------------------------------------------------
class ImageDataset(Dataset):
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
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)  # CPU only: torch.manual_seed costs 70x more
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
        return {"train": (images[tr], d.target[tr].tolist()), "val": (images[te], d.target[te].tolist())}

    def _folder(self) -> dict[str, tuple]:
        splits = folder_splits(self.root, IMAGE_SUFFIXES, self.val_fraction, self.seed, "image")
        if self.scan:  # every header before training: a bad file fails now, naming itself
            for paths, _ in splits.values():
                for p in paths:
                    c = _header_channels(p)
                    if c != self.in_chans and not self.convert:
                        _match_channels(np.zeros((1, 1, c), np.float32), self.in_chans, False, p)
        return splits

    def dataset(self, split: str, train: bool) -> ImageDataset:
        source, labels = self.splits()[split]
        transform = self.train_transform if train else self.eval_transform
        return ImageDataset(source, labels, transform, self.in_chans, self.convert)
