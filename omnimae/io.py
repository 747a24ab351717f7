"""Atomic writes: a user's file is replaced whole or not at all."""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success rename it over `path`, else delete it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        # mkstemp makes the file private (0600): give it the mode a plain open() would have
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, path.stat().st_mode & 0o777 if path.exists() else 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def refuse_overwrite(output: str | Path, *inputs: str | Path, overwrite: bool = False) -> None:
    """Raise if an output path is one of the inputs, or exists and overwrite was not asked for."""
    from omnimae.errors import OutputError

    out = Path(output).expanduser().resolve()
    for p in inputs:
        if p is not None and Path(p).expanduser().resolve() == out:
            raise OutputError(f"{output}: refusing to write the output over an input file")
    if out.exists() and not overwrite:
        raise OutputError(f"{output}: already exists; choose another output or pass overwrite=true")
