"""Reading the /embed and /forecast request bodies (JSON or multipart), each field checked and named."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
from omegaconf import OmegaConf
from fastapi import Request

from omnimae.errors import OmniMAEError
from omnimae.forecasting.forecaster import context_length
from omnimae.forecasting.periodicity import choose_periodicity
from omnimae.forecasting.series import SERIES
from omnimae.serve.inputs import InputError, Limits, safe_suffix

FORMATS = ("json", "npy")
MAX_CONTEXT = 2048  # omnimae forecast's max_context default: the same context, so the same numbers


@dataclass
class EmbedRequest:
    modality: str
    inputs: list[tuple[str, Any]]  # (field, a nested list / array, or (bytes, filename) for an upload)
    channels: list[str] | None
    format: str


@dataclass
class ForecastRequest:
    values: np.ndarray  # [T, V], cut to the context used
    horizon: int
    periodicity: int
    columns: list[str]
    one_dimensional: bool


async def _body(request: Request, limits: Limits) -> tuple[dict, dict[str, tuple[bytes, str | None]]]:
    """(fields, uploads by field name) of a JSON or multipart body."""
    kind = request.headers.get("content-type", "")
    if kind.startswith("multipart/form-data"):
        form = await request.form(max_files=limits.max_inputs, max_fields=32)
        fields, uploads = {}, {}
        for name, value in form.multi_items():
            if isinstance(value, str):
                fields[name] = value
            else:
                uploads.setdefault(name, []).append((await value.read(), value.filename))
        return fields, uploads
    try:
        body = json.loads(await request.body())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError("body", f"is not JSON ({e}); send JSON or multipart/form-data") from None
    if not isinstance(body, dict):
        raise InputError("body", f"must be a JSON object, got {type(body).__name__}")
    return body, {}


def _int(fields: dict, name: str, required: bool = False) -> int | None:
    """A positive integer field (JSON number or form text); None where absent and not required."""
    value = fields.get(name)
    if value is None or value == "":
        if required:
            raise InputError(name, "is required")
        return None
    try:
        number = int(value) if isinstance(value, str) else value
    except ValueError:
        raise InputError(name, f"must be an integer, got {value!r}") from None
    if isinstance(number, bool) or not isinstance(number, int) or number < 1:
        raise InputError(name, f"must be a positive integer, got {value!r}")
    return number


async def embed_request(request: Request, engine, limits: Limits) -> EmbedRequest:
    fields, uploads = await _body(request, limits)
    names = list(engine.model.adapters)
    modality = fields.get("modality") or (names[0] if len(names) == 1 else None)
    if modality is None:
        raise InputError("modality", f"the checkpoint has several modalities {names}: name one")
    if modality not in names:
        raise InputError("modality", f"unknown modality {modality!r}; the checkpoint has {names}")
    fmt = fields.get("format", "json")
    if fmt not in FORMATS:
        raise InputError("format", f"must be {' or '.join(FORMATS)}, got {fmt!r}")
    channels = fields.get("channels")
    if isinstance(channels, str):  # a form field: comma-separated names
        channels = [c.strip() for c in channels.split(",") if c.strip()]
    if channels is not None and (not isinstance(channels, list) or not all(isinstance(c, str) for c in channels)):
        raise InputError("channels", f"must be a list of channel names, got {channels!r}")
    inputs: list[tuple[str, Any]] = []
    for name, files in uploads.items():
        if name != "files":
            raise InputError(name, "unknown upload field; send files as `files`")
        inputs += [(f"files[{i}]", upload) for i, upload in enumerate(files)]
    if "inputs" in fields:
        if not isinstance(fields["inputs"], list):
            raise InputError("inputs", "must be a list of arrays, one per input")
        inputs += [(f"inputs[{i}]", x) for i, x in enumerate(fields["inputs"])]
    if not inputs:
        raise InputError("inputs", "no inputs: send `inputs` (JSON arrays) or upload `files`")
    if len(inputs) > limits.max_inputs:
        raise InputError("inputs", f"{len(inputs)} inputs, over the cap of {limits.max_inputs} per request", too_large=True)
    return EmbedRequest(modality, inputs, channels, fmt)


async def forecast_request(request: Request, limits: Limits) -> ForecastRequest:
    fields, uploads = await _body(request, limits)
    horizon, periodicity, context = _int(fields, "horizon", required=True), _int(fields, "periodicity"), _int(fields, "context")
    if "file" in uploads:
        table = _csv_series(uploads["file"][0], fields.get("time_column") or None)
        values, columns, one_dimensional = table.values, list(table.names), False
        if periodicity is None:  # as omnimae forecast: the time index's main cycle
            periodicity = choose_periodicity(OmegaConf.create({"periodicity": None, "input": "file"}), None, table)
    elif "series" in fields:
        values, columns, one_dimensional = _json_series(fields["series"])
    else:
        raise InputError("series", "is required: a JSON list (or list of rows), or a CSV uploaded as `file`")
    periodicity = periodicity or 1
    where = "file" if "file" in uploads else "series"
    if len(values) > limits.max_series_length:
        raise InputError(where, f"{len(values):,} points, over the cap of {limits.max_series_length:,}", too_large=True)
    try:
        n = context_length(len(values), periodicity, context, MAX_CONTEXT, where)
    except OmniMAEError as e:
        raise InputError("context" if context is not None and "context" in str(e) else where,
                         str(e).removeprefix(f"{where}: ")) from None
    return ForecastRequest(values[-n:], horizon, periodicity, columns, one_dimensional)


def _json_series(series: Any) -> tuple[np.ndarray, list[str], bool]:
    try:
        values = np.asarray(series, dtype=np.float64)  # null -> NaN, refused below
    except (TypeError, ValueError) as e:
        raise InputError("series", f"must be numbers: a list, or a list of rows ({e})") from None
    if values.ndim not in (1, 2) or values.size == 0:
        raise InputError("series", f"must be [T] or [T, V] numbers, got shape {list(values.shape)}")
    bad = int((~np.isfinite(values)).sum())
    if bad:
        raise InputError("series", f"holds {bad} NaN, null or infinite values")
    one = values.ndim == 1
    values = values.reshape(len(values), -1)
    return values, [f"v{i}" for i in range(values.shape[1])], one


def _csv_series(upload: tuple[bytes, str | None], time_column: str | None):
    """A CSV read by the time-series reader, as `omnimae forecast` reads its input (gaps, time column)."""
    import tempfile
    from pathlib import Path

    data, filename = upload
    with tempfile.TemporaryDirectory(prefix="omnimae-serve-") as tmp:
        path = Path(tmp) / f"series{safe_suffix(filename) or '.csv'}"
        path.write_bytes(data)
        try:
            table = SERIES.read_series(path, time_column=time_column)
        except OmniMAEError as e:
            raise InputError("file", str(e).replace(str(path), filename or "upload")) from None
        except Exception as e:
            raise InputError("file", f"cannot read {filename or 'the upload'} as a series ({type(e).__name__}: {e})") from None
    return table


_ARRAY = {"type": "array", "items": {}}
EMBED_BODY = {"requestBody": {"content": {
    "application/json": {"schema": {"type": "object", "required": ["inputs"], "properties": {
        "modality": {"type": "string"}, "inputs": {"type": "array", "items": _ARRAY},
        "channels": {"type": "array", "items": {"type": "string"}}, "format": {"enum": list(FORMATS)}}},
        "example": {"modality": "image", "inputs": [[[[0.0]]]], "format": "json"}},
    "multipart/form-data": {"schema": {"type": "object", "required": ["files"], "properties": {
        "files": {"type": "array", "items": {"type": "string", "format": "binary"}}, "modality": {"type": "string"},
        "channels": {"type": "string", "description": "comma-separated channel names (microscopy)"},
        "format": {"enum": list(FORMATS)}}}}}}}
FORECAST_BODY = {"requestBody": {"content": {
    "application/json": {"schema": {"type": "object", "required": ["series", "horizon"], "properties": {
        "series": _ARRAY, "horizon": {"type": "integer"}, "periodicity": {"type": "integer", "default": 1},
        "context": {"type": "integer"}}}, "example": {"series": [1, 2, 3, 1, 2, 3], "horizon": 3, "periodicity": 3}},
    "multipart/form-data": {"schema": {"type": "object", "required": ["file", "horizon"], "properties": {
        "file": {"type": "string", "format": "binary"}, "horizon": {"type": "integer"},
        "periodicity": {"type": "integer"}, "time_column": {"type": "string"}, "context": {"type": "integer"}}}}}}}
