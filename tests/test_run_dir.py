"""One run per run_dir: a second run is refused (unless it resumes the first or is told to overwrite it),
a run_dir in use is locked, and a folder that cannot be written fails naming itself."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from omnimae.checkpoint.format import read_checkpoint
from omnimae.cli import compose, main
from omnimae.errors import OutputError
from omnimae.train.pretrain import pretrain

FAST = ["model=vit_tiny", "modalities.image.batch_size=32", "trainer.limit_val_batches=0", "trainer.enable_progress_bar=false",
        "callbacks.reconstruction_every_n_steps=0", "callbacks.reconstruction_samples=2"]

HOLDER = """
import sys, time
from omnimae.train.run_dir import claim_run_dir
with claim_run_dir(sys.argv[1]):
    print("holding", flush=True)
    time.sleep(600)
"""


def run(run_dir: Path, *overrides: str) -> dict:
    return pretrain(compose("pretrain", FAST + [f"run_dir={run_dir}", *overrides]))


def test_a_second_run_in_a_used_run_dir_is_refused_unless_it_resumes_or_overwrites(tmp_path):
    run(tmp_path, "trainer.max_steps=2", "callbacks.checkpoint_every_n_steps=1")
    before = {p: p.read_bytes() for p in (tmp_path / "config.yaml", tmp_path / "checkpoints" / "last.ckpt")}
    last = tmp_path / "checkpoints" / "last.ckpt"
    other = ["trainer.max_steps=2", "seed=1", "model.depth=2"]
    with pytest.raises(OutputError, match=rf"^run_dir={tmp_path}: holds another run \(config.yaml, checkpoints\); "
                                          rf"pass resume={last} to continue it, pass overwrite=true to replace it"):
        run(tmp_path, *other)
    assert all(p.read_bytes() == data for p, data in before.items())  # nothing of the first run was touched
    # continuing the run in its own folder is what resume= is for
    assert run(tmp_path, "trainer.max_steps=3", f"resume={last}")["steps"] == 3
    # overwrite=true replaces it: the other run's checkpoints do not stay beside the new ones
    assert run(tmp_path, *other, "overwrite=true")["steps"] == 2
    assert not list((tmp_path / "checkpoints").glob("step-*.ckpt"))
    assert read_checkpoint(last)["omnimae"]["config"]["seed"] == 1
    assert "seed: 1" in (tmp_path / "config.yaml").read_text()


def test_a_run_dir_in_use_fails_at_once_and_is_free_again_when_its_run_is_killed(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                              cwd=tmp_path.parent)
    try:
        assert holder.stdout.readline().strip() == "holding"
        with pytest.raises(OutputError, match=rf"^run_dir={tmp_path}: in use by another run \(process {holder.pid}, "):
            run(tmp_path, "trainer.max_steps=1")
        assert sorted(p.name for p in tmp_path.iterdir()) == [".lock"]  # refused before writing anything
    finally:
        holder.kill()  # as kill -9 does: the system drops the lock with the process
        holder.wait()
    assert run(tmp_path, "trainer.max_steps=1")["steps"] == 1
    assert torch.is_tensor(read_checkpoint(tmp_path / "checkpoints" / "last.ckpt")["state_dict"]["model.cls_token"])


def test_a_run_dir_that_cannot_be_made_fails_naming_it(tmp_path, capsys, monkeypatch):
    (tmp_path / "notes.txt").write_text("a file")
    bad = tmp_path / "notes.txt" / "run"
    assert main(["pretrain", *FAST, "trainer.max_steps=1", f"run_dir={bad}"]) == 1
    assert f"run_dir={bad}: cannot be used (" in capsys.readouterr().err
    # a folder this user may not write in (as root, chmod does not stop writing: the refusal is staged)
    denied = tmp_path / "denied"

    def refuse(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "mkdir", refuse)
    with pytest.raises(OutputError, match=rf"^run_dir={denied / 'run'}: cannot be used \(Permission denied: {denied}"):
        run(denied / "run", "trainer.max_steps=1")


def test_overwrite_must_be_true_or_false():
    from omnimae.config.build import validate
    from omnimae.errors import ConfigError

    with pytest.raises(ConfigError, match="^overwrite: expected true or false, got 'yes'"):
        validate(compose("pretrain", FAST + ["overwrite=yes"]))


def test_resume_takes_only_a_checkpoint_that_pretrain_wrote(tmp_path, capsys):
    official = tmp_path / "mae_pretrain_vit_tiny.pth"
    torch.save({"model": {"cls_token": torch.zeros(1, 1, 64)}}, official)  # the official MAE layout: weights only
    safetensors = Path(__file__).parent / "fixtures" / "v0_1_0_tiny.safetensors"
    for path, what in ((safetensors, "a safetensors file of weights only"), (official, "an official MAE checkpoint")):
        assert main(["pretrain", *FAST, f"resume={path}", f"run_dir={tmp_path / 'run'}"]) == 1
        err = capsys.readouterr().err
        assert f"{path}: resume= takes a .ckpt that omnimae pretrain wrote" in err and what in err, err
    assert not (tmp_path / "run").exists()
