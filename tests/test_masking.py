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
    assert (per_frame[:, 0].sum(1) == int(0.9 * s)).all()  # VideoMAE hides int(ratio * S) per frame


def test_tube_mask_hides_videomaes_count_per_frame():
    """VideoMAE's TubeMaskingGenerator: num_masks_per_frame = int(mask_ratio * num_patches_per_frame)."""
    t = 4
    for s in [10, 16, 49, 64, 100, 196, 256]:
        for ratio in [0.75, 0.9]:
            ids_keep, _, mask = tube_masking(2, t, s, ratio, generator=torch.Generator().manual_seed(0))
            hidden = int(ratio * s)
            assert (mask.view(2, t, s).sum(2) == hidden).all(), (s, ratio)
            assert ids_keep.shape == (2, t * (s - hidden)), (s, ratio)


def test_tube_and_random_masking_truncate_as_their_references():
    """VideoMAE truncates the hidden count, MAE's code the visible one: at S = 196, ratio 0.9 VideoMAE
    hides int(176.4) = 176 where MAE's rule keeps int(19.6) = 19 (hides 177)."""
    assert int(196 * (1 - 0.9)) == 19 and int(0.9 * 196) == 176  # the closed forms disagree here
    assert tube_masking(1, 2, 196, 0.9)[2].view(2, 196).sum(1).tolist() == [176, 176]
    assert random_masking(1, 196, 0.9)[0].shape == (1, 19)  # MAE's random masking is unchanged


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
