"""The FastAPI application: `/v1/chat/completions` (plain and streamed), `/v1/models`, `/health`, `/metrics`.

Every error is OpenAI's error JSON with its HTTP status (`ApiError`); nothing a client sends can crash the
server. Each chat request gets a root span `serve.request`, a child of the request's `traceparent`/`tracestate`
(W3C Trace Context, through `pixelis.core.tracing`), and its `traceparent` comes back in the response headers.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import secrets
import time
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, AsyncIterator

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException

from pixelis.core.tracing import TracedOperation, attach_context, inject
from pixelis.serve.batcher import Completion, Job
from pixelis.serve.protocol import ApiError, finish_reason, parse_request, trajectory_view, usage

if TYPE_CHECKING:
    from pixelis.serve.server import ServerState

log = logging.getLogger("pixelis.serve")

TRACE_HEADERS = ("traceparent", "tracestate")
ENDPOINTS = ("/v1/chat/completions", "/v1/models", "/health", "/metrics")


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it is known to exceed `limit` bytes."""
    length = request.headers.get("content-length", "")
    too_big = ApiError(413, f"the request body is over serve.max_body_bytes = {limit:,} bytes", code="body_too_large")
    if length.isdigit() and int(length) > limit:
        raise too_big
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_big
        chunks.append(chunk)
    return b"".join(chunks)


def _completion_body(job: Job, done: Completion, model: str, created: int) -> dict[str, Any]:
    return {
        "id": job.id, "object": "chat.completion", "created": created, "model": model,
        "choices": [{"index": i, "message": {"role": "assistant", "content": answer or ""},
                     "finish_reason": finish_reason(traj), "logprobs": None}
                    for i, (traj, answer) in enumerate(zip(done.choices, done.answers))],
        "usage": usage(done.rollouts),
        "pixelis": _extension(job, done),
    }


def _extension(job: Job, done: Completion) -> dict[str, Any]:
    """The `pixelis` field: trace id, model version, seed, vote confidence, the choices' trajectories."""
    return {"trace_id": job.op.trace_id, "model_version": done.model_version, "seed": job.seed,
            "confidence": done.confidence, "rollouts": len(done.rollouts),
            "trajectories": [trajectory_view(t, job.request.tool_images) for t in done.choices],
            "online": done.online}


def _sse(data: dict[str, Any] | str) -> bytes:
    return f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n".encode()


def create_app(state: "ServerState") -> FastAPI:
    """The ASGI app over a `ServerState` (its lifespan starts and stops the batcher and the update worker)."""
    cfg, metrics = state.cfg, state.metrics

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        state.start()
        yield
        await run_in_threadpool(state.shutdown)

    app = FastAPI(title="Pixelis agent server", version="1", lifespan=lifespan, docs_url=None, redoc_url=None)

    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        message = f"{request.method} {request.url.path}: {exc.detail}"
        return JSONResponse(ApiError(exc.status_code, message).body(), status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(ApiError(500, f"internal error: {type(exc).__name__}", type="server_error").body(),
                            status_code=500)

    @app.middleware("http")
    async def count(request: Request, call_next: Any) -> Response:
        try:
            response = await call_next(request)
            status = response.status_code
        except Exception:  # counted, then answered by the 500 handler
            status = 500
            raise
        finally:
            endpoint = request.url.path if request.url.path in ENDPOINTS else "other"
            metrics.requests.labels(endpoint, str(status)).inc()
        return response

    def authorize(request: Request) -> None:
        if state.api_key is None:
            return
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {state.api_key}".encode()):
            raise ApiError(401, "missing or wrong API key: send the header Authorization: Bearer <key>",
                           code="invalid_api_key")

    @app.get("/health")
    async def health() -> JSONResponse:
        batcher = state.batcher
        if batcher.state == "loading":
            return JSONResponse({"status": "loading"}, status_code=503)
        if batcher.state == "failed" or not batcher.alive():
            return JSONResponse({"status": "failed", "error": batcher.error or "the batcher stopped"},
                                status_code=503)
        if state.online and not (state.worker is not None and state.worker.alive()):
            return JSONResponse({"status": "worker_dead", "error": "the update worker is not running; see "
                                 f"{state.online_dir / 'worker.stderr'}"}, status_code=503)
        engine = batcher.engine
        return JSONResponse({"status": "ok", "model": state.model_name, "online": state.online,
                             "model_version": engine.version if engine is not None else 0})

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        authorize(request)
        return {"object": "list", "data": [{"id": state.model_name, "object": "model", "created": state.created,
                                            "owned_by": "pixelis"}]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        authorize(request)
        started = time.monotonic()
        raw = await _read_body(request, cfg.serve.max_body_bytes)
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            where = f" at line {exc.lineno} column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else ""
            raise ApiError(400, f"the body is not valid JSON{where}: {getattr(exc, 'msg', exc)}",
                           code="invalid_json") from None
        chat_request = await run_in_threadpool(parse_request, body, cfg.serve, state.model_name,
                                               cfg.agent.max_new_tokens, state.online)
        seed = chat_request.seed if chat_request.seed is not None else secrets.randbits(63)
        carrier = {name: request.headers.getlist(name) for name in TRACE_HEADERS if name in request.headers}
        with attach_context(carrier):
            op = TracedOperation("serve.request", "serve", {"seed": seed, "n": chat_request.n,
                                                            "stream": chat_request.stream}).start()
        with op.activate():
            headers = {"traceparent": inject()["traceparent"]}
        events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        loop = asyncio.get_running_loop()
        job = Job(id="chatcmpl-" + secrets.token_hex(12), request=chat_request, seed=seed, op=op,
                  emit=lambda kind, payload: loop.call_soon_threadsafe(events.put_nowait, (kind, payload)))
        op.set_attribute("completion_id", job.id)
        try:
            state.batcher.submit(job)
        except ApiError as exc:
            op.end(exc)
            raise
        deadline = started + cfg.serve.request_timeout_s
        created = int(time.time())

        async def next_event() -> tuple[str, Any]:
            try:
                return await asyncio.wait_for(events.get(), max(deadline - time.monotonic(), 0.0))
            except asyncio.TimeoutError:
                job.cancelled.set()
                return "error", ApiError(504, f"no answer within serve.request_timeout_s = "
                                              f"{cfg.serve.request_timeout_s:g} s", type="timeout",
                                         code="timeout")

        def close(error: ApiError | None) -> None:
            state.batcher.release()
            if error is None:
                metrics.latency.observe(time.monotonic() - started)
            op.end(error)

        if not chat_request.stream:
            kind, payload = await next_event()
            close(payload if kind == "error" else None)
            if kind == "error":
                raise payload
            return JSONResponse(_completion_body(job, payload, state.model_name, created), headers=headers)

        def chunk(choices: list[dict[str, Any]], **extra: Any) -> bytes:
            return _sse({"id": job.id, "object": "chat.completion.chunk", "created": created,
                         "model": state.model_name, "choices": choices, **extra})

        async def stream() -> AsyncIterator[bytes]:
            error: ApiError | None = None
            try:
                choices = 1 if state.online else chat_request.n
                yield chunk([{"index": i, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
                             for i in range(choices)])
                while True:
                    kind, payload = await next_event()
                    if kind == "step":
                        draw, step = payload
                        index = 0 if state.online else draw
                        yield chunk([{"index": index, "delta": {}, "finish_reason": None}],
                                    pixelis={"rollout": draw, "step": step})
                    elif kind == "error":
                        error = payload
                        yield _sse(payload.body())
                        return
                    else:
                        yield chunk([{"index": i, "delta": {"content": answer or ""},
                                      "finish_reason": finish_reason(traj)}
                                     for i, (traj, answer) in enumerate(zip(payload.choices, payload.answers))])
                        yield chunk([], usage=usage(payload.rollouts), pixelis=_extension(job, payload))
                        yield _sse("[DONE]")
                        return
            except BaseException as exc:  # the client went away (cancelled) or a bug: stop the rollouts
                job.cancelled.set()
                error = ApiError(499, f"stream ended: {type(exc).__name__}")
                raise
            finally:
                close(error)

        return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)

    return app
