"""The audio modality (AudioMAE recipe): reading, features, tokens, masks, errors, end to end.

References are independent of omnimae's code: soundfile's own decoding, direct calls of
torchaudio's Kaldi fbank and resample with the recipe's parameters written out here, and closed forms.
"""
import logging
import struct

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio.compliance.kaldi as kaldi
import torchaudio.functional as AF
from PIL import Image

from omnimae.adapter import MODALITIES
from omnimae.config.build import build_model
from omnimae.checkpoint.format import load_model
from omnimae.config.compose import compose
from omnimae.errors import ConfigError, DataError
from omnimae.modalities.audio import AudioAdapter, AudioData, compute_stats
from omnimae.modalities.readers.audio import fbank_features, log_mel, read_audio
from omnimae.train.pretrain import pretrain

SR = 16000
MEAN, STD = -4.2677393, 4.5689974  # AudioSet's, as AST and AudioMAE


def signal(seconds: float, sr: int = SR, freq: float = 440.0, seed: int = 0, channels: int = 1) -> np.ndarray:
    """A tone with harmonics, noise and a DC offset: [frames] or [frames, channels] float32."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    out = []
    for c in range(channels):
        f = freq * (1 + 0.5 * c)
        x = 0.3 * np.sin(2 * np.pi * f * t) + 0.1 * np.sin(2 * np.pi * 3 * f * t) + 0.05 * rng.standard_normal(t.size)
        out.append(x * np.linspace(0.2, 1.0, t.size) + 0.02)
    x = np.stack(out, axis=1).astype(np.float32)
    return x[:, 0] if channels == 1 else x


def reference_fbank(waveform: torch.Tensor, sr: int = SR) -> torch.Tensor:
    """AudioMAE's feature call, written out: mean removed, then Kaldi fbank with the recipe's parameters."""
    w = waveform.reshape(1, -1).float()
    return kaldi.fbank(w - w.mean(), htk_compat=True, sample_frequency=sr, use_energy=False, window_type="hanning",
                       num_mel_bins=128, dither=0.0, frame_length=25.0, frame_shift=10.0)


def write(path, data, sr=SR, **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, data, sr, **kw)
    return path


# --- features ------------------------------------------------------------------------------
def test_adapter_is_registered():
    assert MODALITIES["audio"] is AudioAdapter


def test_fbank_equals_a_direct_kaldi_call_and_normalization_the_closed_form(tmp_path):
    w = torch.from_numpy(signal(3.0))
    ref = reference_fbank(w)
    assert ref.shape == (298, 128)  # 1 + (48000 - 400) // 160 frames
    torch.testing.assert_close(fbank_features(w, SR), ref, rtol=0, atol=0)
    # through a file and the dataset: soundfile's samples -> direct fbank -> pad -> closed-form normalization
    path = write(tmp_path / "a.wav", signal(3.0), subtype="FLOAT")
    data = AudioData(root=str(tmp_path), target_length=320, val_fraction=0)
    x = data.dataset("train", train=False)[0]
    assert x.shape == (1, 320, 128)
    samples = torch.from_numpy(sf.read(path, dtype="float32")[0])
    expected = torch.cat([reference_fbank(samples), torch.zeros(22, 128)])
    torch.testing.assert_close(x[0], (expected + 4.2677393) / (2 * 4.5689974), rtol=0, atol=1e-6)
    assert torch.equal(AudioAdapter(embed_dim=8, decoder_embed_dim=8, target_length=320).load(path), x)


def test_stereo_is_mixed_to_mono_and_every_format_reads(tmp_path):
    stereo = signal(1.0, channels=2)
    wav = write(tmp_path / "s.wav", stereo, subtype="FLOAT")
    torch.testing.assert_close(read_audio(wav, SR), torch.from_numpy(stereo.mean(axis=1)), rtol=0, atol=1e-7)
    flac = write(tmp_path / "s.flac", stereo)  # 16-bit: equal to soundfile's own decoding
    torch.testing.assert_close(read_audio(flac, SR), torch.from_numpy(sf.read(flac, dtype="float32")[0].mean(axis=1)))
    ogg = write(tmp_path / "s.ogg", stereo)  # lossy: same length, close to the source
    y = read_audio(ogg, SR).numpy()
    assert y.shape == (SR,) and np.corrcoef(y, stereo.mean(axis=1))[0, 1] > 0.95


def test_a_44k_file_is_resampled_to_16k(tmp_path):
    path = write(tmp_path / "a.flac", signal(2.0, sr=44100, freq=1000.0), sr=44100)
    y = read_audio(path, SR)
    assert y.shape == (32000,)  # 88200 frames * 16000 / 44100
    torch.testing.assert_close(y, AF.resample(torch.from_numpy(sf.read(path, dtype="float32")[0]), 44100, SR))
    spectrum = np.abs(np.fft.rfft(y.numpy() - y.numpy().mean()))
    assert np.fft.rfftfreq(y.numel(), 1 / SR)[spectrum.argmax()] == pytest.approx(1000.0, abs=1.0)  # the tone stays


def test_pad_and_crop_to_the_target_length_with_reproducible_training_crops():
    w = torch.from_numpy(signal(5.0))
    full = reference_fbank(w)  # 498 frames
    # short: zero padding at the end (before normalization)
    padded = log_mel(w, SR, target_length=512)
    torch.testing.assert_close(padded[:498], full, rtol=0, atol=0)
    assert (padded[498:] == 0).all()
    # long: the centre crop when not training
    torch.testing.assert_close(log_mel(w, SR, target_length=256), full[121:377], rtol=0, atol=0)
    # training: a random crop drawn from the sample's seed, always a window of the full features
    starts = set()
    for seed in range(6):
        crop = log_mel(w, SR, target_length=256, train=True, seed=seed)
        assert torch.equal(crop, log_mel(w, SR, target_length=256, train=True, seed=seed))
        start = int((full[:, :1] - crop[:1, :1].T).abs().sum(1).argmin())  # locate the window
        torch.testing.assert_close(crop, full[start : start + 256], rtol=0, atol=0)
        starts.add(start)
    assert len(starts) > 1


def test_dataset_crops_follow_the_sample_seed(tmp_path):
    write(tmp_path / "long.wav", signal(4.0))
    ds = AudioData(root=str(tmp_path), target_length=128, val_fraction=0).dataset("train", train=True)
    assert torch.equal(ds[(0, 123)], ds[(0, 123)])
    assert not torch.equal(ds[(0, 123)], ds[(0, 7)])


# --- tokens, display, masking, config ------------------------------------------------------
def test_tokenizer_round_trip_token_count_and_display():
    adapter = AudioAdapter(embed_dim=32, decoder_embed_dim=32)
    assert adapter.mask_ratio == 0.8 and adapter.norm_pix_loss and adapter.masking == "random"
    x = torch.randn(2, 1, 1024, 128)
    patches = adapter.tokenize(x)
    assert patches.values.shape == (2, 512, 256) and patches.grid == (64, 8)  # (1024/16) * (128/16)
    assert patches.coords[9].tolist() == [1, 1] and patches.coords[-1].tolist() == [63, 7]  # (t, f)
    assert torch.equal(patches.values[0, 8 + 1], x[0, 0, 16:32, 16:32].reshape(-1))
    assert torch.equal(adapter.untokenize(patches), x)
    # display: a spectrogram [B, F, T, 1] in [0, 1], the highest mel bin on the top row
    x = torch.zeros(2, 1, 1024, 128)
    x[:, 0, :, 127] = 5.0
    img = adapter.to_display(x)
    assert img.shape == (2, 128, 1024, 1) and img.min() == 0 and img.max() == 1
    assert (img[:, 0] == 1).all() and (img[:, 1:] == 0).all()
    mask = torch.zeros(1, 1, 1024, 128)
    mask[:, :, :16, :16] = 1  # first time patch, lowest mel bins: bottom-left corner
    shown = adapter.to_display(mask, mask=True)
    assert shown.sum() == 256 and (shown[0, 112:, :16] == 1).all()


def test_time_frequency_masks_hide_whole_rows_and_columns():
    adapter = AudioAdapter(embed_dim=32, decoder_embed_dim=32, masking="time_frequency")
    patches = adapter.tokenize(torch.randn(8, 1, 1024, 128))
    ids_keep, ids_restore, mask = adapter.mask(patches, generator=torch.Generator().manual_seed(0))
    grid = mask.reshape(8, 64, 8)  # [B, time, frequency]
    visible_t = (grid == 0).any(dim=2).float()  # columns with a visible token
    visible_f = (grid == 0).any(dim=1).float()  # rows with a visible token
    assert torch.equal(grid, 1 - visible_t[:, :, None] * visible_f[:, None, :])  # hidden = whole columns and rows
    hidden = mask.sum(1)
    assert (hidden == hidden[0]).all() and abs(hidden[0] / 512 - 0.8) < 0.01
    assert (visible_t.sum(1) < 64).all() and (visible_f.sum(1) < 8).all()  # both axes are masked
    assert len({tuple(m.tolist()) for m in mask}) == 8  # random per sample
    assert ids_keep.shape == (8, 512 - int(hidden[0]))
    assert (mask.gather(1, ids_keep) == 0).all()
    _, _, again = adapter.mask(patches, generator=torch.Generator().manual_seed(0))
    assert torch.equal(mask, again)
    # the whole model trains with it
    cfg = compose("pretrain", ["experiment=none", "modality=audio", "model=vit_tiny", "trainer=debug", "data.root=unused",
                               "modalities.audio.adapter.masking=time_frequency", "modalities.audio.adapter.target_length=128"])
    out = build_model(cfg).forward_modality(torch.randn(2, 1, 128, 128), "audio", generator=torch.Generator().manual_seed(1))
    assert torch.isfinite(out.loss) and out.mask.sum(1).tolist() == [52.0, 52.0]  # 64 - int(64 * 0.2), as random masking


@pytest.mark.parametrize(
    "override, key",
    [
        ("target_length=1000", "target_length"),
        ("mel_bins=120", "mel_bins"),
        ("mask_ratio=1.0", "mask_ratio"),
        ("masking=blocks", "masking"),
    ],
)
def test_config_errors_name_the_key(override, key):
    name, value = override.split("=")
    kwargs = {name: int(value) if value.isdigit() else (float(value) if "." in value else value)}
    with pytest.raises(ConfigError) as e:
        AudioAdapter(embed_dim=32, decoder_embed_dim=32, **kwargs)
    assert e.value.key == key
    cfg = compose("pretrain", ["experiment=none", "modality=audio", "model=vit_tiny", f"modalities.audio.adapter.{override}"])
    with pytest.raises(ConfigError) as e:
        build_model(cfg)
    assert e.value.key == f"modalities.audio.adapter.{key}"


# --- data folders, bad files, statistics ---------------------------------------------------
def test_folders_give_labels_and_splits(tmp_path):
    for i in range(4):
        write(tmp_path / "dog" / f"{i}.wav", signal(0.5, seed=i))
        write(tmp_path / "cat" / f"{i}.flac", signal(0.5, seed=10 + i))
    splits = AudioData(root=str(tmp_path), val_fraction=0.25).splits()
    assert len(splits["train"][0]) == 6 and len(splits["val"][0]) == 2
    for paths, labels in splits.values():
        assert all(labels[i] == (0 if p.parent.name == "cat" else 1) for i, p in enumerate(paths))
    given = tmp_path / "given"
    write(given / "train" / "a" / "0.wav", signal(0.5))
    write(given / "train" / "b" / "0.wav", signal(0.5))
    write(given / "val" / "b" / "0.ogg", signal(0.5))  # val without class a keeps b's label
    splits = AudioData(root=str(given)).splits()
    assert splits["train"][1] == [0, 1] and splits["val"][1] == [1]
    with pytest.raises(ConfigError) as e:
        AudioData(root=None)
    assert e.value.key == "root"


def _bad_files(tmp_path):
    good = write(tmp_path / "src" / "good.wav", signal(1.0))
    raw = good.read_bytes()
    made = {}
    made["truncated.wav"] = raw[: len(raw) // 2]
    made["empty.wav"] = b""
    made["text.wav"] = b"this is not audio at all\n" * 40
    fmt = raw.index(b"fmt ") + 8
    made["rate0.wav"] = raw[: fmt + 4] + struct.pack("<I", 0) + raw[fmt + 8 :]
    flac = write(tmp_path / "src" / "good.flac", signal(1.0)).read_bytes()
    made["truncated.flac"] = flac[: len(flac) // 2]
    ogg = write(tmp_path / "src" / "good.ogg", signal(1.0)).read_bytes()
    made["truncated.ogg"] = ogg[: len(ogg) // 2]
    out = {}
    for name, data in made.items():
        (tmp_path / name).write_bytes(data)
        out[name] = tmp_path / name
    out["silent.wav"] = write(tmp_path / "silent.wav", np.full(SR, 0.25, np.float32))
    out["opposite.wav"] = write(tmp_path / "opposite.wav", np.stack([signal(1.0), -signal(1.0)], 1), subtype="FLOAT")
    out["rate1.wav"] = write(tmp_path / "rate1.wav", signal(1.0), sr=1)
    nan = signal(1.0)
    nan[100] = np.nan
    out["nan.wav"] = write(tmp_path / "nan.wav", nan, subtype="FLOAT")
    out["short.wav"] = write(tmp_path / "short.wav", signal(0.01))
    return out


BAD = {
    "truncated.wav": "truncated: the header declares 16000 frames",
    "empty.wav": "empty file",
    "text.wav": "cannot read audio header",
    "rate0.wav": "sample rate is 0",
    "truncated.flac": "cannot decode audio",
    "truncated.ogg": "no audio frames",
    "silent.wav": "silent",
    "opposite.wav": "silent",
    "rate1.wav": "sample rate 1 Hz",
    "nan.wav": "NaN",
    "short.wav": "shorter than one 25 ms frame",
}


def test_each_bad_file_is_an_error_naming_it(tmp_path):
    files = _bad_files(tmp_path)
    assert set(files) == set(BAD)
    for name, path in files.items():
        with pytest.raises(DataError) as e:
            read_audio(path, SR)
        assert str(e.value).startswith(str(path)), str(e.value)
        assert BAD[name] in str(e.value), (name, str(e.value))
    assert read_audio(tmp_path / "src" / "good.wav", SR).shape == (SR,)


def test_the_header_scan_fails_before_training_and_skip_bad_allows_a_count(tmp_path, caplog):
    root = tmp_path / "data"
    for i in range(4):
        write(root / f"{i}.wav", signal(0.5, seed=i))
    (root / "broken.wav").write_bytes(write(tmp_path / "x.wav", signal(1.0)).read_bytes()[:5000])
    with pytest.raises(DataError, match=r"broken\.wav: truncated"):
        AudioData(root=str(root)).splits()
    with caplog.at_level(logging.WARNING, logger="omnimae"):
        splits = AudioData(root=str(root), skip_bad=1).splits()
    assert sum(len(p) for p, _ in splits.values()) == 4
    assert "broken.wav" in caplog.text and "skipping" in caplog.text
    (root / "empty.flac").write_bytes(b"")
    with pytest.raises(DataError, match=r"2 bad files, skip_bad=1"):
        AudioData(root=str(root), skip_bad=1).splits()


def test_files_that_fail_while_decoding_are_skipped_only_within_the_budget(tmp_path, caplog):
    root = tmp_path / "data"
    for i in range(3):
        write(root / "train" / f"{i}.wav", signal(0.5, seed=i))
    write(root / "val" / "0.wav", signal(0.5, seed=9))
    write(root / "train" / "a_silent.wav", np.zeros(SR, np.float32))  # a valid header: found only when decoded
    write(root / "train" / "b_silent.wav", np.zeros(SR, np.float32))
    strict = AudioData(root=str(root), target_length=64).dataset("train", train=True)
    assert [p.name for p in strict.paths] == ["0.wav", "1.wav", "2.wav", "a_silent.wav", "b_silent.wav"]
    with pytest.raises(DataError, match="a_silent.wav: silent"):
        strict[3]
    ds = AudioData(root=str(root), target_length=64, skip_bad=1).dataset("train", train=True)
    with caplog.at_level(logging.WARNING, logger="omnimae"):
        x = ds[(4, 5)]  # b_silent is skipped (logged); the next file in order, wrapping round, stands in
    assert "b_silent.wav" in caplog.text and "1 of skip_bad=1" in caplog.text
    assert torch.equal(x, ds[(0, 5)])
    assert torch.equal(ds[(4, 6)], ds[(0, 6)])  # a known bad file is skipped again without using the budget
    with pytest.raises(DataError, match="a_silent.wav: silent"):
        ds[(3, 5)]  # a second bad file is beyond skip_bad=1


def test_compute_stats_equals_the_moments_of_the_padded_features(tmp_path, capsys):
    clips = [signal(0.5, seed=0), signal(1.5, seed=1, freq=880.0), signal(3.0, seed=2, freq=200.0)]
    for i, c in enumerate(clips):
        write(tmp_path / f"{i}.wav", c, subtype="FLOAT")
    feats = []
    for c in clips:  # direct fbank, zero-padded / centre-cropped to 200 frames
        f = reference_fbank(torch.from_numpy(c))
        f = torch.cat([f, torch.zeros(max(0, 200 - len(f)), 128)])
        start = (len(f) - 200) // 2
        feats.append(f[start : start + 200].double())
    allf = torch.stack(feats)
    mean, std, files = compute_stats(tmp_path, target_length=200, progress=False)
    assert mean == pytest.approx(float(allf.mean()), abs=1e-9) and files == 3
    assert std == pytest.approx(float(allf.std(unbiased=False)), abs=1e-9)
    from omnimae.cli import main

    assert main(["stats", f"data.root={tmp_path}", "modalities.audio.adapter.target_length=200"]) == 0
    out = capsys.readouterr().out
    assert f"modalities.audio.adapter.mean={mean:.7g}" in out and f"std={std:.7g}" in out and "3 files" in out
    assert main(["stats"]) == 1 and "data.root" in capsys.readouterr().err


# --- end to end ----------------------------------------------------------------------------
def test_pretrain_on_a_folder_of_audio_writes_a_reconstruction(tmp_path):
    data = tmp_path / "data"
    for i in range(6):
        write(data / "low" / f"{i}.wav", signal(1.5, freq=200.0 + 20 * i, seed=i))
        write(data / "high" / f"{i}.flac", signal(1.5, freq=2000.0 + 100 * i, seed=10 + i), sr=22050)
    run = tmp_path / "run"
    cfg = compose("pretrain", [
        "experiment=none", "modality=audio", "model=vit_tiny", "trainer=debug", f"data.root={data}",
        "modalities.audio.adapter.target_length=128", "modalities.audio.batch_size=4",
        "modalities.audio.num_workers=0", "modalities.audio.data.val_fraction=0.2", "trainer.max_steps=3",
        "callbacks.reconstruction_samples=2", f"run_dir={run}",
    ])
    result = pretrain(cfg)
    assert result["steps"] == 3
    model, stored = load_model(run / "checkpoints" / "last.ckpt")  # rebuilt from the stored config alone
    assert isinstance(model.adapters["audio"], AudioAdapter) and stored.modalities.audio.adapter.target_length == 128
    im = Image.open(run / "reconstructions" / "final.png")
    assert im.format == "PNG" and im.size[0] > 100
    # per-file embeddings of the folder, with the file names (and class labels) as coordinates
    import xarray as xr

    from omnimae.cli import main

    assert main(["embed", f"checkpoint={run / 'checkpoints' / 'last.ckpt'}", f"data_root={data}", f"output={tmp_path / 'a.zarr'}"]) == 0
    ds = xr.open_zarr(tmp_path / "a.zarr")
    files = ds["file"].values.tolist()
    assert len(files) == 12 and "low/0.wav" in files and "high/5.flac" in files
    labels = dict(zip(files, ds["label"].values.tolist()))
    assert labels["low/0.wav"] != labels["high/0.flac"]


def test_cached_fbanks_equal_fresh_decoding_and_are_decoded_once(tmp_path, monkeypatch):
    from omnimae.modalities import audio as audio_mod
    from omnimae.modalities.audio import AudioDataset

    for i in range(2):
        write(tmp_path / "data" / f"{i}.wav", signal(2.0 + i, seed=i))
    paths = sorted((tmp_path / "data").glob("*.wav"))
    fresh = AudioDataset(paths, [-1, -1], train=True, target_length=96)
    cached = AudioDataset(paths, [-1, -1], train=True, target_length=96, cache_dir=str(tmp_path / "cache"))
    for key in ((0, 5), (1, 7), (1, 8)):
        torch.testing.assert_close(cached[key], fresh[key], atol=1e-5, rtol=1e-5)  # same crops from the same seeds
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 2
    calls = []
    monkeypatch.setattr(audio_mod, "read_audio", lambda *a, **k: calls.append(a) or (_ for _ in ()).throw(AssertionError("decoded again")))
    cached[(0, 9)]  # served from the cache: no decoding
    assert calls == []


def test_cache_sees_a_same_size_file_replaced_with_its_mtime_kept_and_a_vanished_file(tmp_path):
    """cp -p of another recording of the same length keeps size and mtime: ctime and inode still differ."""
    import os
    import shutil

    from omnimae.modalities.audio import AudioDataset

    wav = write(tmp_path / "data" / "clip.wav", signal(1.0, seed=0), subtype="FLOAT")
    new = write(tmp_path / "incoming.wav", signal(1.0, freq=1000.0, seed=1), subtype="FLOAT")
    kw = dict(train=False, target_length=96, cache_dir=str(tmp_path / "cache"))
    first = AudioDataset([wav], [-1], **kw)[0]  # cached
    st = wav.stat()
    os.utime(new, ns=(st.st_atime_ns, st.st_mtime_ns))
    shutil.copy2(new, wav)
    assert (wav.stat().st_size, wav.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    fresh = AudioDataset([wav], [-1], train=False, target_length=96)[0]
    assert not torch.allclose(fresh, first, atol=1e-3)
    torch.testing.assert_close(AudioDataset([wav], [-1], **kw)[0], fresh, atol=1e-5, rtol=1e-5)
    wav.unlink()
    with pytest.raises(DataError, match=rf"{wav}: no such file"):
        AudioDataset([wav], [-1], **kw)[0]


def test_embed_never_lends_a_bad_files_row_another_files_embedding(tmp_path, capsys):
    """skip_bad lets training go on past a file that fails to decode, with the next file standing in;
    embeddings are saved by file name, so there the failure stands and names the file."""
    from omnimae.config.build import build_model
    from omnimae.checkpoint.format import save_safetensors
    from omnimae.cli import compose, main

    root = tmp_path / "data"
    for i in range(3):
        write(root / f"{i}.wav", signal(0.5, seed=i))
    write(root / "silent.wav", np.zeros(SR, np.float32))  # a valid header: found only when decoded
    cfg = compose("pretrain", ["experiment=none", "modality=audio", "model=vit_tiny", "modalities.audio.data.skip_bad=1",
                               "modalities.audio.adapter.target_length=64"])
    path = save_safetensors(build_model(cfg), cfg, tmp_path / "audio.safetensors")
    out = tmp_path / "emb.nc"
    assert main(["embed", f"checkpoint={path}", f"data_root={root}", f"output={out}", "batch_size=2"]) == 1
    assert "silent.wav: silent" in capsys.readouterr().err and not out.exists()
    (root / "silent.wav").unlink()
    assert main(["embed", f"checkpoint={path}", f"data_root={root}", f"output={out}"]) == 0
