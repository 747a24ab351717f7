import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from omnimae.errors import ConfigError, DataError
from omnimae.modalities.image import ImageData, find_images
from omnimae.modalities.readers.image import read_image


def test_reads_png_jpeg_and_tiff_like_their_libraries(tmp_path):
    rgb = (np.random.default_rng(0).random((20, 24, 3)) * 255).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    np.testing.assert_allclose(read_image(tmp_path / "a.png", 3).permute(1, 2, 0).numpy(), rgb / 255.0, atol=1e-6)
    Image.fromarray(rgb).save(tmp_path / "b.jpg", quality=95)
    ref = np.asarray(Image.open(tmp_path / "b.jpg")) / 255.0
    np.testing.assert_allclose(read_image(tmp_path / "b.jpg", 3).permute(1, 2, 0).numpy(), ref, atol=1e-6)
    grey16 = (np.random.default_rng(1).random((16, 16)) * 65535).astype(np.uint16)
    tifffile.imwrite(tmp_path / "c.tif", grey16)
    np.testing.assert_allclose(read_image(tmp_path / "c.tif", 1)[0].numpy(), grey16 / 65535.0, atol=1e-6)


def test_imagefolder_and_flat_layouts(image_folder, tmp_path):
    paths, labels, classes = find_images(image_folder)
    assert classes == ["a", "b"] and len(paths) == 24 and sorted(set(labels)) == [0, 1]
    flat = tmp_path / "flat"
    flat.mkdir()
    for k, p in enumerate(paths[:3]):
        (flat / f"{k}_{p.name}").write_bytes(p.read_bytes())
    fpaths, flabels, fclasses = find_images(flat)
    assert fclasses == [] and flabels == [-1, -1, -1] and len(fpaths) == 3


def test_link_loops_and_second_links_count_each_image_once_and_are_named(tmp_path, caplog):
    """sub/up -> .. (the root) loops: each real folder is searched once, whatever links lead to it."""
    import logging
    import os

    pixels = np.zeros((8, 8, 3), np.uint8)
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        for i in range(6):
            Image.fromarray(pixels + i).save(tmp_path / cls / f"{i}.png")
    links = [tmp_path / "a" / "up", tmp_path / "a" / "self", tmp_path / "b" / "again"]
    for link, target in zip(links, ("..", ".", os.path.join("..", "a"))):
        link.symlink_to(target, target_is_directory=True)
    with caplog.at_level(logging.WARNING, logger="omnimae"):
        paths, labels, classes = find_images(tmp_path)
    assert classes == ["a", "b"] and len(paths) == len(set(paths)) == 12 and labels == [0] * 6 + [1] * 6
    assert set(paths) == {tmp_path / c / f"{i}.png" for c in ("a", "b") for i in range(6)}  # by no link's path
    named = [r.getMessage().split(":")[0] for r in caplog.records]
    assert sorted(named) == sorted(map(str, links))  # each link reported once
    data = ImageData(root=str(tmp_path), img_size=8, in_chans=3, val_fraction=0.0)
    assert len(data.dataset("train", train=True)) == 12


def test_training_crops_are_seeded_and_normalized(image_folder):
    data = ImageData(root=str(image_folder), img_size=16, in_chans=3)
    ds = data.dataset("train", train=True)
    a, b, c = ds[(0, 7)], ds[(0, 7)], ds[(0, 8)]
    assert a.shape == (3, 16, 16) and torch.equal(a, b) and not torch.equal(a, c)
    assert len(data.splits()["val"][0]) == 1  # ceil(2% of 24)


def test_empty_folder(tmp_path):
    with pytest.raises(DataError, match=f"{tmp_path}.*no image files"):
        find_images(tmp_path)


def test_missing_folder(tmp_path):
    with pytest.raises(DataError, match="no such folder"):
        find_images(tmp_path / "nope")


def test_truncated_image_names_the_file(tmp_path):
    Image.fromarray(np.zeros((64, 64, 3), np.uint8) + 90).save(tmp_path / "t.jpg")
    data = (tmp_path / "t.jpg").read_bytes()
    (tmp_path / "t.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"t\.jpg: cannot decode image"):
        read_image(tmp_path / "t.jpg", 3)


def test_corrupt_image_fails_before_training(tmp_path):
    (tmp_path / "ok").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "ok" / "fine.png")
    (tmp_path / "ok" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    with pytest.raises(DataError, match=r"broken\.png: cannot read image header"):
        ImageData(root=str(tmp_path), img_size=8, in_chans=3).splits()


def test_wrong_channel_count_is_an_error_unless_converting(tmp_path):
    Image.fromarray(np.full((8, 8), 128, np.uint8), mode="L").save(tmp_path / "grey.png")
    with pytest.raises(DataError, match=r"grey\.png: image has 1 channels but the model expects in_chans=3"):
        ImageData(root=str(tmp_path), img_size=8, in_chans=3, val_fraction=0).splits()
    with pytest.raises(DataError, match=r"grey\.png.*data\.convert=true"):
        read_image(tmp_path / "grey.png", 3)
    x = read_image(tmp_path / "grey.png", 3, convert=True)
    assert x.shape == (3, 8, 8) and torch.allclose(x, torch.full_like(x, 128 / 255))


def test_nan_in_float_tiff_is_an_error(tmp_path):
    arr = np.ones((8, 8), np.float32)
    arr[2, 3] = np.nan
    tifffile.imwrite(tmp_path / "nan.tif", arr)
    with pytest.raises(DataError, match=r"nan\.tif: image holds NaN"):
        read_image(tmp_path / "nan.tif", 1)


def test_root_and_builtin_together_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="root: set exactly one of root and builtin"):
        ImageData(root=str(tmp_path), builtin="digits", in_chans=1)


def test_train_and_val_folders_share_one_class_index(tmp_path):
    for split, classes in (("train", ["ant", "bee", "cat"]), ("val", ["bee", "cat"])):
        for c in classes:
            (tmp_path / split / c).mkdir(parents=True)
            Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / split / c / "x.png")
    splits = ImageData(root=str(tmp_path), img_size=8, in_chans=3).splits()
    assert splits["train"][1] == [0, 1, 2] and splits["val"][1] == [1, 2]  # bee is 1 in both


@pytest.mark.parametrize("name,mode,channels", [("p.png", "P", 3), ("cmyk.jpg", "CMYK", 3), ("la.png", "LA", 4)])
def test_scan_counts_channels_as_the_reader_decodes_them(tmp_path, name, mode, channels):
    """Palette, CMYK and grey+alpha files are converted when read: the scan counts the converted channels."""
    rgb = Image.fromarray((np.random.default_rng(0).random((16, 16, 3)) * 255).astype(np.uint8))
    rgb.convert(mode).save(tmp_path / name)
    with Image.open(tmp_path / name) as im:
        ref = np.asarray(im.convert("RGBA" if channels == 4 else "RGB")) / 255.0
    np.testing.assert_allclose(read_image(tmp_path / name, channels).permute(1, 2, 0).numpy(), ref, atol=1e-6)
    assert len(ImageData(root=str(tmp_path), img_size=8, in_chans=channels, val_fraction=0).splits()["train"][0]) == 1
    with pytest.raises(DataError, match=rf"{name}: image has {channels} channels but the model expects in_chans=1"):
        ImageData(root=str(tmp_path), img_size=8, in_chans=1, val_fraction=0).splits()


def test_tiff_is_read_by_its_axes_and_stacks_are_errors(tmp_path):
    rgb = (np.random.default_rng(0).random((3, 20, 4)) * 255).astype(np.uint8)  # (S, H, W), narrow on purpose
    tifffile.imwrite(tmp_path / "planar.tif", rgb, photometric="rgb", planarconfig="separate")
    tifffile.imwrite(tmp_path / "contig.tif", rgb.transpose(1, 2, 0), photometric="rgb")
    for name in ("planar.tif", "contig.tif"):
        np.testing.assert_allclose(read_image(tmp_path / name, 3).numpy(), rgb / 255.0, atol=1e-6)
    assert len(ImageData(root=str(tmp_path), img_size=4, in_chans=3, val_fraction=0).splits()["train"][0]) == 2
    planes = np.random.default_rng(1).integers(0, 255, (3, 20, 6), dtype=np.uint8)
    for stack in (tmp_path / "stack.tif", tmp_path / "zstack.tif"):
        if stack.name == "stack.tif":  # three grey pages
            tifffile.imwrite(stack, planes, photometric="minisblack")
        else:
            tifffile.imwrite(stack, planes[:, None], imagej=True, metadata={"axes": "ZCYX"})
        with pytest.raises(DataError, match=rf"{stack.name}: a stack of 3 planes.*microscopy or array modality"):
            read_image(stack, 1, convert=True)
        with pytest.raises(DataError, match=rf"{stack.name}: a stack of 3 planes"):
            ImageData(root=str(tmp_path), img_size=4, in_chans=3, val_fraction=0, convert=True).splits()
        stack.unlink()
