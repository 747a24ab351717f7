"""What `omnimae serve quantize=int8` costs in quality: the linear and kNN probes of int8 encoder features
against float32 ones on the checkpoint's own labeled data (the digits demo's 1,347 / 450 split), the
cosine similarity of the two embeddings of every sample, and the encoder's time per batch.

    python benchmarks/bench_int8.py runs/digits/<run>/checkpoints/last.ckpt --json benchmarks/int8_digits.json
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from omnimae.checkpoint.format import load_model
from omnimae.config.build import build_data
from omnimae.probe import extract_features, probe_scores
from omnimae.serve.engine import quantize_encoder


def features(model, sets: dict, modality: str) -> dict:
    return {s: extract_features(model, ds, modality, ["cls", "mean"], 256, torch.device("cpu")) for s, ds in sets.items()}


def seconds_per_batch(model, modality: str, batch: int = 64, repeats: int = 20) -> float:
    adapter = model.adapters[modality]
    x = adapter.example_input(batch, torch.Generator().manual_seed(0))
    with torch.no_grad():
        model.forward_encoder(adapter.tokenize(x), adapter, ids_keep=None)  # warm-up
        start = time.perf_counter()
        for _ in range(repeats):
            model.forward_encoder(adapter.tokenize(x), adapter, ids_keep=None)
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    model, cfg = load_model(args.checkpoint)
    modality = next(iter(model.adapters))
    data = build_data(cfg)[modality]
    sets = {s: data.dataset(s, train=False) for s in ("train", "val")}
    labels = {s: np.asarray(ds.labels) for s, ds in sets.items()}
    fp32 = features(model.eval(), sets, modality)
    fp32_time = seconds_per_batch(model, modality)
    int8_model = quantize_encoder(model)  # in place: the float features are already taken
    int8 = features(int8_model, sets, modality)
    out = {"checkpoint": args.checkpoint, "samples": {s: len(v) for s, v in labels.items()},
           "torch": torch.__version__, "threads": torch.get_num_threads()}
    for pool in ("mean", "cls"):
        for name, feats in (("fp32", fp32), ("int8", int8)):
            out[f"{name}_{pool}"] = probe_scores(feats["train"][pool], labels["train"], feats["val"][pool], labels["val"], k=20)
        a, b = (torch.from_numpy(np.concatenate([f[s][pool] for s in ("train", "val")])) for f in (fp32, int8))
        cosine = torch.nn.functional.cosine_similarity(a, b).numpy()
        out[f"cosine_{pool}"] = {"mean": float(cosine.mean()), "min": float(cosine.min()), "p01": float(np.quantile(cosine, 0.01))}
    out["encoder_seconds_per_64"] = {"fp32": fp32_time, "int8": seconds_per_batch(int8_model, modality)}
    print(json.dumps(out, indent=1))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=1)


if __name__ == "__main__":
    main()
