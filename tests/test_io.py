"""Atomic writes: durable before they are published, and no temporaries left behind by a killed writer."""
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from omnimae.errors import OutputError
from omnimae.io import atomic_path
from omnimae.train.checkpoint_io import AtomicCheckpointIO

WRITER = """
import sys, time
from omnimae.io import atomic_path
with atomic_path(sys.argv[1]) as tmp:
    tmp.write_text("half")
    print(tmp.name, flush=True)
    time.sleep(600)
"""


def start_writer(target: Path) -> tuple[subprocess.Popen, str]:
    """A process stopped in the middle of an atomic write of target; returns it and its temporary's name."""
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(target)], stdout=subprocess.PIPE, text=True,
                            cwd=target.parent)
    name = proc.stdout.readline().strip()
    assert name, "the writer did not start"
    return proc, name


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_killed_writers_temporary_is_removed_and_a_live_writers_kept(tmp_path):
    target = tmp_path / "embeddings.npz"
    target.write_text("original")
    killed, killed_tmp = start_writer(target)
    live, live_tmp = start_writer(target)
    try:
        os.kill(killed.pid, signal.SIGKILL)
        killed.wait()
        assert (tmp_path / killed_tmp).is_file() and target.read_text() == "original"  # what kill -9 leaves
        host = live_tmp[len(".embeddings.npz."):].rsplit("-", 1)[0]
        elsewhere = tmp_path / f".embeddings.npz.{host}x-{dead_pid()}.abcdefgh.tmp"  # another host's writer
        other_name = tmp_path / f".other.ckpt.{host}-{dead_pid()}.abcdefgh.tmp"  # a dead writer of another file
        mine = tmp_path / ".notes.tmp"  # the user's own
        for p in (elsewhere, other_name, mine):
            p.write_text("x")
        with atomic_path(target) as tmp:
            tmp.write_text("whole")
        assert target.read_text() == "whole"
        left = sorted(p.name for p in tmp_path.iterdir())
        assert left == sorted([target.name, live_tmp, elsewhere.name, mine.name])
    finally:
        live.kill()
        live.wait()


def test_checkpoints_written_by_lightning_follow_the_same_rule(tmp_path):
    live, live_tmp = start_writer(tmp_path / "last.ckpt")
    try:
        host = live_tmp[len(".last.ckpt."):].rsplit("-", 1)[0]
        stale = tmp_path / f".last.ckpt.{host}-{dead_pid()}.k9lled_x.tmp"
        stale.write_bytes(b"half a checkpoint")
        AtomicCheckpointIO().save_checkpoint({"step": 3}, tmp_path / "last.ckpt")
        assert torch.load(tmp_path / "last.ckpt") == {"step": 3}
        assert not stale.exists() and (tmp_path / live_tmp).is_file()
    finally:
        live.kill()
        live.wait()


def test_the_data_is_synced_before_the_rename_and_the_folder_after(tmp_path, monkeypatch):
    events = []
    fsync, replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append(("fsync", os.fstat(fd).st_ino)), fsync(fd)))
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append(("replace", os.stat(a).st_ino)), replace(a, b)))
    with atomic_path(tmp_path / "out.csv") as tmp:
        tmp.write_text("a,b\n1,2\n")
        data = tmp.stat().st_ino
    assert events == [("fsync", data), ("replace", data), ("fsync", tmp_path.stat().st_ino)]
    assert (tmp_path / "out.csv").read_text() == "a,b\n1,2\n"


def test_an_output_that_cannot_be_written_fails_naming_it(tmp_path, monkeypatch):
    (tmp_path / "notes.txt").write_text("a file")
    out = tmp_path / "notes.txt" / "embeddings.npz"
    with pytest.raises(OutputError, match=rf"^{out}: cannot be written"):
        with atomic_path(out) as tmp:
            tmp.write_text("never")
    assert (tmp_path / "notes.txt").read_text() == "a file"

    def refuse(*args, **kwargs):  # as in a folder this user may not write in (chmod does not stop root)
        raise PermissionError(13, "Permission denied", str(tmp_path))

    monkeypatch.setattr("tempfile.mkstemp", refuse)
    with pytest.raises(OutputError, match=rf"^{tmp_path / 'out.csv'}: cannot be written \(Permission denied"):
        with atomic_path(tmp_path / "out.csv"):
            pass
