"""Checkpoints written by an earlier omnimae still load and give the same numbers.

The fixtures were written by omnimae 0.1.0 (commit e30848b) with
`omnimae pretrain trainer=debug trainer.max_steps=2 modalities.image.batch_size=16 model.embed_dim=32 model.depth=1
model.decoder_depth=1 model.decoder_embed_dim=32 model.num_heads=2 model.decoder_num_heads=2` and
`omnimae export format=safetensors`; their outputs on a seeded input were stored by
tests/fixtures/make_v0_1_0_outputs.py with that same code.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from omnimae.checkpoint.format import load_model

FIXTURES = Path(__file__).parent / "fixtures"
STORED = json.loads((FIXTURES / "v0_1_0_tiny_outputs.json").read_text())["outputs"]


@pytest.mark.parametrize("name", sorted(STORED))
def test_a_checkpoint_from_version_0_1_0_loads_and_gives_its_stored_outputs(name):
    model, cfg = load_model(FIXTURES / name)
    model.eval()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 1, 16, 16, generator=g)
    noise = torch.rand(2, 16, generator=g)
    with torch.no_grad():
        out = model.forward_modality(x, "image", noise=noise)
        mean, cls = model.embed(x, "image", pool="mean"), model.embed(x, "image", pool="cls")
    want = STORED[name]
    assert out.mask.sum().item() == want["mask_sum"]
    assert out.loss.item() == pytest.approx(want["loss"], rel=1e-5)
    assert out.pred.sum().item() == pytest.approx(want["pred_sum"], rel=1e-4, abs=1e-4)
    assert out.pred.abs().sum().item() == pytest.approx(want["pred_abs_sum"], rel=1e-5)
    torch.testing.assert_close(mean, torch.tensor(want["embed_mean"]), rtol=1e-5, atol=1e-5)
    assert cls.sum().item() == pytest.approx(want["embed_cls_sum"], rel=1e-4, abs=1e-4)
