"""Intra-op threads against a busy neighbour: the digits demo and a ViT-S step at 1 and 2 threads,
on an idle machine and beside competing busy processes that this script starts itself.

Each measurement runs in a fresh process (torch's thread pool is set once per process); the busy
neighbours are single-threaded Python loops that inherit this process's CPU affinity, so
`taskset -c 0,1 python benchmarks/bench_threads.py` measures a 2-core machine on a larger one.

    python benchmarks/bench_threads.py --demo-steps 200 --rounds 5 --json benchmarks/cpu_threads.json
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

BUSY = "while True: pass"


def child_demo(steps: int, threads: int) -> dict:
    """The digits demo (omnimae pretrain's default) for `steps` steps; steps/s after the first few."""
    from lightning.pytorch.callbacks import Callback

    from omnimae.config.compose import compose
    from omnimae.train.pretrain import pretrain

    class StepClock(Callback):
        def __init__(self) -> None:
            self.times: list[float] = []

        def on_train_batch_end(self, *args) -> None:
            self.times.append(time.perf_counter())

    clock = StepClock()
    with tempfile.TemporaryDirectory() as run_dir:
        cfg = compose("pretrain", [f"trainer.max_steps={steps}", f"trainer.threads={threads}", f"run_dir={run_dir}",
                                   "trainer.enable_progress_bar=false"])
        result = pretrain(cfg, extra_callbacks=[clock])
    skip = min(5, len(clock.times) // 4)  # the first steps build kernels and fill caches
    timed = clock.times[skip:]
    return {"steps": result["steps"], "threads_summary": result["threads"],
            "steps_per_s": (len(timed) - 1) / (timed[-1] - timed[0]) if len(timed) > 1 else float("nan")}


def child_step(threads: int, rounds: int, model: str, img: int, patch: int, batch: int) -> dict:
    """omnimae's pretraining step (bench_step.py's, fp32) alone: median seconds per step over rounds."""
    import statistics

    import torch

    from bench_step import make_models, stepper, timed

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    ours, _ = make_models(model, img, patch, 0.75)
    x = torch.randn(batch, 3, img, img)
    step = stepper(ours, "omnimae", x, (img // patch) ** 2, bf16=False)
    step(), step()  # warm-up
    seconds = [timed(step, 1) for _ in range(rounds)]
    return {"steps_per_s": 1 / statistics.median(seconds), "s_per_step": seconds}


@contextmanager
def neighbours(count: int):
    """`count` busy single-threaded processes beside the measurement (ours: ended by their pids)."""
    procs = [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(count)]
    try:
        time.sleep(0.5 if procs else 0)  # let them start spinning
        yield
    finally:
        for p in procs:
            p.kill()
            p.wait()


def measure(kind: str, threads: int, args) -> dict:
    """Run one child process; its figures plus the wall time the parent saw (start-up included)."""
    cmd = [sys.executable, __file__, "--child", kind, "--threads-child", str(threads)] + args.passthrough
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{kind} at {threads} threads failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1]) | {"wall_s": wall}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--demo-steps", type=int, default=200, help="digits demo steps per run (0: skip the demo)")
    p.add_argument("--rounds", type=int, default=5, help="timed ViT-S steps per run (0: skip the ViT-S step)")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--busy", type=int, default=1, help="busy neighbour processes in the loaded runs")
    p.add_argument("--model", default="vit_small")
    p.add_argument("--img-size", type=int, default=64)
    p.add_argument("--patch", type=int, default=8)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--json", default=None, help="also write the results here")
    p.add_argument("--child", choices=["demo", "step"], help=argparse.SUPPRESS)
    p.add_argument("--threads-child", type=int, default=1, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child == "demo":
        return print(json.dumps(child_demo(args.demo_steps, args.threads_child)))
    if args.child == "step":
        return print(json.dumps(child_step(args.threads_child, args.rounds, args.model, args.img_size, args.patch, args.batch)))
    args.passthrough = ["--demo-steps", str(args.demo_steps), "--rounds", str(args.rounds), "--model", args.model,
                        "--img-size", str(args.img_size), "--patch", str(args.patch), "--batch", str(args.batch)]
    from omnimae.hardware import available_cpus, cpu_name

    cpus = available_cpus()
    print(f"CPU: {cpu_name()}, {cpus} CPUs in this process's affinity; loaded = {args.busy} busy process(es)", flush=True)
    kinds = [k for k, on in (("demo", args.demo_steps), ("step", args.rounds)) if on]
    rows = []
    for load in ("idle", "loaded"):
        with neighbours(args.busy if load == "loaded" else 0):
            for kind in kinds:
                for threads in args.threads:
                    r = measure(kind, threads, args) | {"kind": kind, "threads": threads, "load": load}
                    rows.append(r)
                    print(f"  {load:<6} {kind:<5} {threads} threads: {r['steps_per_s']:7.2f} steps/s, "
                          f"wall {r['wall_s']:6.1f} s", flush=True)
    what = {"demo": f"digits demo, {args.demo_steps} steps", "step": f"{args.model} step, {args.img_size} px / {args.patch}, batch {args.batch}"}
    print("\n| workload | threads | idle steps/s | idle wall s | loaded steps/s | loaded wall s |\n|---|---|---|---|---|---|")
    for kind in kinds:
        for threads in args.threads:
            idle, loaded = (next(r for r in rows if (r["kind"], r["threads"], r["load"]) == (kind, threads, load))
                            for load in ("idle", "loaded"))
            print(f"| {what[kind]} | {threads} | {idle['steps_per_s']:.2f} | {idle['wall_s']:.1f} | "
                  f"{loaded['steps_per_s']:.2f} | {loaded['wall_s']:.1f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"cpu": cpu_name(), "cpus": cpus, "busy": args.busy, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
