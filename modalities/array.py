"""A modality from configuration alone: arrays with named dimensions, tokenized as the YAML says.

Hyperspectral tiles, EEG spectrograms, depth maps, sensor arrays: a researcher writes one YAML
file (configs/modality/<name>.yaml, or a folder added with OMNIMAE_CONFIG_PATH) whose adapter is
`omnimae.modalities.array.ArrayAdapter` and whose data is `omnimae.modalities.array.ArrayData`,
choosing the tokenizer (patch2d, tube or channel), patch sizes, normalization, mask ratio and
masking. Files: .npy, .nc and .zarr (through xarray, dims by name) and .tif (tifffile).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from omnimae.adapter import ChannelEmbeddings, ModalityAdapter, minmax, register_modality
from omnimae.data.crop import crop_starts, cut, sample_generator, standardize_sample_crop
from omnimae.data.protocol import SampleSet
from omnimae.errors import ConfigError, DataError
from omnimae.data.files import folder_splits
from omnimae.patches import Patches
from omnimae.tokenizers import ChannelPatchTokenizer, PatchTokenizer2D, TubeTokenizer
from omnimae.masking_plane import PLANE_MASKINGS

ARRAY_SUFFIXES = {".npy", ".nc", ".zarr", ".tif", ".tiff"}
TOKENIZERS = ("patch2d", "tube", "channel")


@register_modality("array")
class ArrayAdapter(ChannelEmbeddings, ModalityAdapter):
    """Samples [C, H, W] (patch2d, channel) or [C, T, H, W] (tube), already normalized by the data."""

    maskings = ("random", "tube", *PLANE_MASKINGS)

    def __init__(
        self,
        *,
        embed_dim: int,
        decoder_embed_dim: int,
        shape: Sequence[int],
        tokenizer: str = "patch2d",
        patch_size: int = 16,
        tubelet_size: int = 2,
        mask_ratio: float | dict = 0.75,
        masking: str | dict = "random",
        norm_pix_loss: bool = True,
    ):
        if tokenizer not in TOKENIZERS:
            raise ConfigError("tokenizer", f"must be one of {TOKENIZERS}, got {tokenizer!r}")
        want = 4 if tokenizer == "tube" else 3
        if len(shape) != want:
            raise ConfigError("shape", f"the {tokenizer} tokenizer takes {'[C, T, H, W]' if want == 4 else '[C, H, W]'}, got {list(shape)}")
        if any(s % patch_size for s in shape[-2:]) or patch_size < 1:
            raise ConfigError("patch_size", f"{patch_size} must divide the spatial size {list(shape[-2:])}")
        if tokenizer == "tube" and (tubelet_size < 1 or shape[1] % tubelet_size):
            raise ConfigError("tubelet_size", f"{tubelet_size} must divide the time size {shape[1]}")
        c = shape[0]
        self.maskings = ("random", "tube", *PLANE_MASKINGS) if tokenizer == "tube" else ("random", *PLANE_MASKINGS)
        if tokenizer == "patch2d":
            tok = PatchTokenizer2D(patch_size, c)
        elif tokenizer == "tube":
            tok = TubeTokenizer(tubelet_size, patch_size, c)
        else:
            tok = ChannelPatchTokenizer(patch_size)
        super().__init__(embed_dim=embed_dim, decoder_embed_dim=decoder_embed_dim, tokenizer=tok,
                         mask_ratio=mask_ratio, masking=masking, norm_pix_loss=norm_pix_loss)
        self.tokenizer_kind, self.shape = tokenizer, tuple(shape)
        if tokenizer == "channel":  # channel identity by a learned embedding per channel index
            self.position_axes = (1, 2)
            self.add_channel_embeddings(c, embed_dim, decoder_embed_dim)

    def example_input(self, batch_size: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.randn(batch_size, *self.shape, generator=generator)  # [B, C, (T,) H, W]

    def token_embeddings(self, patches: Patches, decoder: bool) -> torch.Tensor | None:
        return self.channel_token_embeddings(patches, decoder) if self.tokenizer_kind == "channel" else None

    def to_display(self, x: torch.Tensor, mask: bool = False, reference: torch.Tensor | None = None) -> torch.Tensor:
        """Channel 0 (of the middle time step for tubes), or every channel side by side for `channel`,
        min-max scaled per sample (by the reference's range when given)."""

        def shown(t: torch.Tensor) -> torch.Tensor:  # [B, 1, H, W] or [B, 1, H, C*W]
            t = t.float()
            if t.ndim == 5:
                t = t[:, :, t.shape[2] // 2]
            if self.tokenizer_kind == "channel":
                t = torch.cat(list(t.unbind(1)), dim=-1).unsqueeze(1)
            return t.amax(1, keepdim=True) if mask else t[:, :1]

        x = shown(x)
        if not mask:
            x = minmax(x, (2, 3), None if reference is None else shown(reference))
        return x[:, 0].unsqueeze(-1)


def read_array(path: str | Path, dims: Sequence[str] | None, variable: str | None) -> np.ndarray:
    """One sample as float32, its axes ordered as `dims` (names for netCDF/zarr; positions are kept for .npy/.tif).
    Only bool, integer and float data is accepted (not strings, dates, complex numbers or objects)."""
    # long: one branch per file format, each short
    path = Path(path)
    suffix = path.suffix.lower()  # as find_files matches them: UPPER.NPY, x.OME.TIF
    if suffix not in ARRAY_SUFFIXES:
        raise DataError(f"{path}: unsupported file type {suffix!r}; use one of {sorted(ARRAY_SUFFIXES)}")
    try:
        if suffix in (".nc", ".zarr"):
            import xarray as xr

            ds = xr.open_zarr(path) if suffix == ".zarr" else xr.open_dataset(path)
            names = list(ds.data_vars)
            if variable is None and len(names) != 1:
                raise DataError(f"{path}: holds variables {names}; set data.variable")
            var = ds[variable or names[0]] if (variable or names[0]) in ds else None
            if var is None:
                raise DataError(f"{path}: no variable {variable!r} (it has {names})")
            if dims:
                missing = [d for d in dims if d not in var.dims]
                if missing:
                    raise DataError(f"{path}: variable {var.name!r} has dims {list(var.dims)}, not {missing}")
                var = var.transpose(*dims)
            arr = var.values
        elif suffix == ".npy":
            arr = np.load(path, allow_pickle=False)
        else:
            import tifffile

            arr = tifffile.imread(path)
    except DataError:
        raise
    except Exception as e:
        raise DataError(f"{path}: cannot read array ({type(e).__name__}: {e})") from e
    arr = np.asarray(arr)
    if not (arr.dtype == bool or np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise DataError(f"{path}: unsupported data type {arr.dtype}; arrays must hold bool, integer or float values")
    arr = arr.astype(np.float32)
    if not np.isfinite(arr).all():
        raise DataError(f"{path}: array holds NaN or infinite values")
    return arr


class ArrayDataset(SampleSet):
    def __init__(self, paths: list[Path], labels: list[int], data: "ArrayData", train: bool):
        self.paths, self.labels, self.data, self.train = paths, labels, data, train

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key) -> torch.Tensor:
        index, seed = key if isinstance(key, tuple) else (key, None)
        d = self.data
        path = self.paths[index]
        x = torch.from_numpy(read_array(path, d.dims, d.variable))
        if x.ndim == len(d.shape) - 1:
            x = x.unsqueeze(0)  # a single channel
        if x.ndim != len(d.shape) or x.shape[0] != d.shape[0] or any(a < b for a, b in zip(x.shape[1:], d.shape[1:])):
            raise DataError(f"{path}: array of shape {tuple(x.shape)} does not fit shape {list(d.shape)} (channels first)")
        starts = crop_starts(x.shape[1:], d.shape[1:], sample_generator(seed), self.train and seed is not None)
        whole_std = x.std(dim=tuple(range(1, x.ndim)), keepdim=True) if d.normalization == "sample" else None
        x = cut(x, starts, d.shape[1:])
        if d.normalization == "sample":  # per sample and channel, the crop's std floored (see ArrayData)
            x = standardize_sample_crop(x, whole_std, range(len(x)), str(path), "array")
        elif d.normalization == "given":
            view = (-1,) + (1,) * (x.ndim - 1)
            x = (x - torch.tensor(d.mean).view(view)) / torch.tensor(d.std).view(view)
        return x


class ArrayData:
    """A folder of array files (one sample each; class subfolders give labels).

    normalization=sample standardizes each crop per channel by its own mean and std, the std floored
    by the whole array's (omnimae.data.crop.standardize_crop): a blank crop of a sparse array becomes zeros instead of
    failing. A channel constant over the whole array is an error, found when the folder is scanned.
    """

    def __init__(
        self,
        shape: Sequence[int],
        root: str | None = None,
        dims: Sequence[str] | None = None,
        variable: str | None = None,
        normalization: str = "sample",
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        val_fraction: float = 0.02,
        seed: int = 0,
    ):
        if root is None:
            raise ConfigError("root", "set the folder of array files (data.root=PATH)")
        if normalization not in ("sample", "given", "none"):
            raise ConfigError("normalization", f"must be sample, given or none, got {normalization!r}")
        if normalization == "given" and (mean is None or std is None or len(mean) != shape[0] or len(std) != shape[0]):
            raise ConfigError("mean", f"normalization=given needs mean and std with {shape[0]} values each")
        self.shape, self.root, self.dims, self.variable = tuple(shape), root, list(dims) if dims else None, variable
        self.normalization, self.mean, self.std = normalization, mean, std
        self.val_fraction, self.seed = val_fraction, seed
        self._splits = None

    def splits(self) -> dict:
        if self._splits is None:
            self._splits = folder_splits(self.root, ARRAY_SUFFIXES, self.val_fraction, self.seed, "array")
            for paths, _ in self._splits.values():  # every file once, before training
                for p in paths:
                    ArrayDataset([p], [0], self, train=False)[0]
        return self._splits

    def dataset(self, split: str, train: bool) -> ArrayDataset:
        paths, labels = self.splits()[split]
        return ArrayDataset(paths, labels, self, train)
