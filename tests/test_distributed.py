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

    from omnimae.checkpoint import read_checkpoint

    run(*DDP, "trainer.max_steps=3", f"run_dir={tmp_path / 'lightning'}")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533", OMNIMAE, "pretrain"]
    proc = subprocess.run([*torchrun, *COMMON, *DDP, "trainer.max_steps=3", f"run_dir={tmp_path / 'torchrun'}"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    a = read_checkpoint(tmp_path / "lightning" / "checkpoints" / "last.ckpt")["state_dict"]
    b = read_checkpoint(tmp_path / "torchrun" / "checkpoints" / "last.ckpt")["state_dict"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=0, msg=k)
