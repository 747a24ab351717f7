"""The HTTP API: a FastAPI application over one loaded Engine.

    GET  /health    liveness (no token needed)
    GET  /info      modalities, embedding width, channel vocabulary, precision, version, caps
    POST /embed     JSON arrays or uploaded files -> CLS, mean (and per-channel) embeddings, JSON or .npy
    POST /forecast  a JSON series or an uploaded CSV -> the forecast `omnimae forecast` gives
    POST /predict   class probabilities from a fine-tuned head (501 until checkpoints carry one)

Errors are JSON, {"error": {"field": ..., "problem": ...}}, never a traceback.
"""
from __future__ import annotations

import asyncio
import io
import logging
import secrets
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import numpy as np
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from omnimae.errors import ConfigError, OmniMAEError
from omnimae.features import POOLS
from omnimae.serve.batcher import MicroBatcher
from omnimae.serve.engine import Engine, ForecastItem
from omnimae.serve.inputs import InputError, Limits, Sample, array_sample, read_upload
from omnimae.serve.requests import EMBED_BODY, FORECAST_BODY, EmbedRequest, embed_request, forecast_request

log = logging.getLogger("omnimae")


@dataclass
class Settings:
    """How the server batches, waits and guards: the serve config's keys."""

    limits: Limits = field(default_factory=Limits)
    max_batch: int = 8
    max_wait_ms: float = 5.0
    timeout_s: float = 30.0
    token: str | None = None  # OMNIMAE_API_TOKEN: every route but /health then needs `Authorization: Bearer <token>`


class BodyLimit:
    """ASGI middleware: a request body over `max_bytes` is refused with 413 before the app reads it (by its
    Content-Length where given, else while it streams in)."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            return await _too_large(self.max_bytes)(scope, receive, send)
        body, size, more = [], 0, True
        while more:  # buffered whole: the cap bounds it, and the app then sees the body as sent
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body.append(message.get("body", b""))
            size, more = size + len(body[-1]), message.get("more_body", False)
            if size > self.max_bytes:
                return await _too_large(self.max_bytes)(scope, receive, send)
        replay = [{"type": "http.request", "body": b"".join(body), "more_body": False}]

        async def replayed():
            return replay.pop() if replay else await receive()

        return await self.app(scope, replayed, send)


def _too_large(max_bytes: int) -> JSONResponse:
    return _error(413, "body", f"the request body is over the cap of {max_bytes:,} bytes")


def _error(status: int, where: str | None, problem: str) -> JSONResponse:
    return JSONResponse({"error": {"field": where, "problem": problem}}, status_code=status)


def create_app(engine: Engine, settings: Settings | None = None) -> FastAPI:
    """The application: routes over `engine`, batched by one MicroBatcher per kind of work."""
    settings = settings or Settings()
    embedder = MicroBatcher(lambda key, items: engine.embed(key[0], items), settings.max_batch, settings.max_wait_ms)
    forecaster = MicroBatcher(lambda key, items: engine.forecast(items), settings.max_batch, settings.max_wait_ms)

    @asynccontextmanager
    async def lifespan(_app):
        yield
        await embedder.close()  # after uvicorn has drained the requests in flight
        await forecaster.close()

    app = FastAPI(title="omnimae", version=engine.info()["version"], lifespan=lifespan,
                  description="Embeddings and forecasts from an omnimae checkpoint's encoder.")
    app.state.engine, app.state.batchers = engine, {"embed": embedder, "forecast": forecaster}
    app.add_middleware(BodyLimit, max_bytes=settings.limits.max_request_bytes)
    _add_error_handlers(app)

    def authorized(request: Request) -> None:
        if settings.token is None:
            return
        given = request.headers.get("authorization", "")
        if not secrets.compare_digest(given.encode(), f"Bearer {settings.token}".encode()):
            raise _Unauthorized()

    guard = [Depends(authorized)]
    _info_routes(app, engine, settings, guard)
    _work_routes(app, engine, settings, guard)
    return app


def _info_routes(app: FastAPI, engine: Engine, settings: Settings, guard: list) -> None:
    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/info", dependencies=guard)
    async def info() -> dict:
        caps = settings.limits.__dict__ | {"timeout_s": settings.timeout_s}
        return engine.info() | {"batching": {"max_batch": settings.max_batch, "max_wait_ms": settings.max_wait_ms},
                                "limits": caps}

    @app.post("/predict", dependencies=guard)
    async def predict():
        return _error(501, "checkpoint", "the checkpoint has no head: class predictions need a fine-tuned checkpoint")


def _work_routes(app: FastAPI, engine: Engine, settings: Settings, guard: list) -> None:
    embedder, forecaster = app.state.batchers["embed"], app.state.batchers["forecast"]

    @app.post("/embed", dependencies=guard, openapi_extra=EMBED_BODY)
    async def embed(request: Request):
        req = await embed_request(request, engine, settings.limits)
        rows = await _timed(settings.timeout_s, _embed(req, engine, embedder, settings.limits))
        if req.format == "npy":
            table = np.asarray([[row[p] for p in POOLS] for row in rows], dtype=np.float32)  # [B, pools, D]
            buffer = io.BytesIO()
            np.save(buffer, table)
            return Response(buffer.getvalue(), media_type="application/octet-stream",
                            headers={"X-Omnimae-Pools": ",".join(POOLS)})
        return {"modality": req.modality, "embed_dim": engine.model.embed_dim, "precision": engine.precision,
                "embeddings": rows}

    @app.post("/forecast", dependencies=guard, openapi_extra=FORECAST_BODY)
    async def forecast(request: Request):
        if engine.forecaster is None:
            return _error(501, "checkpoint", f"this checkpoint cannot forecast: {engine.no_forecast}")
        req = await forecast_request(request, settings.limits)
        item = ForecastItem(req.values, req.horizon, req.periodicity)
        out = await _timed(settings.timeout_s, forecaster.submit(item.key(), item))  # [horizon, V]
        return {"forecast": (out[:, 0] if req.one_dimensional else out).tolist(), "columns": req.columns,
                "horizon": req.horizon, "periodicity": req.periodicity, "context": len(req.values)}


async def _embed(req: EmbedRequest, engine: Engine, batcher: MicroBatcher, limits: Limits) -> list[dict]:
    """Decode each input off the event loop, then batch each with whatever else is waiting."""
    samples: list[Sample] = []
    for where, payload in req.inputs:
        if isinstance(payload, tuple):  # (bytes, filename): an uploaded file
            samples.append(await run_in_threadpool(read_upload, engine.config, req.modality, payload[0], payload[1],
                                                   where, limits, req.channels))
        else:
            ids = engine.channel_ids(req.modality, req.channels) if req.channels is not None else None
            samples.append(array_sample(engine.example(req.modality), payload, where, ids,
                                        tuple(req.channels) if req.channels else None))
    return list(await asyncio.gather(*(batcher.submit((req.modality, *s.key()), s) for s in samples)))


async def _timed(timeout_s: float, work):
    try:
        return await asyncio.wait_for(work, timeout_s)
    except asyncio.TimeoutError:
        raise _Timeout(timeout_s) from None


class _Unauthorized(Exception):
    pass


class _Timeout(Exception):
    def __init__(self, seconds: float):
        self.seconds = seconds


def _add_error_handlers(app: FastAPI) -> None:
    """Every failure as JSON naming the field: the caller's input 4xx, the server's own 500 (logged here)."""

    @app.exception_handler(InputError)
    async def bad_input(_request, e: InputError):
        return _error(413 if e.too_large else 422, e.key, e.problem)

    @app.exception_handler(OmniMAEError)
    async def omnimae_error(_request, e: OmniMAEError):
        if isinstance(e, ConfigError):
            return _error(422, e.key, e.problem)
        return _error(422, "input", str(e))

    @app.exception_handler(RequestValidationError)
    async def invalid(_request, e: RequestValidationError):
        first = e.errors()[0] if e.errors() else {}
        return _error(422, ".".join(str(p) for p in first.get("loc", ())[1:]) or "body", first.get("msg", str(e)))

    @app.exception_handler(_Unauthorized)
    async def unauthorized(_request, _e):
        response = _error(401, "authorization", "a valid `Authorization: Bearer <token>` header is required")
        response.headers["WWW-Authenticate"] = "Bearer"
        return response

    @app.exception_handler(_Timeout)
    async def timeout(_request, e: _Timeout):
        return _error(504, None, f"the request took longer than the server's timeout of {e.seconds:g} s")

    @app.exception_handler(Exception)
    async def internal(_request, e: Exception):
        log.error("serve: %s: %s", type(e).__name__, e)
        return _error(500, None, f"internal error ({type(e).__name__}); the server's log has the details")
