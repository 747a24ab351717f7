"""A new modality from one YAML file: generic arrays with named dimensions, trained jointly with images."""
import csv
import re

import numpy as np
import pytest
import torch

from omnimae.config.build import build_model
from omnimae.checkpoint.format import load_model
from omnimae.config.compose import compose
from omnimae.errors import ConfigError, DataError
from omnimae.train.pretrain import pretrain

HYPERSPECTRAL_YAML = """# @package modalities.hyperspectral
adapter:
  _target_: omnimae.modalities.array.ArrayAdapter
  shape: [6, 16, 16]          # bands, y, x
  tokenizer: channel          # one token per band per patch, a learned embedding per band
  patch_size: 4
  mask_ratio: 0.8
data:
  _target_: omnimae.modalities.array.ArrayData
  shape: ${..adapter.shape}
  root: null
  dims: [band, y, x]          # netCDF dimension names, in the order of shape
  variable: reflectance
  normalization: sample
  val_fraction: 0.2
  seed: ${seed}
batch_size: 4
num_workers: 0
loss_weight: 1.0
sampling_weight: 1.0
"""


@pytest.fixture
def user_configs(tmp_path, monkeypatch):
    (tmp_path / "conf" / "modality").mkdir(parents=True)
    (tmp_path / "conf" / "modality" / "hyperspectral.yaml").write_text(HYPERSPECTRAL_YAML)
    monkeypatch.setenv("OMNIMAE_CONFIG_PATH", str(tmp_path / "conf"))
    tiles = tmp_path / "tiles"
    tiles.mkdir()
    import xarray as xr

    rng = np.random.default_rng(0)
    for i in range(6):  # (y, x, band) on disk: the YAML's dims put bands first
        cube = rng.normal(size=(20, 24, 6)).cumsum(0).astype(np.float32)
        xr.Dataset({"reflectance": (("y", "x", "band"), cube)}).to_netcdf(tiles / f"tile{i}.nc")
    return tiles


def test_a_yaml_only_modality_trains_jointly_with_images(user_configs, tmp_path):
    cfg = compose("pretrain", [
        "experiment=none", "modality=[image,hyperspectral]", "model=vit_tiny", "trainer=debug", "trainer.max_steps=6",
        "trainer.log_every_n_steps=1", "data.builtin=digits", f"modalities.hyperspectral.data.root={user_configs}",
        "modalities.image.adapter.img_size=16", "modalities.image.adapter.patch_size=4", "modalities.image.adapter.in_chans=1",
        "modalities.image.adapter.mean=[0.3]", "modalities.image.adapter.std=[0.4]", "modalities.image.batch_size=8",
        "modalities.image.num_workers=0", f"run_dir={tmp_path / 'run'}", "callbacks.reconstruction_samples=2",
    ])
    result = pretrain(cfg)
    rows = list(csv.DictReader(open(next((tmp_path / "run").glob("logs/version_*/metrics.csv")))))
    assert any(r.get("train/loss_hyperspectral") for r in rows) and any(r.get("train/loss_image") for r in rows)
    assert (tmp_path / "run" / "reconstructions" / "final_hyperspectral.png").is_file()
    model, _ = load_model(result["checkpoint"])
    adapter = model.adapters["hyperspectral"]
    x = torch.randn(2, 6, 16, 16)
    assert adapter.tokenize(x).values.shape == (2, 6 * 16, 16)  # per-band tokens
    assert torch.equal(adapter.untokenize(adapter.tokenize(x)), x)


def test_named_dims_are_read_in_the_configured_order(user_configs):
    from omnimae.modalities.array import read_array

    import xarray as xr

    path = next(user_configs.glob("*.nc"))
    arr = read_array(path, ["band", "y", "x"], "reflectance")
    ref = xr.open_dataset(path)["reflectance"].values.transpose(2, 0, 1)
    np.testing.assert_array_equal(arr, ref)
    with pytest.raises(Exception, match=r"tile.*not \['time'\]"):
        read_array(path, ["time", "y", "x"], "reflectance")


@pytest.mark.parametrize("tokenizer,shape,masking", [("patch2d", [3, 8, 8], "random"), ("tube", [2, 4, 8, 8], "tube"), ("channel", [5, 8, 8], "random")])
def test_each_tokenizer_round_trips_and_trains(tokenizer, shape, masking):
    a = "modalities.array.adapter"
    cfg = compose("pretrain", ["experiment=none", "modality=array", "model=vit_tiny", f"{a}.shape={shape}",
                               f"{a}.tokenizer={tokenizer}", f"{a}.patch_size=4", f"{a}.masking={masking}"])
    model = build_model(cfg)
    x = torch.randn(2, *shape)
    adapter = model.adapters["array"]
    assert torch.equal(adapter.untokenize(adapter.tokenize(x)), x)
    out = model({"array": x})["array"]
    out.loss.backward()
    assert torch.isfinite(out.loss)


def test_channel_tokens_are_told_apart_by_their_channel_embedding_in_encoder_and_decoder():
    """As microscopy's (one shared home, omnimae.adapter.ChannelEmbeddings): every token of channel c
    gets row c of the table on top of its sin-cos of (h, w); the tables keep their state-dict names."""
    a = "modalities.array.adapter"
    model = build_model(compose("pretrain", ["experiment=none", "modality=array", "model=vit_tiny", f"{a}.shape=[3,8,8]",
                                             f"{a}.tokenizer=channel", f"{a}.patch_size=4"]))
    adapter = model.adapters["array"]
    assert {"adapters.array.channel_embed", "adapters.array.decoder_channel_embed"} <= set(model.state_dict())
    p = adapter.tokenize(torch.randn(2, 3, 8, 8))
    for decoder, table in ((False, adapter.channel_embed), (True, adapter.decoder_channel_embed)):
        dim = model.decoder_embed_dim if decoder else model.embed_dim
        extra = model.token_positions(p, adapter, decoder)[0] - model.pos_embed(p.coords[:, [1, 2]], dim)
        for c in range(3):  # 4 patches per channel, channel-major
            torch.testing.assert_close(extra[4 * c : 4 * c + 4], table[c].expand(4, -1))
    plain = build_model(compose("pretrain", ["experiment=none", "modality=array", "model=vit_tiny", f"{a}.shape=[3,8,8]",
                                             f"{a}.patch_size=4"])).adapters["array"]
    assert not hasattr(plain, "channel_embed") and plain.token_embeddings(plain.tokenize(torch.randn(1, 3, 8, 8)), False) is None


def test_config_mistakes_name_the_key():
    a = "modalities.array.adapter"
    base = ["experiment=none", "modality=array", "model=vit_tiny"]
    with pytest.raises(ConfigError, match=f"{a}.tokenizer"):
        build_model(compose("pretrain", base + [f"{a}.tokenizer=hexagon"]))
    with pytest.raises(ConfigError, match=f"{a}.patch_size"):
        build_model(compose("pretrain", base + [f"{a}.shape=[3,10,10]", f"{a}.patch_size=4"]))
    with pytest.raises(ConfigError, match=f"{a}.masking"):
        build_model(compose("pretrain", base + [f"{a}.masking=tube"]))


@pytest.mark.parametrize("name,values,dtype", [
    ("strings.npy", np.array([["a", "b"], ["c", "d"]]), "<U1"),
    ("dates.npy", np.array(["2020-01-01", "2020-01-02"], dtype="datetime64[D]"), "datetime64[D]"),
    ("complex.npy", np.full((1, 4, 4), 1 + 5j, np.complex64), "complex64"),
    ("labels.nc", np.array([["a", "b"], ["c", "d"]], dtype=object), "<U1"),  # netCDF strings come back as <U1
])
def test_only_bool_integer_and_float_arrays_are_read(tmp_path, name, values, dtype):
    from omnimae.modalities.array import read_array

    path = tmp_path / name
    if name.endswith(".nc"):
        import xarray as xr

        xr.Dataset({"v": (("y", "x"), values)}).to_netcdf(path)
    else:
        np.save(path, values)
    with pytest.raises(DataError, match=re.escape(f"{path}: unsupported data type {dtype}")):
        read_array(path, None, None)


def test_upper_case_suffixes_are_read_like_lower_case(tmp_path):
    """find_files matches suffixes in any case, so reading dispatches on them in any case too."""
    import tifffile

    from omnimae.modalities.array import ArrayData, read_array

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(2, 8, 8)).astype(np.float32), rng.integers(0, 99, (2, 8, 8)).astype(np.uint16)
    with open(tmp_path / "A.NPY", "wb") as f:
        np.save(f, a)
    tifffile.imwrite(tmp_path / "B.OME.TIF", b)
    np.testing.assert_array_equal(read_array(tmp_path / "A.NPY", None, None), a)
    np.testing.assert_array_equal(read_array(tmp_path / "B.OME.TIF", None, None), b.astype(np.float32))
    data = ArrayData(shape=[2, 8, 8], root=str(tmp_path), val_fraction=0, normalization="none")
    assert sorted(p.name for p in data.splits()["train"][0]) == ["A.NPY", "B.OME.TIF"]
    (tmp_path / "c.txt").write_text("1 2 3")
    with pytest.raises(DataError, match=re.escape(f"{tmp_path / 'c.txt'}: unsupported file type '.txt'")):
        read_array(tmp_path / "c.txt", None, None)


def test_blank_crops_of_a_sparse_array_do_not_fail(tmp_path):
    """Signal in one corner only: blank crops become zeros, others are standardized per channel; a
    channel constant over the whole array fails when the folder is scanned."""
    from omnimae.modalities.array import ArrayData

    a = np.zeros((2, 128, 128), np.float32)
    a[:, :40, :40] = np.random.default_rng(0).normal(size=(2, 40, 40))
    np.save(tmp_path / "x.npy", a)
    data = ArrayData(shape=[2, 32, 32], root=str(tmp_path), val_fraction=0)
    assert torch.equal(data.dataset("train", train=False)[0], torch.zeros(2, 32, 32))  # the centre is background
    ds = data.dataset("train", train=True)
    kinds = set()
    for seed in range(40):
        for c in ds[(0, seed)].double():
            if c.abs().max() == 0:
                kinds.add("blank")
            else:
                crop_mean, crop_std = c.mean().item(), c.std().item()
                assert abs(crop_mean) < 1e-5 and abs(crop_std - 1) < 1e-4
                kinds.add("signal")
    assert kinds == {"blank", "signal"}
    a[1] = 7.0
    np.save(tmp_path / "x.npy", a)
    with pytest.raises(DataError, match=r"x\.npy: channel\(s\) \[1\] are constant over the whole array"):
        ArrayData(shape=[2, 32, 32], root=str(tmp_path), val_fraction=0).splits()
