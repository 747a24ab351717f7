"""The video modality: tube tokenizer, tube masks, VideoMAE target, PyAV reading, bad files, pretraining."""
import logging
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from einops import rearrange
from PIL import Image

from omnimae.adapter import MODALITIES
from omnimae.config.build import build_model
from omnimae.checkpoint.format import load_model
from omnimae.config.compose import compose
from omnimae.errors import ConfigError, DataError
from omnimae.modalities.readers.video import clip_indices, read_video
from omnimae.modalities.video import ClipReader, VideoAdapter, VideoData
from omnimae.train.pretrain import pretrain
from omnimae.tokenizers.tube import TubeTokenizer, conv3d_weight_to_linear, linear_weight_to_conv3d

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CODECS = {".mp4": "libx264", ".mkv": "mpeg4", ".avi": "mpeg4", ".webm": "libvpx"}


# --- making test videos --------------------------------------------------------------------
def coded_frame(number: int, size: int = 32) -> np.ndarray:
    """A frame whose 4x4 grid of black/white blocks spells `number` in binary (block j = bit j)."""
    bits = (number >> np.arange(16)) & 1
    blocks = np.kron(bits.reshape(4, 4), np.ones((size // 4, size // 4), dtype=np.int64))
    return np.repeat((blocks * 255).astype(np.uint8)[..., None], 3, axis=2)


def read_code(frame: np.ndarray) -> int:
    """frame [H, W] in [0, 1] -> the number its block centres spell."""
    b = frame.shape[0] // 4
    centres = frame[b // 2 :: b, b // 2 :: b][:4, :4].reshape(-1)
    return int(sum(1 << j for j, v in enumerate(centres) if v > 0.5))


def write_video(
    path: Path, frames: int = 40, size: int = 32, offset: int = 0, rate: int = 25, codec: str | None = None,
    b_frames: int = 0, **container_options,
) -> Path:
    """An encoded video whose frame i shows the code of offset + i (with up to b_frames B-frames in a row)."""
    codec = codec or CODECS[path.suffix]
    with av.open(str(path), "w", options=container_options) as out:
        stream = out.add_stream(codec, rate=rate)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        if codec == "libx264":
            stream.options = {"g": "6", "bf": "2"}  # key frames every 6, B-frames: seeking lands before the window
        elif codec == "libvpx":
            stream.options = {"crf": "4", "b": "1M"}
        elif codec == "mpeg4":
            stream.options = {"qscale": "2"}
        if b_frames:
            stream.options = stream.options | {"g": "12", "bf": str(b_frames)}
        for i in range(frames):
            for packet in stream.encode(av.VideoFrame.from_ndarray(coded_frame(offset + i, size), format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def codes(clip: torch.Tensor) -> list[int]:
    """Normalized clip [C, T, H, W] -> the frame numbers its frames show."""
    pixels = clip * torch.tensor(STD).view(3, 1, 1, 1) + torch.tensor(MEAN).view(3, 1, 1, 1)
    return [read_code(pixels[:, t].mean(0).numpy()) for t in range(clip.shape[1])]


def reader(**kw) -> ClipReader:
    return ClipReader(**{"num_frames": 4, "sampling_rate": 4, "img_size": 32} | kw)


# --- the tube tokenizer --------------------------------------------------------------------
def test_tube_tokenizer_round_trip_layout_and_errors():
    tok = TubeTokenizer(tubelet_size=2, patch_size=4, in_chans=3)
    x = torch.randn(2, 3, 6, 8, 12)
    p = tok.patchify(x)
    assert p.values.shape == (2, 3 * 2 * 3, 2 * 4 * 4 * 3) and p.grid == (3, 2, 3)
    assert torch.equal(tok.unpatchify(p), x)  # exact inverse
    expected = [(t, h, w) for t in range(3) for h in range(2) for w in range(3)]  # t-major
    assert p.coords.dtype == torch.int64 and p.coords.device.type == "cpu" and p.coords.tolist() == [list(c) for c in expected]
    for n, (t, h, w) in enumerate(expected):  # each token is its tube in (t, p, q, c) order
        tube = x[:, :, 2 * t : 2 * t + 2, 4 * h : 4 * h + 4, 4 * w : 4 * w + 4]
        assert torch.equal(p.values[:, n], tube.permute(0, 2, 3, 4, 1).reshape(2, -1))
    for bad in [(2, 3, 5, 8, 12), (2, 3, 6, 9, 12), (2, 3, 6, 8, 10)]:
        with pytest.raises(ValueError, match="not a multiple"):
            tok.patchify(torch.zeros(bad))
    with pytest.raises(ValueError, match="expected"):
        tok.patchify(torch.zeros(2, 1, 6, 8, 12))


def test_linear_stem_on_tube_values_equals_conv3d_tubelet_embedding():
    torch.manual_seed(0)
    conv = torch.nn.Conv3d(3, 24, kernel_size=(2, 4, 4), stride=(2, 4, 4))  # VideoMAE's patch_embed.proj
    linear = torch.nn.Linear(2 * 4 * 4 * 3, 24)
    with torch.no_grad():
        linear.weight.copy_(conv3d_weight_to_linear(conv.weight))
        linear.bias.copy_(conv.bias)
    x = torch.randn(2, 3, 4, 8, 12)
    reference = conv(x).flatten(2).transpose(1, 2)  # [B, (T/t)(H/p)(W/p), D], t-major as Conv3d lays it out
    ours = linear(TubeTokenizer(2, 4, 3).patchify(x).values)
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)
    assert torch.equal(linear_weight_to_conv3d(linear.weight, 2, 4, 3), conv.weight)


# --- the adapter ---------------------------------------------------------------------------
def adapter(**kw) -> VideoAdapter:
    return VideoAdapter(**{"embed_dim": 32, "decoder_embed_dim": 16, "img_size": 16, "patch_size": 4, "num_frames": 8} | kw)


def test_tube_masks_are_constant_over_time_and_hide_the_ratio():
    assert MODALITIES["video"] is VideoAdapter  # importing the module registered it
    a = adapter()
    assert a.mask_ratio == 0.9
    patches = a.tokenize(torch.randn(5, 3, 8, 16, 16))  # grid (4, 4, 4): 16 positions x 4 tubelet frames
    ids_keep, ids_restore, mask = a.mask(patches, generator=torch.Generator().manual_seed(0))
    per_frame = mask.view(5, 4, 16)
    assert torch.equal(per_frame, per_frame[:, :1].expand_as(per_frame))  # one spatial mask, every frame
    assert (per_frame[:, 0].sum(1) == int(0.9 * 16)).all()  # 14 of 16 hidden: ratio 0.9, as VideoMAE truncates
    assert ids_keep.shape == (5, 8) and (mask.gather(1, ids_keep) == 0).all()
    assert torch.equal(torch.argsort(ids_restore, 1)[:, :8], ids_keep)
    other = a.mask(patches, generator=torch.Generator().manual_seed(1))[2]
    assert not torch.equal(mask, other)  # drawn from the generator
    # the spatial mask keeps the two positions of lowest uniform noise, drawn from the same generator (MAE's argsort)
    noise = torch.rand(5, 16, generator=torch.Generator().manual_seed(0))
    lowest = torch.ones(5, 16).scatter_(1, noise.topk(2, 1, largest=False).indices, 0.0)
    assert torch.equal(per_frame[:, 0], lowest) and (mask.sum(1) == 4 * 14).all()


def test_target_is_videomaes_per_tube_per_channel_normalization():
    a = adapter()
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, 16, 16)
    patches = a.tokenize(x)
    # VideoMAE's engine: un-normalize, patchify to (p0 p1 p2) c, normalize over the pixels of each channel
    unnorm = x * torch.tensor(STD).view(1, 3, 1, 1, 1) + torch.tensor(MEAN).view(1, 3, 1, 1, 1)
    sq = rearrange(unnorm, "b c (t p0) (h p1) (w p2) -> b (t h w) (p0 p1 p2) c", p0=2, p1=4, p2=4)
    norm = (sq - sq.mean(dim=-2, keepdim=True)) / (sq.var(dim=-2, unbiased=True, keepdim=True).sqrt() + 1e-6)
    torch.testing.assert_close(a.target(patches), rearrange(norm, "b n p c -> b n (p c)"), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(a.prediction_to_values(patches, a.target(patches)), patches.values, atol=1e-4, rtol=1e-4)
    plain = adapter(norm_pix_loss=False)
    assert torch.equal(plain.target(patches), patches.values)


def test_to_display_is_a_strip_of_evenly_spaced_frames():
    a = adapter(num_frames=16)
    x = torch.randn(2, 3, 16, 16, 16)
    strip = a.to_display(x)
    assert strip.shape == (2, 16, 16 * 8, 3) and strip.min() >= 0 and strip.max() <= 1
    frames = [0, 2, 4, 6, 9, 11, 13, 15]  # 8 of 16, first and last included
    for k, t in enumerate(frames):
        expected = (x[:, :, t] * torch.tensor(STD).view(1, 3, 1, 1) + torch.tensor(MEAN).view(1, 3, 1, 1)).clamp(0, 1)
        assert torch.equal(strip[:, :, 16 * k : 16 * (k + 1)], expected.permute(0, 2, 3, 1))
    mask = torch.zeros(2, 3, 16, 16, 16)
    mask[:, :, :, :4, :4] = 1
    m = a.to_display(mask, mask=True)
    assert m.shape == (2, 16, 128, 1) and m.sum() == 2 * 8 * 16
    assert a.to_display(torch.zeros(1, 3, 4, 16, 16)).shape == (1, 16, 64, 3)  # fewer than 8 frames: all


@pytest.mark.parametrize(
    "override, key",
    [("adapter.num_frames=3", "adapter.num_frames"), ("adapter.img_size=30", "adapter.img_size"),
     ("adapter.mask_ratio=1.0", "adapter.mask_ratio"), ("adapter.tubelet_size=0", "adapter.tubelet_size")],
)
def test_config_mistakes_name_the_key(override, key):
    cfg = compose("pretrain", ["experiment=none", "modality=video", "model=vit_tiny", "trainer=debug",
                               "modalities.video.adapter.img_size=32", "modalities.video.adapter.patch_size=8",
                               f"modalities.video.{override}"])
    with pytest.raises(ConfigError) as e:
        build_model(cfg)
    assert e.value.key == f"modalities.video.{key}"


def test_video_data_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="data.root=PATH") as e:
        VideoData(root=None)
    assert e.value.key == "root"
    with pytest.raises(ConfigError) as e:
        VideoData(root=str(tmp_path), builtin="digits")
    assert e.value.key == "builtin"
    for kw, key in [({"sampling_rate": 0}, "sampling_rate"), ({"skip_bad": -1}, "skip_bad"),
                    ({"short_side": 16, "img_size": 32}, "short_side"), ({"in_chans": 2, "mean": [0, 0], "std": [1, 1]}, "in_chans")]:
        with pytest.raises(ConfigError) as e:
            VideoData(root=str(tmp_path), **kw)
        assert e.value.key == key


# --- reading -------------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".mp4", ".mkv", ".avi", ".webm"])
def test_frame_sampling_picks_the_expected_frames(tmp_path, suffix):
    path = write_video(tmp_path / f"clip{suffix}", frames=40)
    r = reader()
    assert codes(r.load(path, train=False)) == [12, 16, 20, 24]  # centred window of 4 x 4 in 40 frames
    starts = set()
    for seed in range(8):
        got = codes(r.load(path, train=True, generator=torch.Generator().manual_seed(seed)))
        start = got[0]
        assert got == [start, start + 4, start + 8, start + 12] and 0 <= start <= 40 - 16
        assert codes(r.load(path, train=True, generator=torch.Generator().manual_seed(seed))) == got  # reproducible
        starts.add(start)
    assert len(starts) >= 4 and max(starts) > 12  # random starts, late ones decoded after a seek
    rgb = read_video(path, 4, 4)
    assert rgb.dtype == torch.uint8 and rgb.shape == (4, 3, 32, 32)


@pytest.mark.parametrize("codec", ["libx264", "mpeg4"])
def test_avi_with_b_frames_gives_the_requested_frames(tmp_path, codec):
    """AVI stores no presentation timestamps: with B-frames PyAV's come out of order, so frames are counted."""
    path = write_video(tmp_path / "clip.avi", frames=48, codec=codec, b_frames=2)
    with av.open(str(path)) as c:
        start, pts = c.streams.video[0].start_time, [f.pts for f in c.decode(c.streams.video[0])]
    assert len(pts) == 48 and pts != list(range(start, start + 48))  # the timestamps do not number the frames

    def shown(num_frames, sampling_rate, **kw):
        return [read_code(f[0].numpy() / 255.0) for f in read_video(path, num_frames, sampling_rate, **kw)]

    assert shown(48, 1) == list(range(48))
    assert shown(16, 1) == list(range(16, 32))  # centred: (48 - 16) // 2 = 16
    assert shown(8, 4) == [8 + 4 * i for i in range(8)]  # centred: (48 - 32) // 2 = 8
    for seed in range(6):  # random windows, mostly late: where the reader would seek in a timed container
        wanted = clip_indices(48, 4, 4, start="random", generator=torch.Generator().manual_seed(seed))
        assert shown(4, 4, start="random", generator=torch.Generator().manual_seed(seed)) == wanted


def test_resize_short_side_then_crop(tmp_path):
    path = write_video(tmp_path / "clip.mp4", frames=20, size=32)
    clip = reader(num_frames=2, img_size=16, short_side=24).load(path, train=False)
    assert clip.shape == (3, 2, 16, 16) and clip.dtype == torch.float32
    clip = reader(num_frames=2, img_size=16).load(path, train=True, generator=torch.Generator().manual_seed(0))
    assert clip.shape == (3, 2, 16, 16)


def test_short_clip_is_an_error_unless_pad_short(tmp_path):
    path = write_video(tmp_path / "short.mp4", frames=10)
    with pytest.raises(DataError, match=r"10 frames is shorter than the 16 asked for.*pad_short") as e:
        reader().load(path, train=False)
    assert str(e.value).startswith(str(path))
    assert codes(reader(pad_short=True).load(path, train=True)) == [0, 4, 8, 9]  # the last frame repeats
    with pytest.raises(DataError, match="shorter"):  # and the scan finds it before training
        VideoData(root=str(tmp_path), img_size=32, num_frames=4, sampling_rate=4).splits()


def make_bad_files(folder: Path) -> dict[str, Path]:
    folder.mkdir(exist_ok=True)
    good = write_video(folder / "good.mp4", frames=40).read_bytes()
    fast = write_video(folder / "fast.mp4", frames=40, movflags="faststart").read_bytes()
    (folder / "good.mp4").unlink()
    (folder / "fast.mp4").unlink()
    bad = {
        "empty": folder / "empty.mp4", "text": folder / "notes.mkv", "cut_end": folder / "cut_end.mp4",
        "cut_data": folder / "cut_data.mp4", "audio": folder / "audio.mkv",
    }
    bad["empty"].write_bytes(b"")
    bad["text"].write_text("these are notes, not a video\n" * 20)
    bad["cut_end"].write_bytes(good[: len(good) // 2])  # index (moov) written last: lost
    bad["cut_data"].write_bytes(fast[: len(fast) * 2 // 3])  # index first, frames cut off
    with av.open(str(bad["audio"]), "w") as out:  # a valid file without a video stream
        stream = out.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for packet in [*stream.encode(frame), *stream.encode()]:
            out.mux(packet)
    return bad


def test_bad_files_are_errors_that_name_the_file(tmp_path):
    bad = make_bad_files(tmp_path / "bad")
    why = {"empty": "empty file", "text": "cannot open as a video container", "cut_end": "cannot open as a video container",
           "cut_data": "truncated or damaged", "audio": "no video stream"}
    for name, path in bad.items():
        with pytest.raises(DataError, match=why[name]) as e:
            reader().load(path, train=False)
        assert str(e.value).startswith(str(path)), name
    for name in ("empty", "text", "cut_end", "audio"):  # the scan catches these before training
        folder = tmp_path / f"scan_{name}"
        folder.mkdir()
        for i in range(2):
            write_video(folder / f"ok{i}.mp4", frames=40)
        target = folder / bad[name].name
        target.write_bytes(bad[name].read_bytes())
        with pytest.raises(DataError, match=why[name]) as e:
            VideoData(root=str(folder), img_size=32, num_frames=4, sampling_rate=4).splits()
        assert str(e.value).startswith(str(target))


def test_skip_bad_skips_at_most_that_many_files_with_warnings(tmp_path, caplog):
    folder = tmp_path / "videos"
    folder.mkdir()
    for i in range(4):
        write_video(folder / f"ok{i}.mp4", frames=40, offset=i)
    (folder / "empty.mp4").write_bytes(b"")
    (folder / "notes.webm").write_text("not a video")
    kw = dict(root=str(folder), img_size=32, num_frames=4, sampling_rate=4, val_fraction=0.25)
    with pytest.raises(DataError, match=r"2 bad files, skip_bad=1"):
        VideoData(skip_bad=1, **kw).splits()
    with caplog.at_level(logging.WARNING, logger="omnimae"):
        splits = VideoData(skip_bad=2, **kw).splits()
    kept = splits["train"][0] + splits["val"][0]
    assert sorted(p.name for p in kept) == [f"ok{i}.mp4" for i in range(4)]
    warned = [r.getMessage() for r in caplog.records if "skipping a bad file" in r.getMessage()]
    assert len(warned) == 2 and any(str(folder / "empty.mp4") in w for w in warned)
    # without the scan, a bad file met while loading is replaced by the next file, with a warning
    single = tmp_path / "single"
    single.mkdir()
    for i in range(3):
        write_video(single / f"ok{i}.mp4", frames=40, offset=i)
    (single / "empty.mp4").write_bytes(b"")
    kw = dict(img_size=32, num_frames=4, sampling_rate=4, val_fraction=0.0, scan=False)
    ds = VideoData(root=str(single), skip_bad=1, **kw).dataset("train", train=False)
    names = [p.name for p in ds.source]
    i = names.index("empty.mp4")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="omnimae"):
        clip = ds[i]
    following = names[(i + 1) % len(names)]
    assert codes(clip)[0] == 12 + int(following[2])  # the next file's centred clip
    assert [r.getMessage() for r in caplog.records if "skipping a bad file (1 of skip_bad=1)" in r.getMessage()]
    assert ds[i].shape == clip.shape  # known bad: replaced again
    ds = VideoData(root=str(single), skip_bad=1, **kw).dataset("train", train=False)
    ds.stand_ins = False  # as embed sets it: each item must be its own file
    with pytest.raises(DataError, match="empty.mp4"):
        ds[i]
    # beyond skip_bad: an error naming the file
    ds = VideoData(root=str(folder), skip_bad=1, **kw).dataset("train", train=False)
    with pytest.raises(DataError, match=r"(empty.mp4|notes.webm): .*skip_bad=1"):
        for i in range(len(ds)):
            ds[i]
    with pytest.raises(DataError, match="empty file") as e:  # skip_bad=0: the first bad file is an error
        ds = VideoData(root=str(single), **kw).dataset("train", train=False)
        ds[[p.name for p in ds.source].index("empty.mp4")]
    assert str(e.value).startswith(str(single / "empty.mp4"))


def test_images_join_as_still_clips(tmp_path):
    videos, images = tmp_path / "videos", tmp_path / "images"
    videos.mkdir()
    images.mkdir()
    for i, cls in enumerate("aab"):  # one subfolder per class: labels 0 and 1
        (videos / cls).mkdir(exist_ok=True)
        write_video(videos / cls / f"v{i}.mp4", frames=20)
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(images / f"im{i}.png")
    Image.fromarray(rng.integers(0, 256, (40, 40), dtype=np.uint8)).save(images / "grey.png")  # converted to RGB
    data = VideoData(root=str(videos), image_root=str(images), img_size=32, num_frames=4, sampling_rate=2, val_fraction=0.0)
    source, labels = data.splits()["train"]
    assert len(source) == 6
    assert {p.name: y for p, y in zip(source, labels)} == {"v0.mp4": 0, "v1.mp4": 0, "v2.mp4": 1, "im0.png": -1, "im1.png": -1, "grey.png": -1}
    ds = data.dataset("train", train=True)
    clips = [ds[(i, 7)] for i in range(len(ds))]
    assert {c.shape for c in clips} == {(3, 4, 32, 32)}  # one shape: images and videos share a batch
    for i, p in enumerate(source):
        if p.suffix == ".png":
            assert all(torch.equal(clips[i][:, t], clips[i][:, 0]) for t in range(4))  # the image, repeated
    still = ds.reader.load(images / "im0.png", train=False)
    ref = torch.from_numpy(np.array(Image.open(images / "im0.png").convert("RGB").resize((38, 32), Image.BILINEAR)))
    ref = (ref[:, 3:35].permute(2, 0, 1).float() / 255 - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1)
    assert (still[:, 0] - ref).abs().mean() < 0.05  # short side to 32, centre crop (resampling filters differ)


# --- end to end ----------------------------------------------------------------------------
def test_pretrain_on_a_folder_of_videos_writes_a_reconstruction(tmp_path):
    videos, images = tmp_path / "videos", tmp_path / "images"
    videos.mkdir()
    images.mkdir()
    for i, suffix in enumerate([".mp4", ".mkv", ".webm", ".avi", ".mp4", ".mp4"]):
        write_video(videos / f"v{i}{suffix}", frames=24, offset=3 * i)
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (36, 40, 3), dtype=np.uint8)).save(images / f"im{i}.png")
    run = tmp_path / "run"
    cfg = compose("pretrain", [
        "experiment=none", "modality=video", "model=vit_tiny", "trainer=debug", f"data.root={videos}", f"run_dir={run}",
        "modalities.video.adapter.img_size=32", "modalities.video.adapter.patch_size=8",
        "modalities.video.adapter.num_frames=4", "modalities.video.data.sampling_rate=2",
        f"modalities.video.data.image_root={images}", "modalities.video.data.val_fraction=0.2",
        "modalities.video.batch_size=4", "modalities.video.num_workers=0", "trainer.max_steps=3",
        "callbacks.reconstruction_samples=2",
    ])
    result = pretrain(cfg)
    assert result["steps"] == 3
    png = Image.open(run / "reconstructions" / "final.png")
    assert png.format == "PNG" and png.size[0] > 200
    model, _ = load_model(run / "checkpoints" / "last.ckpt")  # rebuilt from the stored config alone
    assert isinstance(model.adapters["video"], VideoAdapter) and model.adapters["video"].num_frames == 4
    # per-file embeddings of the folder, with the file names as coordinates
    import xarray as xr

    from omnimae.cli import main

    assert main(["embed", f"checkpoint={run / 'checkpoints' / 'last.ckpt'}", f"data_root={videos}", f"output={tmp_path / 'v.nc'}"]) == 0
    ds = xr.open_dataset(tmp_path / "v.nc")
    assert sorted(ds["file"].values.tolist()) == sorted(f"v{i}{s}" for i, s in enumerate([".mp4", ".mkv", ".webm", ".avi", ".mp4", ".mp4"]))
    assert ds["embedding_mean"].shape == (6, 64) and np.isfinite(ds["embedding_mean"].values).all()
