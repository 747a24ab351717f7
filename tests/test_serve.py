"""omnimae serve over real HTTP: uvicorn on a loopback port, httpx as the client. Every route, embeddings
against the Python API on the same files, forecasts against `omnimae forecast`, batching, int8."""
from __future__ import annotations

import asyncio
import io
from importlib.metadata import version

import httpx
import numpy as np
import pandas as pd
import pytest
import tifffile
import torch
from PIL import Image

import omnimae
from omnimae.serve.app import Settings, create_app
from omnimae.serve.engine import Engine
from serve_server import mp4_bytes, running, tiny_checkpoint, wav_bytes


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("serve"))


@pytest.fixture(scope="module")
def server(checkpoint):
    engine = Engine.from_checkpoint(checkpoint)
    app = create_app(engine, Settings(max_batch=8, max_wait_ms=100))
    with running(app) as (url, _):
        yield url, engine, app


def png_bytes(seed: int, size=(20, 24)) -> bytes:
    pixels = (np.random.default_rng(seed).random((*size, 3)) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def ome_tiff(pixels: np.ndarray, names: list[str]) -> bytes:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, pixels, ome=True, metadata={"axes": "CYX", "Channel": {"Name": names}})
    return buffer.getvalue()


def test_health_info_docs_and_predict(server):
    url, engine, _ = server
    with httpx.Client(base_url=url) as client:
        assert client.get("/health").json() == {"status": "ok"}
        info = client.get("/info").json()
        paths = client.get("/openapi.json").json()["paths"]
        predict = client.post("/predict", json={})
    assert info["modalities"] == ["image", "timeseries", "microscopy", "audio", "video"] and info["embed_dim"] == 64
    assert info["channels"] == {"microscopy": list(engine.config.modalities.microscopy.adapter.channels)}
    assert info["precision"] == "fp32" and info["version"] == version("omnimae")
    assert {"/health", "/info", "/embed", "/forecast", "/predict"} <= set(paths)
    assert "multipart/form-data" in paths["/embed"]["post"]["requestBody"]["content"]
    assert predict.status_code == 501 and "no head" in predict.json()["error"]["problem"]


@pytest.mark.parametrize("modality,name,data", [("image", "a.png", png_bytes(0)), ("audio", "a.wav", wav_bytes()),
                                                ("video", "a.mp4", mp4_bytes())])
def test_uploaded_files_embed_as_the_python_api_reads_them(server, checkpoint, tmp_path, modality, name, data):
    url, _, _ = server
    with httpx.Client(base_url=url) as client:
        r = client.post("/embed", data={"modality": modality}, files=[("files", (name, data))])
    assert r.status_code == 200, r.text
    (tmp_path / name).write_bytes(data)
    model = omnimae.load(checkpoint)
    for pool in ("cls", "mean"):
        expected = omnimae.embed(model, tmp_path / name, modality, pool=pool)[0]
        torch.testing.assert_close(torch.tensor(r.json()["embeddings"][0][pool]), expected, atol=1e-5, rtol=1e-5)


def test_microscopy_channels_by_name_in_any_order(server):
    """CA-MAE's promise, through the server: the order of a file's channels changes no embedding."""
    url, _, _ = server
    pixels = (np.random.default_rng(1).random((3, 20, 20)) * 4000).astype(np.uint16)
    rows = []
    with httpx.Client(base_url=url) as client:
        for order in ([0, 1, 2], [2, 0, 1]):
            names = [["DNA", "ER", "Foo"][i] for i in order]
            r = client.post("/embed", data={"modality": "microscopy"},
                            files=[("files", ("plate.ome.tif", ome_tiff(pixels[order], names)))])
            assert r.status_code == 200, r.text
            rows.append(r.json()["embeddings"][0])
    assert set(rows[0]["channels"]) == {"DNA", "ER", "Foo"}
    np.testing.assert_allclose(rows[0]["mean"], rows[1]["mean"], atol=1e-5)
    for name in ("DNA", "ER", "Foo"):
        np.testing.assert_allclose(rows[0]["channels"][name], rows[1]["channels"][name], atol=1e-5)


def test_raw_arrays_as_json_and_as_npy(server):
    url, engine, _ = server
    x = engine.example("image").repeat(3, 1, 1, 1) + torch.arange(3.0).view(3, 1, 1, 1)  # [3, 3, 16, 16]
    body = {"modality": "image", "inputs": x.tolist()}
    with httpx.Client(base_url=url) as client:
        as_json = client.post("/embed", json=body).json()["embeddings"]
        as_npy = client.post("/embed", json=body | {"format": "npy"})
    table = np.load(io.BytesIO(as_npy.content))  # [B, pools, D]
    assert table.shape == (3, 2, 64) and as_npy.headers["X-Omnimae-Pools"] == "cls,mean"
    for k, pool in enumerate(("cls", "mean")):
        expected = omnimae.embed(engine.model, x, "image", pool=pool)
        torch.testing.assert_close(torch.tensor([row[pool] for row in as_json]), expected, atol=1e-5, rtol=1e-5)
        np.testing.assert_allclose(table[:, k], expected.numpy(), atol=1e-5)


def test_concurrent_requests_are_batched_and_each_gets_its_own_result(server):
    url, engine, app = server
    inputs = [engine.example("image") * (1 + i) for i in range(8)]  # [1, 3, 16, 16] each, all different
    sizes = app.state.batchers["embed"].batch_sizes
    before = len(sizes)

    async def send_all():
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            bad = client.post("/embed", content=b'{"modality": "image", "inputs": [[[NaN]]]}',
                              headers={"content-type": "application/json"})
            good = [client.post("/embed", json={"modality": "image", "inputs": x.tolist()}) for x in inputs]
            return await asyncio.gather(bad, *good)

    bad, *answers = asyncio.run(send_all())
    assert bad.status_code == 422
    for x, answer in zip(inputs, answers):
        expected = omnimae.embed(engine.model, x, "image", pool="mean")[0]  # alone: a batch of one
        torch.testing.assert_close(torch.tensor(answer.json()["embeddings"][0]["mean"]), expected, atol=1e-5, rtol=1e-5)
    assert max(sizes[before:]) > 1, sizes[before:]  # some forward pass held several callers' inputs


def test_forecasts_equal_omnimae_forecast_on_the_same_checkpoint(server, checkpoint, tmp_path):
    from omnimae.cli import main

    url, _, _ = server
    t = np.arange(120)
    values = np.stack([10 + np.sin(2 * np.pi * t / 12) + 0.01 * t, 5 + np.cos(2 * np.pi * t / 12)], 1)
    frame = pd.DataFrame({"time": pd.date_range("2020-01-01", periods=120, freq="MS"), "a": values[:, 0], "b": values[:, 1]})
    frame.to_csv(tmp_path / "sales.csv", index=False)
    assert main(["forecast", f"checkpoint={checkpoint}", f"input={tmp_path / 'sales.csv'}", "horizon=6",
                 "periodicity=12", f"output={tmp_path / 'out.csv'}", "plot=false"]) == 0
    cli = pd.read_csv(tmp_path / "out.csv")[["a", "b"]].to_numpy()[-6:]
    with httpx.Client(base_url=url) as client:
        upload = client.post("/forecast", data={"horizon": "6", "periodicity": "12"},
                             files={"file": ("sales.csv", (tmp_path / "sales.csv").read_bytes())}).json()
        as_json = client.post("/forecast", json={"series": values.tolist(), "horizon": 6, "periodicity": 12}).json()
        one = client.post("/forecast", json={"series": values[:, 0].tolist(), "horizon": 6, "periodicity": 12}).json()
    assert upload["columns"] == ["a", "b"] and upload["context"] == 120
    np.testing.assert_allclose(np.array(upload["forecast"]), cli, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(np.array(as_json["forecast"]), cli, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(np.array(one["forecast"]), cli[:, 0], rtol=1e-9, atol=1e-9)  # per-series: the same alone


def test_int8_quantizes_the_encoder_linears_and_keeps_the_embeddings(checkpoint):
    fp32, int8 = Engine.from_checkpoint(checkpoint), Engine.from_checkpoint(checkpoint, precision="int8")
    from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantizedLinear

    layers = list(int8.model.blocks.modules())
    assert not any(type(m) is torch.nn.Linear for m in layers) and int8.info()["precision"] == "int8"
    assert sum(isinstance(m, DynamicQuantizedLinear) for m in layers) == 4 * len(int8.model.blocks)  # qkv, proj, fc1, fc2
    assert type(int8.model.decoder_embed) is torch.nn.Linear  # the decoder stays float
    x = fp32.example("image").repeat(4, 1, 1, 1) * torch.linspace(0.5, 2, 4).view(4, 1, 1, 1)
    a, b = (omnimae.embed(e.model, x, "image") for e in (fp32, int8))
    assert torch.nn.functional.cosine_similarity(a, b).min() > 0.99
    assert not torch.equal(a, b)  # it did change the arithmetic


def test_the_readme_serving_client_example_runs(server, tmp_path, monkeypatch):
    import re
    from pathlib import Path

    url, _, _ = server
    text = (Path(__file__).parent.parent / "README.md").read_text()
    code = re.search(r"```python\n(.*?)```", text[text.index("## Serving"):], re.S).group(1)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "photo.png").write_bytes(png_bytes(3))
    scope: dict = {}
    exec(compile(code.replace("http://127.0.0.1:8000", url), "README.md (Serving)", "exec"), scope)
    assert len(scope["vector"]) == 64 and len(scope["future"]) == 12
