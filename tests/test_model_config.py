"""The transformer's shape and each modality's mask ratio are checked before training, naming the key."""
import pytest
import torch

from omnimae.config.build import build_model, check_mask_ratios, validate
from omnimae.cli import compose, main
from omnimae.errors import ConfigError

TINY = ["model=vit_tiny", "trainer=debug"]  # vit_tiny: embed_dim 64, 4 heads; the digits image: 16x16 in 4x4 patches


@pytest.mark.parametrize("override,key,problem", [
    ("model.embed_dim=0", "model.embed_dim", "must be a positive integer, got 0"),
    ("model.num_heads=0", "model.num_heads", "must be a positive integer, got 0"),
    ("model.depth=0", "model.depth", "must be a positive integer, got 0"),
    ("model.decoder_depth=-1", "model.decoder_depth", "must be a positive integer, got -1"),
    ("model.decoder_num_heads=0", "model.decoder_num_heads", "must be a positive integer, got 0"),
    ("model.mlp_ratio=0", "model.mlp_ratio", "must be a positive number"),
    ("model.embed_dim=66", "model.embed_dim", "66 is not divisible by model.num_heads=4"),
    ("model.decoder_embed_dim=30", "model.decoder_embed_dim", "30 is not divisible by model.decoder_num_heads=4"),
])
def test_model_shape_values_fail_naming_the_key(override, key, problem):
    with pytest.raises(ConfigError, match=rf"^{key}: {problem}"):
        validate(compose("pretrain", TINY + [override]))


def test_a_width_divisible_by_its_heads_passes():
    validate(compose("pretrain", TINY + ["model.embed_dim=48", "model.num_heads=6", "model.mlp_ratio=0.5"]))


@pytest.mark.parametrize("ratio,visible", [(0.99, 0), (0.95, 0), (0.9375, 1)])
def test_a_mask_ratio_that_leaves_no_visible_token_fails_with_the_counts(ratio, visible):
    """16 tokens: the MAE rule keeps int(16 x (1 - ratio)) visible, 0 at 0.99 (16 x 0.01 = 0.16) and at
    0.95 (0.8), 1 at 15/16."""
    model = build_model(compose("pretrain", TINY + [f"modalities.image.adapter.mask_ratio={ratio}"]))
    if visible:
        check_mask_ratios(model)
        return
    with pytest.raises(ConfigError, match=rf"^modalities[.]image[.]adapter[.]mask_ratio: {ratio} leaves no visible token "
                                          rf"of the 16: int\(16 x \(1 - {ratio}\)\) = 0; at 16 tokens it can be at most 0.9375"):
        check_mask_ratios(model)


def test_a_mask_ratio_that_hides_no_token_fails():
    """Tube masking hides int(ratio x S) of the S tokens of a frame (VideoMAE): 4 per frame at 0.2 hide none."""
    video = ["experiment=none", "modality=video", "modalities.video.adapter.img_size=32",
             "modalities.video.adapter.patch_size=16", "modalities.video.adapter.num_frames=4"]
    model = build_model(compose("pretrain", TINY + video + ["modalities.video.adapter.mask_ratio=0.2"]))
    with pytest.raises(ConfigError, match=r"^modalities[.]video[.]adapter[.]mask_ratio: 0.2 hides none of the 8 tokens "
                                          r"with tube masking"):
        check_mask_ratios(model)
    check_mask_ratios(build_model(compose("pretrain", TINY + video + ["modalities.video.adapter.mask_ratio=0.25"])))


def test_pretrain_refuses_before_writing_anything(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["pretrain", *TINY, "modalities.image.adapter.mask_ratio=0.99", f"run_dir={run}"]) == 1
    assert "modalities.image.adapter.mask_ratio: 0.99 leaves no visible token" in capsys.readouterr().err
    assert main(["pretrain", *TINY, "model.num_heads=0", f"run_dir={run}"]) == 1
    assert "model.num_heads: must be a positive integer, got 0" in capsys.readouterr().err
    assert not run.exists()
