import pytest
import torch
from transformers import ViTMAEConfig, ViTMAEForPreTraining

from omnimae.pos_embed import sincos_pos_embed
from omnimae.patches import grid_coords


def fill_hf_positions(hf: ViTMAEForPreTraining) -> None:
    """transformers 5 leaves a freshly built model's fixed position embeddings at zero: run its own init."""
    hf.vit.embeddings.patch_embeddings.projection._is_hf_initialized = False
    with torch.no_grad():
        hf.vit.embeddings.initialize_weights()
        hf.decoder.initialize_weights(hf.vit.embeddings.patch_embeddings.num_patches)


@pytest.mark.parametrize("dim,dec_dim,side", [(64, 32, 4), (768, 512, 14)])
def test_2d_embedding_equals_the_mae_layout_in_hugging_face(dim, dec_dim, side):
    cfg = ViTMAEConfig(hidden_size=dim, num_hidden_layers=0, num_attention_heads=4, intermediate_size=8,
                       decoder_hidden_size=dec_dim, decoder_num_hidden_layers=0, decoder_num_attention_heads=4,
                       decoder_intermediate_size=8, image_size=side * 4, patch_size=4)
    hf = ViTMAEForPreTraining(cfg)
    fill_hf_positions(hf)
    ref = hf.vit.embeddings.position_embeddings[0]  # [1 + N, D], zero CLS row first
    dec_ref = hf.decoder.decoder_pos_embed[0]
    coords = grid_coords(side, side)
    torch.testing.assert_close(sincos_pos_embed(coords, dim), ref[1:], atol=1e-6, rtol=0)
    torch.testing.assert_close(sincos_pos_embed(coords, dec_dim), dec_ref[1:], atol=1e-6, rtol=0)
    assert ref[0].abs().max() == 0


def test_three_axes_distinct_and_padded():
    coords = grid_coords(2, 3, 4)
    emb = sincos_pos_embed(coords, 1024)  # 1024 is not a multiple of 6: zero remainder
    assert emb.shape == (24, 1024)
    assert torch.equal(emb[:, 1020:], torch.zeros(24, 4))
    assert len({tuple(r.tolist()) for r in emb.round(decimals=5)}) == 24
