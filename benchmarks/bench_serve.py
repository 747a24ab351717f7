"""`omnimae serve` under load: the real server (a subprocess on a free 127.0.0.1 port) driven by httpx.

For fp32 and int8: p50 / p95 / p99 latency and requests/s at concurrency 1, 8 and 32 for /embed with an
image and with audio, and /forecast with the shipped forecaster; the batching gain against max_batch=1;
and one forecast over HTTP against `omnimae forecast` on the same CSV (a process: imports, loading, model).
Every load is bounded (`--requests` per point) and targets only 127.0.0.1.

    python benchmarks/bench_serve.py --requests 64 --json benchmarks/serve_cpu.json
"""
from __future__ import annotations

import argparse
import asyncio
import io
import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

OMNIMAE = [sys.executable, "-c", "import sys; from omnimae.cli import main; sys.exit(main())"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`omnimae serve` in a subprocess, up until the context exits (then SIGTERM, drained)."""

    def __init__(self, *overrides: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = [*OMNIMAE, "serve", f"port={self.port}", "host=127.0.0.1", *overrides]

    def __enter__(self) -> "Server":
        self.process = subprocess.Popen(self.args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.2)
        self.process.kill()
        raise RuntimeError(f"the server did not start: {' '.join(self.args)}")

    def __exit__(self, *exc) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)


async def load(url: str, route: str, request: dict, concurrency: int, count: int) -> dict:
    """`count` requests, `concurrency` in flight at a time; latencies in ms and requests/s."""
    latencies: list[float] = []
    queue = list(range(count))

    async def worker(client: httpx.AsyncClient) -> None:
        while queue:
            queue.pop()
            start = time.perf_counter()
            r = await client.post(route, **request)
            latencies.append((time.perf_counter() - start) * 1000)
            if r.status_code != 200:
                raise RuntimeError(f"{route}: {r.status_code} {r.text[:200]}")

    async with httpx.AsyncClient(base_url=url, timeout=120, limits=httpx.Limits(max_connections=concurrency)) as client:
        await client.post(route, **request)  # warm-up
        start = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        seconds = time.perf_counter() - start
    p50, p95, p99 = np.percentile(latencies, [50, 95, 99])
    return {"p50_ms": round(float(p50), 1), "p95_ms": round(float(p95), 1), "p99_ms": round(float(p99), 1),
            "rps": round(count / seconds, 1)}


def payloads(tmp: Path) -> dict:
    """An image, 10 s of audio and a monthly series of 480 points, as the routes take them."""
    import soundfile as sf
    from PIL import Image

    rng = np.random.default_rng(0)
    png, wav = io.BytesIO(), io.BytesIO()
    Image.fromarray((rng.random((256, 256, 3)) * 255).astype(np.uint8)).save(png, "PNG")
    sf.write(wav, rng.normal(0, 0.1, 160_000).astype(np.float32), 16000, format="WAV")
    t = np.arange(480)
    series = 100 + 10 * np.sin(2 * np.pi * t / 12) + 0.1 * t + rng.normal(0, 1, len(t))
    (tmp / "series.csv").write_text("value\n" + "\n".join(f"{v:.6f}" for v in series) + "\n")
    return {
        "embed_image": ("/embed", {"data": {"modality": "image"}, "files": [("files", ("a.png", png.getvalue()))]}),
        "embed_audio": ("/embed", {"data": {"modality": "audio"}, "files": [("files", ("a.wav", wav.getvalue()))]}),
        "forecast": ("/forecast", {"json": {"series": series.tolist(), "horizon": 24, "periodicity": 12}}),
    }


def embed_checkpoint(tmp: Path, model: str) -> Path:
    """Random weights time as trained ones do: image at 224 px and AudioMAE's 1024 x 128 log-mels."""
    import omnimae

    return omnimae.save(omnimae.build(f"model={model}", "modality=[image,audio]"), tmp / "embed.safetensors")


def cli_forecast_seconds(csv: Path, out: Path) -> float:
    start = time.perf_counter()
    subprocess.run([*OMNIMAE, "forecast", f"input={csv}", "horizon=24", "periodicity=12", f"output={out}",
                    "plot=false", "overwrite=true"], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=64, help="requests per (route, concurrency) point")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--model", default="vit_small", help="the embedding model's size (random weights)")
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--json")
    args = parser.parse_args()
    out: dict = {"requests": args.requests, "model": args.model, "max_batch": args.max_batch}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        work, ckpt = payloads(tmp), embed_checkpoint(tmp, args.model)
        for precision in ("fp32", "int8"):
            quantize = ["quantize=int8"] if precision == "int8" else []
            for name, checkpoint in (("embed", ckpt), ("forecast", "default")):
                routes = [r for r in work if r.startswith(name)]
                for max_batch in (args.max_batch, 1):
                    with Server(f"checkpoint={checkpoint}", f"max_batch={max_batch}", "max_wait_ms=5", *quantize) as s:
                        for route in routes:
                            for c in args.concurrency if max_batch > 1 else [max(args.concurrency)]:
                                key = f"{precision}/{route}/c{c}/batch{max_batch}"
                                out[key] = asyncio.run(load(s.url, *work[route], c, args.requests))
                                print(key, out[key], flush=True)
        with Server("checkpoint=default") as s:
            one = asyncio.run(load(s.url, *work["forecast"], 1, 8))
        out["forecast_http_p50_ms"] = one["p50_ms"]
        out["forecast_cli_seconds"] = round(float(np.median([cli_forecast_seconds(tmp / "series.csv", tmp / "f.csv")
                                                            for _ in range(3)])), 2)
        print("forecast: HTTP p50", one["p50_ms"], "ms; CLI", out["forecast_cli_seconds"], "s", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
