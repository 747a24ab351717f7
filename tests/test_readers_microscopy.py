"""Multi-channel microscopy reading: OME-TIFF axes and channel names, plain TIFFs that need
channel_axis, a real stained tissue image, truncated files, per-channel manifests and their errors,
constant channels, zarr / OME-Zarr, and discovery. All data is made by the tests."""
import re

import numpy as np
import pytest
import tifffile
from PIL import Image

from omnimae.errors import ConfigError, DataError
from omnimae.modalities.readers.manifest import read_manifest, read_manifest_row
from omnimae.modalities.readers.microscopy import ChannelImage, check_channels, find_microscopy, read_zarr
from omnimae.modalities.readers.ome_tiff import read_tiff

NAMES = ["DAPI", "GFP", "mCherry"]


def stack(c=3, h=24, w=32, dtype=np.uint16, seed=0):
    rng = np.random.default_rng(seed)
    if np.issubdtype(dtype, np.integer):
        return rng.integers(0, np.iinfo(dtype).max, size=(c, h, w), dtype=dtype)
    return rng.normal(size=(c, h, w)).astype(dtype)


def raises_naming(path, *parts):
    """A DataError whose message starts with the path and contains every part."""
    return pytest.raises(DataError, match=rf"^{re.escape(str(path))}[:\s](?s:.*)" + "".join(
        rf"(?=(?s:.*){re.escape(p)})" for p in parts
    ))


# --- OME-TIFF -------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32, np.float64])
def test_ome_tiff_cyx_round_trips_pixels_and_names(tmp_path, dtype):
    a = stack(dtype=dtype)
    p = tmp_path / "a.ome.tif"
    tifffile.imwrite(p, a, ome=True, metadata={"axes": "CYX", "Channel": {"Name": NAMES}})
    img = read_tiff(p)
    assert img.pixels.dtype == np.float32 and img.pixels.shape == a.shape
    np.testing.assert_array_equal(img.pixels, a.astype(np.float32))  # values kept, not normalized
    assert img.channels == NAMES and img.source == str(p) and img.files == [str(p)]
    check_channels(img)


def test_ome_tiff_yxc_interleaved(tmp_path):
    a = stack()
    p = tmp_path / "yxc.ome.tif"
    tifffile.imwrite(
        p, a.transpose(1, 2, 0), ome=True, photometric="minisblack", planarconfig="contig",
        metadata={"axes": "YXC", "Channel": {"Name": ["rgbish"]}},
    )
    img = read_tiff(p, channel_axis=0)  # metadata wins: channel_axis only serves files without axes
    np.testing.assert_array_equal(img.pixels, a)
    # tifffile stores the 3 samples as one OME Channel (SamplesPerPixel=3): each sample gets an index
    assert img.channels == ["rgbish[0]", "rgbish[1]", "rgbish[2]"]
    # unnamed: ch0, ch1, ...
    tifffile.imwrite(p, a.transpose(1, 2, 0), ome=True, photometric="minisblack", planarconfig="contig",
                     metadata={"axes": "YXC"})
    assert read_tiff(p).channels == ["ch0", "ch1", "ch2"]


@pytest.mark.parametrize("axes", ["ZCYX", "TCYX"])
def test_singleton_z_or_t_is_squeezed(tmp_path, axes):
    a = stack()
    p = tmp_path / "s.ome.tif"
    tifffile.imwrite(p, a[None], ome=True, metadata={"axes": axes, "Channel": {"Name": NAMES}})
    img = read_tiff(p)
    np.testing.assert_array_equal(img.pixels, a)
    assert img.channels == NAMES


def test_several_z_planes_or_time_points_are_an_error(tmp_path):
    p = tmp_path / "z3.ome.tif"
    tifffile.imwrite(p, np.stack([stack(seed=i) for i in range(3)]), ome=True, metadata={"axes": "ZCYX"})
    with raises_naming(p, "3 Z planes", "ZCYX"):
        read_tiff(p)
    q = tmp_path / "t2.ome.tif"
    tifffile.imwrite(q, np.stack([stack(seed=i) for i in range(2)]), ome=True, metadata={"axes": "TCYX"})
    with raises_naming(q, "2 time points"):
        read_tiff(q)


def test_channel_names_argument_fills_in_or_must_agree(tmp_path):
    a = stack()
    p = tmp_path / "named.ome.tif"
    tifffile.imwrite(p, a, ome=True, metadata={"axes": "CYX", "Channel": {"Name": NAMES}})
    assert read_tiff(p, channel_names=NAMES).channels == NAMES
    with raises_naming(p, "differ from channel_names"):
        read_tiff(p, channel_names=["a", "b", "c"])
    with raises_naming(p, "3 channels but channel_names gives 2"):
        read_tiff(p, channel_names=["a", "b"])
    q = tmp_path / "dupe.ome.tif"
    tifffile.imwrite(q, a, ome=True, metadata={"axes": "CYX", "Channel": {"Name": ["x", "y", "x"]}})
    with raises_naming(q, "repeat ['x']"):
        read_tiff(q)


# --- plain TIFF -----------------------------------------------------------------------------
@pytest.mark.parametrize("metadata", [None, {}])  # no description at all / tifffile's shape-only one
def test_plain_3d_tiff_needs_channel_axis(tmp_path, metadata):
    a = stack(c=5, h=64, w=64)
    p, q = tmp_path / "cyx.tif", tmp_path / "yxc.tif"
    tifffile.imwrite(p, a, metadata=metadata)
    tifffile.imwrite(q, a.transpose(1, 2, 0), metadata=metadata)
    with raises_naming(p, "(5, 64, 64)", "could be CYX or YXC", "set channel_axis"):
        read_tiff(p)
    with raises_naming(q, "(64, 64, 5)", "set channel_axis"):
        read_tiff(q)
    np.testing.assert_array_equal(read_tiff(p, channel_axis=0).pixels, a)
    for axis in (-1, 2):
        img = read_tiff(q, channel_axis=axis, channel_names=list("abcde"))
        np.testing.assert_array_equal(img.pixels, a)
        assert img.channels == list("abcde")
    assert read_tiff(p, channel_axis=0).channels == [f"ch{i}" for i in range(5)]
    with pytest.raises(ConfigError, match="channel_axis"):
        read_tiff(p, channel_axis=1)


def test_axes_in_tifffile_shape_metadata_are_used(tmp_path):
    a = stack(c=4)
    p = tmp_path / "shaped.tif"
    tifffile.imwrite(p, a, metadata={"axes": "CYX"})
    np.testing.assert_array_equal(read_tiff(p).pixels, a)


def test_imagej_hyperstack_axes_are_used(tmp_path):
    a = stack(c=4)
    p = tmp_path / "ij.tif"
    tifffile.imwrite(p, a, imagej=True, metadata={"axes": "CYX"})
    img = read_tiff(p)
    np.testing.assert_array_equal(img.pixels, a)
    assert img.channels == ["ch0", "ch1", "ch2", "ch3"]


def test_bad_pixels(tmp_path):
    a = stack(dtype=np.float32)
    a[1, 2, 3] = np.nan
    p = tmp_path / "nan.ome.tif"
    tifffile.imwrite(p, a, ome=True, metadata={"axes": "CYX"})
    with raises_naming(p, "NaN or infinite"):
        read_tiff(p)
    with raises_naming(tmp_path / "none.tif", "no such file"):
        read_tiff(tmp_path / "none.tif")
    import zarr

    big = np.full((2, 4, 4), 2**24 + 1, np.uint32)
    big[0, 0, 0] = 0
    z = tmp_path / "big.zarr"
    zarr.create_array(str(z), shape=big.shape, dtype=big.dtype)[:] = big
    with raises_naming(z, "cannot be kept exactly in float32"):
        read_zarr(z, channel_axis=0)


# --- real images ----------------------------------------------------------------------------
def test_immunohistochemistry_stains_round_trip(tmp_path):
    from skimage import data
    from skimage.color import rgb2hed

    hed = rgb2hed(data.immunohistochemistry()).transpose(2, 0, 1).astype(np.float32)  # [3, 512, 512]
    names = ["hematoxylin", "eosin", "dab"]
    p = tmp_path / "ihc.ome.tif"
    tifffile.imwrite(p, hed, ome=True, metadata={"axes": "CYX", "Channel": {"Name": names}})
    img = read_tiff(p)
    assert img.channels == names and img.pixels.shape == (3, 512, 512)
    np.testing.assert_array_equal(img.pixels, hed)
    check_channels(img)


def test_cell_as_single_channel(tmp_path):
    from skimage import data

    cell = data.cell()  # uint8 [660, 550]
    p = tmp_path / "cell.tif"
    tifffile.imwrite(p, cell)
    img = read_tiff(p)
    assert img.pixels.shape == (1, *cell.shape) and img.channels == ["ch0"]
    np.testing.assert_array_equal(img.pixels[0], cell.astype(np.float32))


# --- truncation -----------------------------------------------------------------------------
@pytest.mark.parametrize("keep", [0.999, 0.7, 0.5, 0.25, 0.1, 0.01, 8])
def test_truncated_ome_tiff_is_an_error_naming_the_file(tmp_path, keep):
    src = tmp_path / "full.ome.tif"
    tifffile.imwrite(src, stack(dtype=np.float32, h=40, w=50), ome=True,
                     metadata={"axes": "CYX", "Channel": {"Name": NAMES}})
    data = src.read_bytes()
    cut = tmp_path / "cut.ome.tif"
    cut.write_bytes(data[: keep if isinstance(keep, int) else int(len(data) * keep)])
    with raises_naming(cut):
        read_tiff(cut, channel_axis=0)  # even with channel_axis set, nothing partial comes back


def test_missing_and_empty_files_are_named_before_decoding(tmp_path):
    """As the audio and video readers (omnimae.data.files.check_file): no decoder's own words for these."""
    for name in ("empty.ome.tif", "empty.csv"):
        (tmp_path / name).write_bytes(b"")
    with raises_naming(tmp_path / "empty.ome.tif", "empty file (0 bytes)"):
        read_tiff(tmp_path / "empty.ome.tif")
    with raises_naming(tmp_path / "empty.csv", "empty file (0 bytes)"):
        read_manifest(tmp_path / "empty.csv")
    with raises_naming(tmp_path / "none.csv", "no such file"):
        read_manifest(tmp_path / "none.csv")


def test_truncated_plain_tiff_data_is_caught_before_decoding(tmp_path):
    p = tmp_path / "plain.tif"
    tifffile.imwrite(p, stack(c=1, h=64, w=64)[0], metadata=None)  # header first, pixel data after it
    p.write_bytes(p.read_bytes()[:-100])
    with raises_naming(p, "truncated", "image data runs to byte"):
        read_tiff(p)


# --- manifests ------------------------------------------------------------------------------
def write_plate(tmp_path, n=3, h=20, w=24):
    """Per-channel files of n wells: DAPI as uint8 PNG, GFP as uint16 PNG, Actin as float32 TIFF."""
    (tmp_path / "img").mkdir(exist_ok=True)
    truth, lines = {}, ["image_id,DAPI,GFP,Actin,label"]
    rng = np.random.default_rng(0)
    for i in range(n):
        dapi = rng.integers(0, 256, (h, w), dtype=np.uint8)
        gfp = rng.integers(0, 65536, (h, w), dtype=np.uint16)
        actin = rng.normal(size=(h, w)).astype(np.float32)
        Image.fromarray(dapi).save(tmp_path / f"img/w{i}_dapi.png")
        Image.fromarray(gfp).save(tmp_path / f"img/w{i}_gfp.png")
        tifffile.imwrite(tmp_path / f"img/w{i}_actin.tif", actin)
        truth[f"w{i}"] = np.stack([dapi, gfp, actin]).astype(np.float32)
        actin_path = tmp_path / f"img/w{i}_actin.tif" if i == 0 else f"img/w{i}_actin.tif"  # absolute too
        lines.append(f"w{i},img/w{i}_dapi.png,img/w{i}_gfp.png,{actin_path},{'treated' if i % 2 else 'control'}")
    csv = tmp_path / "plate.csv"
    csv.write_text("\n".join(lines) + "\n")
    return csv, truth


def test_manifest_reads_channel_files_into_a_named_stack(tmp_path):
    csv, truth = write_plate(tmp_path)
    rows = read_manifest(csv, label_column="label")
    assert [r.id for r in rows] == ["w0", "w1", "w2"]
    for r in rows:
        img = read_manifest_row(r)
        assert isinstance(img, ChannelImage) and img.channels == ["DAPI", "GFP", "Actin"]
        assert img.source == r.id and len(img.files) == 3 and img.files[0].endswith(f"{r.id}_dapi.png")
        np.testing.assert_array_equal(img.pixels, truth[r.id])
        assert img.metadata["label"] == ("treated" if r.id == "w1" else "control")
        check_channels(img)
    # expected_channels given: the stack follows its order
    rows = read_manifest(csv, label_column="label", expected_channels=["Actin", "DAPI", "GFP"])
    img = read_manifest_row(rows[1])
    assert img.channels == ["Actin", "DAPI", "GFP"]
    np.testing.assert_array_equal(img.pixels, truth["w1"][[2, 0, 1]])


def edit_csv(csv, old, new):
    csv.write_text(csv.read_text().replace(old, new, 1))


def test_manifest_errors_name_the_file_and_row(tmp_path):
    csv, _ = write_plate(tmp_path)
    original = csv.read_text()

    with raises_naming(csv, "columns ['DAPI', 'GFP', 'Actin']", "missing ['Cy5']"):
        read_manifest(csv, label_column="label", expected_channels=["DAPI", "GFP", "Actin", "Cy5"])
    with raises_naming(csv, "unexpected ['label']"):  # label not named: it looks like a channel
        read_manifest(csv, expected_channels=["DAPI", "GFP", "Actin"])

    (tmp_path / "img/w1_gfp.png").rename(tmp_path / "img/gone.png")
    with raises_naming(csv, "line 3 (id 'w1')", "channel 'GFP'", "no such file", "w1_gfp.png"):
        read_manifest(csv, label_column="label")
    rows = read_manifest(csv, label_column="label", check_files=False)
    with raises_naming(csv, "line 3 (id 'w1')", "no such file"):
        read_manifest_row(rows[1])
    (tmp_path / "img/gone.png").rename(tmp_path / "img/w1_gfp.png")

    edit_csv(csv, "img/w1_dapi.png", "")
    with raises_naming(csv, "line 3 (id 'w1')", "empty cell for channel 'DAPI'"):
        read_manifest(csv, label_column="label")
    csv.write_text(original)

    edit_csv(csv, "w2,", "w0,")
    with raises_naming(csv, "line 4", "id 'w0' repeats line 2"):
        read_manifest(csv, label_column="label")
    csv.write_text(original)

    Image.fromarray(np.zeros((20, 24, 3), np.uint8) + np.arange(3, dtype=np.uint8)).save(tmp_path / "img/w0_dapi.png")
    rows = read_manifest(csv, label_column="label")
    with raises_naming(tmp_path / "img/w0_dapi.png", "mode RGB", "single-channel", "line 2 (id 'w0')"):
        read_manifest_row(rows[0])
    tifffile.imwrite(tmp_path / "img/w0_actin.tif", stack(c=2, h=20, w=24, dtype=np.float32), metadata=None)
    Image.fromarray(np.ones((20, 24), np.uint8)).save(tmp_path / "img/w0_dapi.png")
    with raises_naming(tmp_path / "img/w0_actin.tif", "(2, 20, 24)", "more than one channel", "channel 'Actin'"):
        read_manifest_row(rows[0])

    Image.fromarray(np.ones((21, 24), np.uint16)).save(tmp_path / "img/w1_gfp.png")
    with raises_naming(csv, "line 3 (id 'w1')", "differ in size", "GFP 21x24"):
        read_manifest_row(rows[1])

    bad = tmp_path / "noid.csv"
    bad.write_text("name,DAPI\nx,img/w0_dapi.png\n")
    with raises_naming(bad, "no id column"):
        read_manifest(bad)
    assert read_manifest(bad, id_column="name")[0].files == {"DAPI": tmp_path / "img/w0_dapi.png"}
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("id,DAPI\nx,img/w0_dapi.png,extra\n")
    with raises_naming(ragged, "line 2 has 3 cells"):
        read_manifest(ragged)


def test_constant_channel_is_an_error_naming_file_and_channel(tmp_path):
    csv, _ = write_plate(tmp_path)
    Image.fromarray(np.full((20, 24), 7, np.uint16)).save(tmp_path / "img/w2_gfp.png")
    img = read_manifest_row(read_manifest(csv, label_column="label")[2])
    with raises_naming(tmp_path / "img/w2_gfp.png", "channel 'GFP' is constant", "7"):
        check_channels(img)
    a = stack()
    a[2] = 0
    p = tmp_path / "dark.ome.tif"
    tifffile.imwrite(p, a, ome=True, metadata={"axes": "CYX", "Channel": {"Name": NAMES}})
    with raises_naming(p, "channel 'mCherry' is constant"):
        check_channels(read_tiff(p))


# --- zarr -----------------------------------------------------------------------------------
def test_zarr_array(tmp_path):
    import zarr

    a = stack()
    p = tmp_path / "a.zarr"
    z = zarr.create_array(str(p), shape=a.shape, dtype=a.dtype, chunks=(1, 24, 32))
    z[:] = a
    img = read_zarr(p, channel_axis=0)
    np.testing.assert_array_equal(img.pixels, a)
    assert img.channels == ["ch0", "ch1", "ch2"] and img.files == [str(p)]
    q = tmp_path / "yxc.zarr"
    zarr.create_array(str(q), shape=(24, 32, 3), dtype=a.dtype)[:] = a.transpose(1, 2, 0)
    np.testing.assert_array_equal(read_zarr(q, channel_axis=-1, channel_names=NAMES).pixels, a)
    with raises_naming(tmp_path / "missing.zarr", "cannot open as zarr"):
        read_zarr(tmp_path / "missing.zarr")


def test_plain_3d_zarr_needs_channel_axis_like_tiff(tmp_path):
    """A 3-D array without axes metadata could be CYX or YXC: no guess, for zarr as for TIFF."""
    import zarr

    from omnimae.modalities.microscopy import MicroscopyData

    a = stack()
    root = tmp_path / "imgs"
    root.mkdir()
    p = root / "yxc.zarr"
    zarr.create_array(str(p), shape=(24, 32, 3), dtype=a.dtype)[:] = a.transpose(1, 2, 0)
    with raises_naming(p, "(24, 32, 3)", "could be CYX or YXC", "set channel_axis"):
        read_zarr(p)
    with raises_naming(p, "set channel_axis"):
        MicroscopyData(NAMES, root=str(root), img_size=16, val_fraction=0).splits()
    data = MicroscopyData(NAMES, root=str(root), img_size=16, val_fraction=0, channel_axis=-1, channel_names=NAMES)
    data.splits()
    np.testing.assert_array_equal(data._read(p).pixels, a)


def ome_zarr(path, a, axes, labels=None, nest=False):
    import zarr

    g = zarr.open_group(str(path), mode="w")
    g.create_array("0", shape=a.shape, dtype=a.dtype)[:] = a
    g.create_array("1", shape=a[..., ::2, ::2].shape, dtype=a.dtype)[:] = a[..., ::2, ::2]
    kinds = {"t": "time", "c": "channel", "z": "space", "y": "space", "x": "space"}
    meta = {
        "multiscales": [{"version": "0.4", "axes": [{"name": n, "type": kinds[n]} for n in axes],
                          "datasets": [{"path": "0"}, {"path": "1"}]}]
    }
    if labels:
        meta["omero"] = {"channels": [{"label": lab, "color": "FFFFFF"} for lab in labels]}
    g.attrs.update({"ome": meta} if nest else meta)
    return path


@pytest.mark.parametrize("nest", [False, True])  # OME-Zarr 0.4 attributes, and 0.5's under "ome"
def test_ome_zarr_group_with_omero_labels(tmp_path, nest):
    a = stack()
    p = ome_zarr(tmp_path / "img.ome.zarr", a[:, None], "czyx", NAMES, nest=nest)
    img = read_zarr(p, channel_axis=-1)  # axes from the metadata, not channel_axis
    np.testing.assert_array_equal(img.pixels, a)
    assert img.channels == NAMES
    q = ome_zarr(tmp_path / "yxc.ome.zarr", a.transpose(1, 2, 0), "yxc")
    img = read_zarr(q)
    np.testing.assert_array_equal(img.pixels, a)
    assert img.channels == ["ch0", "ch1", "ch2"]
    r = ome_zarr(tmp_path / "z2.ome.zarr", np.stack([a, a], axis=1), "czyx", NAMES)
    with raises_naming(r, "2 Z planes"):
        read_zarr(r)
    s = ome_zarr(tmp_path / "short.ome.zarr", a, "cyx", NAMES[:2])
    with raises_naming(s, "omero.channels lists 2 channels but the image has 3"):
        read_zarr(s)


# --- discovery ------------------------------------------------------------------------------
def test_find_microscopy(tmp_path):
    import zarr

    a = stack(c=2, h=8, w=8)
    (tmp_path / "plate" / "A1").mkdir(parents=True)
    tifffile.imwrite(tmp_path / "plate" / "A1" / "f0.ome.tif", a, ome=True, metadata={"axes": "CYX"})
    tifffile.imwrite(tmp_path / "b.TIFF", a[0])
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "thumb.png").write_bytes(b"")
    ome_zarr(tmp_path / "img.ome.zarr", a, "cyx")
    zarr.create_array(str(tmp_path / "raw.zarr"), shape=a.shape, dtype=a.dtype)[:] = a
    container = zarr.open_group(str(tmp_path / "container.zarr"), mode="w")  # no multiscales: look inside
    container.create_array("x", shape=a.shape, dtype=a.dtype)[:] = a
    found = find_microscopy(tmp_path)
    assert found == sorted(
        [tmp_path / "plate/A1/f0.ome.tif", tmp_path / "b.TIFF", tmp_path / "img.ome.zarr",
         tmp_path / "raw.zarr", tmp_path / "container.zarr" / "x"]
    )
    assert all((read_tiff if p.suffix.lower() in (".tif", ".tiff") else read_zarr)(p, channel_axis=0).pixels.shape[-2:]
               == (8, 8) for p in found)
    with raises_naming(tmp_path / "nope", "no such folder"):
        find_microscopy(tmp_path / "nope")
