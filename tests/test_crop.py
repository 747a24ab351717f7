"""One crop policy (omnimae.data.crop) for every modality that cuts windows: centred for evaluation,
drawn from the sample's seed for training, one draw per axis in order. Resumed runs depend on the
draws staying those of a generator seeded with the sample's seed, so the references below spell them
out with torch.randint; every crop is checked against the window of the data it was cut from."""
import numpy as np
import pytest
import tifffile
import torch

from omnimae.data.crop import crop_starts, cut, global_rng_from, sample_generator, standardize_sample_crop
from omnimae.errors import DataError


def drawn(seed: int, spans: list[int]) -> list[int]:
    """The reference draws: from one generator seeded with the seed, randint(0, span) per axis in order."""
    g = torch.Generator().manual_seed(seed)
    return [int(torch.randint(0, n, (1,), generator=g)) for n in spans]


def test_evaluation_crops_are_centred():
    assert crop_starts((10, 7, 9), (4, 7, 2), random=False) == [3, 0, 3]
    x = torch.arange(10 * 7).view(10, 7)
    assert torch.equal(cut(x, [3, 1], [4, 5]), x[3:7, 1:6])


def test_training_crops_are_the_seeds_draws_and_reach_every_start():
    for seed in range(50):
        assert crop_starts((12, 9), (5, 5), sample_generator(seed)) == drawn(seed, [8, 5])
    starts = {tuple(crop_starts((6, 4), (3, 4), sample_generator(seed))) for seed in range(200)}
    assert starts == {(top, 0) for top in range(4)}  # every start that fits, nothing outside


def test_a_crop_larger_than_the_sample_is_refused():
    with pytest.raises(ValueError, match=r"\[5, 5\] does not fit a sample of \[4, 9\]"):
        crop_starts((4, 9), (5, 5))


def test_global_rng_transforms_draw_from_the_seed_and_leave_the_stream_alone():
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    with global_rng_from(7):
        got = torch.rand(3)
    assert torch.equal(torch.random.get_rng_state(), before)
    torch.manual_seed(7)
    assert torch.equal(got, torch.rand(3))


def test_standardized_crops_have_mean_0_and_std_1_and_blank_ones_are_zeros():
    whole = torch.tensor([[[2.0]], [[3.0]]])
    crop = torch.stack([torch.arange(12.0).view(3, 4), torch.full((3, 4), 5.0)])  # channel 1 blank
    out = standardize_sample_crop(crop, whole, ["dna", "er"], "a.tif")
    expected = (crop[0] - crop[0].mean()) / crop[0].std()
    torch.testing.assert_close(out[0], expected)
    assert torch.equal(out[1], torch.zeros(3, 4))
    with pytest.raises(DataError, match=r"^a\.tif: channel\(s\) \['er'\] are constant over the whole image"):
        standardize_sample_crop(crop, torch.tensor([[[2.0]], [[0.0]]]), ["dna", "er"], "a.tif", "image")


def test_microscopy_crops_are_windows_of_the_image_at_the_seeds_draws(tmp_path):
    from omnimae.modalities.microscopy import MicroscopyData

    img = np.arange(2 * 20 * 27, dtype=np.float32).reshape(2, 20, 27)
    tifffile.imwrite(tmp_path / "a.tif", img)
    data = MicroscopyData(["a", "b"], root=str(tmp_path), img_size=8, channel_axis=0, channel_names=["a", "b"],
                          normalization="dataset", stats={"a": [0.0, 1.0], "b": [0.0, 1.0]}, val_fraction=0)
    train = data.dataset("train", train=True)
    for seed in range(20):
        top, left = drawn(seed, [13, 20])
        np.testing.assert_array_equal(train[(0, seed)]["pixels"].numpy(), img[:, top : top + 8, left : left + 8])
    centre = data.dataset("train", train=False)[(0, 3)]["pixels"].numpy()
    np.testing.assert_array_equal(centre, img[:, 6:14, 9:17])


def test_array_crops_are_windows_of_the_array_at_the_seeds_draws(tmp_path):
    from omnimae.modalities.array import ArrayData

    arr = np.arange(2 * 12 * 10, dtype=np.float32).reshape(2, 12, 10)
    np.save(tmp_path / "a.npy", arr)
    data = ArrayData(shape=[2, 8, 8], root=str(tmp_path), normalization="none", val_fraction=0)
    train = data.dataset("train", train=True)
    for seed in range(20):
        top, left = drawn(seed, [5, 3])
        np.testing.assert_array_equal(train[(0, seed)].numpy(), arr[:, top : top + 8, left : left + 8])
    np.testing.assert_array_equal(train[0].numpy(), arr[:, 2:10, 1:9])  # no seed: the centre


def test_video_windows_and_frame_crops_follow_the_seed():
    from omnimae.modalities.readers.video import clip_indices
    from omnimae.modalities.video import ClipReader

    frames = torch.arange(4 * 3 * 8 * 13, dtype=torch.float32).view(4, 3, 8, 13)  # [T, C, H, W]
    reader = ClipReader(num_frames=4, img_size=8)
    for seed in range(20):
        top, left = drawn(seed, [1, 6])  # the short side fits exactly: its draw is made all the same
        got = reader.resize_crop(frames, True, sample_generator(seed))
        assert torch.equal(got, frames[..., top : top + 8, left : left + 8])
        first = drawn(seed, [30 - 8 + 1])[0]
        assert clip_indices(30, 4, 2, start="random", generator=sample_generator(seed)) == [first + 2 * i for i in range(4)]
    assert clip_indices(30, 4, 2) == [11, 13, 15, 17]


def test_audio_frames_are_cropped_at_the_seeds_draw_and_padded_when_short():
    from omnimae.modalities.readers.audio import crop_start

    for seed in range(20):
        assert crop_start(50, 20, True, seed) == drawn(seed, [31])[0]
    assert crop_start(50, 20, False) == 15
    assert crop_start(12, 20, True, 0) == 0
