"""Linear and kNN probes of a frozen encoder, beside raw pixels and the same encoder with random weights."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from omnimae.data.batch import to_device
from omnimae.config.build import build_data, build_model
from omnimae.checkpoint.format import load_model
from omnimae.errors import ConfigError, DataError
from omnimae.features import check_pools, pool_tokens
from omnimae.hardware import resolve_device
from omnimae.io import atomic_path
from omnimae.model import MaskedAutoencoder

log = logging.getLogger("omnimae")


def latest_checkpoint(root: str | Path = "runs") -> Path:
    found = sorted(Path(root).glob("**/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise ConfigError("checkpoint", f"`latest` found no {root}/**/checkpoints/last.ckpt; run `omnimae pretrain` first or give a path")
    return found[-1]


@torch.no_grad()
def extract_features(
    model: MaskedAutoencoder, dataset, modality: str, pools: list[str], batch_size: int, device: torch.device, desc: str = "features"
) -> dict[str, np.ndarray]:
    """Encoder features of a whole dataset, per pooling, plus the raw inputs under 'pixels'."""
    model.eval().to(device)
    out: dict[str, list] = {p: [] for p in pools} | {"pixels": []}
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    for x in tqdm(loader, desc=desc, leave=False):
        x = to_device(x, device)
        adapter = model.adapters[modality]
        latent = model.forward_encoder(adapter.tokenize(x), adapter, ids_keep=None)  # [B, 1 + N, D]
        for p in pools:
            out[p].append(pool_tokens(latent, p).float().cpu())
        out["pixels"].append(adapter.pixels(x).flatten(1).float().cpu())
    return {k: torch.cat(v).numpy() for k, v in out.items()}


def probe_scores(train: np.ndarray, y_train: np.ndarray, test: np.ndarray, y_test: np.ndarray, k: int) -> dict[str, float]:
    """Accuracy of a logistic regression on standardized features and of cosine kNN."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    linear = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000))
    linear.fit(train, y_train)
    knn = KNeighborsClassifier(n_neighbors=min(k, len(train)), metric="cosine").fit(train, y_train)  # at most all
    return {"linear": float(linear.score(test, y_test)), "knn": float(knn.score(test, y_test))}


def _unlabeled(label) -> bool:
    """An empty cell or -1 (also read as -1.0 in a column with empty cells)."""
    try:
        return bool(np.isnan(float(label))) or float(label) == -1
    except (TypeError, ValueError):  # a class name
        return False


def probe_embeddings(cfg: DictConfig) -> dict[str, Any]:
    """Cross-validated linear and kNN probes of saved embeddings against a labels CSV."""
    # long: the probe's steps (features, linear, kNN, baselines) in the order the table reports them
    import pandas as pd
    import xarray as xr
    from sklearn.model_selection import StratifiedKFold

    if not cfg.labels:
        raise ConfigError("labels", "probing embeddings needs labels=PATH.csv (an id column and a label column)")
    src = Path(cfg.embeddings)
    if not src.exists():
        raise DataError(f"{src}: no such embeddings file")
    ds = xr.open_zarr(src) if src.suffix == ".zarr" else xr.open_dataset(src)
    table = pd.read_csv(cfg.labels, dtype={cfg.id_column: str})  # ids as written: '001' stays '001'
    for col in (cfg.id_column, cfg.label_column):
        if col not in table.columns:
            raise DataError(f"{cfg.labels}: no column {col!r} (columns: {list(table.columns)})")
    ids = [str(v) for v in ds["file"].values]
    label_of = dict(zip(table[cfg.id_column], table[cfg.label_column]))
    missing = [i for i in ids if i not in label_of]
    if missing:
        raise DataError(f"{cfg.labels}: no label for {len(missing)} embedded sample(s), e.g. {missing[:3]}")
    # an empty label or -1 (omnimae's mark for unlabeled) leaves the sample out of the probe
    labeled = [k for k, i in enumerate(ids) if not _unlabeled(label_of[i])]
    if len(labeled) < len(ids):
        print(f"probe: {len(ids) - len(labeled)} of {len(ids)} samples are unlabeled (empty or -1) and left out")
    y = np.asarray([label_of[ids[k]] for k in labeled])
    values, counts = np.unique(y, return_counts=True)
    if len(values) < 2 or counts.min() < cfg.folds:
        raise DataError(f"{cfg.labels}: {cfg.folds}-fold probing needs at least 2 classes of at least {cfg.folds} "
                        f"samples each; got {dict(zip(values.tolist(), counts.tolist()))}")
    folds = StratifiedKFold(n_splits=cfg.folds, shuffle=True, random_state=0)
    results: dict[str, Any] = {"embeddings": str(src), "samples": len(y), "classes": int(len(set(y.tolist())))}
    results["majority"] = float(counts.max() / counts.sum())
    for var in [v for v in ds.data_vars if v.startswith("embedding_") and ds[v].ndim == 2]:
        x = ds[var].values[labeled]
        scores = [probe_scores(x[tr], y[tr], x[te], y[te], min(cfg.knn_k, len(tr) - 1)) for tr, te in folds.split(x, y)]
        results[var] = {k: float(np.mean([s[k] for s in scores])) for k in ("linear", "knn")}
    lines = [f"probe of {src} ({len(y)} samples, {results['classes']} classes, {cfg.folds}-fold CV)",
             f"{'features':<28}{'linear':>10}{'kNN':>10}", f"{'majority class':<28}{results['majority']:>10.3f}{results['majority']:>10.3f}"]
    lines += [f"{k:<28}{v['linear']:>10.3f}{v['knn']:>10.3f}" for k, v in results.items() if k.startswith("embedding_")]
    print("\n".join(lines))
    return results


def probe_ready(splits: dict[str, tuple]) -> bool:
    """Whether the probe can run on a data source's splits (name -> (source, labels)): it needs labeled
    train and val splits (-1 marks an unlabeled sample), two train samples and one val sample at least."""
    train, val = (np.asarray(splits[s][1]) for s in ("train", "val"))
    return len(train) >= 2 and len(val) >= 1 and bool((train >= 0).all() and (val >= 0).all())


def run_probe(cfg: DictConfig) -> dict[str, Any]:
    if cfg.get("embeddings"):
        return probe_embeddings(cfg)
    path = latest_checkpoint() if cfg.checkpoint == "latest" else Path(cfg.checkpoint)
    model, mcfg = load_model(path, trust_checkpoint=cfg.trust_checkpoint)
    modality = cfg.modality or next(iter(model.adapters))
    if modality not in model.adapters:
        raise ConfigError("modality", f"{modality!r} is not in the checkpoint (it has {list(model.adapters)})")
    pools = check_pools(cfg.pool)
    data = build_data(mcfg)[modality]
    sets = {s: data.dataset(s, train=False) for s in ("train", "val")}
    labels = {s: np.asarray(ds.labels) for s, ds in sets.items()}
    if not probe_ready(data.splits()):
        raise DataError(f"{path}: the probe needs labeled train and val splits (an ImageFolder layout or a built-in set); "
                        f"unlabeled: {int((labels['train'] < 0).sum())} of {len(labels['train'])} train, "
                        f"{int((labels['val'] < 0).sum())} of {len(labels['val'])} val")
    device = resolve_device(cfg.device)

    def scores(m: MaskedAutoencoder, name: str) -> dict[str, Any]:
        feats = {s: extract_features(m, ds, modality, pools, cfg.batch_size, device, f"{name} {s}") for s, ds in sets.items()}
        res = {p: probe_scores(feats["train"][p], labels["train"], feats["val"][p], labels["val"], cfg.knn_k) for p in pools}
        return res, feats

    results: dict[str, Any] = {"checkpoint": str(path), "modality": modality, "train": len(labels["train"]), "test": len(labels["val"])}
    results["pretrained"], feats = scores(model, "pretrained")
    results["pixels"] = probe_scores(feats["train"]["pixels"], labels["train"], feats["val"]["pixels"], labels["val"], cfg.knn_k)
    random_runs = []
    for seed in range(cfg.random_seeds):
        torch.manual_seed(seed)
        random_runs.append(scores(build_model(mcfg), f"random {seed}")[0])
    results["random"] = {
        p: {k: {"mean": float(np.mean([r[p][k] for r in random_runs])), "std": float(np.std([r[p][k] for r in random_runs]))} for k in ("linear", "knn")}
        for p in pools
    }
    print(format_table(results, pools))
    out = Path(cfg.output) if cfg.output else path.parent.parent / "probe.json"
    with atomic_path(out) as tmp:
        tmp.write_text(json.dumps(results, indent=2))
    print(f"\nwritten: {out}")
    return results


def format_table(r: dict[str, Any], pools: list[str]) -> str:
    lines = [
        f"probe of {r['checkpoint']} ({r['modality']}; {r['train']} train / {r['test']} test samples)",
        f"{'features':<28}{'linear':>10}{'kNN':>10}",
        f"{'raw pixels':<28}{r['pixels']['linear']:>10.3f}{r['pixels']['knn']:>10.3f}",
    ]
    for p in pools:
        lines.append(f"{'pretrained encoder, ' + p:<28}{r['pretrained'][p]['linear']:>10.3f}{r['pretrained'][p]['knn']:>10.3f}")
        rnd = r["random"][p]
        lines.append(
            f"{'random encoder, ' + p:<28}{rnd['linear']['mean']:>10.3f}{rnd['knn']['mean']:>10.3f}"
            f"   (+- {rnd['linear']['std']:.3f} / {rnd['knn']['std']:.3f} over seeds)"
        )
    return "\n".join(lines)
