"""Pretraining-step speed of omnimae against Hugging Face ViTMAEForPreTraining.

Same model, batch and mask ratio; the two are interleaved in one process (A B B A per round,
after a warm-up) and each round gives one ratio, so drift in machine speed cancels. Also
measured: the encoder on 25% of the tokens against all tokens, and model FLOP/s (counted with
FlopCounterMode) as a fraction of a matmul peak measured in the same process.

    python benchmarks/bench_step.py --model vit_base --batch 8 --rounds 9
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from contextlib import nullcontext

import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import ViTMAEConfig, ViTMAEForPreTraining

from omnimae.config.build import build_model
from omnimae.config.compose import compose
from omnimae.hardware import cpu_bf16, cpu_name, gemm_shape


def make_models(model: str, img: int, patch: int, ratio: float):
    a = "modalities.image.adapter"
    cfg = compose("pretrain", [f"model={model}", "experiment=none", f"{a}.img_size={img}",
                               f"{a}.patch_size={patch}", f"{a}.mask_ratio={ratio}"])
    ours = build_model(cfg)
    m = cfg.model
    hf = ViTMAEForPreTraining(ViTMAEConfig(
        hidden_size=m.embed_dim, num_hidden_layers=m.depth, num_attention_heads=m.num_heads,
        intermediate_size=int(m.embed_dim * m.mlp_ratio), decoder_hidden_size=m.decoder_embed_dim,
        decoder_num_hidden_layers=m.decoder_depth, decoder_num_attention_heads=m.decoder_num_heads,
        decoder_intermediate_size=int(m.decoder_embed_dim * m.mlp_ratio), image_size=img, patch_size=patch,
        mask_ratio=ratio, norm_pix_loss=True, layer_norm_eps=1e-6, qkv_bias=True))
    return ours, hf


DEVICE = torch.device("cpu")  # set from --device
FUSED = True  # set from --optimizer: omnimae's trainer and HF's Trainer (torch >= 2.8) both default to fused AdamW


def adamw(model):
    return torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), fused=FUSED, foreach=None if FUSED else True)


def stepper(model, kind: str, x: torch.Tensor, n: int, bf16: bool):
    opt = adamw(model)
    gen = torch.Generator(device=DEVICE).manual_seed(0)

    def step() -> None:
        with torch.autocast(DEVICE.type, dtype=torch.bfloat16) if bf16 else nullcontext():
            if kind == "omnimae":
                loss = model.forward_modality(x, "image", generator=gen).loss
            else:
                loss = model(pixel_values=x, noise=torch.rand(x.shape[0], n, generator=gen, device=DEVICE)).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def stepper_full_encoder(model, x: torch.Tensor):
    """A step whose encoder runs on every token (masked ones included, as in SimMIM-style designs)."""
    from omnimae.masking import random_masking

    opt = adamw(model)
    adapter = model.adapters["image"]
    gen = torch.Generator(device=DEVICE).manual_seed(0)

    def step() -> None:
        patches = adapter.tokenize(x)
        b, n, _ = patches.values.shape
        _, _, mask = random_masking(b, n, adapter.mask_ratio, generator=gen)
        latent = model.forward_encoder(patches, adapter, ids_keep=None)  # [B, 1 + N, D]
        identity = torch.arange(n, device=DEVICE).expand(b, -1)
        pred = model.forward_decoder(latent, adapter, identity, patches)
        loss = model.forward_loss(adapter.target(patches), pred, mask)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize(DEVICE)


def timed(fn, steps: int) -> float:
    sync()
    t = time.perf_counter()
    for _ in range(steps):
        fn()
    sync()  # a GPU runs ahead of the host: time what it did, not what was queued
    return (time.perf_counter() - t) / steps


def interleaved(a, b, rounds: int, steps: int, between=None) -> dict:
    """Per round A B B A; ratio = time(B) / time(A) (> 1: A is faster). `between` runs before the first round and after each."""
    for _ in range(2):
        a(), b()
    if between is not None:
        between()  # once before the first round too, so that every round has a neighbour on each side
    ratios, ta, tb = [], [], []
    for _ in range(rounds):
        a1, b1, b2, a2 = timed(a, steps), timed(b, steps), timed(b, steps), timed(a, steps)
        if between is not None:
            between()
        ta.append((a1 + a2) / 2)
        tb.append((b1 + b2) / 2)
        ratios.append((b1 + b2) / (a1 + a2))
    return {"ratio_median": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
            "a_s_per_step": statistics.median(ta), "b_s_per_step": statistics.median(tb),
            "a_s_per_round": ta, "b_s_per_round": tb}


def matmul_peak(dtype: torch.dtype, n: int | None = None, reps: int = 10) -> float:
    n = n or (8192 if DEVICE.type == "cuda" else 2048)  # large enough to saturate the device
    a, b = torch.randn(n, n, dtype=dtype, device=DEVICE), torch.randn(n, n, dtype=dtype, device=DEVICE)
    for _ in range(3):
        a @ b
    t = timed(lambda: a @ b, reps)
    return 2 * n**3 / t


def paired_mfu(flops: int, step_s: list[float], peaks: list[float]) -> dict:
    """Model FLOP utilization per round: the round's FLOP/s over the better of the two matmul peaks
    measured just before and just after it (peaks[i] and peaks[i + 1]).

    On a shared or virtual machine the speed of both drifts by 10% or more within minutes; a step
    timing divided by a peak taken at another moment (the best of all of them, say) reads that drift
    as utilization. Pairing neighbours cancels it, as the A B B A rounds do for the speed ratios.
    """
    if len(peaks) != len(step_s) + 1:
        raise ValueError(f"need one peak before and after each of the {len(step_s)} rounds, got {len(peaks)}")
    mfu = [flops / t / max(p0, p1) for t, p0, p1 in zip(step_s, peaks, peaks[1:])]
    return {"mfu": statistics.median(mfu), "mfu_min": min(mfu), "mfu_max": max(mfu), "mfu_per_round": mfu,
            "matmul_peaks_flops_per_s": peaks, "peak_flops_per_s": statistics.median(peaks)}


def step_flops(step) -> int:
    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="vit_base")
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--patch", type=int, default=16)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--mask-ratio", type=float, default=0.75)
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--steps", type=int, default=1, help="steps per timed block")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    p.add_argument("--optimizer", choices=["fused", "foreach"], default="fused",
                   help="AdamW kernel for both sides (fused: the default of omnimae's and HF's trainers)")
    p.add_argument("--skip-bf16", action="store_true", help="fp32 only (forced where the CPU has no bf16 arithmetic)")
    p.add_argument("--only-step", action="store_true", help="skip the asymmetric-encoder measurements")
    p.add_argument("--device", default="cpu", help="cpu or cuda (models, data and timing on that device)")
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args()
    global FUSED, DEVICE
    FUSED, DEVICE = args.optimizer == "fused", torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    n = (args.img_size // args.patch) ** 2
    x = torch.randn(args.batch, 3, args.img_size, args.img_size, device=DEVICE)
    ours, hf = (m.to(DEVICE) for m in make_models(args.model, args.img_size, args.patch, args.mask_ratio))
    if DEVICE.type == "cuda":
        bf16_ok = torch.cuda.is_bf16_supported()
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 on both sides (and in the peak)
    else:
        # time bf16 wherever it is native, also where it is slower than fp32: only emulation takes minutes
        verdict = cpu_bf16(gemm_shape(ours.embed_dim))
        bf16_ok = not verdict.emulated
        print(f"CPU bf16: {verdict.reason}", flush=True)
    results: dict = {"model": args.model, "batch": args.batch, "img_size": args.img_size, "patch": args.patch,
                     "mask_ratio": args.mask_ratio, "threads": torch.get_num_threads(), "rounds": args.rounds,
                     "optimizer": args.optimizer, "cpu": cpu_name(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                     "cpu_bf16_arithmetic": bf16_ok, "torch": torch.__version__,
                     "ld_preload": os.environ.get("LD_PRELOAD", ""), "device": str(DEVICE)}
    if DEVICE.type == "cuda":
        results["gpu"] = torch.cuda.get_device_name(DEVICE)
        print(f"GPU: {results['gpu']}, torch {torch.__version__}, AdamW {args.optimizer}", flush=True)
    else:
        print(f"CPU: {results['cpu']} ({results['cpu_capability']}, bf16 arithmetic: {bf16_ok}), "
              f"{results['threads']} threads, torch {torch.__version__}, AdamW {args.optimizer}", flush=True)
    precisions = [("fp32", False, torch.float32)]
    if bf16_ok and not args.skip_bf16:
        precisions.append(("bf16", True, torch.bfloat16))
    elif not args.skip_bf16:
        print(f"[bf16] skipped: this {DEVICE.type} has no bf16 arithmetic (emulated, far slower than fp32)", flush=True)
    for name, bf16, dtype in precisions:
        a, b = stepper(ours, "omnimae", x, n, bf16), stepper(hf, "hf", x, n, bf16)
        # a matmul peak before the first round and after each one; each round's step is divided by its neighbours
        peaks: list[float] = []
        r = interleaved(a, b, args.rounds, args.steps, between=lambda: peaks.append(matmul_peak(dtype)))
        flops = step_flops(a)
        m = paired_mfu(flops, r["a_s_per_round"], peaks)
        r |= {"step_flops": flops, "omnimae_flops_per_s": flops / r["a_s_per_step"], "matmul_peaks_flops_per_s": peaks,
              "omnimae_mfu": m["mfu"], "omnimae_mfu_min": m["mfu_min"], "omnimae_mfu_max": m["mfu_max"]}
        results[name] = r
        print(f"[{name}] omnimae {1 / r['a_s_per_step']:.3f} steps/s, HF {1 / r['b_s_per_step']:.3f} steps/s; "
              f"speed-up median {r['ratio_median']:.3f} (range {r['ratio_min']:.3f}-{r['ratio_max']:.3f}); "
              f"model {r['omnimae_flops_per_s'] / 1e9:.0f} GFLOP/s = {100 * m['mfu']:.1f}% (range "
              f"{100 * m['mfu_min']:.1f}-{100 * m['mfu_max']:.1f}) of the matmul peak beside each round "
              f"(median {m['peak_flops_per_s'] / 1e9:.0f} GFLOP/s)", flush=True)
    if args.only_step:
        return write(results, args.json)
    # the asymmetric encoder: forward + backward on 25% of the tokens against all of them
    adapter = ours.adapters["image"]
    patches = adapter.tokenize(x)
    keep = torch.argsort(torch.rand(args.batch, n, device=DEVICE), dim=1)[:, : int(n * (1 - args.mask_ratio))]

    def encoder(ids):
        return lambda: ours.forward_encoder(patches, adapter, ids).sum().backward()

    r = interleaved(encoder(keep), encoder(None), args.rounds, args.steps)
    results["encoder_visible_vs_all"] = r
    print(f"[encoder] visible {1 - args.mask_ratio:.0%} of tokens vs all: {r['ratio_median']:.2f}x faster "
          f"(range {r['ratio_min']:.2f}-{r['ratio_max']:.2f})", flush=True)

    # the whole step: MAE's asymmetric design against an encoder that also carries the mask tokens
    mask_tokens_step = stepper_full_encoder(ours, x)
    r = interleaved(stepper(ours, "omnimae", x, n, False), mask_tokens_step, args.rounds, args.steps)
    flops = (step_flops(mask_tokens_step), step_flops(stepper(ours, "omnimae", x, n, False)))
    results["step_visible_vs_mask_tokens_in_encoder"] = r | {"flop_ratio": flops[0] / flops[1]}
    print(f"[step] visible-only encoder vs mask tokens in the encoder: {r['ratio_median']:.2f}x faster "
          f"(range {r['ratio_min']:.2f}-{r['ratio_max']:.2f}); FLOP ratio {flops[0] / flops[1]:.2f}", flush=True)
    write(results, args.json)


def write(results: dict, path: str | None) -> None:
    if path:
        with open(path, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
