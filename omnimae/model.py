"""The asymmetric MAE core, shared by every modality (reads like the MAE paper's models_mae.py)."""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Literal, Mapping

import torch
from timm.models.vision_transformer import Block
from torch import nn

from omnimae.adapter import ModalityAdapter
from omnimae.errors import ConfigError
from omnimae.features import pool_tokens
from omnimae.masking import explicit_masking, gather_tokens, random_masking
from omnimae.objectives import Loss, LossInput, MaskedMSE, Objective
from omnimae.patches import Patches
from omnimae.pos_embed import sincos_pos_embed

AttnImpl = Literal["auto", "sdpa", "explicit"]


@dataclass
class MAEOutput:
    loss: torch.Tensor  # scalar, the modality's objective (masked MSE by default)
    pred: torch.Tensor  # [B, N, P] in target space (per-patch normalized if norm_pix_loss)
    mask: torch.Tensor  # [B, N], 1 = masked
    patches: Patches  # the input tokens, to invert predictions
    terms: dict[str, torch.Tensor] = field(default_factory=dict)  # the objective's unweighted terms, for logging


class MaskedAutoencoder(nn.Module):
    """Shared ViT encoder (visible tokens only) and light decoder; adapters own stems and heads."""

    def __init__(
        self,
        adapters: Mapping[str, ModalityAdapter],
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        decoder_embed_dim: int = 512,
        decoder_depth: int = 8,
        decoder_num_heads: int = 16,
        mlp_ratio: float = 4.0,
        norm_eps: float = 1e-6,
        attn_impl: AttnImpl = "auto",
        compile: bool = False,
        objectives: Mapping[str, Objective] | None = None,
    ):
        # long: every dimension is checked and encoder and decoder are built in one readable place
        super().__init__()
        for key, dim, heads in (("embed_dim", embed_dim, num_heads), ("decoder_embed_dim", decoder_embed_dim, decoder_num_heads)):
            if dim % heads:
                raise ConfigError(key, f"{dim} is not divisible by its number of heads {heads}")
        if attn_impl not in ("auto", "sdpa", "explicit"):
            raise ConfigError("attn_impl", f"must be auto, sdpa or explicit, got {attn_impl!r}")
        if not adapters:
            raise ConfigError("modalities", "at least one modality is needed")
        self.embed_dim, self.decoder_embed_dim = embed_dim, decoder_embed_dim
        self.attn_impl = attn_impl
        # the resolved config (its model and modalities nodes) this model was built from: set by build_model,
        # so a model rebuilt from a checkpoint can read files as its training did, and be saved self-describing
        self.config = None
        norm_layer = partial(nn.LayerNorm, eps=norm_eps)
        block = partial(Block, mlp_ratio=mlp_ratio, qkv_bias=True, norm_layer=norm_layer)

        self.adapters = nn.ModuleDict(adapters)
        # each modality's loss (omnimae.objectives), the MAE paper's masked MSE where none is given
        self.objectives = {m: MaskedMSE() for m in adapters} | dict(objectives or {})
        # encoder
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.blocks = nn.ModuleList([block(embed_dim, num_heads) for _ in range(depth)])
        self.norm = norm_layer(embed_dim)
        # decoder
        self.decoder_embed = nn.Linear(embed_dim, decoder_embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_embed_dim))
        self.decoder_blocks = nn.ModuleList([block(decoder_embed_dim, decoder_num_heads) for _ in range(decoder_depth)])
        self.decoder_norm = norm_layer(decoder_embed_dim)
        self._pos_cache: dict[tuple, torch.Tensor] = {}
        self.initialize_weights()
        if compile:  # each transformer block through torch.compile; the token plumbing stays eager
            for blk in (*self.blocks, *self.decoder_blocks):
                blk.compile(dynamic=None)

    # --- init, as the MAE paper -----------------------------------------------------------
    def initialize_weights(self) -> None:
        nn.init.normal_(self.cls_token, std=0.02)
        nn.init.normal_(self.mask_token, std=0.02)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def no_weight_decay(self) -> set[str]:
        """Token-like parameters that AdamW must not decay: the CLS and mask tokens and every learned
        embedding (`*_embed`: modality, channel, ... embeddings play the part of position embeddings).
        Norms and biases are 1-D and left out by the optimizer's grouping anyway."""
        names = {"cls_token", "mask_token"}
        names |= {n for n, _ in self.named_parameters() if n.rsplit(".", 1)[-1].endswith("embed")}
        return names

    # --- position embedding from coordinates ----------------------------------------------
    def pos_embed(self, coords: torch.Tensor, dim: int) -> torch.Tensor:
        """[N, dim] fixed sin-cos for these (host-side) coordinates, cached per coordinates and device."""
        device = self.cls_token.device
        coords = coords.cpu()
        key = (dim, str(device), tuple(coords.shape), coords.numpy().tobytes())
        emb = self._pos_cache.get(key)
        if emb is None:
            emb = self._pos_cache[key] = sincos_pos_embed(coords, dim).to(device)
        return emb

    def token_positions(self, patches: Patches, adapter: ModalityAdapter, decoder: bool = False) -> torch.Tensor:
        """[1 or B, N, dim]: sin-cos of the adapter's position axes plus its learned token embeddings."""
        dim = self.decoder_embed_dim if decoder else self.embed_dim
        axes = adapter.position_axes
        coords = patches.coords if axes is None else patches.coords[:, list(axes)]
        pos = self.pos_embed(coords, dim).unsqueeze(0)  # [1, N, dim]
        extra = adapter.token_embeddings(patches, decoder)
        return pos if extra is None else pos + extra

    def _set_attention(self, x: torch.Tensor) -> None:
        if self.attn_impl == "auto":
            # on CPU under bf16 autocast the explicit softmax path is faster than fused SDPA
            fused = not (x.device.type == "cpu" and torch.is_autocast_enabled("cpu"))
        else:
            fused = self.attn_impl == "sdpa"
        for blk in (*self.blocks, *self.decoder_blocks):
            blk.attn.fused_attn = fused

    # --- the MAE forward ------------------------------------------------------------------
    def forward_encoder(
        self, patches: Patches, adapter: ModalityAdapter, ids_keep: torch.Tensor | None
    ) -> torch.Tensor:
        """Encode the tokens in ids_keep (all tokens if None): returns [B, 1 + K, D], CLS first."""
        values = patches.values  # [B, N, P]
        pos = self.token_positions(patches, adapter)  # [1 or B, N, D]
        if ids_keep is not None:
            values = gather_tokens(values, ids_keep)  # [B, K, P]: only visible tokens are embedded
            pos = gather_tokens(pos.expand(values.shape[0], -1, -1), ids_keep)  # [B, K, D]
        x = adapter.stem(values) + pos + adapter.modality_embed  # [B, K, D]
        cls = self.cls_token.expand(x.shape[0], -1, -1)  # CLS has position zero
        x = torch.cat([cls, x], dim=1)  # [B, 1 + K, D]
        self._set_attention(x)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)

    def forward_decoder(
        self, latent: torch.Tensor, adapter: ModalityAdapter, ids_restore: torch.Tensor, patches: Patches
    ) -> torch.Tensor:
        """latent [B, 1 + K, D] -> prediction [B, N, P] for every token."""
        x = self.decoder_embed(latent)  # [B, 1 + K, Dd]
        b, n = ids_restore.shape
        mask_tokens = self.mask_token.expand(b, n + 1 - x.shape[1], -1)  # [B, N - K, Dd]
        x_ = torch.cat([x[:, 1:], mask_tokens], dim=1)  # [B, N, Dd], visible first
        x_ = gather_tokens(x_, ids_restore)  # unshuffle to the original order
        pos = self.token_positions(patches, adapter, decoder=True)  # [1 or B, N, Dd]
        pos = torch.cat([pos.new_zeros(pos.shape[0], 1, pos.shape[2]), pos], dim=1)  # [., 1 + N, Dd], CLS at zero
        x = torch.cat([x[:, :1], x_], dim=1) + pos + adapter.decoder_modality_embed  # [B, 1 + N, Dd]
        for blk in self.decoder_blocks:
            x = blk(x)
        x = adapter.head(self.decoder_norm(x))  # [B, 1 + N, P]
        return x[:, 1:]

    def forward_loss(
        self, modality: str, patches: Patches, pred: torch.Tensor, mask: torch.Tensor, latent: torch.Tensor
    ) -> Loss:
        """The modality's objective on pred [B, N, P] against the adapter's target: by default the MAE
        paper's MSE over masked tokens (mask [B, N]); terms such as uniformity read latent [B, 1 + K, D]."""
        adapter = self.adapters[modality]
        target = adapter.target(patches)  # [B, N, P], per-patch normalized if norm_pix_loss
        inputs = LossInput(pred, target, mask, latent, adapter.tokenizer.patch_shape)
        return self.objectives[modality](inputs)

    def forward_modality(
        self,
        x: torch.Tensor,
        modality: str,
        *,
        noise: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> MAEOutput:
        """One modality's batch: tokenize, mask, encode, decode.

        The mask: a given mask [B, N] (1 = hidden) as it is; else given noise [B, N], the MAE paper's random
        masking by its argsort (for checks against reference implementations); else the adapter's
        configured strategy, drawn from generator.
        """
        adapter = self.adapters[modality]
        patches = adapter.tokenize(x)
        if mask is not None:
            ids_keep, ids_restore, mask = explicit_masking(mask.to(patches.values.device))
        elif noise is not None:
            b, n, _ = patches.values.shape
            ids_keep, ids_restore, mask = random_masking(b, n, adapter.mask_ratio, noise=noise.to(patches.values.device))
        else:
            ids_keep, ids_restore, mask = adapter.mask(patches, generator=generator)
        latent = self.forward_encoder(patches, adapter, ids_keep)
        pred = self.forward_decoder(latent, adapter, ids_restore, patches)
        loss = self.forward_loss(modality, patches, pred, mask, latent)
        return MAEOutput(loss.total, pred, mask, patches, loss.terms)

    def forward(
        self, batch: Mapping[str, torch.Tensor], generator: torch.Generator | None = None
    ) -> dict[str, MAEOutput]:
        """A batch by modality -> per-modality loss, prediction and mask."""
        return {m: self.forward_modality(x, m, generator=generator) for m, x in batch.items()}

    @torch.no_grad()
    def embed(self, x: torch.Tensor, modality: str, pool: Literal["cls", "mean"] = "mean") -> torch.Tensor:
        """Features of the full, unmasked sequence: the CLS token or the mean of the patch tokens."""
        adapter = self.adapters[modality]
        latent = self.forward_encoder(adapter.tokenize(x), adapter, ids_keep=None)  # [B, 1 + N, D]
        return pool_tokens(latent, pool)
