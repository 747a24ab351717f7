import torch
from PIL import Image

from omnimae.visualize import reconstruction_panels, save_grid


def test_panels_show_the_mask_and_paste_back_the_visible_patches(tiny_model, tmp_path):
    tiny_model.eval()
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    gen = torch.Generator().manual_seed(0)
    original, masked, recon, pasted = reconstruction_panels(tiny_model, x, "image", gen)
    # the same mask, drawn independently of the panels
    out = tiny_model.forward_modality(x, "image", generator=torch.Generator().manual_seed(0))
    hidden = out.mask.view(2, 4, 4).repeat_interleave(4, 1).repeat_interleave(4, 2).bool()  # [B, H, W]
    assert torch.all(masked[hidden] == 0.5)
    torch.testing.assert_close(masked[~hidden], original[~hidden])
    torch.testing.assert_close(pasted[~hidden], original[~hidden])
    torch.testing.assert_close(pasted[hidden], recon[hidden])
    assert all(p.shape == (2, 16, 16, 3) and p.min() >= 0 and p.max() <= 1 for p in (original, masked, recon, pasted))
    path = save_grid([original, masked, recon, pasted], tmp_path / "grid.png", "test")
    assert Image.open(path).format == "PNG"


def test_the_visible_patches_of_every_panel_keep_the_originals_scale():
    """Adapters that scale each sample to its range show reconstructions on the original's range: where
    a patch is visible, the 'reconstruction + visible' panel equals the original panel."""
    from omnimae.config.build import build_model
    from omnimae.config.compose import compose

    cfg = compose("pretrain", ["experiment=none", "model=vit_tiny", "modality=[audio,microscopy,array]",
                               "modalities.audio.adapter.target_length=64", "modalities.microscopy.adapter.img_size=32",
                               "modalities.microscopy.adapter.patch_size=8", "modalities.array.adapter.shape=[3,32,32]",
                               "modalities.array.adapter.patch_size=8", "modalities.array.adapter.tokenizer=channel"])
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    mel = model.adapters["audio"].mel_bins
    inputs = {"audio": torch.randn(2, 1, 64, mel), "array": torch.randn(2, 3, 32, 32) * 5 + 3,
              "microscopy": {"pixels": torch.randn(2, 3, 32, 32), "channel_ids": torch.tensor([[0, 2, 4]] * 2)}}
    for modality, x in inputs.items():
        adapter = model.adapters[modality]
        original, _, recon, pasted = reconstruction_panels(model, x, modality, torch.Generator().manual_seed(0))
        out = model.forward_modality(x, modality, generator=torch.Generator().manual_seed(0))  # the same mask
        hidden = adapter.untokenize(out.patches.replace(out.mask.unsqueeze(-1).expand_as(out.patches.values)))
        visible = adapter.to_display(hidden, mask=True)[..., 0] == 0  # [B, H, W]
        assert visible.any() and (~visible).any(), modality
        torch.testing.assert_close(pasted[visible], original[visible], msg=modality)
        assert recon.min() >= 0 and recon.max() <= 1
