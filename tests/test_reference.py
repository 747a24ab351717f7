"""Fidelity: omnimae's image path is numerically the MAE paper's model."""
import pytest
import timm
import torch

from omnimae.config.build import build_model
from omnimae.checkpoint.convert import (
    convert_to_omnimae,
    hf_to_official,
    load_pretrained,
    official_to_omnimae,
    omnimae_to_official,
    timm_vit_kwargs,
    to_timm_vit,
)
from omnimae.checkpoint.format import load_weights
from omnimae.config.compose import compose
from reference_models import DD, DEPTH, D, hf_model


def omni_model(norm_pix_loss: bool, chans: int = 3, mask_ratio: float = 0.75):
    """The tiny preset from the real configs, at the HF model's dimensions."""
    a = "modalities.image.adapter"
    half = ",".join(["0.5"] * chans)
    cfg = compose("pretrain", ["model=vit_tiny", "experiment=none", f"{a}.img_size=16", f"{a}.patch_size=4",
                               f"{a}.in_chans={chans}", f"{a}.mean=[{half}]", f"{a}.std=[{half}]",
                               f"{a}.norm_pix_loss={norm_pix_loss}", f"{a}.mask_ratio={mask_ratio}"])
    assert (cfg.model.embed_dim, cfg.model.depth, cfg.model.decoder_embed_dim) == (D, DEPTH, DD)
    return build_model(cfg).eval()


@pytest.mark.parametrize("norm_pix_loss", [True, False])
@pytest.mark.parametrize("attn_impl", ["sdpa", "explicit"])
@pytest.mark.parametrize("chans,mask_ratio", [(3, 0.75), (1, 0.6)])
def test_loss_and_predictions_equal_hugging_face(norm_pix_loss, attn_impl, chans, mask_ratio):
    hf = hf_model(norm_pix_loss, chans, mask_ratio)
    ours = omni_model(norm_pix_loss, chans, mask_ratio)
    ours.attn_impl = attn_impl
    load_weights(ours, convert_to_omnimae(hf.state_dict(), "hf"), "hf")
    x = torch.randn(3, chans, 16, 16)
    noise = torch.rand(3, 16)
    with torch.no_grad():
        ref = hf(pixel_values=x, noise=noise)
        out = ours.forward_modality(x, "image", noise=noise)
    torch.testing.assert_close(out.mask, ref.mask)
    torch.testing.assert_close(out.pred, ref.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.loss, ref.loss, atol=1e-5, rtol=1e-5)


def test_hugging_face_hub_names_load_too():
    """Checkpoints on the hub use the older names (attention.attention.query, intermediate.dense...)."""
    hf = hf_model(True)
    renames = [("attention.q_proj", "attention.attention.query"), ("attention.k_proj", "attention.attention.key"),
               ("attention.v_proj", "attention.attention.value"), ("attention.o_proj", "attention.output.dense"),
               ("mlp.fc1", "intermediate.dense"), ("mlp.fc2", "output.dense")]
    old = {}
    for k, v in hf.state_dict().items():
        k = k.replace("vit.layers.", "vit.encoder.layer.")
        for new, legacy in renames:
            k = k.replace(new, legacy)
        old[k] = v
    assert any("attention.attention.query" in k for k in old)
    a, b = omni_model(True), omni_model(True)
    load_weights(a, convert_to_omnimae(hf.state_dict(), "new"), "new")
    load_weights(b, convert_to_omnimae(old, "old"), "old")
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k


def test_official_layout_round_trip(tmp_path):
    hf = hf_model(True)
    ours = omni_model(True)
    load_weights(ours, convert_to_omnimae(hf.state_dict(), "hf"), "hf")
    official = omnimae_to_official(ours)
    # the official names: exactly the encoder/decoder keys of facebookresearch/mae's models_mae.py
    assert {"cls_token", "pos_embed", "patch_embed.proj.weight", "mask_token", "decoder_embed.weight",
            "decoder_pos_embed", "decoder_norm.weight", "decoder_pred.weight", "blocks.0.attn.qkv.weight",
            "decoder_blocks.0.mlp.fc2.bias"} <= set(official)
    assert official["patch_embed.proj.weight"].shape == (D, 3, 4, 4)
    # and the official layout derived independently from HF's checkpoint agrees with ours
    from_hf = hf_to_official(hf.state_dict())
    for k in from_hf:
        torch.testing.assert_close(official[k], from_hf[k], atol=1e-6, rtol=0, msg=k)
    path = tmp_path / "mae_official.pth"
    torch.save({"model": official}, path)
    again = omni_model(True)
    load_pretrained(again, path)
    x, noise = torch.randn(2, 3, 16, 16), torch.rand(2, 16)
    with torch.no_grad():
        torch.testing.assert_close(again.forward_modality(x, "image", noise=noise).pred,
                                   ours.forward_modality(x, "image", noise=noise).pred)


def test_learned_position_embeddings_are_refused():
    hf = hf_model(True)
    official = hf_to_official(hf.state_dict())
    official["pos_embed"] = official["pos_embed"] + 0.5
    with pytest.raises(Exception, match="pos_embed is not the fixed 2D sin-cos"):
        official_to_omnimae(official, source="ft.pth")


@pytest.mark.parametrize("pool", ["token", "avg"])
def test_encoder_exports_to_timm_vision_transformer(pool):
    ours = omni_model(True)
    with torch.no_grad():  # a trained-looking modality embedding must be folded into the positions
        ours.adapters["image"].modality_embed.normal_()
    kwargs = timm_vit_kwargs(ours) | {"global_pool": pool}
    vit = timm.models.VisionTransformer(**kwargs).eval()
    vit.load_state_dict(to_timm_vit(ours), strict=True)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        feats = vit.forward_features(x)  # [B, 1 + N, D] after the final norm
        adapter = ours.adapters["image"]
        latent = ours.forward_encoder(adapter.tokenize(x), adapter, ids_keep=None)
        torch.testing.assert_close(feats, latent, atol=1e-5, rtol=1e-5)
        pooled = vit(x)
        torch.testing.assert_close(pooled, ours.embed(x, "image", pool="cls" if pool == "token" else "mean"), atol=1e-5, rtol=1e-5)
