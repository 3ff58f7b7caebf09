"""The HTTP API (FastAPI on uvicorn): MLflow's scoring protocol on POST /invocations, so MLflow's own
clients work unchanged, plus health, readiness, version and Prometheus metrics.

  POST /invocations  {"inputs": [dialogue, ...]} (or instances / dataframe_records / dataframe_split)
                     -> {"predictions": [summary, ...]}
  GET  /health       the process is alive (liveness)
  GET  /ready, /ping a model is loaded (readiness; /ping is MLflow's name for it)
  GET  /version      model name, version, alias, source, when loaded
  GET  /metrics      Prometheus text

Every response carries X-Mixtune-Model-Version (the version that produced it, or the one being
served). Bad input is a 4xx naming the problem; a request that cannot be served in time is a 503.
"""
from __future__ import annotations

import asyncio
import contextlib
import time

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from components.common.config import ServeConfig
from components.serve.batcher import Batcher, NotReady, Overloaded
from components.serve.follower import AliasFollower, ModelSlot
from components.serve.metrics import ServeMetrics
from components.serve.payload import BadRequest, read_dialogues

VERSION_HEADER = "X-Mixtune-Model-Version"
NAME_HEADER = "X-Mixtune-Model-Name"
ROUTES = ("/invocations", "/health", "/ready", "/ping", "/version", "/metrics")


def error(status: int, kind: str, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error_code": kind.upper(), "message": message}, status_code=status, headers=headers)


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused past `limit` bytes whether or not Content-Length says so."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise BadRequest(413, "body_too_large", f"body of {declared} bytes; at most {limit} (serve.max_body_bytes)")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BadRequest(413, "body_too_large", f"body over {limit} bytes (serve.max_body_bytes)")
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(settings: ServeConfig, slot: ModelSlot, follower: AliasFollower, metrics: ServeMetrics) -> FastAPI:
    state: dict = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher = Batcher(slot, metrics, settings.max_batch, settings.max_wait_ms, settings.max_queue)
        task = asyncio.create_task(batcher.run())
        state["batcher"] = batcher
        follower.start()
        try:
            yield
        finally:
            follower.stop()
            task.cancel()
            batcher.close()
            if slot.current is not None:
                slot.current.drop()  # its downloaded files; the process is going away

    app = FastAPI(title="mixtune serve", lifespan=lifespan, docs_url=None, redoc_url=None)

    @app.middleware("http")
    async def count_and_name(request: Request, call_next):
        response = await call_next(request)
        route = request.url.path if request.url.path in ROUTES else "other"
        metrics.requests.labels(route, str(response.status_code)).inc()
        model = slot.current
        if VERSION_HEADER.lower() not in response.headers and model is not None:
            response.headers[VERSION_HEADER] = model.version
        if model is not None:
            response.headers.setdefault(NAME_HEADER, model.name)
        return response

    def not_ready() -> JSONResponse:
        why = follower.last_error or "the model is still loading"
        return error(503, "not_ready", f"no model loaded: {why}", {"Retry-After": "5"})

    @app.post("/invocations")
    async def invocations(request: Request):
        started = time.perf_counter()
        try:
            return await _invoke(request)
        finally:
            metrics.latency.observe(time.perf_counter() - started)

    async def _invoke(request: Request):
        ctype = request.headers.get("content-type", "")
        if ctype.split(";")[0].strip().lower() != "application/json":
            metrics.errors.labels("unsupported_media_type").inc()
            return error(415, "unsupported_media_type",
                         f"Content-Type {ctype or '(none)'!r}: send application/json (MLflow's scoring protocol)")
        try:
            texts = read_dialogues(await read_body(request, settings.max_body_bytes), settings.max_inputs,
                                   settings.max_input_chars)
        except BadRequest as e:
            metrics.errors.labels(e.kind).inc()
            return error(e.status, e.kind, e.message)
        batcher: Batcher = state["batcher"]
        try:
            pending = batcher.submit(texts)
        except NotReady:
            metrics.errors.labels("not_ready").inc()
            return not_ready()
        except Overloaded as e:
            metrics.errors.labels("overloaded").inc()
            return error(503, "overloaded", f"server busy: {e}; retry later", {"Retry-After": "1"})
        try:
            answer = await asyncio.wait_for(asyncio.shield(pending.future), settings.request_timeout_seconds)
        except TimeoutError:
            batcher.abandon(pending)
            metrics.errors.labels("timeout").inc()
            return error(503, "timeout", f"not answered within {settings.request_timeout_seconds:g} s "
                         f"(serve.request_timeout_seconds); {batcher.queued_inputs} inputs waiting",
                         {"Retry-After": "1"})
        except NotReady:
            metrics.errors.labels("not_ready").inc()
            return not_ready()
        except Exception as e:  # the model failed on valid input: say so, keep serving
            metrics.errors.labels("internal").inc()
            return error(500, "internal", f"generation failed: {type(e).__name__}: {str(e)[:500]}")
        return JSONResponse({"predictions": answer.predictions}, headers={VERSION_HEADER: answer.version})

    @app.get("/health")
    async def health():
        return {"status": "alive"}

    @app.get("/ready")
    @app.get("/ping")
    async def ready():
        model = slot.current
        if model is None:
            return not_ready()
        return {"ready": True, "version": model.version}

    @app.get("/version")
    async def version():
        model = slot.current
        if model is None:
            return not_ready()
        return {**model.describe(), "following": follower.alias, "last_error": follower.last_error}

    @app.get("/metrics")
    async def prometheus():
        return Response(metrics.text(), media_type=CONTENT_TYPE_LATEST)

    return app
