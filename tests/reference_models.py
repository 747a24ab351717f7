"""Peer implementations built for the tests (importable from tests: pytest's pythonpath includes tests/)."""
from __future__ import annotations

import torch
from transformers import ViTMAEConfig, ViTMAEForPreTraining

D, DEPTH, HEADS, DD, DDEPTH, DHEADS = 64, 4, 4, 64, 2, 4  # the vit_tiny preset's dimensions


def hf_model(norm_pix_loss: bool, chans: int = 3, mask_ratio: float = 0.75) -> ViTMAEForPreTraining:
    cfg = ViTMAEConfig(
        hidden_size=D, num_hidden_layers=DEPTH, num_attention_heads=HEADS, intermediate_size=4 * D,
        decoder_hidden_size=DD, decoder_num_hidden_layers=DDEPTH, decoder_num_attention_heads=DHEADS,
        decoder_intermediate_size=4 * DD, image_size=16, patch_size=4, num_channels=chans,
        layer_norm_eps=1e-6, qkv_bias=True, norm_pix_loss=norm_pix_loss, mask_ratio=mask_ratio,
        hidden_act="gelu", attn_implementation="eager",
    )
    torch.manual_seed(0)
    model = ViTMAEForPreTraining(cfg).eval()
    # transformers 5 leaves a fresh model's fixed sin-cos positions at zero: run HF's own init for them
    model.vit.embeddings.patch_embeddings.projection._is_hf_initialized = False
    w = model.vit.embeddings.patch_embeddings.projection.weight.detach().clone()
    with torch.no_grad():
        model.vit.embeddings.initialize_weights()
        model.decoder.initialize_weights(model.vit.embeddings.patch_embeddings.num_patches)
        model.vit.embeddings.patch_embeddings.projection.weight.copy_(w)
    assert model.decoder.decoder_pos_embed.abs().max() > 0
    with torch.no_grad():  # random biases and norms too, so a swapped pair cannot hide
        for name, p in model.named_parameters():
            if name.endswith("bias") or "layernorm" in name or "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model
