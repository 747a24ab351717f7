"""omnimae serve's guards over real HTTP: the token, the caps, 4xx JSON naming the field for each kind of bad
input, the per-request timeout, draining on shutdown; and the micro-batcher's isolation of a failing item."""
from __future__ import annotations

import asyncio
import struct
import threading
import time
import zlib

import httpx
import numpy as np
import pytest
from omegaconf import OmegaConf

from omnimae.errors import ConfigError
from omnimae.serve.app import Settings, create_app
from omnimae.serve.batcher import MicroBatcher
from omnimae.serve.engine import Engine
from omnimae.serve.inputs import Limits
from serve_server import running, tiny_checkpoint, wav_bytes


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    return Engine.from_checkpoint(tiny_checkpoint(tmp_path_factory.mktemp("serve_safety")))


@pytest.fixture(scope="module")
def url(engine):
    limits = Limits(max_request_bytes=200_000, max_inputs=4, max_values=10**6, max_audio_seconds=1.0)
    with running(create_app(engine, Settings(limits=limits, token="s3cret"))) as (base, _):
        yield base


AUTH = {"authorization": "Bearer s3cret"}


def png_header(width: int, height: int) -> bytes:
    """A PNG of a signature, an IHDR chunk declaring the size, and IEND: no pixel data at all."""
    chunk = lambda kind, data: struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))  # noqa: E731
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) + chunk(b"IEND", b"")


def ten_hour_wav_header() -> bytes:
    """A WAV header declaring 10 hours at 8 kHz, followed by half a second of samples."""
    size = 10 * 3600 * 8000 * 2
    fmt = struct.pack("<IHHIIHH", 16, 1, 1, 8000, 16000, 2, 16)
    return b"RIFF" + struct.pack("<I", 36 + size) + b"WAVEfmt " + fmt + b"data" + struct.pack("<I", size) + b"\x00\x01" * 4000


def ten_hour_flac_header() -> bytes:
    """A FLAC stream of nothing but its STREAMINFO block, declaring 10 hours of 16 kHz mono."""
    bits = (16000 << 44) | (0 << 41) | (15 << 36) | (10 * 3600 * 16000)  # rate, channels - 1, bits - 1, samples
    info = struct.pack(">HH", 4096, 4096) + bytes(6) + bits.to_bytes(8, "big") + bytes(16)
    return b"fLaC" + bytes([0x80]) + len(info).to_bytes(3, "big") + info


def test_the_token_guards_every_route_but_health(url):
    with httpx.Client(base_url=url) as client:
        assert client.get("/health").status_code == 200
        for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": "s3cret"}):
            r = client.get("/info", headers=headers)
            assert r.status_code == 401 and r.json()["error"]["field"] == "authorization"
            assert client.post("/embed", json={}, headers=headers).status_code == 401
        assert client.get("/info", headers=AUTH).status_code == 200


def image_array(engine, value=0.5):
    return np.full(tuple(engine.example("image").shape[1:]), value).tolist()


@pytest.mark.parametrize("case,status,field,words", [
    ("body over the cap", 413, "body", "cap"),
    ("streamed body over the cap", 413, "body", "cap"),
    ("too many inputs", 413, "inputs", "cap of 4"),
    ("50,000 x 50,000 PNG header", 413, "files[0]", "pixels"),
    ("2 s of audio over a 1 s cap", 413, "files[0]", "cap of 1 s"),
    ("10-hour WAV header", 422, "files[0]", "truncated"),
    ("10-hour FLAC header", 413, "files[0]", "36000 s of audio is over the cap"),
    ("corrupt file", 422, "files[0]", "corrupt"),
    ("wrong channel count", 422, "inputs[0]", "wrong channel count"),
    ("NaNs", 422, "inputs[0]", "NaN"),
    ("unknown modality", 422, "modality", "unknown modality 'spectra'"),
    ("series too short", 422, "series", "shorter than one period"),
    ("series with a null", 422, "series", "NaN, null"),
    ("missing horizon", 422, "horizon", "required"),
    ("not JSON", 422, "body", "not JSON"),
])
def test_bad_input_is_a_4xx_json_error_naming_the_field(url, engine, case, status, field, words):
    image = {"modality": "image"}
    requests = {
        "body over the cap": ("/embed", {"content": b"x" * 300_000}),
        "streamed body over the cap": ("/embed", {"content": iter([b"x" * 100_000] * 3)}),  # chunked: no length
        "too many inputs": ("/embed", {"json": image | {"inputs": [image_array(engine)] * 5}}),
        "50,000 x 50,000 PNG header": ("/embed", {"data": image, "files": [("files", ("big.png", png_header(50_000, 50_000)))]}),
        "2 s of audio over a 1 s cap": ("/embed", {"data": {"modality": "audio"}, "files": [("files", ("a.wav", wav_bytes(2.0)))]}),
        "10-hour WAV header": ("/embed", {"data": {"modality": "audio"}, "files": [("files", ("long.wav", ten_hour_wav_header()))]}),
        "10-hour FLAC header": ("/embed", {"data": {"modality": "audio"}, "files": [("files", ("long.flac", ten_hour_flac_header()))]}),
        "corrupt file": ("/embed", {"data": image, "files": [("files", ("a.png", b"\x89PNG\r\n\x1a\nnot really"))]}),
        "wrong channel count": ("/embed", {"json": image | {"inputs": [np.zeros((1, 16, 16)).tolist()]}}),
        "NaNs": ("/embed", {"content": b'{"modality": "image", "inputs": [' + str(image_array(engine)).replace("0.5", "NaN", 1).encode() + b"]}",
                            "headers": {"content-type": "application/json"}}),
        "unknown modality": ("/embed", {"json": {"modality": "spectra", "inputs": [[1.0]]}}),
        "series too short": ("/forecast", {"json": {"series": [1.0, 2.0, 3.0], "horizon": 4, "periodicity": 12}}),
        "series with a null": ("/forecast", {"json": {"series": [1.0, None, 3.0, 4.0], "horizon": 2}}),
        "missing horizon": ("/forecast", {"json": {"series": [1.0, 2.0, 3.0, 4.0]}}),
        "not JSON": ("/forecast", {"content": b"{series: oops", "headers": {"content-type": "application/json"}}),
    }
    route, kwargs = requests[case]
    kwargs["headers"] = kwargs.get("headers", {}) | AUTH
    with httpx.Client(base_url=url, timeout=30) as client:
        r = client.post(route, **kwargs)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["field"] == field and words in error["problem"], error
    assert "Traceback" not in r.text


def test_a_request_past_its_timeout_gets_504_and_the_server_goes_on(engine, monkeypatch):
    slow = engine.embed
    monkeypatch.setattr(engine, "embed", lambda *a: (time.sleep(1.0), slow(*a))[1])
    with running(create_app(engine, Settings(timeout_s=0.2))) as (base, _), httpx.Client(base_url=base) as client:
        r = client.post("/embed", json={"modality": "image", "inputs": [image_array(engine)]})
        assert r.status_code == 504 and "timeout" in r.json()["error"]["problem"]
        assert client.get("/health").status_code == 200


def test_shutdown_drains_requests_in_flight(engine, monkeypatch):
    """uvicorn's SIGTERM handler sets should_exit; a request already in the model still gets its answer."""
    entered, release, slow = threading.Event(), threading.Event(), engine.embed

    def held(*args):
        entered.set()
        release.wait(30)
        return slow(*args)

    monkeypatch.setattr(engine, "embed", held)
    answers = []
    with running(create_app(engine, Settings())) as (base, server):
        body = {"modality": "image", "inputs": [image_array(engine)]}
        sender = threading.Thread(target=lambda: answers.append(httpx.post(f"{base}/embed", json=body, timeout=30)))
        sender.start()
        assert entered.wait(30)  # the request is in the model
        server.should_exit = True  # what SIGTERM does
        time.sleep(0.2)  # (a server that did not drain would close the connection now)
        release.set()
        sender.join(timeout=30)
    assert answers and answers[0].status_code == 200 and len(answers[0].json()["embeddings"]) == 1


def test_omnimae_serve_binds_loopback_reads_the_token_and_drains(tmp_path, monkeypatch):
    """The verb as run from the command line, up to the point where uvicorn would take over."""
    import uvicorn

    from omnimae.cli import main

    seen = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(app=app, **kw))
    monkeypatch.setenv("OMNIMAE_API_TOKEN", "from-env")
    assert main(["serve", f"checkpoint={tiny_checkpoint(tmp_path)}", "quantize=int8", "drain_s=7"]) == 0
    assert (seen["host"], seen["port"], seen["timeout_graceful_shutdown"]) == ("127.0.0.1", 8000, 7)
    with running(seen["app"]) as (base, _), httpx.Client(base_url=base) as client:
        assert client.get("/info").status_code == 401
        assert client.get("/info", headers={"authorization": "Bearer from-env"}).json()["precision"] == "int8"


def test_a_failing_item_never_poisons_its_batch():
    calls = []

    def run(key, items):
        calls.append(list(items))
        if any(x < 0 for x in items):
            raise ValueError("negative")
        return [x * 10 for x in items]

    async def main():
        batcher = MicroBatcher(run, max_batch=8, max_wait_ms=50)
        results = await asyncio.gather(*(batcher.submit("k", x) for x in (1, 2, -3, 4)), return_exceptions=True)
        await batcher.close()
        return results

    results = asyncio.run(main())
    assert results[:2] == [10, 20] and results[3] == 40 and isinstance(results[2], ValueError)
    assert calls[0] == [1, 2, -3, 4]  # one batch first, then each alone


def test_batcher_and_serve_options_name_the_key():
    from omnimae.config.compose import compose
    from omnimae.serve.run import check_serve_options

    with pytest.raises(ConfigError, match="max_batch"):
        MicroBatcher(lambda k, i: i, max_batch=0)
    for override, key in (("quantize=int4", "quantize"), ("port=0", "port"), ("max_wait_ms=-1", "max_wait_ms")):
        cfg = compose("serve", ["checkpoint=x.safetensors", override])
        with pytest.raises(ConfigError, match=key):
            check_serve_options(cfg)
    assert OmegaConf.select(compose("serve", ["checkpoint=x"]), "host") == "127.0.0.1"
