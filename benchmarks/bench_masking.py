"""Each masking strategy's cost per batch against the pretraining step that uses it.

ViT-S/16 at 224 px (14 x 14 tokens), batch 32, mask 0.75 by default. The step (forward, backward,
AdamW) and every strategy's mask for the same batch are timed in one process, rounds interleaved,
so each round gives one ratio (mask / step) and drift in the machine's speed cancels.

    python benchmarks/bench_masking.py --rounds 3 [--device cuda] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from omnimae.config.build import build_model
from omnimae.config.compose import compose


def timed(fn, device: torch.device, reps: int) -> float:
    """Median seconds of fn over reps runs (after one warm-up), device work included."""
    fn()
    times = []
    for _ in range(reps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="vit_small")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--ratio", type=float, default=0.75)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--mask-reps", type=int, default=20)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    device = torch.device(args.device)
    cfg = compose("pretrain", [f"model={args.model}", "experiment=none", f"modalities.image.adapter.mask_ratio={args.ratio}"])
    model = build_model(cfg).to(device).train()
    adapter = model.adapters["image"]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = adapter.example_input(args.batch, torch.Generator().manual_seed(0)).to(device)
    patches = adapter.tokenize(x)
    gen = torch.Generator(device=device).manual_seed(0)

    def step() -> None:
        loss = model.forward_modality(x, "image", generator=gen).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    def masker(name: str):
        def run() -> None:
            adapter.masking = name
            adapter.mask(patches, generator=gen)
        return run

    strategies = list(adapter.maskings)
    ratios: dict[str, list[float]] = {s: [] for s in strategies}
    mask_ms: dict[str, list[float]] = {s: [] for s in strategies}
    step_ms = []
    for _ in range(args.rounds):
        adapter.masking = "random"
        t_step = timed(step, device, 1)
        step_ms.append(1e3 * t_step)
        for s in strategies:
            t = timed(masker(s), device, args.mask_reps)
            mask_ms[s].append(1e3 * t)
            ratios[s].append(t / t_step)
    result = {
        "model": args.model, "batch": args.batch, "mask_ratio": args.ratio, "device": str(device),
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "step_ms": statistics.median(step_ms),
        "strategies": {s: {"mask_ms": statistics.median(mask_ms[s]), "share_of_step": statistics.median(ratios[s])}
                       for s in strategies},
    }
    print(f"{args.model} batch {args.batch} on {device}: step {result['step_ms']:.1f} ms (median of {args.rounds})")
    for s, r in result["strategies"].items():
        print(f"  {s:<8} {r['mask_ms']:8.3f} ms per batch  {100 * r['share_of_step']:7.3f}% of the step")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
