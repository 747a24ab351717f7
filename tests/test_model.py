import pytest
import torch
from torch import nn

from omnimae.adapter import MODALITIES
from omnimae.masking import num_visible
import omnimae.modalities  # noqa: F401 - registers the adapters


def test_every_registered_modality_has_a_config(make_cfg):
    from importlib.resources import files

    configs = {p.name.removesuffix(".yaml") for p in files("omnimae.configs").joinpath("modality").iterdir()}
    assert set(MODALITIES) <= configs


@pytest.mark.parametrize("ratio", [0.75, 0.5, 0.9])
def test_encoder_sees_only_the_visible_tokens(make_cfg, ratio):
    from omnimae.config.build import build_model

    model = build_model(make_cfg(f"modalities.image.adapter.mask_ratio={ratio}", img_size=32))
    seen = []
    model.blocks[0].register_forward_pre_hook(lambda m, args: seen.append(args[0].shape))
    model.decoder_blocks[0].register_forward_pre_hook(lambda m, args: seen.append(args[0].shape))
    model.forward_modality(torch.randn(2, 3, 32, 32), "image")
    n = (32 // 4) ** 2
    assert seen[0] == (2, 1 + num_visible(n, ratio), 64)  # CLS + visible tokens only
    assert seen[1] == (2, 1 + n, 64)  # the decoder sees every position


def test_every_parameter_gets_a_finite_gradient(tiny_model):
    out = tiny_model({"image": torch.randn(4, 3, 16, 16)})
    out["image"].loss.backward()
    for name, p in tiny_model.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all(), name
    assert torch.isfinite(out["image"].loss)


def test_attention_settings_agree_and_auto_picks_explicit_under_cpu_bf16(tiny_model):
    x, noise = torch.randn(2, 3, 16, 16), torch.rand(2, 16)
    tiny_model.eval()
    outs = {}
    for impl in ("sdpa", "explicit"):
        tiny_model.attn_impl = impl
        with torch.no_grad():
            outs[impl] = tiny_model.forward_modality(x, "image", noise=noise).pred
        assert tiny_model.blocks[0].attn.fused_attn == (impl == "sdpa")
    torch.testing.assert_close(outs["sdpa"], outs["explicit"], atol=1e-5, rtol=1e-5)
    tiny_model.attn_impl = "auto"
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        pred = tiny_model.forward_modality(x, "image", noise=noise).pred
    assert tiny_model.blocks[0].attn.fused_attn is False
    torch.testing.assert_close(pred.float(), outs["sdpa"], atol=0.1, rtol=0.1)


def test_norm_pix_target_is_standardized_per_patch(tiny_model):
    adapter = tiny_model.adapters["image"]
    patches = adapter.tokenize(torch.randn(2, 3, 16, 16) * 3 + 1)
    t = adapter.target(patches)
    torch.testing.assert_close(t.mean(-1), torch.zeros(2, 16), atol=1e-5, rtol=0)
    torch.testing.assert_close(t.std(-1), torch.ones(2, 16), atol=1e-3, rtol=0)
    # and prediction_to_values inverts it exactly
    torch.testing.assert_close(adapter.prediction_to_values(patches, t), patches.values, atol=1e-4, rtol=1e-4)


def test_images_of_another_size_use_positions_from_their_grid(tiny_model):
    out = tiny_model.forward_modality(torch.randn(2, 3, 24, 32), "image")
    assert out.pred.shape == (2, 6 * 8, 48)


def test_no_weight_decay_covers_tokens_and_modality_embeddings(tiny_model):
    names = tiny_model.no_weight_decay()
    assert {"cls_token", "mask_token", "adapters.image.modality_embed", "adapters.image.decoder_modality_embed"} <= names


def test_only_layer_weights_are_decayed():
    """With every modality's adapter in one model, AdamW decays exactly the weight matrices of the
    linear and convolution layers: tokens and learned embeddings (modality, channel) are not."""
    from omnimae.config.build import build_model
    from omnimae.config.compose import compose

    cfg = compose("pretrain", ["experiment=none", "model=vit_tiny", "modality=[image,microscopy,array]",
                               "modalities.array.adapter.tokenizer=channel"])
    model = build_model(cfg)
    skip = model.no_weight_decay()
    decayed = {n for n, p in model.named_parameters() if p.ndim > 1 and n not in skip}  # timm's grouping rule
    layers = {f"{name}.weight" for name, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d, nn.Conv3d))}
    assert decayed == layers
    assert {"adapters.microscopy.channel_embed", "adapters.array.decoder_channel_embed"} <= skip


def test_compile_switch_gives_the_same_outputs(make_cfg):
    from omnimae.config.build import build_model

    torch.manual_seed(0)
    eager = build_model(make_cfg()).eval()
    torch.manual_seed(0)
    compiled = build_model(make_cfg("model.compile=true")).eval()
    assert all(hasattr(b, "_compiled_call_impl") and b._compiled_call_impl is not None for b in compiled.blocks)
    x, noise = torch.randn(2, 3, 16, 16), torch.rand(2, 16)
    with torch.no_grad():
        torch.testing.assert_close(compiled.forward_modality(x, "image", noise=noise).pred,
                                   eager.forward_modality(x, "image", noise=noise).pred, atol=1e-5, rtol=1e-5)
