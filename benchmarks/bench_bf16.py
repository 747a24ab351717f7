"""bf16 against fp32 matmul speed on this CPU, as `trainer.precision=auto` measures it, over several
shapes and thread counts, beside what the CPU's flags report. Nothing is cached.

    python benchmarks/bench_bf16.py --threads 1 2
"""
from __future__ import annotations

import argparse

import torch

from omnimae import hardware


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, nargs="+", default=[torch.get_num_threads()])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--embed-dims", type=int, nargs="+", default=[192, 384, 768, 1024],
                   help="model widths: each gives the MLP product auto times (see hardware.gemm_shape)")
    args = p.parse_args()
    flags = hardware.cpu_has_bf16_instructions()
    print(f"CPU: {hardware.cpu_name()} ({torch.backends.cpu.get_cpu_capability()}); bf16 instructions by its flags: "
          f"{'unknown' if flags is None else flags}; torch {torch.__version__}")
    shapes = [(128, 128, 128), (2048, 2048, 2048)] + [hardware.gemm_shape(d) for d in args.embed_dims]
    if flags is False:  # emulated bf16 takes about a minute per large product
        shapes = shapes[:1]
        print("bf16 is emulated here: only the smallest product is timed")
    print("\n| GEMM (M x K x N) | threads | fp32 time / bf16 time (median) | auto would take |\n|---|---|---|---|")
    for threads in args.threads:
        torch.set_num_threads(threads)
        for shape in shapes:
            speedup = hardware.measure_bf16_speedup(shape, rounds=args.rounds)
            pick = "bf16-mixed" if speedup > hardware.BF16_FAST_ABOVE else "32-true"
            print(f"| {'x'.join(map(str, shape))} | {threads} | {speedup:.2f} | {pick} |", flush=True)


if __name__ == "__main__":
    main()
