"""`omnimae export format=onnx`: the encoder's features through onnxruntime, at any batch size, equal the
Python API's; modalities whose input is not one array, and failed checks, leave no file."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import omnimae
from omnimae.cli import main
from omnimae.errors import CheckpointError, ConfigError

ort = pytest.importorskip("onnxruntime")
TINY = ("model=vit_tiny", "modality=[image,microscopy]", "modalities.image.adapter.img_size=16",
        "modalities.image.adapter.patch_size=4", "modalities.microscopy.adapter.img_size=16",
        "modalities.microscopy.adapter.patch_size=8")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return omnimae.save(omnimae.build(*TINY).eval(), tmp_path_factory.mktemp("onnx") / "tiny.safetensors")


def test_onnx_features_equal_the_python_apis_at_any_batch_size(checkpoint, tmp_path):
    out = tmp_path / "encoder.onnx"
    assert main(["export", f"checkpoint={checkpoint}", "format=onnx", "modality=image", f"output={out}"]) == 0
    model = omnimae.load(checkpoint)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    for batch in (1, 7):
        x = model.adapters["image"].example_input(batch, torch.Generator().manual_seed(batch))
        cls, mean = session.run(["cls", "mean"], {"x": x.numpy()})
        np.testing.assert_allclose(cls, omnimae.embed(model, x, "image", pool="cls").numpy(), atol=1e-4)
        np.testing.assert_allclose(mean, omnimae.embed(model, x, "image", pool="mean").numpy(), atol=1e-4)
    assert main(["export", f"checkpoint={checkpoint}", "format=onnx", "modality=image", f"output={out}"]) == 1  # exists


def test_a_modality_of_named_parts_is_refused_naming_it(checkpoint, tmp_path):
    from omnimae.serve.onnx import export_onnx

    with pytest.raises(ConfigError, match="modality: microscopy takes named parts"):
        export_onnx(omnimae.load(checkpoint), "microscopy", tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


def test_features_that_differ_fail_the_export_and_leave_no_file(checkpoint, tmp_path, monkeypatch):
    from omnimae.serve import onnx

    monkeypatch.setattr(onnx, "TOLERANCE", -1.0)  # no runtime can meet it: the check must refuse
    with pytest.raises(CheckpointError, match="differ from PyTorch's"):
        onnx.export_onnx(omnimae.load(checkpoint), "image", tmp_path / "e.onnx")
    assert list(tmp_path.iterdir()) == []
