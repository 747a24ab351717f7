"""Forecast throughput (series per second) of omnimae against the `visionts` package.

Both load the same official-layout checkpoint (built here, random weights, the real ViT-B/16
architecture by default) and forecast the same batch of windows; runs are interleaved in one
process (A B B A per round after a warm-up) and each round gives one ratio.

    python benchmarks/bench_forecast.py --arch base --series 64 --context 512 --horizon 96 --rounds 9
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch

ARCHS = {
    "base": dict(embed_dim=768, depth=12, num_heads=12),
    "small": dict(embed_dim=384, depth=12, num_heads=6),
    "tiny": dict(embed_dim=192, depth=6, num_heads=3),
}


def main() -> None:
    from visionts import VisionTS, model as vmodel, models_mae

    from omnimae.forecasting.forecaster import Forecaster

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="base", choices=sorted(ARCHS))
    p.add_argument("--series", type=int, default=64, help="windows (batch) per forecast call")
    p.add_argument("--context", type=int, default=512)
    p.add_argument("--horizon", type=int, default=96)
    p.add_argument("--periodicity", type=int, default=24)
    p.add_argument("--rounds", type=int, default=9)
    args = p.parse_args()

    kw = ARCHS[args.arch] | dict(patch_size=16, decoder_embed_dim=512, decoder_depth=8, decoder_num_heads=16, mlp_ratio=4,
                                 norm_layer=partial(torch.nn.LayerNorm, eps=1e-6))
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as d:
        torch.save({"model": models_mae.MaskedAutoencoderViT(**kw).state_dict()}, Path(d) / "mae_visualize_vit_base.pth")
        vmodel.MAE_ARCH["mae_base"] = [partial(models_mae.MaskedAutoencoderViT, **kw), "mae_visualize_vit_base.pth"]
        ref = VisionTS("mae_base", ckpt_dir=d).eval()
        ours = Forecaster.from_checkpoint(Path(d) / "mae_visualize_vit_base.pth", num_heads=kw["num_heads"], decoder_num_heads=16,
                                          batch_size=args.series)
    ref.update_config(context_len=args.context, pred_len=args.horizon, periodicity=args.periodicity)
    x = np.random.default_rng(0).normal(size=(args.series, args.context, 1)).cumsum(1)
    xt = torch.tensor(x, dtype=torch.float32)

    def a():
        ours.predict(x, args.horizon, args.periodicity)

    def b():
        with torch.no_grad():
            ref(xt)

    for _ in range(2):
        a(), b()
    ratios, ta, tb = [], [], []
    for _ in range(args.rounds):
        times = []
        for fn in (a, b, b, a):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        ta.append((times[0] + times[3]) / 2)
        tb.append((times[1] + times[2]) / 2)
        ratios.append((times[1] + times[2]) / (times[0] + times[3]))
    print(f"arch {args.arch}, {args.series} series x context {args.context} -> horizon {args.horizon}, "
          f"{torch.get_num_threads()} threads, {args.rounds} rounds")
    print(f"omnimae {args.series / statistics.median(ta):.1f} series/s, visionts {args.series / statistics.median(tb):.1f} series/s; "
          f"omnimae / visionts speed median {statistics.median(ratios):.3f} (range {min(ratios):.3f}-{max(ratios):.3f})")


if __name__ == "__main__":
    main()
