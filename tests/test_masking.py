import pytest
import torch
from transformers.models.vit_mae.modeling_vit_mae import ViTMAEEmbeddings, ViTMAEConfig

from omnimae.masking import explicit_masking, gather_tokens, random_masking, tube_masking


@pytest.mark.parametrize("n,ratio", [(196, 0.75), (16, 0.75), (49, 0.9), (10, 0.5)])
def test_random_masking_counts_and_restore(n, ratio):
    b = 4
    ids_keep, ids_restore, mask = random_masking(b, n, ratio, generator=torch.Generator().manual_seed(0))
    keep = int(n * (1 - ratio))
    assert ids_keep.shape == (b, keep)
    assert (mask.sum(1) == n - keep).all()
    # the kept tokens are exactly the unmasked ones
    assert torch.equal(torch.gather(mask, 1, ids_keep), torch.zeros(b, keep))
    # ids_restore inverts the shuffle: shuffled order, restored, is the identity
    x = torch.arange(n).repeat(b, 1).unsqueeze(-1).float()
    ids_shuffle = torch.argsort(ids_restore, dim=1)
    shuffled = gather_tokens(x, ids_shuffle)
    assert torch.equal(gather_tokens(shuffled, ids_restore), x)
    assert torch.equal(shuffled[:, :keep], gather_tokens(x, ids_keep))


def test_given_noise_matches_hugging_face_random_masking():
    cfg = ViTMAEConfig(hidden_size=8, image_size=16, patch_size=4, mask_ratio=0.75)
    emb = ViTMAEEmbeddings(cfg)
    seq = torch.randn(3, 16, 8)
    noise = torch.rand(3, 16)
    hf_seq, hf_mask, hf_restore = emb.random_masking(seq, noise)
    ids_keep, ids_restore, mask = random_masking(3, 16, 0.75, noise=noise)
    assert torch.equal(mask, hf_mask)
    assert torch.equal(ids_restore, hf_restore)
    assert torch.equal(gather_tokens(seq, ids_keep), hf_seq)


def test_generator_makes_masks_reproducible():
    a = random_masking(2, 50, 0.75, generator=torch.Generator().manual_seed(3))[2]
    b = random_masking(2, 50, 0.75, generator=torch.Generator().manual_seed(3))[2]
    c = random_masking(2, 50, 0.75, generator=torch.Generator().manual_seed(4))[2]
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_tube_mask_is_constant_over_time():
    t, s = 8, 49
    _, ids_restore, mask = tube_masking(3, t, s, 0.9, generator=torch.Generator().manual_seed(0))
    per_frame = mask.view(3, t, s)
    assert (per_frame == per_frame[:, :1]).all()
    assert (per_frame[:, 0].sum(1) == s - int(s * 0.1)).all()


def test_explicit_masking_keeps_the_visible_tokens_in_order():
    mask = torch.tensor([[0, 1, 0, 1, 1], [1, 1, 0, 0, 1]])
    ids_keep, ids_restore, m = explicit_masking(mask)
    assert ids_keep.tolist() == [[0, 2], [2, 3]]
    with pytest.raises(ValueError, match="same number"):
        explicit_masking(torch.tensor([[0, 1], [0, 0]]))


def test_host_draws_follow_the_step_generator():
    from omnimae.masking import host_draws

    a = host_draws(3, torch.Generator().manual_seed(42))
    b = host_draws(3, torch.Generator().manual_seed(42))
    c = host_draws(3, torch.Generator().manual_seed(43))
    assert torch.equal(a, b) and not torch.equal(a, c) and a.device.type == "cpu"
