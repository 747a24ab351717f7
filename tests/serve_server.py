"""A real omnimae server for tests: uvicorn on a free loopback port, in a thread, over a tiny checkpoint."""
from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import omnimae

A = "modalities.{}.adapter."
TINY_MODALITIES = (
    "model=vit_tiny", "modality=[image,timeseries,microscopy,audio,video]",
    A.format("image") + "img_size=16", A.format("image") + "patch_size=4",
    A.format("timeseries") + "img_size=64", A.format("timeseries") + "patch_size=8",
    A.format("microscopy") + "img_size=16", A.format("microscopy") + "patch_size=8",
    A.format("audio") + "target_length=64", A.format("audio") + "mel_bins=32", A.format("audio") + "patch_size=16",
    A.format("video") + "img_size=16", A.format("video") + "patch_size=8", A.format("video") + "num_frames=4",
    "modalities.video.data.sampling_rate=2",
)


def tiny_checkpoint(folder: Path) -> Path:
    """A random-weight model of four modalities (small grids: a few tokens each), saved as omnimae saves."""
    return omnimae.save(omnimae.build(*TINY_MODALITIES, "seed=0").eval(), folder / "tiny.safetensors")


def wav_bytes(seconds: float = 1.0, rate: int = 16000) -> bytes:
    """Noise as a WAV file's bytes."""
    import io

    import numpy as np
    import soundfile as sf

    buffer = io.BytesIO()
    sf.write(buffer, np.random.default_rng(0).normal(0, 0.1, int(seconds * rate)).astype(np.float32), rate, format="WAV")
    return buffer.getvalue()


def mp4_bytes(frames: int = 12, size: int = 32) -> bytes:
    """Noise frames as an MPEG-4 video's bytes (PyAV's bundled encoder)."""
    import io

    import av
    import numpy as np

    buffer, rng = io.BytesIO(), np.random.default_rng(0)
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("mpeg4", rate=8)
        stream.width, stream.height, stream.pix_fmt = size, size, "yuv420p"
        for _ in range(frames):
            frame = av.VideoFrame.from_ndarray((rng.random((size, size, 3)) * 255).astype(np.uint8), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return buffer.getvalue()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running(app, drain_s: float = 5.0):
    """The app served by uvicorn on 127.0.0.1 in a thread; yields its base URL; stops it (gracefully) after."""
    import uvicorn

    config = uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning",
                            timeout_graceful_shutdown=drain_s)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{config.port}", server
    finally:
        server.should_exit = True
        thread.join(timeout=30)
