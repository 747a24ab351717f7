"""What the machine runs fast: the precision and the intra-op thread count a run should use on it.

Precision. Feature flags do not tell whether bf16 pays on a CPU: an Intel Xeon that reports
AVX512-BF16 (without AMX) ran a 2048x2048 bf16 matmul at 48 GFLOP/s against 98-113 in fp32, and a
ViT-S step at 0.91 steps/s against 1.24. So `trainer.precision=auto` on a CPU times a GEMM shaped
like the model's MLP, fp32 against bf16, and keeps the answer in a small JSON file under the cache
folder (per CPU, torch version, thread count and shape). Only a CPU with no bf16 instructions at
all (x86 without AVX512-BF16 or AMX: torch emulates bf16 there, a ViT-B step took 207 s instead of
3.7 s) is answered from its flags, since timing emulated bf16 takes seconds. OMNIMAE_CPU_BF16=1/0
overrides both.

Threads. Two intra-op threads on two cores collapse beside any other busy process (a vit_tiny step:
0.54 steps/s with 2 threads, 28 with 1), and data-loader workers compete with them the same way.
`trainer.threads=auto` takes the CPUs this process may use, shared among the ranks of this node,
less the loader workers, and a single thread for small models.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import statistics
import time
from dataclasses import dataclass
from typing import Any, Iterator

import torch

from omnimae.errors import ConfigError
from omnimae.checkpoint.hub import cache_folder
from omnimae.io import atomic_path

log = logging.getLogger("omnimae")

BF16_PRECISIONS = ("bf16-mixed", "bf16-true", "bf16")
OVERRIDE_ENV = "OMNIMAE_CPU_BF16"
CACHE_FILE = "cpu_bf16.json"
# auto takes bf16 only with a margin: autocast adds casts around every GEMM, and the GEMMs are not the whole step
BF16_FAST_ABOVE = 1.2
# a ratio this low is scalar emulation (about 0.01 on AVX2); native but slow bf16 measured 0.2-0.5
EMULATED_BELOW = 0.1
GEMM_ROWS = 1024  # tokens x batch of a step are in the thousands; 1024 rows keep the timing short
GEMM_FLOP_BUDGET = 1.25e9  # about 12 ms per fp32 product at 100 GFLOP/s: 5 rounds stay well under a second
# Models narrower than this train on one thread: their ops are too small to share between two, and
# a second thread that waits for a busy core stalls every op. On 2 cores beside one busy process a
# vit_tiny step (embed 64) ran at 28 steps/s on one thread and 0.54 on two, the digits demo 200 steps
# in 32-34 s against 123-231 s, while idle two threads ran the demo at only about 15 steps/s.
# ViT-S (384) has GEMMs large enough to share; benchmarks/bench_threads.py measures both sides.
SMALL_MODEL_DIM = 256


@dataclass(frozen=True)
class Choice:
    """A setting chosen for this machine, with the reason the run's summary prints."""

    value: Any
    reason: str

    def __str__(self) -> str:
        return f"{self.value} ({self.reason})"


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_has_bf16_instructions() -> bool | None:
    """False on an x86 CPU without AVX512-BF16 and AMX (bf16 is emulated there); None where flags cannot tell."""
    cpu = getattr(torch, "cpu", None)
    flags = [getattr(cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    if platform.machine().lower() in ("x86_64", "amd64") and all(callable(f) for f in flags):
        return any(f() for f in flags)
    return None


def gemm_shape(embed_dim: int, mlp_ratio: float = 4.0) -> tuple[int, int, int]:
    """(rows, embed_dim, mlp hidden): the model's MLP product, rows (a multiple of 64) cut so one product
    stays cheap to time: 1024x384x1536 for ViT-S, 256x768x3072 for ViT-B."""
    hidden = int(embed_dim * mlp_ratio)
    rows = int(min(GEMM_ROWS, max(64, GEMM_FLOP_BUDGET // (2 * embed_dim * hidden) // 64 * 64)))
    return rows, embed_dim, hidden


def time_gemm(a: torch.Tensor, b: torch.Tensor) -> float:
    """Seconds per a @ b (tests replace this function to inject timings)."""
    reps = max(1, int(1e8 // (2 * a.shape[0] * a.shape[1] * b.shape[1])))  # small products: repeat past timer jitter
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    return (time.perf_counter() - start) / reps


def measure_bf16_speedup(shape: tuple[int, int, int], rounds: int = 5) -> float:
    """fp32 time / bf16 time of an [M, K] @ [K, N] product (> 1: bf16 is faster), median over rounds.

    Each round times fp32, bf16, bf16, fp32 and gives one ratio, so drift in the machine's speed
    cancels; a first round that finds emulated bf16 ends the measurement (more rounds cost seconds).
    """
    m, k, n = shape
    operands = {dtype: (torch.randn(m, k).to(dtype), torch.randn(k, n).to(dtype)) for dtype in (torch.float32, torch.bfloat16)}
    fp32, bf16 = operands[torch.float32], operands[torch.bfloat16]
    ratios = []
    with torch.no_grad():
        time_gemm(*fp32), time_gemm(*bf16)  # warm-up: first calls pick kernels and allocate
        for _ in range(rounds):
            f1, b1, b2, f2 = time_gemm(*fp32), time_gemm(*bf16), time_gemm(*bf16), time_gemm(*fp32)
            ratios.append((f1 + f2) / max(b1 + b2, 1e-12))
            if ratios[0] < EMULATED_BELOW:
                break
    return statistics.median(ratios)


@contextlib.contextmanager
def _threads(n: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _read_cache(path) -> dict:
    try:
        entries = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        log.warning("%s: unreadable (%s); measuring again and rewriting it", path, e)
        return {}
    if not isinstance(entries, dict):
        log.warning("%s: not a table of measurements; measuring again and rewriting it", path)
        return {}
    return entries


def _cached_speedup(entries: dict, key: str) -> float | None:
    entry = entries.get(key)
    value = entry.get("speedup") if isinstance(entry, dict) else None
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0 else None


def _write_cache(path, entries: dict) -> None:
    try:
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(entries, indent=1, sort_keys=True))
    except OSError as e:  # a read-only home must not stop training: the next run measures again
        log.warning("%s: could not store the bf16 measurement (%s)", path, e)


@dataclass(frozen=True)
class CpuBf16:
    """Whether bf16 autocast pays on this CPU (`fast`), whether bf16 is emulated (`emulated`), and why."""

    fast: bool
    emulated: bool
    reason: str


def cpu_bf16(shape: tuple[int, int, int] = (GEMM_ROWS, 384, 1536), threads: int | None = None) -> CpuBf16:
    """The bf16 verdict for this CPU: $OMNIMAE_CPU_BF16, else the flags' refusal, else a cached or new measurement."""
    override = os.environ.get(OVERRIDE_ENV)
    if override is not None:
        if override.strip() not in ("0", "1"):
            raise ConfigError(OVERRIDE_ENV, f"expected 1 (bf16 is fast here) or 0 (it is not), got {override!r}")
        fast = override.strip() == "1"
        return CpuBf16(fast, False, f"{OVERRIDE_ENV}={override.strip()}")
    cpu = cpu_name()
    if cpu_has_bf16_instructions() is False:
        return CpuBf16(False, True, f"{cpu} has no bf16 instructions (no AVX512-BF16 or AMX): torch emulates bf16")
    threads = threads or torch.get_num_threads()
    m, k, n = shape
    key = f"{cpu} | torch {torch.__version__} | {threads} threads | {m}x{k}x{n}"
    path = cache_folder() / CACHE_FILE
    entries = _read_cache(path)
    speedup = _cached_speedup(entries, key)
    where = f"cached in {path}"
    if speedup is None:
        with _threads(threads):
            speedup = measure_bf16_speedup(shape)
        entries[key] = {"speedup": speedup, "measured": time.strftime("%Y-%m-%d %H:%M:%S")}
        _write_cache(path, entries)
        where = f"stored in {path}"
    reason = f"bf16 measured {speedup:.2f}x fp32 on {cpu}, {m}x{k}x{n} GEMM, {threads} thread(s); {where}"
    return CpuBf16(speedup > BF16_FAST_ABOVE, speedup < EMULATED_BELOW, reason)


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


def choose_precision(precision, accelerator: str | None, shape: tuple[int, int, int] = (GEMM_ROWS, 384, 1536),
                     threads: int | None = None, key: str = "trainer.precision") -> Choice:
    """`auto` -> the fastest precision that trains well here; an explicit bf16 on a CPU that emulates
    bf16 -> ConfigError naming the key. Anything else passes through unchanged."""
    on_cpu = runs_on_cpu(accelerator)
    if str(precision) == "auto":
        if on_cpu:
            verdict = cpu_bf16(shape, threads)
            return Choice("bf16-mixed" if verdict.fast else "32-true", f"auto: {verdict.reason}")
        if torch.cuda.is_available() and cuda_bf16_native():
            return Choice("bf16-mixed", f"auto: {torch.cuda.get_device_name()} has bf16 arithmetic")
        return Choice("32-true", "auto: no GPU with bf16 arithmetic")
    if on_cpu and str(precision) in BF16_PRECISIONS:
        verdict = cpu_bf16(shape, threads)
        if verdict.emulated:
            raise ConfigError(
                key,
                f"{precision} on this CPU is emulated ({verdict.reason}), about 100x slower than fp32. "
                f"Use trainer.precision=32-true, or auto to take bf16 only where it is fast ({OVERRIDE_ENV}=1 forces it)",
            )
        if not verdict.fast:
            log.warning("trainer.precision=%s: bf16 is not faster than fp32 here (%s)", precision, verdict.reason)
    return Choice(precision, "as configured")


def local_processes(devices: Any, on_cpu: bool) -> int:
    """How many training processes share this node's CPUs: torchrun's LOCAL_WORLD_SIZE, else trainer.devices."""
    env = os.environ.get("LOCAL_WORLD_SIZE", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    if isinstance(devices, str):
        devices = int(devices) if devices.lstrip("-").isdigit() else devices.split(",") if "," in devices else "auto"
    if isinstance(devices, int) and not isinstance(devices, bool) and devices > 0:
        return devices
    if not isinstance(devices, (int, str)) and devices is not None:  # a list of device indices
        return max(1, len(list(devices)))
    # auto (or -1): Lightning runs one CPU process, or one per visible GPU
    return 1 if on_cpu else max(1, torch.cuda.device_count())


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask, which containers and taskset narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # no affinity masks (macOS, Windows)
        return os.cpu_count() or 1


def choose_threads(setting: Any, *, embed_dim: int, loader_workers: int, processes: int = 1, on_cpu: bool = True,
                   cpus: int | None = None, key: str = "trainer.threads") -> Choice:
    """trainer.threads: a positive integer as given; `auto`: this process's share of the CPUs, less
    its data-loader workers, at least 1; one thread for a small model computing on the CPU."""
    if str(setting) != "auto":
        if isinstance(setting, bool) or not isinstance(setting, int) or setting < 1:
            raise ConfigError(key, f"expected auto or a positive integer, got {setting!r}")
        return Choice(setting, "as configured")
    cpus = cpus or available_cpus()
    share = max(1, cpus // max(1, processes))
    n = max(1, share - loader_workers)
    parts = [f"{cpus} CPUs"] + ([f"{processes} processes"] if processes > 1 else []) + [f"{loader_workers} loader workers"]
    if on_cpu and embed_dim < SMALL_MODEL_DIM and n > 1:
        n = 1
        parts.append(f"small model: embed_dim {embed_dim} < {SMALL_MODEL_DIM}")
    return Choice(n, "auto: " + ", ".join(parts))


def apply_threads(n: int) -> None:
    """Use n intra-op threads in this process and in the ranks Lightning starts."""
    torch.set_num_threads(n)
    # Lightning's DDP launchers set every rank to CPUs // processes threads unless OMP_NUM_THREADS
    # is set, and spawned ranks read it when torch starts: set it so the choice holds there too
    os.environ["OMP_NUM_THREADS"] = str(n)


def _int_or(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else default


def settle(cfg) -> dict[str, Choice]:
    """Resolve trainer.threads and trainer.precision for this machine, in place; returns both with reasons."""
    trainer, model = cfg.trainer, cfg.model
    on_cpu = runs_on_cpu(trainer.get("accelerator"))
    # read leniently: validate() names wrong values of these keys after this
    embed_dim = _int_or(model.get("embed_dim"), 768) or 768
    workers = max((_int_or(node.get("num_workers"), 0) for node in (cfg.modalities or {}).values()), default=0)
    threads = choose_threads(trainer.get("threads", "auto"), embed_dim=embed_dim, loader_workers=workers,
                             processes=local_processes(trainer.get("devices"), on_cpu), on_cpu=on_cpu)
    chosen = {"threads": threads}
    if "precision" in trainer:
        ratio = model.get("mlp_ratio", 4.0)
        shape = gemm_shape(embed_dim, ratio if isinstance(ratio, (int, float)) and ratio > 0 else 4.0)
        chosen["precision"] = choose_precision(trainer.precision, trainer.get("accelerator"), shape, threads.value)
        trainer.precision = chosen["precision"].value
    if "threads" in trainer:
        trainer.threads = threads.value
    for name, choice in chosen.items():
        log.info("trainer.%s: %s", name, choice)
    return chosen


def resolve_device(name: str, key: str = "device") -> torch.device:
    """`auto` (a CUDA GPU where there is one, else the CPU), cpu, cuda, cuda:N or mps, checked against this machine."""
    name = str(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(key, f"expected auto, cpu, cuda, cuda:N or mps, got {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(key, f"{name}: this machine has no CUDA device (use cpu or auto)")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(key, f"{name}: this machine has {torch.cuda.device_count()} CUDA devices")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(key, f"{name}: MPS is not available here (use cpu or auto)")
    if device.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(key, f"expected auto, cpu, cuda, cuda:N or mps, got {name!r}")
    return device
