"""What the machine can do fast: the precision a run should use on it.

bf16 autocast is a large win where the hardware has bf16 arithmetic (CUDA GPUs from Ampere on;
x86 CPUs with AVX512-BF16 or AMX) and a disaster where it has not: on an AVX2-only CPU torch
falls back to scalar bf16 kernels, and a ViT-B step (batch 8) took 207 s instead of 3.7 s in fp32. So
`trainer.precision=auto` picks bf16 only where it is fast, and an explicit bf16 precision on
such a CPU is refused before training starts.
"""
from __future__ import annotations

import functools
import platform
import time

import torch

from omnimae.errors import ConfigError

BF16_PRECISIONS = ("bf16-mixed", "bf16-true", "bf16")


@functools.cache
def cpu_bf16_speedup() -> float:
    """fp32 time / bf16 time of a small matmul on this CPU (> 1: bf16 is faster; << 1: emulated).

    x86 CPUs answer from their feature flags (AVX512-BF16 or AMX: 2.0, else 0.01) without
    timing anything; other CPUs (aarch64 with or without bf16 extensions) are measured once.
    """
    cpu = getattr(torch, "cpu", None)
    flags = [getattr(cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    if platform.machine().lower() in ("x86_64", "amd64") and all(callable(f) for f in flags):
        return 2.0 if any(f() for f in flags) else 0.01
    return _measured_speedup()


def _measured_speedup(n: int = 128, reps: int = 3) -> float:
    times = {}
    for dtype in (torch.float32, torch.bfloat16):
        a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
        a @ b
        start = time.perf_counter()
        for _ in range(reps):
            a @ b
        times[dtype] = time.perf_counter() - start
    return times[torch.float32] / max(times[torch.bfloat16], 1e-9)


def cuda_bf16_native() -> bool:
    """bf16 arithmetic in the GPU's hardware (Ampere on): torch counts emulated bf16 as supported unless
    told not to (`including_emulation`, torch 2.4 on); a torch without that argument: compute capability 8."""
    try:
        return torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:
        return torch.cuda.get_device_capability() >= (8, 0)


def runs_on_cpu(accelerator: str | None) -> bool:
    accelerator = str(accelerator or "auto").lower()
    return accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())


def resolve_precision(precision, accelerator: str | None, key: str = "trainer.precision"):
    """`auto` -> the fastest precision that trains well here; an explicit bf16 on a CPU without
    bf16 arithmetic -> ConfigError naming the key. Anything else passes through unchanged."""
    on_cpu = runs_on_cpu(accelerator)
    if str(precision) == "auto":
        if on_cpu:
            return "bf16-mixed" if cpu_bf16_speedup() > 1.2 else "32-true"
        if torch.cuda.is_available() and cuda_bf16_native():
            return "bf16-mixed"
        return "32-true"
    if on_cpu and str(precision) in BF16_PRECISIONS and cpu_bf16_speedup() < 0.5:
        raise ConfigError(
            key,
            f"{precision} on this CPU ({platform.processor() or platform.machine()}) has no bf16 arithmetic "
            "(no AVX512-BF16 or AMX): torch emulates it, about 100x slower than fp32. "
            "Use trainer.precision=32-true, or auto to take bf16 only where it is fast.",
        )
    return precision
