"""Channel-agnostic microscopy: per-channel tokens, channel identity, any subset of channels."""
import numpy as np
import pytest
import torch

from omnimae.config.build import build_model
from omnimae.config.compose import compose
from omnimae.errors import ConfigError
from omnimae.masking import num_visible

M = ["experiment=none", "modality=microscopy", "model=vit_tiny", "modalities.microscopy.adapter.img_size=32",
     "modalities.microscopy.adapter.patch_size=8", "modalities.microscopy.adapter.channels=[dna,er,rna,agp,mito]"]


@pytest.fixture
def model():
    torch.manual_seed(0)
    return build_model(compose("pretrain", M)).eval()


def batch(ids, b=2, size=32):
    return {"pixels": torch.randn(b, len(ids), size, size), "channel_ids": torch.tensor([ids] * b)}


def test_per_channel_tokens_round_trip(model):
    a = model.adapters["microscopy"]
    x = batch([4, 0, 2])
    p = a.tokenize(x)
    assert p.values.shape == (2, 3 * 16, 64) and p.grid == (3, 4, 4)
    assert torch.equal(a.untokenize(p), x["pixels"])
    # token k of channel c is that channel's patch: one shared stem sees single-channel patches
    assert torch.equal(p.values[:, 16 + 5], x["pixels"][:, 1, 8:16, 8:16].reshape(2, 64))


def test_positions_are_spatial_and_channels_are_told_apart_by_their_embedding(model):
    a = model.adapters["microscopy"]
    p = a.tokenize(batch([1, 3]))
    pos = model.pos_embed(p.coords[:, [1, 2]], model.embed_dim)
    full = model.token_positions(p, a)[0]  # sin-cos of (h, w) + channel embedding
    torch.testing.assert_close(full[:16] - pos[:16], a.channel_embed[1].expand(16, -1))
    torch.testing.assert_close(full[16:] - pos[16:], a.channel_embed[3].expand(16, -1))
    torch.testing.assert_close(pos[:16], pos[16:])  # the same place in two channels: the same position


def test_an_unknown_channel_gets_the_mean_channel_embedding(model):
    from omnimae.modalities.microscopy import channel_ids

    ids = channel_ids(["er", "never-seen"], ["dna", "er", "rna", "agp", "mito"])
    assert ids.tolist() == [1, 5]
    a = model.adapters["microscopy"]
    emb = model.token_positions(a.tokenize(batch(ids.tolist())), a)[0]
    pos = model.pos_embed(a.tokenize(batch(ids.tolist())).coords[:, [1, 2]], model.embed_dim)
    torch.testing.assert_close(emb[16] - pos[16], a.channel_embed.mean(0))
    with pytest.raises(Exception, match="never-seen"):
        channel_ids(["never-seen"], ["dna"], unknown="error", source="x.tif")


def test_masks_cover_channel_x_space_and_can_hide_whole_channels(model):
    a = model.adapters["microscopy"]
    p = a.tokenize(batch([0, 1, 2, 3], b=3))
    n = p.num_tokens
    a.channel_subset_prob = 0.0
    _, _, mask = a.mask(p, generator=torch.Generator().manual_seed(0))
    assert (mask.sum(1) == n - num_visible(n, 0.75)).all()
    a.channel_subset_prob = 1.0
    hidden_whole = 0
    for seed in range(6):
        _, _, mask = a.mask(p, generator=torch.Generator().manual_seed(seed))
        per_channel = mask.view(3, 4, 16)
        whole = (per_channel.sum(-1) == 16).all(0)  # channels hidden in every sample
        hidden_whole += int(whole.sum())
        assert (mask.sum(1) == mask.sum(1)[0]).all() and (per_channel.sum(-1) < 16).any()  # some channel is seen
    assert hidden_whole > 0


def test_any_subset_and_order_of_channels_embeds(model):
    x = batch([0, 1, 2, 3, 4])
    for ids in ([2, 0], [4], [3, 1, 0]):
        sub = {"pixels": x["pixels"][:, ids], "channel_ids": torch.tensor([ids] * 2)}
        assert model.embed(sub, "microscopy").shape == (2, 64)
    # the order of channels does not change the embedding (positions are spatial, identity is by name)
    a = model.embed({"pixels": x["pixels"][:, [1, 3]], "channel_ids": torch.tensor([[1, 3]] * 2)}, "microscopy")
    b = model.embed({"pixels": x["pixels"][:, [3, 1]], "channel_ids": torch.tensor([[3, 1]] * 2)}, "microscopy")
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_config_errors_name_the_key():
    for override, key in (("modalities.microscopy.adapter.channels=[a,a]", "channels"),
                          ("modalities.microscopy.adapter.img_size=30", "img_size"),
                          ("modalities.microscopy.adapter.unknown_channel=guess", "unknown_channel")):
        with pytest.raises(ConfigError, match=f"modalities.microscopy.adapter.{key}"):
            build_model(compose("pretrain", M + [override]))


@pytest.mark.parametrize("modality", ["image", "microscopy", "video"])
def test_square_patch_grids_are_checked_alike(modality):
    """One check (omnimae.adapter.check_patch_grid) for every square image grid: a patch_size below 1 is
    named as patch_size, an img_size that is not a positive multiple of it as img_size."""
    import omnimae.modalities  # noqa: F401  (registers the adapters)
    from omnimae.adapter import MODALITIES

    kw = {"channels": ["dna"]} if modality == "microscopy" else {}
    for img_size, patch_size, key in ((32, 0, "patch_size"), (32, -4, "patch_size"), (30, 8, "img_size"), (8, 16, "img_size")):
        with pytest.raises(ConfigError, match=rf"^{key}: "):
            MODALITIES[modality](embed_dim=8, decoder_embed_dim=8, img_size=img_size, patch_size=patch_size, **kw)


def write_ome(path, names, seed, size=40):
    import tifffile

    rng = np.random.default_rng(seed)
    base = rng.normal(size=(size, size)).cumsum(0).cumsum(1)
    stack = np.stack([base * (k + 1) + rng.normal(0, 1, (size, size)) * 5 for k in range(len(names))]).astype(np.float32)
    tifffile.imwrite(path, stack, ome=True, metadata={"axes": "CYX", "Channel": {"Name": list(names)}})



def test_embed_batches_files_with_different_channel_sets_and_keeps_file_order(tmp_path):
    """A folder mixing channel sets embeds in batches of one set each, with rows in file order; the
    result equals embedding one file at a time, and the per-channel table has NaN where a file
    lacks a channel."""
    import xarray as xr

    from omnimae.checkpoint.format import save_safetensors
    from omnimae.cli import main

    cfg = compose("pretrain", M)
    torch.manual_seed(0)
    ckpt = save_safetensors(build_model(cfg), cfg, tmp_path / "m.safetensors")
    data = tmp_path / "mixed"
    data.mkdir()
    sets = {"a": ["dna", "er", "rna"], "b": ["dna", "er"], "c": ["er", "dna"], "d": ["mito", "dna", "er"], "e": ["dna", "er"]}
    for i, (name, channels) in enumerate(sets.items()):
        write_ome(data / f"{name}.ome.tif", channels, seed=i)
    runs = {}
    for bs in (1, 64):
        out = tmp_path / f"emb{bs}.nc"
        assert main(["embed", f"checkpoint={ckpt}", f"data_root={data}", f"output={out}", f"batch_size={bs}"]) == 0
        runs[bs] = xr.load_dataset(out)
    one, many = runs[1], runs[64]
    assert list(many["file"].values) == list(one["file"].values)  # the data module's order of files
    assert sorted(many["file"].values) == [f"{n}.ome.tif" for n in sets]
    for key in ("embedding_mean", "embedding_cls", "embedding_channel"):
        np.testing.assert_allclose(many[key].values, one[key].values, rtol=1e-4, atol=1e-5, equal_nan=True)
    channels = list(many["channel"].values)
    assert channels == ["dna", "er", "mito", "rna"]
    for row, file in enumerate(many["file"].values):
        finite = np.isfinite(many["embedding_channel"].values[row]).all(axis=-1)  # [channel]
        assert finite.tolist() == [c in sets[file.split(".")[0]] for c in channels], file
    # a zarr store into a folder that does not exist yet, then again over it: no temporary left behind
    store = tmp_path / "new" / "dir" / "emb.zarr"
    for _ in range(2):
        assert main(["embed", f"checkpoint={ckpt}", f"data_root={data}", f"output={store}", "overwrite=true"]) == 0
    np.testing.assert_allclose(xr.open_zarr(store)["embedding_mean"].values, many["embedding_mean"].values, rtol=1e-6)
    assert list(store.parent.iterdir()) == [store]


def test_trains_on_3_and_5_channel_images_together_then_embeds_a_2_channel_subset(tmp_path, capsys):
    import pandas as pd
    import xarray as xr

    from omnimae.cli import main
    from omnimae.train.pretrain import pretrain

    data = tmp_path / "plates"
    for cls in ("ctrl", "drug"):
        (data / cls).mkdir(parents=True)
        for i in range(4):
            write_ome(data / cls / f"three_{i}.ome.tif", ["dna", "er", "rna"], seed=i + 10 * (cls == "drug"))
            write_ome(data / cls / f"five_{i}.ome.tif", ["dna", "er", "rna", "agp", "mito"], seed=100 + i)
    run = tmp_path / "run"
    cfg = compose("pretrain", M + ["trainer=debug", "trainer.max_steps=4", f"data.root={data}", f"run_dir={run}",
                                   "modalities.microscopy.batch_size=2", "modalities.microscopy.num_workers=0",
                                   "modalities.microscopy.data.val_fraction=0.2", "callbacks.reconstruction_samples=2"])
    assert pretrain(cfg)["steps"] == 4
    assert (run / "reconstructions" / "final.png").is_file()
    subset = tmp_path / "subset"
    subset.mkdir()
    for i in range(6):
        write_ome(subset / f"img{i}.ome.tif", ["er", "dna"], seed=200 + i)  # a subset, in another order
    out = tmp_path / "emb.nc"
    assert main(["embed", f"checkpoint={run / 'checkpoints' / 'last.ckpt'}", f"data_root={subset}", f"output={out}"]) == 0
    ds = xr.open_dataset(out)
    assert ds["embedding_mean"].shape == (6, 64)
    assert list(ds["channel"].values) == ["dna", "er"] and ds["embedding_channel"].shape == (6, 2, 64)
    assert np.isfinite(ds["embedding_channel"].values).all()
    assert all(str(s).endswith(".ome.tif") for s in ds["source"].values)
    # probe the saved embeddings against a labels CSV
    pd.DataFrame({"file": ds["file"].values, "label": [0, 1] * 3}).to_csv(tmp_path / "labels.csv", index=False)
    assert main(["probe", f"embeddings={out}", f"labels={tmp_path / 'labels.csv'}", "folds=2"]) == 0
    text = capsys.readouterr().out
    assert "majority class" in text and "embedding_mean" in text


def test_manifest_of_one_file_per_channel_and_dataset_statistics(tmp_path):
    from skimage.color import rgb2hed
    from skimage.data import immunohistochemistry

    from omnimae.modalities.microscopy import MicroscopyData

    from skimage.color import rgb2gray

    ihc = immunohistochemistry()
    hed = rgb2hed(ihc)  # a real stained section split into stains (its eosin is empty: use a grey channel instead)
    hed = np.stack([hed[..., 0], rgb2gray(ihc), hed[..., 2]], axis=-1)
    rows = []
    for i in range(3):
        crop = hed[150 + i * 70 : 214 + i * 70, 200:264]
        files = {}
        for k, name in enumerate(["hematoxylin", "grey", "dab"]):
            f = tmp_path / f"img{i}_{name}.tif"
            import tifffile

            tifffile.imwrite(f, crop[..., k].astype(np.float32))
            files[name] = f.name
        rows.append({"image_id": f"img{i}", **files, "label": i % 2})
    import pandas as pd

    pd.DataFrame(rows).to_csv(tmp_path / "manifest.csv", index=False)
    vocab = ["hematoxylin", "grey", "dab"]
    data = MicroscopyData(vocab, manifest=str(tmp_path / "manifest.csv"), img_size=32, label_column="label", val_fraction=0.34)
    splits = data.splits()
    assert sum(len(v[0]) for v in splits.values()) == 3 and sorted(splits["train"][1] + splits["val"][1]) == [0, 0, 1]
    item = data.dataset("train", train=False)[0]
    assert item["pixels"].shape == (3, 32, 32) and item["channel_ids"].tolist() == [0, 1, 2]
    # per image and channel standardized by default (CA-MAE) ...
    torch.testing.assert_close(item["pixels"].mean(dim=(1, 2)), torch.zeros(3), atol=1e-5, rtol=0)
    # ... or by dataset statistics per channel name
    stats = {"hematoxylin": [0.1, 2.0], "grey": [0.0, 1.0], "dab": [-0.5, 0.5]}
    by_stats = MicroscopyData(vocab, manifest=str(tmp_path / "manifest.csv"), img_size=32, normalization="dataset", stats=stats, val_fraction=0.34, label_column="label")
    row = by_stats.splits()["train"][0][0]
    raw = torch.from_numpy(by_stats._read(row).pixels)[:, 16:48, 16:48]
    got = by_stats.dataset("train", train=False)[0]["pixels"]
    expected = (raw - torch.tensor([0.1, 0.0, -0.5]).view(3, 1, 1)) / torch.tensor([2.0, 1.0, 0.5]).view(3, 1, 1)
    torch.testing.assert_close(got, expected)


def test_bad_images_fail_before_training_naming_the_file(tmp_path):
    import tifffile

    from omnimae.errors import DataError
    from omnimae.modalities.microscopy import MicroscopyData

    vocab = ["dna", "er"]
    write_ome(tmp_path / "good.ome.tif", vocab, seed=0)
    flat = np.zeros((2, 40, 40), np.float32)
    flat[0] = np.random.default_rng(0).normal(size=(40, 40))
    tifffile.imwrite(tmp_path / "flat.ome.tif", flat, ome=True, metadata={"axes": "CYX", "Channel": {"Name": vocab}})
    with pytest.raises(DataError, match=r"flat\.ome\.tif.*er"):
        MicroscopyData(vocab, root=str(tmp_path), img_size=32).splits()
    (tmp_path / "flat.ome.tif").unlink()
    data = (tmp_path / "good.ome.tif").read_bytes()
    (tmp_path / "cut.ome.tif").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"cut\.ome\.tif"):
        MicroscopyData(vocab, root=str(tmp_path), img_size=32).splits()
    (tmp_path / "cut.ome.tif").unlink()
    write_ome(tmp_path / "odd.ome.tif", ["dna", "golgi"], seed=1)
    with pytest.raises(DataError, match=r"odd\.ome\.tif.*golgi"):
        MicroscopyData(vocab, root=str(tmp_path), img_size=32, unknown_channel="error").splits()
    assert len(MicroscopyData(vocab, root=str(tmp_path), img_size=32).splits()["train"][0]) >= 1  # shared: allowed


def test_decoded_tiles_are_cached_and_equal(tmp_path):
    from omnimae.modalities.microscopy import MicroscopyData

    data = tmp_path / "imgs"
    data.mkdir()
    for i in range(3):
        write_ome(data / f"{i}.ome.tif", ["dna", "er"], seed=i)
    plain = MicroscopyData(["dna", "er"], root=str(data), img_size=32, val_fraction=0)
    cached = MicroscopyData(["dna", "er"], root=str(data), img_size=32, val_fraction=0, cache_dir=str(tmp_path / "cache"))
    a, b = plain.dataset("train", train=True), cached.dataset("train", train=True)
    for key in ((0, 3), (2, 4)):
        torch.testing.assert_close(b[key]["pixels"], a[key]["pixels"])
        assert torch.equal(b[key]["channel_ids"], a[key]["channel_ids"])
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 3


def test_cache_sees_zarr_chunks_rewritten_in_place(tmp_path):
    """A zarr store's own stat does not change when its chunks are rewritten: the cache must still see it."""
    import zarr

    from omnimae.modalities.microscopy import MicroscopyData

    root = tmp_path / "imgs"
    root.mkdir()
    store = root / "a.zarr"
    rng = np.random.default_rng(0)
    zarr.create_array(str(store), shape=(2, 40, 40), chunks=(1, 40, 40), dtype="f4")[:] = rng.normal(size=(2, 40, 40))
    kw = dict(root=str(root), img_size=32, val_fraction=0, channel_axis=0, cache_dir=str(tmp_path / "cache"))
    MicroscopyData(["ch0", "ch1"], **kw)._read(store)  # cached
    new = (rng.normal(size=(2, 40, 40)) + 100).astype("f4")
    zarr.open_array(str(store), mode="r+")[:] = new
    np.testing.assert_array_equal(MicroscopyData(["ch0", "ch1"], **kw)._read(store).pixels, new)
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 2


def test_blank_crops_of_a_sparse_image_do_not_fail(tmp_path):
    """Cells in one corner, empty background elsewhere: a blank crop becomes zeros, any other crop is
    standardized per channel to mean 0 and std 1; a channel constant over the whole image still fails."""
    import tifffile

    from omnimae.errors import DataError
    from omnimae.modalities.microscopy import MicroscopyData

    img = np.zeros((2, 128, 128), np.float32)
    img[:, :40, :40] = np.random.default_rng(0).normal(size=(2, 40, 40))
    tifffile.imwrite(tmp_path / "sparse.ome.tif", img, ome=True, metadata={"axes": "CYX", "Channel": {"Name": ["dna", "er"]}})
    data = MicroscopyData(["dna", "er"], root=str(tmp_path), img_size=32, val_fraction=0)
    centre = data.dataset("train", train=False)[0]["pixels"]  # rows and columns 48..79: background only
    assert torch.equal(centre, torch.zeros(2, 32, 32))
    ds = data.dataset("train", train=True)
    kinds = set()
    for seed in range(40):
        x = ds[(0, seed)]["pixels"].double()
        for c in x:
            if c.abs().max() == 0:
                kinds.add("blank")
            else:
                torch.testing.assert_close(c.mean(), torch.tensor(0.0, dtype=torch.float64), atol=1e-5, rtol=0)
                torch.testing.assert_close(c.std(), torch.tensor(1.0, dtype=torch.float64), atol=1e-4, rtol=0)
                kinds.add("signal")
    assert kinds == {"blank", "signal"}
    img[1] = 3.0
    tifffile.imwrite(tmp_path / "sparse.ome.tif", img, ome=True, metadata={"axes": "CYX", "Channel": {"Name": ["dna", "er"]}})
    with pytest.raises(DataError, match=r"sparse\.ome\.tif.*'er' is constant"):
        MicroscopyData(["dna", "er"], root=str(tmp_path), img_size=32, val_fraction=0).splits()


def test_train_and_val_folders_are_used_as_given_with_one_class_index(tmp_path):
    """As for every folder source (omnimae.data.files.folder_splits): train/ and val/ are the splits, their
    class subfolders share one index; without them a seeded val_fraction is held out."""
    from omnimae.modalities.microscopy import MicroscopyData

    for split, cls, n in (("train", "ctrl", 3), ("train", "drug", 2), ("val", "drug", 1), ("val", "ctrl", 1)):
        (tmp_path / "plate" / split / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            write_ome(tmp_path / "plate" / split / cls / f"{cls}{i}.ome.tif", ["dna", "er"], seed=i)
    splits = MicroscopyData(channels=["dna", "er"], root=str(tmp_path / "plate"), img_size=32, val_fraction=0.5).splits()
    named = {s: sorted((p.parent.name, label) for p, label in zip(split.source, split.labels)) for s, split in splits.items()}
    assert named == {"train": [("ctrl", 0)] * 3 + [("drug", 1)] * 2, "val": [("ctrl", 0), ("drug", 1)]}
