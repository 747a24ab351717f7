"""Input pipeline cost per modality against a training step (one data worker, same batch).

For each modality, files are written to a temporary folder (a 256 px PNG, 10 s of 16 kHz WAV, a
64-frame 256 px MP4, a 2048-step series window, a 5x512x512 deflate OME-TIFF), then the time to
load and augment one batch in one process is compared with the time of one training step
(forward, backward, AdamW) of the same model on that batch. Ratio > 1: one worker cannot keep up;
use that many data workers (or cache decoded data).

    python benchmarks/bench_inputs.py --model vit_small --batch 8 --repeats 3
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from omnimae.config.build import build_data, build_model
from omnimae.config.compose import compose


def make_files(root: Path) -> dict[str, list[str]]:
    import av
    import soundfile as sf
    import tifffile
    from PIL import Image

    rng = np.random.default_rng(0)
    for sub in ("image", "audio", "video", "micro"):
        (root / sub).mkdir()
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)).save(root / "image" / f"{i}.png")
        sf.write(root / "audio" / f"{i}.wav", rng.normal(0, 0.1, 160000).astype(np.float32), 16000)
        stack = rng.normal(size=(5, 512, 512)).astype(np.float32)
        tifffile.imwrite(root / "micro" / f"{i}.ome.tif", stack, ome=True, compression="zlib",
                         metadata={"axes": "CYX", "Channel": {"Name": ["DNA", "ER", "RNA", "AGP", "Mito"]}})
    for i in range(2):
        with av.open(str(root / "video" / f"{i}.mp4"), "w") as c:
            s = c.add_stream("libx264", rate=25)
            s.width, s.height, s.pix_fmt = 256, 256, "yuv420p"
            for k in range(80):
                frame = av.VideoFrame.from_ndarray(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8), format="rgb24")
                for p in s.encode(frame):
                    c.mux(p)
            for p in s.encode():
                c.mux(p)
    return {
        "image": ["modality=image", f"data.root={root / 'image'}", "modalities.image.data.val_fraction=0"],
        "audio": ["modality=audio", f"data.root={root / 'audio'}", "modalities.audio.data.val_fraction=0"],
        "video": ["modality=video", f"data.root={root / 'video'}", "modalities.video.data.val_fraction=0"],
        "timeseries": ["modality=timeseries"],
        "microscopy": ["modality=microscopy", f"data.root={root / 'micro'}", "modalities.microscopy.data.val_fraction=0"],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="vit_small")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as d:
        setups = make_files(Path(d))
        for cached in ("audio", "microscopy"):  # the same inputs with decoded data kept in a cache folder
            setups[f"{cached}+cache"] = setups[cached] + [f"modalities.{cached}.data.cache_dir={Path(d) / ('cache_' + cached)}"]
        for label, overrides in setups.items():
            name = label.split("+")[0]
            cfg = compose("pretrain", ["experiment=none", f"model={args.model}", *overrides])
            data = build_data(cfg)[name]
            ds = data.dataset("train", train=True)
            keys = [(i % len(ds), 1000 + i) for i in range(args.batch)]
            from torch.utils.data import default_collate

            load = []
            for r in range(args.repeats + 1):
                t = time.perf_counter()
                batch = default_collate([ds[k] for k in keys])
                load.append(time.perf_counter() - t)
            model = build_model(cfg)
            opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
            step = []
            for r in range(args.repeats + 1):
                t = time.perf_counter()
                out = model({name: batch})[name]
                out.loss.backward()
                opt.step()
                opt.zero_grad()
                step.append(time.perf_counter() - t)
            lt, st = float(np.median(load[1:])), float(np.median(step[1:]))
            print(f"{label:<17} load {1000 * lt / args.batch:7.1f} ms/sample, batch {lt:6.3f} s; step {st:6.3f} s; "
                  f"load/step {lt / st:5.2f}", flush=True)


if __name__ == "__main__":
    main()
