"""The encoder as ONNX for serving elsewhere: model-space input [batch, ...] -> CLS and mean features.

The batch axis is dynamic; every other axis is the adapter's configured input shape. After writing, the
file is run by onnxruntime on a batch of another size than the one traced, and its features must equal
PyTorch's within a tolerance, else the export fails and leaves no file.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from omnimae.errors import CheckpointError, ConfigError
from omnimae.features import pool_tokens
from omnimae.io import atomic_path
from omnimae.model import MaskedAutoencoder

TOLERANCE = 1e-4  # float32 through another runtime's kernels: differences of 1e-6 are usual
OPSET = 17


class EncoderFeatures(nn.Module):
    """One modality's tokenizer and stem, the shared encoder on every token, and both poolings."""

    def __init__(self, model: MaskedAutoencoder, modality: str):
        super().__init__()
        self.model, self.modality = model, modality

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        adapter = self.model.adapters[self.modality]
        latent = self.model.forward_encoder(adapter.tokenize(x), adapter, ids_keep=None)  # [B, 1 + N, D]
        return pool_tokens(latent, "cls"), pool_tokens(latent, "mean")


def export_onnx(model: MaskedAutoencoder, modality: str, out: str | Path) -> float:
    """Write `modality`'s encoder features as ONNX to `out` (atomically) and check it with onnxruntime;
    returns the largest difference from PyTorch's features."""
    try:
        import onnxruntime  # noqa: F401 - the check below needs it; fail before any work
    except ImportError:
        raise ConfigError("format", "onnx needs onnxruntime to check the file: pip install 'omnimae[onnx]'") from None
    if modality not in model.adapters:
        raise ConfigError("modality", f"{modality!r} is not in the checkpoint (it has {list(model.adapters)})")
    adapter = model.adapters[modality]
    example = adapter.example_input(2, torch.Generator().manual_seed(0))
    if not isinstance(example, torch.Tensor):
        raise ConfigError("modality", f"{modality} takes named parts ({', '.join(example)}), not one tensor; "
                                      "ONNX export covers modalities whose input is one array")
    module = EncoderFeatures(model.eval(), modality).eval()
    with atomic_path(out) as tmp:
        with warnings.catch_warnings():  # the tracer notes shape checks it freezes: every axis but the batch is fixed
            warnings.simplefilter("ignore")
            torch.onnx.export(module, (example,), str(tmp), input_names=["x"], output_names=["cls", "mean"],
                              dynamic_axes={"x": {0: "batch"}, "cls": {0: "batch"}, "mean": {0: "batch"}},
                              opset_version=OPSET, dynamo=False)
        return check_onnx(tmp, module, adapter.example_input(3, torch.Generator().manual_seed(1)), out)


def check_onnx(path: Path, module: EncoderFeatures, x: torch.Tensor, name: str | Path) -> float:
    """onnxruntime's features of `x` against PyTorch's: the largest difference, or a CheckpointError."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"x": x.numpy()})
    with torch.no_grad():
        want = module(x)
    worst = max(float((torch.from_numpy(g) - w).abs().max()) for g, w in zip(got, want))
    if worst > TOLERANCE:
        raise CheckpointError(f"{name}: onnxruntime's features differ from PyTorch's by {worst:.2e} "
                              f"(tolerance {TOLERANCE:g}); the file was not written")
    return worst
