"""Atomic writes: a user's file is replaced whole or not at all."""
from __future__ import annotations

import contextlib
import os
import re
import socket
import tempfile
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success flush it to disk and rename it over `path`,
    else delete it. The temporary name carries this host and process id: temporaries that a killed
    process of this host left in the folder are removed when this process first writes there."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _sweep_once(path.parent)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{_owner()}.", suffix=".tmp", dir=path.parent)
    except OSError as e:  # unwritable, or a file where a folder should be
        from omnimae.errors import OutputError

        raise OutputError(f"{path}: cannot be written ({e.strerror or e}: {e.filename or path.parent})") from e
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        # mkstemp makes the file private (0600): give it the mode a plain open() would have
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, path.stat().st_mode & 0o777 if path.exists() else 0o666 & ~umask)
        _fsync(tmp)  # the data reaches the disk before the new name does: a crash leaves old or new, never empty
        os.replace(tmp, path)
        _fsync(path.parent)  # and the rename itself survives a crash
    finally:
        tmp.unlink(missing_ok=True)


def _owner() -> str:
    """This process as a temporary file names it: host (letters, digits, _) and pid."""
    return f"{re.sub(r'[^A-Za-z0-9_]', '_', socket.gethostname())}-{os.getpid()}"


def _fsync(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # a folder on a system that cannot open one (Windows): nothing to flush there
        return
    try:
        os.fsync(fd)
    except OSError:  # file systems that do not sync folders
        pass
    finally:
        os.close(fd)


def _alive(pid: int) -> bool:
    """Whether a process of this host runs with this id; where that cannot be told, assume it does."""
    if pid == os.getpid() or os.name != "posix":  # (on Windows, os.kill would end the process)
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. another user's process
        return True
    return True


# what atomic_path names a temporary: .<target name>.<host>-<pid>.<8 random characters>.tmp
_TEMPORARY = re.compile(r"\..+\.([A-Za-z0-9_]+)-(\d+)\.[a-z0-9_]{8}\.tmp")
_swept: set[tuple[str, int]] = set()


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Remove the temporaries in `folder` that atomic_path made in processes of this host that no
    longer run (killed mid-write); a live writer's, another host's and anything else stay."""
    host = _owner().rsplit("-", 1)[0]
    removed = []
    with os.scandir(folder) as entries:
        for entry in entries:
            match = _TEMPORARY.fullmatch(entry.name)
            if match and match[1] == host and not _alive(int(match[2])):
                with contextlib.suppress(OSError):  # one we may not remove must not stop the write
                    Path(entry.path).unlink(missing_ok=True)
                    removed.append(Path(entry.path))
    return removed


def _sweep_once(folder: Path) -> None:
    """Remove stale temporaries at this process's first write into a folder: once, as a cache folder
    of many files is written into once per file."""
    key = (str(folder.resolve()), os.getpid())
    if key not in _swept:
        remove_stale_temporaries(folder)
        _swept.add(key)


def refuse_overwrite(output: str | Path, *inputs: str | Path, overwrite: bool = False) -> None:
    """Raise if an output path is one of the inputs, or exists and overwrite was not asked for."""
    from omnimae.errors import OutputError

    out = Path(output).expanduser().resolve()
    for p in inputs:
        if p is not None and Path(p).expanduser().resolve() == out:
            raise OutputError(f"{output}: refusing to write the output over an input file")
    if out.exists() and not overwrite:
        raise OutputError(f"{output}: already exists; choose another output or pass overwrite=true")


def check_writable(output: str | Path) -> None:
    """Raise OutputError unless `output` could be written: its nearest existing folder must be a folder we may write in."""
    from omnimae.errors import OutputError

    path = Path(output).expanduser().absolute()
    if path.is_dir():
        raise OutputError(f"{output}: is a folder, not a file")
    folder = path.parent
    while not folder.exists():  # (a path through a file does not exist either)
        folder = folder.parent
    if not folder.is_dir():
        raise OutputError(f"{output}: cannot be written: {folder} is a file, not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"{output}: cannot be written: no permission to write in {folder}")
