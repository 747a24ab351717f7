"""Config mistakes fail before training, naming the key."""
import pytest


from omnimae.config.build import build_data, build_model, validate
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
        ("callbacks.max_nonfinite_steps=0", "callbacks.max_nonfinite_steps", "expected a positive integer, got 0"),
        ("callbacks.reconstruction_samples=0", "callbacks.reconstruction_samples", "expected a positive integer, got 0"),
        ("callbacks.reconstruction_every_n_steps=-1", "callbacks.reconstruction_every_n_steps", "expected an integer >= 0"),
        ("callbacks.checkpoint_every_n_steps=-1", "callbacks.checkpoint_every_n_steps", "expected a positive integer, got -1"),
        ("callbacks.checkpoint_every_n_steps=0", "callbacks.checkpoint_every_n_steps", "expected a positive integer, got 0"),
        ("callbacks.max_nonfinite_steps=three", "callbacks.max_nonfinite_steps", "expected a positive integer"),
        ("+callbacks.checkpoint_every_n_step=5", "callbacks.checkpoint_every_n_step", "did you mean 'checkpoint_every_n_steps'"),
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


def test_another_modality_beside_the_digits_default_names_the_leftover_node(capsys, tmp_path):
    """The default experiment=digits configures modalities.image; with modality=audio that leaves an
    image node of settings without an adapter class: the way out leads, then the node it left."""
    args = ["modality=audio", "model=vit_small", "trainer.max_epochs=5", f"data.root={tmp_path}", f"run_dir={tmp_path / 'r'}"]
    assert main(["pretrain", *args]) == 1
    err = capsys.readouterr().err
    message = err.split("omnimae pretrain: error: ", 1)[1]
    assert message.startswith("experiment: pass experiment=none with modality=audio")
    assert "modalities.image.adapter._target_ is missing" in message and "modality=[audio,image]" in message
    assert not (tmp_path / "r").exists()
    validate(compose("pretrain", ["experiment=none", *args]))  # the suggested way passes


def test_a_flag_without_a_value_is_true_wherever_it_stands():
    """`--overwrite` before another flag means what it means last: overwrite=true, not overwrite=--horizon."""
    from omnimae.cli import _as_overrides

    last = _as_overrides(["--input", "multi.csv", "--horizon", "24", "--overwrite"])
    assert sorted(_as_overrides(["--input", "multi.csv", "--overwrite", "--horizon", "24"])) == sorted(last)
    assert sorted(_as_overrides(["--overwrite", "--input=multi.csv", "--horizon", "24"])) == sorted(last)
    assert _as_overrides(["--offset", "-5"]) == ["offset=-5"]  # a negative number is still a value


def test_cfg_takes_hydras_job_hydra_and_all(capsys):
    """`--cfg job|hydra|all` as in a Hydra app: the run's config, Hydra's own node, or both."""
    import yaml

    def printed(*args):
        assert main(["pretrain", *args]) == 0
        return yaml.safe_load(capsys.readouterr().out)

    job = printed("--cfg", "seed=3")
    assert job["seed"] == 3 and "hydra" not in job
    assert printed("--cfg", "job", "seed=3") == job
    assert printed("seed=3", "--cfg=job") == job
    hydra = printed("--cfg", "hydra", "seed=3")
    assert list(hydra) == ["hydra"] and "seed=3" in hydra["hydra"]["overrides"]["task"]
    assert printed("--cfg", "all", "seed=3") == {**job, **hydra}
    assert main(["pretrain", "--cfg=everything"]) == 1
    assert "--cfg: expected one of job, hydra, all" in capsys.readouterr().err


def test_modality_is_a_plain_key_of_embed_probe_and_export(tmp_path, capsys):
    """`modality` names a config group for pretrain; for the verbs where it is a plain key,
    `modality=X` (or `--modality X`) sets it instead of failing as an unknown group."""
    from omnimae.checkpoint.format import save_safetensors

    for name in ("embed", "probe", "export"):
        assert compose(name, ["checkpoint=x.ckpt", "modality=audio"]).modality == "audio"
    assert compose("embed", ["modality=null"]).modality is None
    cfg = compose("pretrain", ["experiment=none", "model=vit_tiny", "modality=audio"])
    path = save_safetensors(build_model(cfg), cfg, tmp_path / "audio.safetensors")
    assert main(["export", f"checkpoint={path}", "--modality", "video", "format=timm", f"output={tmp_path / 'v.pth'}"]) == 1
    assert "modality: 'video' is not in the checkpoint" in capsys.readouterr().err
