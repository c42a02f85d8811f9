"""The FastAPI application: OpenAI-compatible routes in front of one model worker.

Routes: ``POST /v1/completions`` and ``POST /v1/chat/completions`` (whole or streamed), ``GET
/v1/models``, ``GET /health`` and ``GET /metrics``. A request is read (size-limited before any
parsing), checked (``protocol``), queued for the worker (429 when the queue is full), then answered
from the worker's chunks (``responses``). Every refusal is an OpenAI-shaped JSON error with a 4xx
status; a client that goes away cancels its job, which the worker notices between chunks.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ptp.model import PTPModel
from ptp.serve.config import ServeConfig
from ptp.serve.errors import APIError, error_response
from ptp.serve.metrics import CONTENT_TYPE, Metrics
from ptp.serve.protocol import GenerationRequest, ModelInfo, parse_chat, parse_completion
from ptp.serve.responses import Generation, sse
from ptp.serve.text import TextStream
from ptp.serve.worker import Failed, Finished, Job, ModelWorker, QueueFull

ROUTES = ("/v1/completions", "/v1/chat/completions", "/v1/models", "/health", "/metrics")
CLIENT_GONE = 499  # nginx's "client closed request": the status logged when a client leaves early


@dataclass(frozen=True)
class Served:
    """What the routes share."""

    config: ServeConfig
    info: ModelInfo
    tokenizer: object
    worker: ModelWorker
    metrics: Metrics


def load_model(model_dir: str):
    """The PTP model (eval mode) and its tokenizer from a checkpoint directory."""
    from transformers import AutoTokenizer

    from ptp.checkpoint_format import tokenizer_dir

    model = PTPModel.from_pretrained(model_dir).eval()
    return model, AutoTokenizer.from_pretrained(tokenizer_dir(model_dir))


def model_info(config: ServeConfig, model: PTPModel, tokenizer) -> ModelInfo:
    context = model.max_positions
    return ModelInfo(
        name=config.model_name or Path(config.model_dir).resolve().name,
        vocab_size=model.vocab_size,
        context_length=context,
        sampling=model.cfg.sampling,
        has_chat_template=bool(getattr(tokenizer, "chat_template", None)),
    )


def build_app(config: ServeConfig, model: PTPModel, tokenizer) -> FastAPI:
    """The app; its lifespan starts the model worker and stops it (cancelling queued jobs)."""
    metrics = Metrics()
    if config.method is None:  # the model's fastest method, shown by /v1/models and in every response
        config = replace(config, method=model.default_method)
    worker = ModelWorker(model, tokenizer, config.method, config.slot_budget, config.queue_size, metrics,
                         config.max_batch)
    served = Served(config, model_info(config, model, tokenizer), tokenizer, worker, metrics)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        worker.start()
        yield
        worker.stop()

    app = FastAPI(title="ptp", version="1", lifespan=lifespan)
    app.state.served = served
    app.add_middleware(RequestMetrics, metrics=served.metrics)
    _add_error_handlers(app)
    _add_routes(app, served)
    return app


def _add_routes(app: FastAPI, served: Served) -> None:
    info = served.info

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        body = await read_json(request, served.config.max_body_bytes)
        return await answer(served, request, parse_completion(body, served.config, info, served.tokenizer), False)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        body = await read_json(request, served.config.max_body_bytes)
        return await answer(served, request, parse_chat(body, served.config, info, served.tokenizer), True)

    @app.get("/v1/models")
    async def models() -> dict:
        card = {"id": info.name, "object": "model", "created": 0, "owned_by": "ptp",
                "context_length": info.context_length, "method": served.config.method}
        return {"object": "list", "data": [card]}

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "model": info.name, "queue_depth": served.worker.depth()}

    @app.get("/metrics")
    async def metrics() -> Response:
        text = served.metrics.render(served.worker.depth(), served.worker.busy, served.worker.batch_size)
        return PlainTextResponse(text, media_type=CONTENT_TYPE)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def api_error(_: Request, err: APIError) -> JSONResponse:
        return err.response()

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(err.status_code)
        message = f"{request.method} {request.url.path}: {err.detail}"
        return error_response(err.status_code, message, code=code)

    @app.exception_handler(Exception)
    async def server_error(_: Request, err: Exception) -> JSONResponse:
        message = f"internal error: {type(err).__name__}"
        return error_response(500, message, error_type="server_error", code="internal_error")


async def read_json(request: Request, limit: int) -> object:
    """The body as JSON; refused (413) as soon as it is known to exceed ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise _too_large(limit) if declared.isdigit() else APIError(400, "invalid Content-Length header")
    body = bytearray()
    async for part in request.stream():
        body += part
        if len(body) > limit:
            raise _too_large(limit)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as err:
        raise APIError(400, f"the request body is not valid UTF-8 ({err.reason} at byte {err.start})",
                       code="invalid_encoding") from None
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as err:  # JSONDecodeError, huge integers, absurd nesting
        raise APIError(400, f"the request body is not valid JSON: {err}", code="invalid_json") from None


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON")


def _too_large(limit: int) -> APIError:
    return APIError(413, f"the request body exceeds {limit} bytes", code="request_too_large")


async def answer(served: Served, request: Request, gen_request: GenerationRequest, chat: bool) -> Response:
    """Queue the request, wait for its prefill (so errors still get a status), then answer."""
    started = time.perf_counter()
    try:
        job = served.worker.submit(gen_request, asyncio.get_running_loop())
    except QueueFull as err:
        raise APIError(429, f"the server is busy: {err}; retry later", error_type="rate_limit_error",
                       code="rate_limit_exceeded") from None
    gen = Generation(gen_request, TextStream(served.tokenizer, gen_request.stop), chat,
                     served.config.method, served.info.name)
    first = await _next_event(job, request, served.config.disconnect_poll_seconds, served.metrics)
    if isinstance(first, Failed | Finished):
        raise _failure(first)
    if gen_request.stream:
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        events = _stream(served, job, gen, request.url.path, started)
        return StreamingResponse(events, media_type="text/event-stream", headers=headers)
    while not isinstance(event := await _next_event(job, request, served.config.disconnect_poll_seconds,
                                                    served.metrics), Finished):
        if isinstance(event, Failed):
            raise _failure(event)
        _first_token(served, gen, request.url.path, started)
        gen.add(event)
    return JSONResponse(gen.body())


async def _stream(served: Served, job: Job, gen: Generation, endpoint: str, started: float) -> AsyncIterator[str]:
    """The SSE body; on a client disconnect Starlette cancels it and ``finally`` cancels the job."""
    ended = False
    try:
        yield gen.sse_start()
        while not isinstance(event := await job.events.get(), Finished):
            if isinstance(event, Failed):
                ended, err = True, _failure(event)
                yield sse({"error": {"message": err.message, "type": err.error_type, "param": None, "code": err.code}})
                return
            _first_token(served, gen, endpoint, started)
            yield gen.sse_delta(gen.add(event))
        ended = True
        yield gen.sse_end()
    finally:
        if not ended:
            job.cancel()
            served.metrics.observe_cancel()


async def _next_event(job: Job, request: Request, poll: float, metrics: Metrics):
    """The job's next event; cancels the job (and answers 499) if the client leaves meanwhile."""
    while True:
        try:
            return await asyncio.wait_for(job.events.get(), poll)
        except TimeoutError:
            if await request.is_disconnected():
                job.cancel()
                metrics.observe_cancel()
                raise APIError(CLIENT_GONE, "the client closed the request", code="client_closed") from None


def _first_token(served: Served, gen: Generation, endpoint: str, started: float) -> None:
    if gen.teacher_calls == 0:
        served.metrics.observe_first_token(endpoint, time.perf_counter() - started)


def _failure(event: Failed | Finished) -> APIError:
    if isinstance(event, Finished):
        return APIError(503, "the server is shutting down", error_type="server_error", code="shutting_down")
    if event.bad_input:
        return APIError(400, event.message, code="invalid_value")
    return APIError(500, event.message, error_type="server_error", code="generation_failed")


class RequestMetrics:
    """Pure ASGI middleware: counts requests by endpoint and status and times them to the last byte."""

    def __init__(self, app, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), 500

        async def send_and_record(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            endpoint = scope["path"] if scope["path"] in ROUTES else "other"
            self.metrics.observe_request(endpoint, status, time.perf_counter() - started)
