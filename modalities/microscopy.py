"""Multi-channel microscopy, channel-agnostic as in CA-MAE (Kraus et al. 2024).

Every channel is patched on its own (one token per channel per patch) and embedded by one shared
stem; positions are the 2D sin-cos of (h, w); channel identity is a learned embedding per channel
name from the config's vocabulary. A channel name outside the vocabulary gets the mean of the
learned channel embeddings (a neutral identity), or is an error with unknown_channel=error.
One model therefore learns from, and embeds, any set and order of channels.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from einops import rearrange
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from omnimae.adapter import ChannelEmbeddings, ModalityAdapter, check_patch_grid, minmax, register_modality
from omnimae.data.crop import crop_starts, cut, sample_generator, standardize_sample_crop
from omnimae.data.files import DecodedCache, folder_splits, hold_out
from omnimae.data.protocol import SampleSet
from omnimae.errors import ConfigError, DataError
from omnimae.patches import Patches
from omnimae.tokenizers import ChannelPatchTokenizer
from omnimae.masking_plane import PLANE_MASKINGS

from .readers.manifest import read_manifest, read_manifest_row
from .readers.microscopy import ChannelImage, check_channels, find_microscopy, read_zarr
from .readers.ome_tiff import read_tiff

log = logging.getLogger("omnimae")


def channel_ids(names: Sequence[str], vocabulary: Sequence[str], unknown: str = "shared", source: str = "") -> torch.Tensor:
    """Channel names -> vocabulary indices; an unknown name -> len(vocabulary) (or an error)."""
    index = {n: i for i, n in enumerate(vocabulary)}
    missing = [n for n in names if n not in index]
    if missing and unknown == "error":
        where = f"{source}: " if source else ""
        raise DataError(f"{where}channels {missing} are not in the vocabulary {list(vocabulary)} (unknown_channel=error)")
    return torch.tensor([index.get(n, len(vocabulary)) for n in names], dtype=torch.long)


@register_modality("microscopy")
class MicroscopyAdapter(ChannelEmbeddings, ModalityAdapter):
    """Inputs {"pixels": [B, C, H, W], "channel_ids": [B, C]}: tokens per (channel, patch), coords (c, h, w)."""

    position_axes = (1, 2)  # sin-cos of (h, w); channel identity comes from the learned embedding
    maskings = ("channel_subset", "random", *PLANE_MASKINGS)  # CA-MAE's by default; plane strategies: the same (h, w) in every channel

    def __init__(
        self,
        *,
        embed_dim: int,
        decoder_embed_dim: int,
        channels: Sequence[str],
        img_size: int = 224,
        patch_size: int = 16,
        mask_ratio: float | dict = 0.75,
        masking: str = "channel_subset",
        norm_pix_loss: bool = True,
        channel_subset_prob: float = 0.5,
        unknown_channel: str = "shared",
    ):
        if not channels or len(set(channels)) != len(channels):
            raise ConfigError("channels", f"must be a list of distinct channel names, got {list(channels)}")
        check_patch_grid(img_size, patch_size)
        if not 0 <= channel_subset_prob <= 1:
            raise ConfigError("channel_subset_prob", f"must lie in [0, 1], got {channel_subset_prob}")
        if unknown_channel not in ("shared", "error"):
            raise ConfigError("unknown_channel", f"must be shared or error, got {unknown_channel!r}")
        super().__init__(embed_dim=embed_dim, decoder_embed_dim=decoder_embed_dim, tokenizer=ChannelPatchTokenizer(patch_size),
                         mask_ratio=mask_ratio, masking=masking, norm_pix_loss=norm_pix_loss)
        self.channels, self.img_size, self.patch_size = list(channels), img_size, patch_size
        self.channel_subset_prob, self.unknown_channel = channel_subset_prob, unknown_channel
        self.add_channel_embeddings(len(channels), embed_dim, decoder_embed_dim)

    # --- tokens ---------------------------------------------------------------------------
    def pixels(self, x) -> torch.Tensor:
        return x["pixels"] if isinstance(x, dict) else x

    def _ids(self, x, num_channels: int) -> torch.Tensor:
        if isinstance(x, dict):
            ids = x["channel_ids"]
            ids = ids if ids.ndim == 1 else ids[0]
            if isinstance(x["channel_ids"], torch.Tensor) and x["channel_ids"].ndim == 2 and (x["channel_ids"] != ids).any():
                raise ValueError("every sample of a batch must have the same channels (batches are grouped by channel set)")
            return ids.cpu()
        if num_channels != len(self.channels):
            raise ValueError(f"a plain tensor must hold the {len(self.channels)} vocabulary channels in order; pass "
                             "{'pixels': x, 'channel_ids': ids} for other channel sets")
        return torch.arange(num_channels)

    def example_input(self, batch_size: int, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        c = len(self.channels)
        pixels = torch.randn(batch_size, c, self.img_size, self.img_size, generator=generator)  # [B, C, H, W]
        return {"pixels": pixels, "channel_ids": torch.arange(c).expand(batch_size, c)}

    def tokenize(self, x) -> Patches:
        pixels = self.pixels(x)  # [B, C, H, W]
        patches = self.tokenizer.patchify(pixels)  # channel-major tokens, coords (c, h, w)
        patches.meta["channel_ids"] = self._ids(x, pixels.shape[1])
        return patches

    def channel_table(self, decoder: bool) -> torch.Tensor:
        """[V + 1, D]: the vocabulary's channel embeddings and, last, the one for unknown names (their mean)."""
        table = super().channel_table(decoder)
        return torch.cat([table, table.mean(0, keepdim=True)])

    def token_embeddings(self, patches: Patches, decoder: bool) -> torch.Tensor:
        return self.channel_token_embeddings(patches, decoder, patches.meta["channel_ids"])

    # --- masking: random over channel x space, sometimes hiding whole channels ---------------
    def masking_params(self) -> dict:
        return {"channel_subset_prob": self.channel_subset_prob} if self.masking == "channel_subset" else {}

    def group_features(self, latent: torch.Tensor, patches: Patches, group: tuple | None = None) -> dict[str, torch.Tensor]:
        """Per-channel embeddings: the mean of each channel's tokens ([B, D] each), by the channel names the
        batch's files gave (`group`: ch0, ch1, ... where a file names none), else by the vocabulary's
        names, with `unknown` for every channel outside it."""
        c = patches.grid[0]
        per_channel = latent.unflatten(1, (c, -1)).mean(2)  # [B, C, D]
        vocabulary = self.channels + ["unknown"]
        names = list(group) if group is not None else [vocabulary[int(i)] for i in patches.meta["channel_ids"]]
        if len(names) != c:
            raise ValueError(f"{len(names)} channel names {names} for a batch of {c} channels")
        return {name: per_channel[:, k] for k, name in enumerate(names)}

    def to_display(self, x: torch.Tensor, mask: bool = False, reference: torch.Tensor | None = None) -> torch.Tensor:
        """[B, C, H, W] -> a strip of the channels side by side [B, H, C*W, 1], each min-max scaled
        (by the reference's range when given)."""
        x = self.pixels(x).float()
        if not mask:
            x = minmax(x, (2, 3), None if reference is None else self.pixels(reference).float())
        return rearrange(x, "b c h w -> b h (c w)").unsqueeze(-1)


# --- data ----------------------------------------------------------------------------------
def standardize(pixels: torch.Tensor, names: Sequence[str], stats: dict | None, source: str,
                image_std: torch.Tensor | None = None) -> torch.Tensor:
    """Per image and channel (CA-MAE's self-standardization), or by dataset statistics per channel name.

    Per image, a crop is standardized by its own mean and std, floored by image_std ([C, 1, 1], the
    std of the whole image the crop was cut from; see omnimae.data.crop): a blank crop of a sparse
    image becomes zeros. Only a channel constant over the whole image is an error."""
    if stats is None:
        whole = pixels.std(dim=(1, 2), keepdim=True) if image_std is None else image_std
        return standardize_sample_crop(pixels, whole, names, source, "image")
    missing = [n for n in names if n not in stats]
    if missing:
        raise DataError(f"{source}: no dataset statistics for channel(s) {missing} (data.stats)")
    mean = torch.tensor([stats[n][0] for n in names], dtype=pixels.dtype).view(-1, 1, 1)
    std = torch.tensor([stats[n][1] for n in names], dtype=pixels.dtype).view(-1, 1, 1)
    return (pixels - mean) / std


def _find_labeled(root: Path) -> tuple[list[Path], list[int], list[str]]:
    """Images under root; where every image lies in a subfolder, the subfolders are classes (labels)."""
    paths = find_microscopy(root)
    if not paths:
        raise DataError(f"data.root={root}: no TIFF, OME-TIFF or zarr images found")
    tops = [p.relative_to(root).parts[0] if len(p.relative_to(root).parts) > 1 else None for p in paths]
    classes = sorted({t for t in tops if t}) if all(tops) else []
    return paths, [classes.index(t) if classes else -1 for t in tops], classes


class MicroscopyDataset(SampleSet):
    """Items {"pixels": [C, S, S] standardized, "channel_ids": [C]}; `groups` holds each item's channel set."""

    def __init__(self, items: list, reader, vocabulary: list[str], unknown: str, img_size: int, train: bool,
                 stats: dict | None, channel_sets: list[tuple[str, ...]], labels: list[int]):
        self.items, self.reader, self.vocabulary, self.unknown = items, reader, vocabulary, unknown
        self.img_size, self.train, self.stats, self.labels = img_size, train, stats, labels
        self.groups = channel_sets

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, key) -> dict:
        index, seed = key if isinstance(key, tuple) else (key, None)
        image = self.reader(self.items[index])
        source = image.source
        if tuple(image.channels) != self.groups[index]:
            raise DataError(f"{source}: channels {image.channels} changed since the scan ({list(self.groups[index])})")
        x = torch.from_numpy(np.ascontiguousarray(image.pixels, dtype=np.float32))  # [C, H, W]
        h, w = x.shape[-2:]
        s = self.img_size
        if min(h, w) < s:  # small images are resized up to the model's size
            x = TF.resize(x, [s, s] if h == w else s, interpolation=InterpolationMode.BILINEAR, antialias=True)
            h, w = x.shape[-2:]
        random = self.train and seed is not None  # unseeded keys (probe, embed) take the centre
        starts = crop_starts((h, w), (s, s), sample_generator(seed), random)
        image_std = x.std(dim=(1, 2), keepdim=True) if self.stats is None else None
        x = cut(x, starts, (s, s))
        x = standardize(x, image.channels, self.stats, source, image_std)
        return {"pixels": x, "channel_ids": channel_ids(image.channels, self.vocabulary, self.unknown, source)}


class MicroscopyData:
    """Multi-channel images: a folder of (OME-)TIFF / zarr files, or a CSV manifest of one file per channel."""

    def __init__(
        self,
        channels: Sequence[str],
        root: str | None = None,
        manifest: str | None = None,
        img_size: int = 224,
        channel_axis: int | None = None,
        channel_names: list[str] | None = None,
        label_column: str | None = None,
        normalization: str = "image",
        stats: dict | None = None,
        unknown_channel: str = "shared",
        val_fraction: float = 0.02,
        seed: int = 0,
        cache_dir: str | None = None,
    ):
        if (root is None) == (manifest is None):
            raise ConfigError("root", f"set exactly one of root (a folder of TIFF/zarr images) and manifest (a CSV), got root={root!r}, manifest={manifest!r}")
        if normalization not in ("image", "dataset"):
            raise ConfigError("normalization", f"must be image or dataset, got {normalization!r}")
        if normalization == "dataset" and not stats:
            raise ConfigError("stats", "normalization=dataset needs stats: {channel name: [mean, std]}")
        if not 0 <= val_fraction < 1:
            raise ConfigError("val_fraction", f"must lie in [0, 1), got {val_fraction}")
        self.vocabulary, self.root, self.manifest, self.img_size = list(channels), root, manifest, img_size
        self.channel_axis, self.channel_names, self.label_column = channel_axis, channel_names, label_column
        self.stats = dict(stats) if normalization == "dataset" else None
        self.unknown, self.val_fraction, self.seed = unknown_channel, val_fraction, seed
        self.cache_dir = cache_dir
        self._splits: dict | None = None
        self._sets: dict = {}

    def _read(self, item):
        if self.cache_dir is None or self.manifest is not None:
            return self._decode(item)
        params = {"channel_axis": self.channel_axis, "channel_names": self.channel_names}
        arrays = DecodedCache(self.cache_dir).get(item, params, lambda: self._as_arrays(self._decode(item)))
        return ChannelImage(arrays["pixels"], [str(c) for c in arrays["channels"]], str(item), [str(item)])

    @staticmethod
    def _as_arrays(image) -> dict:
        return {"pixels": image.pixels, "channels": np.asarray(image.channels, dtype=str)}

    def _decode(self, item):
        if self.manifest is not None:
            return read_manifest_row(item)
        path = Path(item)
        if path.suffix.lower() == ".zarr" or path.is_dir():
            return read_zarr(path, channel_axis=self.channel_axis, channel_names=self.channel_names)
        return read_tiff(path, channel_axis=self.channel_axis, channel_names=self.channel_names)

    def _label(self, row) -> int:
        if not self.label_column:
            return -1
        value = row.metadata.get(self.label_column)
        try:
            return int(value)
        except (TypeError, ValueError):
            raise DataError(f"{row.where}: label {value!r} in column {self.label_column!r} is not an integer") from None

    def splits(self) -> dict[str, tuple]:
        if self._splits is not None:
            return self._splits
        if self.manifest is not None:
            rows = read_manifest(self.manifest, label_column=self.label_column)
            splits = hold_out(rows, [self._label(r) for r in rows], self.val_fraction, self.seed)
        else:  # train/ and val/ folders as given, else a seeded hold-out, as every folder source
            splits = folder_splits(self.root, (), self.val_fraction, self.seed, "microscopy", find=_find_labeled)
        for split, (items, _) in splits.items():  # read every image once: bad files fail before training
            self._sets[split] = []
            for item in items:
                image = self._read(item)
                check_channels(image)
                channel_ids(image.channels, self.vocabulary, self.unknown, image.source)
                self._sets[split].append(tuple(image.channels))
        self._splits = splits
        return splits

    def dataset(self, split: str, train: bool) -> MicroscopyDataset:
        items, labels = self.splits()[split]
        return MicroscopyDataset(items, self._read, self.vocabulary, self.unknown, self.img_size, train, self.stats,
                                 self._sets[split], labels)
