"""Finding data files and splitting them: shared by every file-based modality."""
from __future__ import annotations

import logging
import math
import os
import stat
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from omnimae.data.protocol import Split
from omnimae.errors import DataError

log = logging.getLogger("omnimae")


def check_file(path: Path) -> None:
    """A data file must exist and hold bytes: otherwise a DataError naming it, before any decoder
    reports the same in its own words."""
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty file (0 bytes)")


def _subfolders(root: Path) -> list[Path]:
    return sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))


def walk(root: str | Path, match: Callable[[Path, bool], bool], seen: set | None = None) -> Iterator[Path]:
    """What lies under root, in name order: the files `match(path, False)` takes, and the folders
    `match(path, True)` takes whole (a zarr store), not searched inside; hidden names are passed over.
    Each real folder is searched once (`seen` holds their identities, shared between calls): a link to
    a folder already searched, a loop like sub/up -> .. or a second way to the same files, is skipped
    with a warning naming it, so no file counts twice."""
    seen = set() if seen is None else seen
    if _enter(Path(root), seen):
        yield from _search(Path(root), match, seen)


def _identity(folder: Path) -> tuple[int, int]:
    st = folder.stat()  # through links: the folder itself
    return st.st_dev, st.st_ino


def _enter(folder: Path, seen: set) -> bool:
    """Mark a folder as searched; False, with a warning naming it, where it was already."""
    try:
        identity = _identity(folder)
    except FileNotFoundError as e:
        raise DataError(f"{folder}: no such folder") from e
    except OSError as e:  # e.g. no permission
        raise DataError(f"{folder}: cannot search this folder ({e.strerror or e})") from e
    if identity in seen:
        log.warning("%s: skipped, a link to %s, which is searched already (a link loop, or a second way "
                    "to the same files)", folder, folder.resolve())
        return False
    seen.add(identity)
    return True


def _search(folder: Path, match: Callable[[Path, bool], bool], seen: set) -> Iterator[Path]:
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as e:
        raise DataError(f"{folder}: cannot list this folder ({e.strerror or e})") from e
    for entry in entries:
        if entry.name.startswith("."):
            continue
        path, is_dir = Path(entry.path), entry.is_dir()  # is_dir follows links
        if match(path, is_dir):
            yield path
        elif is_dir and _enter(path, seen):
            yield from _search(path, match, seen)


def find_files(
    root: str | Path, suffixes: Iterable[str], kind: str = "data", key: str = "data.root",
    classes: Sequence[str] | None = None,
) -> tuple[list[Path], list[int], list[str]]:
    """Files under root with these suffixes: one subfolder per class gives labels (indexed by
    `classes`, default the subfolders), a flat folder gives labels -1; a root that is one such file
    gives itself. Empty or missing is an error."""
    root = Path(root).expanduser()
    suffixes = {s.lower() for s in suffixes}
    if root.is_file():  # one file: a folder of one, unlabeled
        if root.suffix.lower() not in suffixes:
            raise DataError(f"{key}={root}: not one of the {kind} file types ({', '.join(sorted(suffixes))})")
        return [root], [-1], []
    if not root.is_dir():
        raise DataError(f"{key}={root}: no such folder")
    subdirs = _subfolders(root)
    classes = list(classes) if classes else [d.name for d in subdirs]
    index = {c: i for i, c in enumerate(classes)}
    paths, labels = [], []
    seen = {_identity(root)} if subdirs else set()  # a class folder's link back to the root is a loop too
    for label, folder in ([(index[d.name], d) for d in subdirs] or [(-1, root)]):
        found = sorted(walk(folder, lambda p, is_dir: p.suffix.lower() in suffixes, seen))
        paths += found
        labels += [label] * len(found)
    if not paths:
        raise DataError(f"{key}={root}: no {kind} files ({', '.join(sorted(suffixes))}) found")
    return paths, labels, classes if subdirs else []


def folder_splits(
    root: str | Path, suffixes: Iterable[str], val_fraction: float, seed: int, kind: str = "data", key: str = "data.root",
    find: Callable[[Path], tuple[list, list[int], list[str]]] | None = None,
) -> dict[str, Split]:
    """train/ and val/ subfolders as given (one class index for both), else a seeded val_fraction held out.

    find(folder) -> (items, labels, class names) lists one folder (default: find_files with these suffixes)."""
    find = find or (lambda folder: find_files(folder, suffixes, kind, key))
    root = Path(root).expanduser()
    if (root / "train").is_dir() and (root / "val").is_dir():
        found = {s: find(root / s) for s in ("train", "val")}
        classes = sorted({c for _, _, names in found.values() for c in names})
        return {s: Split(items, [classes.index(names[i]) if i >= 0 else -1 for i in labels])
                for s, (items, labels, names) in found.items()}
    items, labels, _ = find(root)
    return hold_out(items, labels, val_fraction, seed)


def hold_out(items: Sequence, labels: Sequence[int], val_fraction: float, seed: int) -> dict[str, Split]:
    """A seeded permutation's first ceil(val_fraction * n) items as val (at most n - 1), the rest as train."""
    order = np.random.default_rng(seed).permutation(len(items))
    n_val = min(math.ceil(val_fraction * len(items)) if val_fraction > 0 else 0, len(items) - 1)
    pick = lambda idx: Split([items[i] for i in idx], [labels[i] for i in idx])  # noqa: E731
    return {"train": pick(order[n_val:]), "val": pick(order[:n_val])}


def _fingerprint(path: Path) -> list:
    """What changes when a file's data changes: its size, mtime, ctime and inode (ctime and inode
    also catch a same-size replacement whose mtime was kept, as cp -p does). A folder (a zarr store,
    whose own stat does not change when chunks are rewritten) gives its inode and the file count,
    total size and newest mtime and ctime over every file under it."""
    try:
        st = path.stat()
        if not stat.S_ISDIR(st.st_mode):
            return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
        count = total = newest_m = newest_c = 0
        for folder, _, names in os.walk(path, onerror=_reraise):
            for name in names:
                s = os.stat(os.path.join(folder, name))
                count, total = count + 1, total + s.st_size
                newest_m, newest_c = max(newest_m, s.st_mtime_ns), max(newest_c, s.st_ctime_ns)
        return [st.st_ino, count, total, newest_m, newest_c]
    except OSError as e:
        inner = f" ({e.filename})" if e.filename and str(e.filename) != str(path) else ""
        if isinstance(e, FileNotFoundError):
            raise DataError(f"{path}: no such file{inner}; removed or moved after the file list was made") from e
        raise DataError(f"{path}: cannot read{inner} ({type(e).__name__}: {e})") from e


def _reraise(e: OSError):
    raise e


class DecodedCache:
    """Decoded samples (full spectrograms, decompressed tiles) kept as uncompressed .npz files, so
    an expensive decode happens once per file: keyed by the file's path and fingerprint (for a
    folder, over every file under it) and by the decoding parameters; written atomically, so
    concurrent workers are safe. A file gone since the scan is a DataError naming it."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder).expanduser()
        self.folder.mkdir(parents=True, exist_ok=True)

    def key(self, path: str | Path, params: dict) -> Path:
        import hashlib
        import json

        ident = json.dumps([str(Path(path).resolve()), _fingerprint(Path(path)), params], sort_keys=True, default=str)
        return self.folder / f"{hashlib.sha1(ident.encode()).hexdigest()}.npz"

    def get(self, path: str | Path, params: dict, compute) -> dict[str, np.ndarray]:
        """compute() -> dict of arrays, run only when this file and these parameters are not cached yet."""
        from omnimae.io import atomic_path

        f = self.key(path, params)
        if f.is_file():
            with np.load(f, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        arrays = compute()
        with atomic_path(f) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
        return arrays
