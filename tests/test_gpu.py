"""GPU-only paths: run on a machine with CUDA, skipped cleanly elsewhere."""
import pytest
import torch

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def test_bf16_autocast_step_on_cuda_matches_fp32(tiny_model):
    model = tiny_model.cuda()
    x = torch.randn(8, 3, 16, 16, device="cuda")
    gen = lambda: torch.Generator(device="cuda").manual_seed(0)  # noqa: E731
    ref = model.forward_modality(x, "image", generator=gen())
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = model.forward_modality(x, "image", generator=gen())
    assert model.blocks[0].attn.fused_attn  # fused SDPA (flash / memory-efficient kernels) on GPU
    torch.testing.assert_close(out.mask, ref.mask)
    assert abs(out.loss.item() - ref.loss.item()) < 0.05 * ref.loss.item()
    out.loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_pretrain_runs_on_gpu_in_bf16(tmp_path):
    from omnimae.config.compose import compose
    from omnimae.train.pretrain import pretrain

    cfg = compose("pretrain", ["model=vit_tiny", "trainer=gpu", "trainer.max_steps=3", "trainer.max_epochs=null",
                               "modalities.image.batch_size=32", f"run_dir={tmp_path}", "trainer.enable_progress_bar=false"])
    assert pretrain(cfg)["steps"] == 3


def test_forecaster_on_cuda_equals_cpu():
    import numpy as np

    from omnimae.config.build import build_model
    from omnimae.config.compose import compose
    from omnimae.forecasting.forecaster import Forecaster

    a = "modalities.timeseries.adapter"
    torch.manual_seed(0)
    model = build_model(compose("pretrain", ["experiment=none", "modality=timeseries", "model=vit_tiny", f"{a}.img_size=64", f"{a}.patch_size=8"]))
    x = np.sin(np.arange(3 * 200).reshape(3, 200, 1) / 5.0)
    cpu = Forecaster(model, device="cpu").predict(x, 24, 10)
    gpu = Forecaster(model, device="cuda").predict(x, 24, 10)
    np.testing.assert_allclose(gpu, cpu, rtol=1e-3, atol=1e-3)


def test_a_training_step_never_waits_for_the_gpu(tiny_model):
    """Forward with seeded masks, backward, clipping, the non-finite guard and fused AdamW: with
    CUDA's sync debug mode set to error, any host-device synchronization in the step raises."""
    from types import SimpleNamespace

    from omnimae.train.callbacks import NonFiniteGuard

    model = tiny_model.cuda()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
    guard = NonFiniteGuard(max_consecutive=3, check_every_n_steps=1000)
    x = torch.randn(8, 3, 16, 16, device="cuda")
    gen = torch.Generator(device="cuda")
    for step in range(3):  # the first step allocates optimizer state; the later ones are the steady state
        mode = "error" if step else "default"
        torch.cuda.set_sync_debug_mode(mode)
        try:
            gen.manual_seed(step)
            model.forward_modality(x, "image", generator=gen).loss.backward()
            trainer = SimpleNamespace(precision_plugin=SimpleNamespace(scaler=None), global_step=step)
            guard.on_before_optimizer_step(trainer, model, opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 3.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    guard.check(2)  # the host reads the counters here, once
    assert guard.skipped == 0 and all(torch.isfinite(p).all() for p in model.parameters())
