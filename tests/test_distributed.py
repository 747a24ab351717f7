"""DDP on CPU (gloo): 2 processes launched by Lightning hold identical weights, and checkpoints
resume across process counts."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

OMNIMAE = shutil.which("omnimae", path=str(Path(sys.executable).parent))
pytestmark = pytest.mark.skipif(OMNIMAE is None, reason="the omnimae command is not installed beside this Python")

COMMON = ["model=vit_tiny", "modalities.image.batch_size=16", "trainer.enable_progress_bar=false",
          "trainer.log_every_n_steps=1", "callbacks.reconstruction_every_n_steps=0", "callbacks.reconstruction_samples=2"]
DDP = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=32-true", "trainer.max_epochs=null"]


def run(*args: str) -> str:
    proc = subprocess.run([OMNIMAE, "pretrain", *COMMON, *args], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc.stdout + proc.stderr


def test_two_ranks_hold_identical_weights_and_resume_across_process_counts(tmp_path):
    out = run(*DDP, "trainer.max_steps=4", f"run_dir={tmp_path / 'ddp'}")
    assert "ranks_in_sync    True" in out and "all 2 ranks hold identical weights" in out
    # a 2-process checkpoint continues in 1 process ...
    out = run("trainer.max_steps=6", f"run_dir={tmp_path / 'single'}", f"resume={tmp_path / 'ddp' / 'checkpoints' / 'last.ckpt'}")
    assert "steps            6" in out
    # ... and a 1-process checkpoint in 2
    out = run(*DDP, "trainer.max_steps=8", f"run_dir={tmp_path / 'ddp2'}", f"resume={tmp_path / 'single' / 'checkpoints' / 'last.ckpt'}")
    assert "steps            8" in out and "ranks_in_sync    True" in out


def test_torchrun_launch_gives_the_same_weights_as_a_lightning_launch(tmp_path):
    """The same 2-process run started by torchrun instead of Lightning ends with the same weights."""
    import torch

    from omnimae.checkpoint.format import read_checkpoint

    run(*DDP, "trainer.max_steps=3", f"run_dir={tmp_path / 'lightning'}")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533", OMNIMAE, "pretrain"]
    proc = subprocess.run([*torchrun, *COMMON, *DDP, "trainer.max_steps=3", f"run_dir={tmp_path / 'torchrun'}"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    a = read_checkpoint(tmp_path / "lightning" / "checkpoints" / "last.ckpt")["state_dict"]
    b = read_checkpoint(tmp_path / "torchrun" / "checkpoints" / "last.ckpt")["state_dict"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=0, msg=k)


def test_a_joint_run_trains_under_ddp_with_ranks_in_sync(tmp_path):
    """Each step of a joint run trains one modality, so the other adapters get no gradient in it: DDP has
    to be told (find_unused_parameters), or the second step fails. Both ranks end with the same weights."""
    joint = ["experiment=none", "modality=[image,timeseries]", "data.builtin=digits", "trainer.limit_val_batches=0",
             "modalities.image.adapter.img_size=16", "modalities.image.adapter.patch_size=4",
             "modalities.image.adapter.in_chans=1", "modalities.image.adapter.mean=[0.3]", "modalities.image.adapter.std=[0.4]",
             "modalities.image.num_workers=0", "modalities.timeseries.adapter.img_size=32",
             "modalities.timeseries.adapter.patch_size=8", "modalities.timeseries.adapter.max_visible_columns=3",
             "modalities.timeseries.batch_size=4", "modalities.timeseries.data.samples_per_epoch=64",
             "modalities.timeseries.data.val_samples=4"]
    out = run(*DDP, *joint, "trainer.max_steps=4", f"run_dir={tmp_path}")
    assert "steps            4" in out and "ranks_in_sync    True" in out and "all 2 ranks hold identical weights" in out
    rows = (next(tmp_path.glob("logs/version_*/metrics.csv"))).read_text()
    assert "train/loss_image" in rows and "train/loss_timeseries" in rows  # both modalities took steps
