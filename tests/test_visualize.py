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
