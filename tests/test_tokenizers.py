import pytest
import torch
from transformers import ViTMAEConfig, ViTMAEForPreTraining

from omnimae.tokenizers import PatchTokenizer2D
from omnimae.patches import grid_coords


@pytest.mark.parametrize("chans,size,patch", [(3, (32, 32), 8), (1, (24, 40), 4), (5, (12, 8), (4, 2))])
def test_patch2d_round_trip_is_exact(chans, size, patch):
    x = torch.randn(2, chans, *size)
    tok = PatchTokenizer2D(patch, chans)
    p = tok.patchify(x)
    ph, pw = (patch, patch) if isinstance(patch, int) else patch
    assert p.values.shape == (2, (size[0] // ph) * (size[1] // pw), ph * pw * chans)
    assert p.coords.shape == (p.num_tokens, 2)
    assert torch.equal(tok.unpatchify(p), x)


def test_padding_round_trip_crops_back():
    x = torch.randn(1, 2, 10, 13)
    tok = PatchTokenizer2D(4, 2, pad=True)
    p = tok.patchify(x)
    assert p.grid == (3, 4)
    assert torch.equal(tok.unpatchify(p), x)
    with pytest.raises(ValueError, match="not a multiple"):
        PatchTokenizer2D(4, 2).patchify(x)


def test_value_order_matches_hugging_face_patchify():
    """The official MAE / HF order is (p, q, c) within a patch, row-major over patches."""
    cfg = ViTMAEConfig(image_size=16, patch_size=4, num_channels=3, hidden_size=32, num_hidden_layers=1,
                       num_attention_heads=2, intermediate_size=64, decoder_hidden_size=16,
                       decoder_num_hidden_layers=1, decoder_num_attention_heads=2, decoder_intermediate_size=32)
    hf = ViTMAEForPreTraining(cfg)
    x = torch.randn(2, 3, 16, 16)
    assert torch.equal(PatchTokenizer2D(4, 3).patchify(x).values, hf.patchify(x))


def test_grid_coords_row_major():
    c = grid_coords(2, 3)
    assert c.tolist() == [[0, 0], [0, 1], [0, 2], [1, 0], [1, 1], [1, 2]]


def test_wrong_channel_count_is_an_error():
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        PatchTokenizer2D(4, 3).patchify(torch.randn(1, 1, 8, 8))


def test_channel_tokenizer_round_trip_and_channel_major_order():
    from omnimae.tokenizers import ChannelPatchTokenizer

    x = torch.randn(2, 5, 12, 8)
    tok = ChannelPatchTokenizer(4)
    p = tok.patchify(x)
    assert p.values.shape == (2, 5 * 3 * 2, 16) and p.grid == (5, 3, 2)
    assert torch.equal(tok.unpatchify(p), x)
    assert p.coords[6].tolist() == [1, 0, 0]  # the second channel starts after the first's 6 patches
    assert torch.equal(p.values[:, 6 + 3], x[:, 1, 4:8, 4:8].reshape(2, 16))
