"""`omnimae embed`: per-file embeddings of a frozen encoder, saved as an xarray dataset."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from omnimae.data.batch import to_device
from omnimae.config.build import build_data, data_over
from omnimae.checkpoint.format import load_model
from omnimae.errors import ConfigError, DataError
from omnimae.io import atomic_path, refuse_overwrite
from omnimae.features import check_pools, pool_tokens
from omnimae.hardware import resolve_device
from omnimae.probe import latest_checkpoint
from omnimae.data.samplers import GroupedBatchSampler


def _names(source, split: str, root: str | None, count: int) -> tuple[list[str], list[str]]:
    """(sample names, source files) of a split of `count` samples: relative paths, manifest ids, or
    split[i] for in-memory sets and drawn samples (time-series windows, whose source is None)."""
    if isinstance(source, (list, tuple)) and source and isinstance(source[0], (str, Path)):
        rel = [Path(p).relative_to(root) if root and Path(p).is_relative_to(root) else Path(p) for p in source]
        # the root itself (one file, or one zarr image) is named by its name, not "."
        return [str(r) if r.parts else Path(p).name for r, p in zip(rel, source)], [str(p) for p in source]
    if isinstance(source, (list, tuple)) and source and hasattr(source[0], "files"):  # manifest rows
        return [str(r.id) for r in source], [";".join(map(str, dict(r.files).values())) for r in source]
    names = [f"{split}[{i}]" for i in range(count)]
    return names, names


def _loader(ds, batch_size: int) -> tuple[DataLoader, list[int], list]:
    """A loader over every sample once, in order; the sample order it yields; each batch's group.

    Datasets whose samples differ in token count (microscopy images with different channel sets)
    say so in `ds.groups`: their batches hold one group each, so the order is by group."""
    groups = ds.groups
    if groups is None:
        loader = DataLoader(ds, batch_size=batch_size)
        return loader, list(range(len(ds))), [None] * len(loader)
    sampler = GroupedBatchSampler(list(groups), batch_size, seed=0, shuffle=False, drop_last=False)
    batches = [[i for i, _seed in batch] for batch in sampler]
    return DataLoader(ds, batch_sampler=sampler), [i for b in batches for i in b], [groups[b[0]] for b in batches]


def data_root(cfg: DictConfig) -> tuple[str, Path] | None:
    """The data to embed as the user named it: (the key as typed, data_root or data.root; the path), or None
    for the data the checkpoint was trained on. A path that does not exist fails naming that key."""
    given = [(k, v) for k, v in (("data_root", cfg.get("data_root")), ("data.root", OmegaConf.select(cfg, "data.root")))
             if v not in (None, "")]
    if len(given) > 1:
        raise ConfigError("data_root", f"given twice, as data_root={given[0][1]} and data.root={given[1][1]}: keep one")
    if not given:
        return None
    key, value = given[0]
    path = Path(str(value)).expanduser()
    if not path.exists():
        raise ConfigError(key, f"{value}: no such file or folder (embed takes a folder of the modality's files, or one such file)")
    return key, path


def _splits(data, given: tuple[str, Path] | None) -> dict:
    """The source's splits (every file listed and checked). Its errors about the root say data.root:
    they name it as the user typed it."""
    try:
        return data.splits()
    except DataError as e:
        if given is not None and str(e).startswith(f"data.root={given[1]}"):
            raise DataError(given[0] + str(e)[len("data.root"):]) from None
        raise


def run_embed(cfg: DictConfig):
    """`omnimae embed`: one row per file (or sample) of the checkpoint's frozen encoder features, to .nc or .zarr."""
    path = latest_checkpoint() if cfg.checkpoint == "latest" else Path(cfg.checkpoint)
    out = Path(cfg.output)
    if out.suffix not in (".nc", ".zarr"):
        raise ConfigError("output", f"must end in .nc (netCDF) or .zarr, got {out.name!r}")
    given = data_root(cfg)  # before the checkpoint is read: a mistyped path fails at once
    refuse_overwrite(out, path, given and given[1], overwrite=cfg.overwrite)
    model, mcfg = load_model(path, trust_checkpoint=cfg.trust_checkpoint)
    modality = cfg.modality or next(iter(model.adapters))
    if modality not in model.adapters:
        raise ConfigError("modality", f"{modality!r} is not in the checkpoint (it has {list(model.adapters)})")
    pools = check_pools(cfg.pool)
    # a folder, or one file: the source built over that alone; else the data the checkpoint was trained on
    data = data_over(mcfg, modality, given[1]) if given is not None else build_data(mcfg)[modality]
    model.eval().to(resolve_device(cfg.device))
    rows = _embed_splits(model, modality, data, _splits(data, given), pools, cfg.batch_size,
                         str(given[1]) if given else data.root)
    ds_out = _as_dataset(rows, pools, model.embed_dim, attrs={"checkpoint": str(path), "modality": modality})
    _write(ds_out, out)
    print(f"embedded {len(rows['names'])} samples of {modality} ({', '.join(pools)} pooling, dim {model.embed_dim}) -> {out}")
    return ds_out


@torch.no_grad()
def _embed_splits(model, modality: str, data, listed: dict, pools: list[str], batch_size: int, root) -> dict:
    """Features of every sample of every split, in file order, with their names, files, splits and labels."""
    adapter, device = model.adapters[modality], next(model.parameters()).device
    rows: dict[str, list] = {"names": [], "files": [], "splits": [], "labels": [], "groups": []}
    rows.update({p: [] for p in pools})
    for split, (source, split_labels) in listed.items():
        if not len(split_labels):
            continue
        ds = data.dataset(split, train=False)
        ds.stand_ins = False  # a file that fails now must fail, not lend its row another file's embedding
        loader, order, batch_groups = _loader(ds, batch_size)
        feats: dict[str, list] = {p: [] for p in pools}
        groups: list[dict[str, np.ndarray]] = []  # per-sample features by group name (e.g. per channel)
        for x, group in zip(tqdm(loader, desc=f"embed {split}", leave=False), batch_groups):
            patches = adapter.tokenize(to_device(x, device))
            latent = model.forward_encoder(patches, adapter, ids_keep=None)  # [B, 1 + N, D]
            for p in pools:
                feats[p].append(pool_tokens(latent, p).float().cpu())
            by_name = {k: v.float().cpu().numpy() for k, v in adapter.group_features(latent[:, 1:], patches, group).items()}
            if by_name:  # e.g. per channel, named as the batch's files name their channels
                groups += [{k: v[i] for k, v in by_name.items()} for i in range(latent.shape[0])]
        back = torch.as_tensor(np.argsort(order))  # batches came grouped: put the samples back in file order
        for p in pools:
            rows[p].append(torch.cat(feats[p])[back])
        rows["groups"] += [groups[i] for i in back.tolist()] if groups else []
        names, files = _names(source, split, root, len(ds))
        rows["names"] += names
        rows["files"] += files
        rows["splits"] += [split] * len(ds)
        rows["labels"] += list(split_labels)
    return rows


def _as_dataset(rows: dict, pools: list[str], dim: int, attrs: dict):
    """The rows as an xarray Dataset: embedding_<pool> (sample, dim), and embedding_channel (sample, channel,
    dim) where the adapter has groups, NaN where a sample lacks the channel."""
    import xarray as xr

    ds_out = xr.Dataset(
        {f"embedding_{p}": (("sample", "dim"), torch.cat(rows[p]).numpy()) for p in pools},
        coords={"sample": np.arange(len(rows["names"])), "file": ("sample", rows["names"]),
                "source": ("sample", rows["files"]), "split": ("sample", rows["splits"]),
                "label": ("sample", np.asarray(rows["labels"], dtype=np.int64))},
        attrs=attrs,
    )
    groups = rows["groups"]
    if groups:
        group_names = sorted({k for g in groups for k in g})
        table = np.full((len(groups), len(group_names), dim), np.nan, dtype=np.float32)
        for i, g in enumerate(groups):
            for j, name in enumerate(group_names):
                if name in g:
                    table[i, j] = g[name]
        ds_out["embedding_channel"] = (("sample", "channel", "dim"), table)
        ds_out = ds_out.assign_coords(channel=group_names)
    return ds_out


def _write(ds_out, out: Path) -> None:
    """netCDF through a temporary file; a zarr store (a folder) written beside the target, then swapped in."""
    if out.suffix == ".nc":
        with atomic_path(out) as tmp:
            ds_out.to_netcdf(tmp)
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        ds_out.to_zarr(tmp / "store.zarr", zarr_format=2)  # v2: string coordinates have a stable spec
        if out.exists():  # (overwrite=true) the old store moves aside first, so one of the two is always whole
            out.rename(tmp / "old.zarr")
        (tmp / "store.zarr").rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
