"""mask_ratio as a schedule of the training step: closed forms, the step's masks and logs, resume, errors."""
from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import Callback

import omnimae.modalities  # noqa: F401 - registers the adapters
from omnimae.adapter import MODALITIES
from omnimae.checkpoint.format import load_model, read_checkpoint
from omnimae.cli import main
from omnimae.config.build import build_model, check_mask_ratios, validate
from omnimae.config.compose import compose
from omnimae.errors import ConfigError
from omnimae.masking_schedule import parse_mask_ratio
from omnimae.model import MaskedAutoencoder
from omnimae.train.pretrain import pretrain

TINY = ["model=vit_tiny", "trainer=debug"]  # the digits image: 16x16 in 4x4 patches, 16 tokens
FAST = ["model=vit_tiny", "modalities.image.batch_size=32", "trainer.log_every_n_steps=1", "trainer.limit_val_batches=1",
        "trainer.enable_progress_bar=false", "callbacks.reconstruction_samples=2", "callbacks.reconstruction_every_n_steps=0"]
RATIO = "modalities.image.adapter.mask_ratio"


def logged(run_dir: Path, column: str) -> dict[int, float]:
    rows = list(csv.DictReader(open(next(run_dir.glob("logs/version_*/metrics.csv")))))
    return {int(r["step"]): float(r[column]) for r in rows if r.get(column)}


@pytest.mark.parametrize("node,step,total,expected", [
    (0.75, 123, None, 0.75),
    ({"schedule": "constant", "value": 0.6}, 10**6, None, 0.6),
    # linear: start + (end - start) t / steps, then end
    ({"schedule": "linear", "start": 0.6, "end": 0.85, "steps": 100}, 0, None, 0.6),
    ({"schedule": "linear", "start": 0.6, "end": 0.85, "steps": 100}, 40, None, 0.7),
    ({"schedule": "linear", "start": 0.6, "end": 0.85, "steps": 100}, 100, None, 0.85),
    ({"schedule": "linear", "start": 0.6, "end": 0.85, "steps": 100}, 5000, None, 0.85),
    ({"schedule": "linear", "start": 0.9, "end": 0.5}, 30, 40, 0.6),  # a falling ramp over the run's 40 steps
    # cosine: end + (start - end)(1 + cos(pi t / steps)) / 2; at a quarter, 0.6 + 0.25 (1 - sqrt(2)/2) / 2
    ({"schedule": "cosine", "start": 0.6, "end": 0.85, "steps": 100}, 25, None, 0.6 + 0.25 * (1 - math.sqrt(0.5)) / 2),
    ({"schedule": "cosine", "start": 0.6, "end": 0.85, "steps": 100}, 50, None, 0.725),
    ({"schedule": "cosine", "start": 0.6, "end": 0.85}, 100, 100, 0.85),
    # steps: values[i] from boundaries[i - 1] (inclusive) on
    ({"schedule": "steps", "values": [0.6, 0.75, 0.85], "boundaries": [1000, 2000]}, 999, None, 0.6),
    ({"schedule": "steps", "values": [0.6, 0.75, 0.85], "boundaries": [1000, 2000]}, 1000, None, 0.75),
    ({"schedule": "steps", "values": [0.6, 0.75, 0.85], "boundaries": [1000, 2000]}, 1999, None, 0.75),
    ({"schedule": "steps", "values": [0.6, 0.75, 0.85], "boundaries": [1000, 2000]}, 2000, None, 0.85),
])
def test_each_schedule_is_its_closed_form_of_the_step(node, step, total, expected):
    assert parse_mask_ratio(node)(step, total) == pytest.approx(expected, abs=1e-12)


def test_evaluation_uses_the_end_of_the_schedule_and_training_the_steps_ratio():
    model = build_model(compose("pretrain", TINY + [f"{RATIO}={{schedule:linear,start:0.25,end:0.75,steps:8}}"]))
    adapter = model.adapters["image"]
    patches = adapter.tokenize(adapter.example_input(2, torch.Generator().manual_seed(0)))
    hidden = lambda: adapter.mask(patches, generator=torch.Generator().manual_seed(0)).mask.sum(1).tolist()
    assert adapter.mask_ratio == 0.75 and hidden() == [12, 12]  # no step set: the end, int(16 x 0.25) = 4 visible
    adapter.train_mask_ratio = adapter.mask_ratio_schedule(2, None)  # 0.25 + 0.5 x 2/8 = 0.375: 10 visible
    assert hidden() == [6, 6]
    model.eval()
    assert hidden() == [12, 12]


def record_masks(monkeypatch) -> dict[str, list[torch.Tensor]]:
    """Every mask the model draws during pretrain(), by mode."""
    masks = {"train": [], "eval": []}
    forward = MaskedAutoencoder.forward_modality

    def recording(self, x, modality, **kwargs):
        out = forward(self, x, modality, **kwargs)
        masks["train" if self.training else "eval"].append(out.mask.detach().clone())
        return out

    monkeypatch.setattr(MaskedAutoencoder, "forward_modality", recording)
    return masks


class EndOfFit(Callback):
    """The adapter's training-step ratio once training is over."""

    def __init__(self):
        self.ratios = []

    def on_fit_end(self, trainer, pl_module):
        self.ratios.append(pl_module.model.adapters["image"].train_mask_ratio)


def test_a_ramp_over_the_run_masks_and_logs_each_steps_ratio_and_resumes_exactly(tmp_path, monkeypatch):
    """A linear ramp 0.25 -> 0.75 without steps spans the run's 8 steps: 0.25 + t/16 at step t, so the MAE
    rule keeps int(16 x (0.75 - t/16)) = 12 - t of 16 tokens. Validation and reconstructions mask at the
    end, 0.75 (12 hidden). Resumed from step 5 (mid-epoch), the ratios, masks, losses and weights are the
    uninterrupted run's."""
    masks = record_masks(monkeypatch)
    after = EndOfFit()
    common = FAST + ["trainer.max_steps=8", "trainer.limit_train_batches=3", "trainer.check_val_every_n_epoch=1",
                     "callbacks.checkpoint_every_n_steps=5", f"{RATIO}={{schedule:linear,start:0.25,end:0.75}}"]
    pretrain(compose("pretrain", common + [f"run_dir={tmp_path / 'full'}"]), extra_callbacks=[after])
    assert after.ratios == [None]  # after training the adapter masks at the schedule's end again
    full = {k: list(v) for k, v in masks.items()}
    ratios = logged(tmp_path / "full", "train/mask_ratio/image")
    assert ratios == {t: pytest.approx(0.25 + t / 16, abs=1e-7) for t in range(8)}
    assert [m.sum(1).unique().tolist() for m in full["train"]] == [[4 + t] for t in range(8)]
    assert full["eval"] and all(m.sum(1).unique().tolist() == [12] for m in full["eval"])

    masks["train"].clear()
    resumed = tmp_path / "resumed"
    pretrain(compose("pretrain", common + [f"run_dir={resumed}", f"resume={tmp_path / 'full/checkpoints/step-0000005.ckpt'}"]))
    assert logged(resumed, "train/mask_ratio/image") == {t: ratios[t] for t in range(5, 8)}
    assert len(masks["train"]) == 3 and all(torch.equal(a, b) for a, b in zip(masks["train"], full["train"][5:]))
    loss_full, loss_resumed = logged(tmp_path / "full", "train/loss"), logged(resumed, "train/loss")
    assert sorted(loss_resumed) == [5, 6, 7]
    for t in loss_resumed:
        assert loss_resumed[t] == pytest.approx(loss_full[t], abs=1e-6), t
    wa = read_checkpoint(tmp_path / "full" / "checkpoints" / "last.ckpt")["state_dict"]
    wb = read_checkpoint(resumed / "checkpoints" / "last.ckpt")["state_dict"]
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=1e-6, rtol=0, msg=k)
    # the checkpoint rebuilds the schedule from its stored config; outside training it masks at the end
    model, _ = load_model(resumed / "checkpoints" / "last.ckpt")
    assert model.adapters["image"].mask_ratio == 0.75 and model.adapters["image"].mask_ratio_schedule(4, 8) == 0.5


@pytest.mark.parametrize("ratio,key,problem", [
    ("{schedule:linear,start:0.6,end:1.0}", "mask_ratio.end", r"must lie in \(0, 1\), got 1.0"),
    ("{schedule:cosine,start:0,end:0.8}", "mask_ratio.start", r"must lie in \(0, 1\), got 0"),
    ("{schedule:steps,values:[0.6,1.2],boundaries:[10]}", r"mask_ratio.values\[1\]", r"must lie in \(0, 1\)"),
    ("{schedule:constant,value:-0.5}", "mask_ratio.value", r"must lie in \(0, 1\)"),
    ("{schedule:exponential,start:0.6,end:0.8}", "mask_ratio.schedule",
     "unknown schedule 'exponential'; known: constant, linear, cosine, steps"),
    ("{start:0.6,end:0.8}", "mask_ratio.schedule", "no schedule key; known: constant, linear, cosine, steps"),
    ("{schedule:steps,values:[0.6,0.7,0.8],boundaries:[20,10]}", r"mask_ratio.boundaries\[1\]",
     r"10 does not exceed the boundary before it \(20\); boundaries must increase"),
    ("{schedule:steps,values:[0.6,0.7],boundaries:[10,20]}", "mask_ratio.values", "has 2 values for 2 boundaries"),
    ("{schedule:steps,values:[0.6,0.7],boundaries:[0]}", r"mask_ratio.boundaries\[0\]", "expected an integer >= 1, got 0"),
    ("{schedule:linear,start:0.6,end:0.8,steps:0}", "mask_ratio.steps", "expected an integer >= 1, got 0"),
    ("{schedule:linear,start:0.6}", "mask_ratio.end", "missing: the linear schedule needs start, end"),
    ("{schedule:linear,start:0.6,end:0.8,step:5}", "mask_ratio.step", "unknown key for the linear schedule; it takes start, end, steps"),
])
def test_a_bad_schedule_fails_naming_its_key(ratio, key, problem):
    cfg = compose("pretrain", TINY + [f"{RATIO}={ratio}"])
    validate(cfg)  # a number or a mapping passes the signature check; the schedule's own check names the key
    with pytest.raises(ConfigError, match=rf"^modalities[.]image[.]adapter[.]{key}: {problem}"):
        build_model(cfg)


@pytest.mark.parametrize("ratio,key,bad", [
    ("{schedule:linear,start:0.6,end:0.99}", "mask_ratio.end", 0.99),
    ("{schedule:cosine,start:0.97,end:0.5,steps:100}", "mask_ratio.start", 0.97),
    ("{schedule:steps,values:[0.5,0.96,0.7],boundaries:[10,20]}", r"mask_ratio.values\[1\]", 0.96),
])
def test_a_schedule_that_leaves_no_visible_token_at_some_step_fails_before_training(ratio, key, bad, tmp_path, capsys):
    """16 tokens keep int(16 x (1 - ratio)) visible: none above 15/16 = 0.9375, wherever in the schedule."""
    with pytest.raises(ConfigError, match=rf"^modalities[.]image[.]adapter[.]{key}: {bad} leaves no visible token of the 16"):
        check_mask_ratios(build_model(compose("pretrain", TINY + [f"{RATIO}={ratio}"])))
    run = tmp_path / "run"
    assert main(["pretrain", *TINY, f"{RATIO}={ratio}", f"run_dir={run}"]) == 1
    assert "leaves no visible token" in capsys.readouterr().err and not run.exists()


def test_a_schedule_that_hides_no_token_at_its_start_fails():
    """Tube masking hides int(ratio x S) of a frame's S = 4 tokens: none at 0.2, so a ramp from 0.2 fails there."""
    video = ["experiment=none", "modality=video", "modalities.video.adapter.img_size=32",
             "modalities.video.adapter.patch_size=16", "modalities.video.adapter.num_frames=4"]
    ramp = "modalities.video.adapter.mask_ratio={schedule:linear,start:0.2,end:0.9}"
    with pytest.raises(ConfigError, match=r"^modalities[.]video[.]adapter[.]mask_ratio[.]start: 0.2 hides none of the 8"):
        check_mask_ratios(build_model(compose("pretrain", TINY + video + [ramp])))


@pytest.mark.parametrize("name", sorted(MODALITIES))
def test_every_modality_takes_a_schedule_from_its_config(name):
    """Each modality's real config with a steps schedule from half its default ratio to the default:
    the training step's ratio drives the mask (fewer hidden at the lower ratio, over draws that include
    the ratio-free ones such as the time series' future mask), evaluation the end's."""
    base = ["experiment=none", f"modality={name}", *TINY]
    default = build_model(compose("pretrain", base)).adapters[name].mask_ratio
    node = f"{{schedule:steps,values:[{default / 2},{default}],boundaries:[10]}}"
    model = build_model(compose("pretrain", base + [f"modalities.{name}.adapter.mask_ratio={node}"]))
    check_mask_ratios(model)
    adapter = model.adapters[name]
    patches = adapter.tokenize(adapter.example_input(2, torch.Generator().manual_seed(0)))
    hidden = lambda: sum(int(adapter.mask(patches, generator=torch.Generator().manual_seed(s)).mask[0].sum())
                         for s in range(8))
    at_end = hidden()
    adapter.train_mask_ratio = adapter.mask_ratio_schedule(0)
    assert adapter.mask_ratio == default and hidden() < at_end
    adapter.train_mask_ratio = adapter.mask_ratio_schedule(10)
    assert hidden() == at_end


def test_a_run_resumed_with_more_steps_continues_the_ramp_of_the_new_length(tmp_path):
    """A ramp without steps spans the run, as the lr cosine does: extended from 4 to 8 steps, the resumed
    steps log 0.25 + 0.5 t / 8, the longer run's ratios (not the short run's end, 0.75)."""
    common = FAST + ["trainer.limit_val_batches=0", f"{RATIO}={{schedule:linear,start:0.25,end:0.75}}"]
    pretrain(compose("pretrain", common + ["trainer.max_steps=4", f"run_dir={tmp_path / 'short'}"]))
    assert logged(tmp_path / "short", "train/mask_ratio/image") == {t: pytest.approx(0.25 + t / 8) for t in range(4)}
    ckpt = tmp_path / "short" / "checkpoints" / "last.ckpt"
    pretrain(compose("pretrain", common + ["trainer.max_steps=8", f"run_dir={tmp_path / 'long'}", f"resume={ckpt}"]))
    assert logged(tmp_path / "long", "train/mask_ratio/image") == {t: pytest.approx(0.25 + t / 16) for t in range(4, 8)}
