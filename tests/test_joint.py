"""Joint pretraining: one shared encoder and decoder over several modalities in one run."""
import csv

import numpy as np
import pytest
import torch

from omnimae.checkpoint.format import load_model, read_checkpoint
from omnimae.config.compose import compose
from omnimae.forecasting.forecaster import Forecaster
from omnimae.train.pretrain import pretrain
from omnimae.data.samplers import SeededSampler
from omnimae.train.loaders import MixedLoader, ResumableLoader

JOINT = [
    "experiment=none", "modality=[image,timeseries]", "model=vit_tiny", "trainer=debug", "data.builtin=digits",
    "modalities.image.adapter.img_size=16", "modalities.image.adapter.patch_size=4", "modalities.image.adapter.in_chans=1",
    "modalities.image.adapter.mean=[0.3]", "modalities.image.adapter.std=[0.4]", "modalities.image.batch_size=16",
    "modalities.image.num_workers=0",
    "modalities.timeseries.adapter.img_size=32", "modalities.timeseries.adapter.patch_size=8",
    "modalities.timeseries.adapter.max_visible_columns=3", "modalities.timeseries.batch_size=4",
    "modalities.timeseries.data.samples_per_epoch=64", "modalities.timeseries.data.val_samples=4",
    "modalities.timeseries.sampling_weight=3.0", "callbacks.reconstruction_samples=2",
]


def test_mixed_loader_draws_by_weight_reproducibly_and_cycles():
    loaders = {"a": [{"a": i} for i in range(3)], "b": [{"b": i} for i in range(2)]}

    class L(list):
        pass

    mixed = MixedLoader({k: L(v) for k, v in loaders.items()}, {"a": 1.0, "b": 4.0}, seed=0)
    first = list(mixed)
    assert len(first) == 5 and first == list(MixedLoader({k: L(v) for k, v in loaders.items()}, {"a": 1.0, "b": 4.0}, seed=0))
    big = MixedLoader({"a": L(loaders["a"] * 400), "b": L(loaders["b"] * 600)}, {"a": 1.0, "b": 4.0}, seed=1)
    share_b = np.mean(["b" in batch for batch in big])
    assert abs(share_b - 0.8) < 0.05  # steps follow the sampling weights; short loaders start over


def test_mixed_loader_resumes_mid_epoch_where_it_stopped():
    """Skipping k steps (a resume) yields exactly the rest of the uninterrupted epoch: across loader
    restarts, for plain iterables and for resumable loaders that skip without loading."""
    data = {"a": [{"a": i} for i in range(3)], "b": [{"b": i} for i in range(5)]}

    def loaders(resumable):
        if not resumable:
            return {k: list(v) for k, v in data.items()}
        class Keyed(list):  # a dataset indexed by (index, sample seed) keys, as omnimae's are
            def __getitem__(self, key):
                return list.__getitem__(self, key[0])

        return {k: ResumableLoader(Keyed(v), batch_size=1, sampler=SeededSampler(len(v), seed=3), collate_fn=lambda x: x[0])
                for k, v in data.items()}

    for resumable in (False, True):
        mix = MixedLoader(loaders(resumable), {"a": 3.0, "b": 1.0}, seed=2)
        mix.set_epoch(1)
        full = list(mix)
        assert sum("a" in x for x in full) > 3  # "a" runs out and starts over within the epoch
        for k in (1, 4, 7):
            again = MixedLoader(loaders(resumable), {"a": 3.0, "b": 1.0}, seed=2)
            again.set_epoch(1)
            again.load_state_dict({"batches": k})
            assert list(again) == full[k:], (resumable, k)
        mix.set_epoch(2)
        assert list(mix) != full  # Lightning sets the epoch through loader.sampler: a new order


def test_one_run_trains_image_and_timeseries_together(tmp_path):
    cfg = compose("pretrain", JOINT + ["trainer.max_steps=12", "trainer.log_every_n_steps=1", f"run_dir={tmp_path}"])
    result = pretrain(cfg)
    assert result["steps"] == 12
    rows = list(csv.DictReader(open(next(tmp_path.glob("logs/version_*/metrics.csv")))))
    steps = {m: [r["step"] for r in rows if r.get(f"train/loss_{m}")] for m in ("image", "timeseries")}
    assert steps["image"] and steps["timeseries"] and len(steps["timeseries"]) > len(steps["image"])  # weight 3:1
    for m in ("image", "timeseries"):
        assert (tmp_path / "reconstructions" / f"final_{m}.png").is_file()
    model, stored = load_model(result["checkpoint"])  # one checkpoint, both adapters
    assert set(model.adapters) == {"image", "timeseries"}
    # any subset serves: forecast with the joint checkpoint, embed images with it
    y = Forecaster(model, "timeseries").predict(np.sin(np.arange(64) / 3.0)[:, None], 8, 8)
    assert y.shape == (1, 8, 1) and np.isfinite(y).all()
    assert model.embed(torch.randn(2, 1, 16, 16), "image").shape == (2, 64)


@pytest.mark.parametrize("stop_at", [4, 6])  # epochs are 4 steps: at an epoch end and in the middle of one
def test_a_joint_run_resumes_with_the_same_losses(tmp_path, stop_at):
    common = JOINT + ["trainer.max_steps=8", "trainer.limit_train_batches=4", "trainer.log_every_n_steps=1",
                      "trainer.check_val_every_n_epoch=100", "callbacks.reconstruction_every_n_steps=0",
                      f"callbacks.checkpoint_every_n_steps={stop_at}"]
    pretrain(compose("pretrain", common + [f"run_dir={tmp_path / 'full'}"]))
    pretrain(compose("pretrain", common + [f"run_dir={tmp_path / 'resumed'}",
                                           f"resume={tmp_path / 'full' / 'checkpoints' / f'step-{stop_at:07d}.ckpt'}"]))

    def losses(run):
        rows = list(csv.DictReader(open(next(run.glob("logs/version_*/metrics.csv")))))
        return {int(r["step"]): float(r["train/loss"]) for r in rows if r.get("train/loss")}

    a, b = losses(tmp_path / "full"), losses(tmp_path / "resumed")
    assert sorted(b) == list(range(stop_at, 8))
    for step, value in b.items():
        assert abs(value - a[step]) < 1e-6, step
    wa = read_checkpoint(tmp_path / "full" / "checkpoints" / "last.ckpt")["state_dict"]
    wb = read_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.ckpt")["state_dict"]
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=1e-6, rtol=0, msg=k)


class _Grouped(torch.utils.data.Dataset):
    """Items whose shape follows their group (a channel count), like microscopy images of several channel sets."""

    def __init__(self, groups):
        self.groups = groups
        self.labels = [0] * len(groups)

    def __len__(self):
        return len(self.groups)

    def __getitem__(self, key):
        index = key[0] if isinstance(key, tuple) else key
        return torch.full((self.groups[index], 2, 2), float(index))


class _Data:
    def __init__(self, train, val):
        self.sets = {"train": train, "val": val}

    def dataset(self, split, train):
        return self.sets[split]


def test_channel_groups_each_smaller_than_a_batch_fail_naming_the_batch_size():
    from types import SimpleNamespace

    from omnimae.errors import ConfigError
    from omnimae.train.loaders import MAEDataModule

    groups = [2] * 5 + [3] * 5 + [4] * 5  # 15 samples, but no group fills a batch of 8
    dm = MAEDataModule({"microscopy": _Data(_Grouped(groups), _Grouped([]))},
                       {"microscopy": SimpleNamespace(batch_size=8, num_workers=0, sampling_weight=1.0)}, seed=0)
    dm.setup("fit")
    with pytest.raises(ConfigError, match=r"modalities\.microscopy\.batch_size: 8 leaves no whole batch .* groups of \[5, 5, 5\]"):
        dm.train_dataloader()


def test_reconstructions_take_their_samples_from_one_channel_group():
    from types import SimpleNamespace

    from omnimae.train.callbacks import ReconstructionCallback

    val = _Grouped([3, 2, 3, 2, 3])
    trainer = SimpleNamespace(datamodule=SimpleNamespace(val_sets={"microscopy": val}))
    batch = ReconstructionCallback("unused", 0, 3)._samples(trainer, "microscopy")
    assert batch.shape == (3, 3, 2, 2) and batch[:, 0, 0, 0].tolist() == [0.0, 2.0, 4.0]
