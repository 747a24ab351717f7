"""Checkpoint files: import, export, and clear errors for files that do not fit."""
import numpy as np
import pytest
import timm
import torch

from omnimae.config.build import build_model
from omnimae.checkpoint.convert import load_pretrained, omnimae_to_official, timm_vit_kwargs, to_timm_vit
from omnimae.checkpoint.format import load_model, read_checkpoint
from omnimae.cli import compose, main
from omnimae.errors import CheckpointError
from omnimae.io import atomic_path
from omnimae.train.pretrain import pretrain


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    cfg = compose("pretrain", ["model=vit_tiny", "trainer.max_steps=3", "trainer.enable_progress_bar=false",
                               "modalities.image.batch_size=32", "callbacks.reconstruction_every_n_steps=0",
                               "callbacks.reconstruction_samples=2", f"run_dir={run}"])
    pretrain(cfg)
    return run / "checkpoints" / "last.ckpt"


def test_garbage_file_is_named(tmp_path):
    bad = tmp_path / "weights.pth"
    bad.write_bytes(b"\x00\x01 not a torch file")
    with pytest.raises(CheckpointError, match=f"{bad}: cannot read checkpoint"):
        read_checkpoint(bad)


def test_truncated_checkpoint_is_named(trained, tmp_path):
    cut = tmp_path / "cut.ckpt"
    data = trained.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=f"{cut}: cannot read checkpoint"):
        load_model(cut)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        read_checkpoint(tmp_path / "nope.ckpt")


def test_shapes_that_do_not_fit_the_config_name_the_key(trained):
    cfg = compose("pretrain", ["model=vit_tiny", "model.embed_dim=32", "model.num_heads=2"])
    model = build_model(cfg)
    with pytest.raises(CheckpointError, match=r"last\.ckpt: shapes do not fit the config: cls_token: checkpoint \(1, 1, 64\) vs model \(1, 1, 32\)"):
        load_pretrained(model, trained)


def test_missing_keys_are_named(trained, tmp_path):
    sd = read_checkpoint(trained)["state_dict"]
    sd = {k[len("model."):]: v for k, v in sd.items() if "decoder_blocks" not in k}
    path = tmp_path / "partial.pth"
    torch.save(sd, path)
    model, _ = load_model(trained)
    with pytest.raises(CheckpointError, match=r"partial\.pth: missing keys: decoder_blocks\.0"):
        load_pretrained(model, path)



def test_ckpt_and_safetensors_carry_the_same_metadata(trained, tmp_path):
    """Training's .ckpt and an export's .safetensors describe themselves alike, and both rebuild the model."""
    from omnimae import __version__
    from omnimae.checkpoint.format import save_safetensors

    ckpt = read_checkpoint(trained)["omnimae"]
    model, _ = load_model(trained)
    exported = read_checkpoint(save_safetensors(model, ckpt["config"], tmp_path / "m.safetensors"))["omnimae"]
    assert set(ckpt) == set(exported) == {"version", "config", "modalities", "weights_sha256"}
    assert ckpt["version"] == exported["version"] == __version__
    assert ckpt["config"] == exported["config"]
    assert ckpt["modalities"] == exported["modalities"] == list(ckpt["config"]["modalities"]) == ["image"]
    # read_checkpoint checked each checksum against its own file's tensors; both rebuild the same weights
    again, _ = load_model(tmp_path / "m.safetensors")
    for k, v in model.state_dict().items():
        assert torch.equal(again.state_dict()[k], v), k


def tiny_model(name: str, *overrides: str):
    cfg = compose("pretrain", ["experiment=none", f"modality={name}", "model=vit_tiny", *overrides])
    torch.manual_seed(0)
    return build_model(cfg)


@pytest.mark.parametrize("name,overrides,why", [
    ("microscopy", [], "it tokenizes with ChannelPatchTokenizer"),
    ("video", [], "it tokenizes with TubeTokenizer"),
    ("array", ["modalities.array.adapter.tokenizer=channel"], "it tokenizes with ChannelPatchTokenizer"),
    ("array", ["modalities.array.adapter.shape=[3,32,16]", "modalities.array.adapter.patch_size=8"],
     "its inputs are 32x16, and the layout holds square images"),
    ("audio", ["modalities.audio.adapter.target_length=64", "modalities.audio.adapter.mel_bins=32"],
     "its inputs are 64x32"),
])
def test_a_modality_the_official_layout_cannot_hold_is_named(name, overrides, why):
    model = tiny_model(name, *overrides)
    for write in (omnimae_to_official, to_timm_vit, timm_vit_kwargs):
        with pytest.raises(CheckpointError, match=f"modality '{name}' cannot be written in the official MAE or timm layout: {why}"):
            write(model, name)


def test_a_square_2d_array_modality_exports_to_the_official_and_timm_layouts(tmp_path):
    """Any adapter that tokenizes square inputs into square 2D patches fits, not only the image adapter."""
    shape = ["modalities.array.adapter.shape=[2,16,16]", "modalities.array.adapter.patch_size=4"]
    model = tiny_model("array", *shape).eval()
    with torch.no_grad():  # a trained-looking modality embedding, which the official layout folds into positions
        model.adapters["array"].modality_embed.normal_()
    path = tmp_path / "mae.pth"
    torch.save({"model": omnimae_to_official(model, "array")}, path)
    again = tiny_model("array", *shape).eval()
    load_pretrained(again, path, modality="array")
    x, noise = torch.randn(2, 2, 16, 16), torch.rand(2, 16)
    vit = timm.models.VisionTransformer(**timm_vit_kwargs(model, "array")).eval()
    vit.load_state_dict(to_timm_vit(model, "array"), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(again.forward_modality(x, "array", noise=noise).pred,
                                   model.forward_modality(x, "array", noise=noise).pred)
        torch.testing.assert_close(vit(x), model.embed(x, "array", pool="cls"), atol=1e-5, rtol=1e-5)


def test_a_joint_checkpoint_loads_into_a_model_of_a_subset_of_its_modalities(tmp_path):
    from omnimae.checkpoint.format import save_safetensors

    size = ["modalities.image.adapter.img_size=32", "modalities.image.adapter.patch_size=8"]
    joint_cfg = compose("pretrain", ["experiment=none", "model=vit_tiny", "modality=[image,audio]", *size])
    torch.manual_seed(0)
    joint = build_model(joint_cfg)
    path = save_safetensors(joint, joint_cfg, tmp_path / "joint.safetensors")
    image_only = build_model(compose("pretrain", ["experiment=none", "model=vit_tiny", "modality=image", *size]))
    load_pretrained(image_only, path)  # strict: every key of the image model is there; audio's are left out
    theirs = joint.state_dict()
    for k, v in image_only.state_dict().items():
        torch.testing.assert_close(v, theirs[k], rtol=0, atol=0, msg=k)
    # a model with a modality the checkpoint lacks still fails, naming what is missing
    other = build_model(compose("pretrain", ["experiment=none", "model=vit_tiny", "modality=[image,microscopy]", *size]))
    with pytest.raises(CheckpointError, match=r"missing keys: adapters\.microscopy\."):
        load_pretrained(other, path)
    # exporting a modality the checkpoint does not hold names the setting
    from omnimae.errors import ConfigError
    from omnimae.export import run_export

    cfg = compose("export", [f"checkpoint={path}", "format=timm", f"output={tmp_path / 'v.pth'}"])
    cfg.modality = "video"
    with pytest.raises(ConfigError, match="modality: 'video' is not in the checkpoint"):
        run_export(cfg)

def test_export_round_trips(trained, tmp_path, capsys):
    model, cfg = load_model(trained)
    x, noise = torch.randn(2, 1, 16, 16), torch.rand(2, 16)
    with torch.no_grad():
        ref = model.forward_modality(x, "image", noise=noise).pred
    # safetensors: self-describing, rebuilds the same model
    assert main(["export", f"checkpoint={trained}", "format=safetensors", f"output={tmp_path / 'm.safetensors'}"]) == 0
    again, cfg2 = load_model(tmp_path / "m.safetensors")
    assert cfg2 == cfg
    with torch.no_grad():
        torch.testing.assert_close(again.forward_modality(x, "image", noise=noise).pred, ref)
    # the official layout loads back into a model built from the same config
    assert main(["export", f"checkpoint={trained}", "format=official", f"output={tmp_path / 'mae.pth'}"]) == 0
    official = build_model(cfg)
    load_pretrained(official, tmp_path / "mae.pth")
    with torch.no_grad():
        torch.testing.assert_close(official.forward_modality(x, "image", noise=noise).pred, ref)
    # timm: a VisionTransformer takes the encoder strictly
    assert main(["export", f"checkpoint={trained}", "format=timm", f"output={tmp_path / 'vit.pth'}"]) == 0
    vit = timm.models.VisionTransformer(**timm_vit_kwargs(model))
    vit.load_state_dict(torch.load(tmp_path / "vit.pth"), strict=True)


def test_export_never_writes_over_its_input(trained, capsys):
    before = trained.read_bytes()
    assert main(["export", f"checkpoint={trained}", "format=official", f"output={trained}"]) == 1
    assert "refusing to write the output over an input" in capsys.readouterr().err
    assert trained.read_bytes() == before


def test_atomic_path_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "keep.txt"
    target.write_text("original")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("disk full")
    assert target.read_text() == "original"
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]
    with atomic_path(tmp_path / "new.txt") as tmp:
        tmp.write_text("whole")
    assert (tmp_path / "new.txt").read_text() == "whole"
    assert (tmp_path / "new.txt").stat().st_mode & 0o044  # readable by others, like a plain open()


def test_probe_prints_the_table_and_writes_json(trained, capsys, tmp_path):
    import json

    out = tmp_path / "probe.json"
    assert main(["probe", f"checkpoint={trained}", "random_seeds=1", "pool=[mean]", f"output={out}"]) == 0
    table = capsys.readouterr().out
    assert "raw pixels" in table and "pretrained encoder, mean" in table and "random encoder, mean" in table
    res = json.loads(out.read_text())
    assert res["train"] == 1347 and res["test"] == 450
    for acc in (res["pixels"]["linear"], res["pretrained"]["mean"]["knn"], res["random"]["mean"]["linear"]["mean"]):
        assert 0.1 < acc <= 1.0  # ten classes: well above chance even for random features


def test_probe_of_an_unreadable_checkpoint_is_an_error(tmp_path, capsys):
    bad = tmp_path / "x.ckpt"
    bad.write_text("oops")
    assert main(["probe", f"checkpoint={bad}"]) == 1
    assert f"{bad}: cannot read checkpoint" in capsys.readouterr().err


@pytest.mark.parametrize("suffix", [".nc", ".zarr"])
def test_embed_writes_per_file_embeddings(trained, image_folder, tmp_path, suffix):
    import xarray as xr

    from omnimae.modalities.readers.image import read_image

    # the digits checkpoint is grey 16 px: embed a folder of grey PNGs made from the fixture's photos
    grey = tmp_path / "grey"
    for p in sorted(image_folder.rglob("*.png"))[:5]:
        (grey / p.parent.name).mkdir(parents=True, exist_ok=True)
        from PIL import Image

        Image.open(p).convert("L").save(grey / p.parent.name / p.name)
    out = tmp_path / f"emb{suffix}"
    assert main(["embed", f"checkpoint={trained}", f"data_root={grey}", f"output={out}"]) == 0
    ds = xr.open_dataset(out, engine="zarr" if suffix == ".zarr" else None)
    assert ds["embedding_mean"].shape == (5, 64) and ds["embedding_cls"].shape == (5, 64)
    assert sorted(ds["file"].values.tolist())[0].startswith("a/")
    # the stored features are the encoder's on the evaluation transform of each file
    model, cfg = load_model(trained)
    i = ds["file"].values.tolist().index("a/0.png")
    from omnimae.config.build import build_data
    from omegaconf import open_dict

    with open_dict(cfg):
        cfg.modalities.image.data.root, cfg.modalities.image.data.builtin = str(grey), None
    x = build_data(cfg)["image"].eval_transform(read_image(grey / "a" / "0.png", 1))
    np.testing.assert_allclose(ds["embedding_mean"].values[i], model.embed(x[None], "image")[0].numpy(), atol=1e-5)
    assert main(["embed", f"checkpoint={trained}", f"data_root={grey}", f"output={out}"]) == 1  # exists: refused


def test_probe_of_embeddings_reads_ids_as_written_and_leaves_unlabeled_samples_out(tmp_path, capsys):
    import pandas as pd
    import xarray as xr
    from omegaconf import OmegaConf

    from omnimae.errors import DataError
    from omnimae.probe import probe_embeddings, probe_scores

    rng = np.random.default_rng(0)
    n = 40
    ids = [f"{i:03d}" for i in range(n)]  # zero-padded: a CSV reader that guesses types turns them into 0, 1, ...
    y = np.arange(n) % 2
    x = rng.normal(size=(n, 8)) + 3 * y[:, None]  # two separable classes
    xr.Dataset({"embedding_mean": (("sample", "dim"), x)}, coords={"file": ("sample", ids)}).to_netcdf(tmp_path / "e.nc")
    labels = [str(v) for v in y]
    labels[:6] = ["", "-1", "", "-1", "", "-1"]  # unlabeled
    pd.DataFrame({"id": ids, "label": labels}).to_csv(tmp_path / "l.csv", index=False)
    cfg = OmegaConf.create(dict(embeddings=str(tmp_path / "e.nc"), labels=str(tmp_path / "l.csv"), id_column="id",
                                label_column="label", folds=5, knn_k=5))
    res = probe_embeddings(cfg)
    assert res["samples"] == n - 6 and res["classes"] == 2 and res["embedding_mean"]["linear"] > 0.9
    assert "6 of 40 samples are unlabeled" in capsys.readouterr().out
    pd.DataFrame({"id": ids, "label": ["a"] * 37 + ["b"] * 3}).to_csv(tmp_path / "l.csv", index=False)
    with pytest.raises(DataError, match=r"l\.csv: 5-fold probing needs at least 2 classes of at least 5"):
        probe_embeddings(cfg)
    # kNN with more neighbours asked than training samples takes them all (sklearn would refuse)
    assert probe_scores(x[:8], y[:8], x[8:16], y[8:16], k=20) == probe_scores(x[:8], y[:8], x[8:16], y[8:16], k=8)
