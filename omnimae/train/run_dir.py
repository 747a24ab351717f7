"""A run's folder: one run per folder, used by one process at a time."""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
from pathlib import Path
from typing import Iterator

from omnimae.errors import OutputError

log = logging.getLogger("omnimae")
RUN_FILES = ("config.yaml", "checkpoints")  # what makes a folder hold a run
REPLACED = ("config.yaml", "checkpoints", "reconstructions")  # what overwrite=true removes (logs keep their versions)


def _inside(path: str | Path, folder: Path) -> bool:
    return Path(path).expanduser().resolve().is_relative_to(folder.resolve())


@contextlib.contextmanager
def claim_run_dir(run_dir: str | Path, resume: str | Path | None = None, overwrite: bool = False,
                  primary: bool = True) -> Iterator[Path]:
    """Hold run_dir for this run: made if missing, locked for as long as the block runs (a second run
    there fails at once), and refused when it holds another run, unless this run resumes from a
    checkpoint inside it or overwrite=true (which removes the other run's config, checkpoints and
    reconstructions). Only the primary process (rank 0) checks and locks; the others share its claim."""
    run_dir = Path(run_dir).expanduser()
    if not primary:
        yield run_dir
        return
    with _locked(run_dir):
        held = [name for name in RUN_FILES if (run_dir / name).exists()]
        if held and not (resume and _inside(resume, run_dir)):
            if not overwrite:
                last = run_dir / "checkpoints" / "last.ckpt"
                hint = f"pass resume={last} to continue it, " if last.is_file() else ""
                raise OutputError(f"run_dir={run_dir}: holds another run ({', '.join(held)}); {hint}pass "
                                  "overwrite=true to replace it, or choose another run_dir")
            log.warning("overwrite=true: removing the run in %s (%s)", run_dir, ", ".join(REPLACED))
            for name in REPLACED:
                target = run_dir / name
                if target.is_dir() and not target.is_symlink():
                    shutil.rmtree(target)
                else:
                    target.unlink(missing_ok=True)
        yield run_dir


@contextlib.contextmanager
def _locked(run_dir: Path) -> Iterator[None]:
    """An exclusive lock on run_dir/.lock (flock: the system releases it when the process ends, however)."""
    lock = run_dir / ".lock"
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:  # no permission, or a file where a folder should be
        raise OutputError(f"run_dir={run_dir}: cannot be used ({e.strerror or e}: {e.filename or run_dir})") from e
    try:
        try:
            import fcntl
        except ImportError:  # Windows: no advisory locks, the run goes unguarded
            yield
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise OutputError(f"run_dir={run_dir}: in use by another run (process {holder}, which holds {lock}); "
                              "wait for it to end or choose another run_dir") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)  # named in the message a second run gets
        yield
    finally:
        os.close(fd)  # releases the lock; the file stays, so no second run can lock an unlinked copy
