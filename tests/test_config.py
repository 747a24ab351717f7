"""Config mistakes fail before training, naming the key."""
import pytest


from omnimae.build import build_data, build_model, validate
from omnimae.cli import compose, main
from omnimae.errors import ConfigError


def test_every_config_group_composes_and_instantiates(make_cfg):
    for model in ("vit_tiny", "vit_small", "vit_base", "vit_large"):
        cfg = compose("pretrain", [f"model={model}", "experiment=none", "data.root=/nonexistent"])
        validate(cfg)
    for trainer in ("cpu", "gpu", "ddp", "debug"):
        validate(compose("pretrain", [f"trainer={trainer}"]))
    for experiment in ("digits", "mae_imagenet", "none"):
        validate(compose("pretrain", [f"experiment={experiment}"]))
    cfg = compose("pretrain", ["model=vit_small", "experiment=none"])
    model = build_model(cfg)
    assert model.embed_dim == 384 and len(model.blocks) == 12


def test_default_is_the_digits_demo():
    cfg = compose("pretrain", [])
    validate(cfg)
    data = build_data(cfg)["image"]
    assert data.builtin == "digits" and len(data.splits()["train"][0]) == 1347


@pytest.mark.parametrize(
    "override,key,problem",
    [
        ("modalities.image.adapter.mask_ratio=1.5", "modalities.image.adapter.mask_ratio", "must lie in \\(0, 1\\)"),
        ("modalities.image.adapter.mask_ratio=0", "modalities.image.adapter.mask_ratio", "must lie in \\(0, 1\\)"),
        ("modalities.image.adapter.img_size=18", "modalities.image.adapter.img_size", "multiple of patch_size"),
        ("modalities.image.adapter.patch_size=abc", "modalities.image.adapter.patch_size", "expected int"),
        ("modalities.image.batch_size=0", "modalities.image.batch_size", "must be >= 1"),
        ("modalities.image.batch_size=many", "modalities.image.batch_size", "expected int"),
        ("optim.base_lr=-1", "optim.base_lr", "must be positive"),
        ("optim.betas=[0.9]", "optim.betas", "two numbers"),
        ("trainer.max_steps=ten", "trainer.max_steps", "expected int"),
        ("model.embed_dim=65", "model.embed_dim", "not divisible"),
        ("model.attn_impl=flash", "model.attn_impl", "expected one of .auto., .sdpa., .explicit."),
        ("+modalities.image.adapter.mask_ration=0.5", "modalities.image.adapter.mask_ration", "did you mean 'mask_ratio'"),
        ("+trainer.max_step=5", "trainer.max_step", "did you mean 'max_steps'"),
    ],
)
def test_bad_values_name_the_key(override, key, problem):
    cfg = compose("pretrain", [override])
    with pytest.raises(ConfigError, match=f"^{key.replace('.', '[.]')}: .*{problem}"):
        validate(cfg)
        build_model(cfg)


def test_typo_in_a_key_is_refused_by_the_cli_naming_it(capsys):
    assert main(["pretrain", "modalities.image.adapter.mask_ratoi=0.5"]) == 1
    err = capsys.readouterr().err
    assert "mask_ratoi" in err and "error" in err


def test_cli_reports_out_of_range_before_training(capsys, tmp_path):
    assert main(["pretrain", "modalities.image.adapter.mask_ratio=1.0", f"run_dir={tmp_path / 'r'}"]) == 1
    assert "modalities.image.adapter.mask_ratio: must lie in (0, 1)" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()  # nothing was started


def test_data_root_with_the_digits_demo_explains_itself(tmp_path):
    cfg = compose("pretrain", [f"data.root={tmp_path}"])
    with pytest.raises(ConfigError, match="modalities.image.data.root: .*experiment=none"):
        build_data(cfg)


def test_fsdp_config_builds_its_strategy_with_a_block_wrap_policy():
    from hydra.utils import instantiate
    from timm.models.vision_transformer import Block
    from torch.distributed.fsdp.wrap import ModuleWrapPolicy

    cfg = compose("pretrain", ["trainer=fsdp"])
    validate(cfg)
    strategy = instantiate(cfg.trainer.strategy)
    policy = strategy.kwargs["auto_wrap_policy"]
    assert isinstance(policy, ModuleWrapPolicy) and Block in policy._module_classes
