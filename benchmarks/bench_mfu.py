"""Model FLOP utilization of omnimae's pretraining step over batch sizes (omnimae alone, no HF).

The step (forward with random masking, backward, fused AdamW) and the peak are measured as in
bench_step.py: FLOPs counted with FlopCounterMode; each round's step timing is divided by the
better of the matmul peaks timed just before and after it, and the median over rounds reported.

    python benchmarks/bench_mfu.py --model vit_base --batches 8 16 32 64
"""
from __future__ import annotations

import argparse
import statistics

import torch

import bench_step
from bench_step import make_models, matmul_peak, paired_mfu, step_flops, stepper, timed


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="vit_base")
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--patch", type=int, default=16)
    p.add_argument("--mask-ratio", type=float, default=0.75)
    p.add_argument("--batches", type=int, nargs="+", default=[8, 16, 32])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (and the bf16 matmul peak)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    bench_step.DEVICE = torch.device(args.device)
    torch.manual_seed(0)
    n = (args.img_size // args.patch) ** 2
    ours, _ = make_models(args.model, args.img_size, args.patch, args.mask_ratio)
    ours = ours.to(bench_step.DEVICE)
    dtype = torch.bfloat16 if args.bf16 else torch.float32
    results = {"model": args.model, "bf16": args.bf16, "device": args.device, "threads": torch.get_num_threads(),
               "cpu": bench_step.cpu_name(), "batches": {}}
    for batch in args.batches:
        x = torch.randn(batch, 3, args.img_size, args.img_size, device=bench_step.DEVICE)
        step = stepper(ours, "omnimae", x, n, args.bf16)
        step()  # warm-up: allocations and optimizer state
        flops = step_flops(step)
        times, peaks = [], [matmul_peak(dtype)]
        for _ in range(args.rounds):  # peak, step, peak, step, ..., peak: each step between two peaks
            times.append(timed(step, 1))
            peaks.append(matmul_peak(dtype))
        m = paired_mfu(flops, times, peaks)
        t = statistics.median(times)
        results["batches"][batch] = {"s_per_step": t, "s_per_round": times, "step_flops": flops} | m
        print(f"batch {batch}: {t:.2f} s/step, {flops / 1e9:.0f} GFLOP, {flops / t / 1e9:.0f} GFLOP/s = "
              f"{100 * m['mfu']:.1f}% (range {100 * m['mfu_min']:.1f}-{100 * m['mfu_max']:.1f} over {args.rounds} "
              f"rounds) of the matmul peak beside each round (median {m['peak_flops_per_s'] / 1e9:.0f} GFLOP/s)",
              flush=True)
    bench_step.write(results, args.json)


if __name__ == "__main__":
    main()
