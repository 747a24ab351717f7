"""Serving: a checkpoint's encoder behind an HTTP API (FastAPI, uvicorn), micro-batched, optionally int8."""
