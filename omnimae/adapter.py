"""The modality adapter contract and registry.

An adapter owns everything that knows what its data is: the tokenizer, the mask ratio and
masking strategy, the learned stem (P -> D) and head (D_dec -> P), a modality embedding, the
reconstruction target and how to draw a reconstruction. The core sees only Patches.
"""
from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from omnimae.errors import ConfigError
from omnimae.masking import LAYOUTS, MaskIndices, masking_choice, masking_strategy
from omnimae.masking_schedule import MaskRatioSchedule, parse_mask_ratio
from omnimae.patches import Patches

MODALITIES: dict[str, type["ModalityAdapter"]] = {}


def minmax(x: torch.Tensor, dims: tuple[int, ...], reference: torch.Tensor | None = None, eps: float = 1e-6) -> torch.Tensor:
    """x scaled to [0, 1] per sample over dims by the range of reference (x itself if None), clipped:
    the display mapping of adapters without a fixed one (to_display's `reference`)."""
    ref = x if reference is None else reference
    lo, hi = ref.amin(dim=dims, keepdim=True), ref.amax(dim=dims, keepdim=True)
    return ((x - lo) / (hi - lo).clamp_min(eps)).clamp(0, 1)


def register_modality(name: str):
    """Class decorator: make an adapter known by name (tests and `omnimae` list the registry)."""

    def wrap(cls: type[ModalityAdapter]) -> type[ModalityAdapter]:
        cls.modality = name
        MODALITIES[name] = cls
        return cls

    return wrap


def check_channels(in_chans: int, mean, std) -> None:
    """Shared checks of an adapter's channel count and its per-channel normalization."""
    if in_chans < 1:
        raise ConfigError("in_chans", f"must be at least 1, got {in_chans}")
    for key, val in (("mean", mean), ("std", std)):
        if len(val) != in_chans:
            raise ConfigError(key, f"has {len(val)} values for in_chans={in_chans}")
    if min(std) <= 0:
        raise ConfigError("std", f"must be positive, got {list(std)}")


def check_patch_grid(img_size: int, patch_size: int) -> None:
    """Shared checks of a square image's patch grid: patch_size at least 1, img_size a multiple of it."""
    if patch_size < 1:
        raise ConfigError("patch_size", f"must be at least 1, got {patch_size}")
    if img_size < patch_size or img_size % patch_size:
        raise ConfigError("img_size", f"{img_size} must be a positive multiple of patch_size {patch_size}")


class ChannelEmbeddings:
    """For adapters whose tokens are ChannelPatchTokenizer's (channel-major, coords (c, h, w)): channel
    identity by a learned embedding per channel (CA-MAE), added to each token's sin-cos of (h, w).

    The tables are the adapter's own parameters `channel_embed` [V, D] and `decoder_channel_embed`
    [V, D_dec]: checkpoints hold them under these names."""

    def add_channel_embeddings(self, channels: int, embed_dim: int, decoder_embed_dim: int) -> None:
        self.channel_embed = nn.Parameter(torch.randn(channels, embed_dim) * 0.02)
        self.decoder_channel_embed = nn.Parameter(torch.randn(channels, decoder_embed_dim) * 0.02)

    def channel_table(self, decoder: bool) -> torch.Tensor:
        """[V, D]: one row per channel index, for the encoder or (decoder=True) the decoder."""
        return self.decoder_channel_embed if decoder else self.channel_embed

    def channel_token_embeddings(self, patches: Patches, decoder: bool, ids: torch.Tensor | None = None) -> torch.Tensor:
        """[C*N, D]: each token's channel row; `ids` [C] picks the batch's channels from the table (None:
        the table's channels in order)."""
        table = self.channel_table(decoder)
        per_channel = table if ids is None else table[ids.to(table.device)]  # [C, D]
        _, gh, gw = patches.grid
        return per_channel.repeat_interleave(gh * gw, dim=0)  # [C*N, D], channel-major like the tokens


class ModalityAdapter(nn.Module):
    modality: ClassVar[str] = "base"
    # which coordinate axes feed the fixed sin-cos positions (None: all); e.g. (1, 2) takes (h, w)
    # of (c, h, w) when channel identity comes from token_embeddings instead
    position_axes: ClassVar[tuple[int, ...] | None] = None
    # the masking strategies (omnimae.masking's registry) that fit this adapter's token grid; the first is the default
    maskings: ClassVar[tuple[str, ...]] = ("random",)

    def __init__(
        self,
        *,
        embed_dim: int,
        decoder_embed_dim: int,
        tokenizer,
        mask_ratio: float | dict,
        masking: str | dict | None = None,
        norm_pix_loss: bool = True,
    ):
        super().__init__()
        # a number or a schedule of the training step (omnimae.masking_schedule)
        self.mask_ratio_schedule: MaskRatioSchedule = parse_mask_ratio(mask_ratio)
        # a name, or {name: <strategy>, <its parameters>} (omnimae.masking.masking_choice)
        masking, self.masking_options = masking_choice(masking or self.maskings[0])
        if masking not in self.maskings:
            masking_strategy(masking)  # an unknown name: the error lists every registered one
            raise ConfigError("masking", f"{masking!r} needs {LAYOUTS[masking]}, which the {self.modality} adapter's tokens "
                                         f"({type(tokenizer).__name__}) are not; choose from {', '.join(self.maskings)}")
        self.mask_ratio = self.mask_ratio_schedule.final  # evaluation, embedding, reconstruction
        self.train_mask_ratio: float | None = None  # this training step's ratio, set by the training step
        self.masking = masking
        self.norm_pix_loss = bool(norm_pix_loss)
        self.tokenizer = tokenizer
        self.patch_dim = patch_dim = tokenizer.patch_dim
        self.stem = nn.Linear(patch_dim, embed_dim)  # P -> D
        self.head = nn.Linear(decoder_embed_dim, patch_dim)  # D_dec -> P
        # zero-initialized, so a single-modality model equals the reference MAE at start
        self.modality_embed = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.decoder_modality_embed = nn.Parameter(torch.zeros(1, 1, decoder_embed_dim))

    # --- tokenization -------------------------------------------------------------------
    def tokenize(self, x: torch.Tensor) -> Patches:
        """Model-space input -> Patches, by the adapter's parameter-free tokenizer (self.tokenizer)."""
        return self.tokenizer.patchify(x)

    def untokenize(self, patches: Patches) -> torch.Tensor:
        """The exact inverse of tokenize."""
        return self.tokenizer.unpatchify(patches)

    def token_embeddings(self, patches: Patches, decoder: bool) -> torch.Tensor | None:
        """Learned per-token embeddings added to the positions ([N, D] or [B, N, D]), e.g. channel
        identity; `decoder` selects the decoder's width. None: positions and modality embedding only."""
        return None

    def group_features(self, latent: torch.Tensor, patches: Patches, group: tuple | None = None) -> dict[str, torch.Tensor]:
        """Embeddings of token groups by name ([B, D] each), e.g. one per microscopy channel, from the
        encoder's patch tokens latent [B, N, D]. `group`: the batch's entry in its dataset's `groups`
        (e.g. its channel names), None where the dataset has none. Empty: the adapter has no groups."""
        return {}

    def example_input(self, batch_size: int, generator: torch.Generator | None = None):
        """A random model-space batch of this adapter's configured shape: what `forward_modality` takes
        (for shape checks, export tracing and warm-up). Every adapter defines it."""
        raise NotImplementedError(f"{type(self).__name__} does not define example_input")

    def pixels(self, x) -> torch.Tensor:
        """The model-space tensor of a batch (adapters whose batches carry more than a tensor override this)."""
        return x

    # --- masking and target -------------------------------------------------------------
    def masking_params(self) -> dict:
        """Keyword parameters of the configured masking strategy (e.g. channel_subset_prob)."""
        return {}

    def mask(self, patches: Patches, *, generator: torch.Generator | None = None,
             mask_ratio: float | None = None) -> MaskIndices:
        """The configured strategy's mask for this batch (same visible count for every sample), at
        mask_ratio where given, else at the training step's ratio in training mode, else at the end of
        the schedule (self.mask_ratio)."""
        ratio = self.train_mask_ratio if self.training and self.train_mask_ratio is not None else self.mask_ratio
        ratio = ratio if mask_ratio is None else mask_ratio
        return masking_strategy(self.masking)(patches, ratio, generator=generator,
                                              **{**self.masking_params(), **self.masking_options})

    def target(self, patches: Patches) -> torch.Tensor:
        """Reconstruction target [B, N, P]: per-patch normalized when norm_pix_loss."""
        target = patches.values
        if self.norm_pix_loss:
            mean = target.mean(dim=-1, keepdim=True)
            var = target.var(dim=-1, keepdim=True)
            target = (target - mean) / (var + 1.0e-6) ** 0.5
        return target

    def prediction_to_values(self, patches: Patches, pred: torch.Tensor) -> torch.Tensor:
        """Undo the target normalization: predicted patch values in the input's (normalized) space."""
        if not self.norm_pix_loss:
            return pred
        mean = patches.values.mean(dim=-1, keepdim=True)
        var = patches.values.var(dim=-1, keepdim=True)
        return pred * (var + 1.0e-6) ** 0.5 + mean

    # --- visualization ------------------------------------------------------------------
    def to_display(self, x: torch.Tensor, mask: bool = False, reference: torch.Tensor | None = None) -> torch.Tensor:
        """Model-space input [B, ...] -> displayable images [B, H, W, 3 or 1] in [0, 1].

        With mask=True, x is a 0/1 mask in model space and the result is [B, H, W, 1]. Adapters that
        scale each sample to its own range take that range from `reference` when given (the
        original, so that a reconstruction is shown on the original's scale).
        """
        raise NotImplementedError
