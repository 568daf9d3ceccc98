"""`latentqa serve`: a reader behind HTTP, on FastAPI + uvicorn, with dynamic batching (`batching.py`).

POST /v1/answer   one query object, or a list of them → one answer object, or a list in the same order
GET  /health      {"status": "ok"} once the reader is loaded
GET  /v1/info     the reader, the batching and cache settings, counters
GET  /docs        OpenAPI docs (FastAPI's)

Every reply is JSON. Bad input is a 4xx error `{"error": {"field": ..., "message": ...}}` naming the field (415
for a body that is not declared `application/json`); the body is read against a size limit before it is parsed
and tokenized on a thread of its own, so the event loop keeps answering. A full queue is a 503 with Retry-After; a
fault of the server's own is a 500 whose `request_id` is in the log beside the traceback. uvicorn stops on
SIGTERM / SIGINT after the requests in flight are answered (the batcher drains before it closes).
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from ..config import EvalConfig, SpRule
from ..evaluation.predict import check_generation
from .batching import Batching, DynamicBatcher, Overloaded, Timed
from .pipeline import ReaderPipeline
from .queries import RequestError

log = logging.getLogger(__name__)
RETRY_AFTER = {"Retry-After": "1"}  # seconds: about what a full queue takes to drain a batch

PARAGRAPH_SCHEMA = {"oneOf": [
    {"type": "object", "required": ["title", "sentences"],
     "properties": {"title": {"type": "string"}, "sentences": {"type": "array", "items": {"type": "string"}}}},
    {"type": "object", "required": ["title", "text"],
     "properties": {"title": {"type": "string"}, "text": {"type": "string"}}},
    {"type": "array", "minItems": 2, "maxItems": 2, "description": "[title, [sentences]] or [title, text]"},
]}
QUERY_SCHEMA = {"type": "object", "required": ["question"], "properties": {
    "id": {"type": ["string", "integer"], "description": "echoed back"},
    "question": {"type": "string"},
    "paragraphs": {"type": "array", "items": PARAGRAPH_SCHEMA,
                   "description": "required unless the server has an index (serve --index), which retrieves them"},
    "latents": {"type": "integer", "minimum": 1,
                "description": "answer from the first K latents: a count the reader was trained for "
                               "(latent.nested_latents); default: the server's (serve --latents), else all"}}}
ANSWER_BODY = {"required": True, "content": {"application/json": {
    "schema": {"oneOf": [QUERY_SCHEMA, {"type": "array", "items": QUERY_SCHEMA}]},
    "example": {"id": "q1", "question": "Which city is the capital of France?",
                "paragraphs": [{"title": "Paris", "sentences": ["Paris is the capital of France."]}]}}}}


class Problem(Exception):
    def __init__(self, status: int, field: str | None, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.field, self.message, self.headers = status, field, message, headers


def error_response(status: int, field: str | None, message: str, headers: dict | None = None,
                   **extra) -> JSONResponse:
    return JSONResponse({"error": {"field": field, "message": message, **extra}}, status_code=status,
                        headers=headers)


def server_fault(err: BaseException, what: str, field: str | None = None) -> JSONResponse:
    """A 500 for a fault of the server's own, logged with its traceback under a request id the reply carries."""
    request_id = uuid.uuid4().hex[:12]
    log.error("request %s: %s", request_id, what, exc_info=err)
    return error_response(500, field, f"{what}: {type(err).__name__}: {str(err)[:300]}", request_id=request_id)


def check_json_content_type(request: Request) -> None:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/json" and not kind.endswith("+json"):
        raise Problem(415, "content-type", f"the body must be sent as application/json, got {kind or 'none'}")


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused (413) as soon as it is known to exceed `limit` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise Problem(413, "body", f"{declared} bytes, over the limit of {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise Problem(413, "body", f"over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(pipeline: ReaderPipeline, *, batching: Batching = Batching(), generation: EvalConfig | None = None,
               rule: SpRule = SpRule()) -> FastAPI:
    """The app over `pipeline`, batching concurrent queries as `batching` says; the generation settings
    (`pipeline.generation()` unless given) and the supporting-fact rule (the reader's saved one unless `rule` says
    something) are the server's."""
    config = generation or pipeline.generation()
    check_generation(pipeline.reader, config)
    rule = pipeline.rule(rule)
    batcher = DynamicBatcher(lambda prepared: pipeline.run(prepared, config, rule), batching)
    limits = pipeline.limits
    started = time.time()

    # one tokenizing thread: off the event loop, and the pipeline's tokenizers are never used by two threads at once
    tokenizing = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tokenize")

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher.start()
        yield
        await batcher.close()
        tokenizing.shutdown()

    app = FastAPI(title="latentqa reader", version="1", lifespan=lifespan,
                  description="Answer a question from its retrieved paragraphs with a latentqa reader.")
    app.state.batcher = batcher

    @app.exception_handler(Problem)
    async def on_problem(request: Request, err: Problem):
        return error_response(err.status, err.field, err.message, err.headers)

    @app.exception_handler(Exception)
    async def on_fault(request: Request, err: Exception):
        return server_fault(err, f"{request.method} {request.url.path} failed")

    @app.exception_handler(RequestError)
    async def on_request_error(request: Request, err: RequestError):
        return error_response(422, err.field, err.message)

    @app.exception_handler(HTTPException)
    async def on_http_error(request: Request, err: HTTPException):  # 404, 405: the same error shape
        return error_response(err.status_code, None, str(err.detail))

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/v1/info")
    async def info():
        return {**pipeline.info(), "uptime_s": round(time.time() - started, 1),
                "generation": {"max_new_tokens": config.max_new_tokens, "num_beams": config.num_beams,
                               "latents": config.latents},
                "batching": {**dataclasses.asdict(batching), "pending": len(batcher.pending)},
                "counters": batcher.counters.as_dict()}

    @app.post("/v1/answer", openapi_extra={"requestBody": ANSWER_BODY},
              summary="Answer one query, or a list of queries (answers in the same order)")
    async def answer(request: Request):
        received = time.perf_counter()
        check_json_content_type(request)
        body = await read_body(request, limits.max_body_bytes)
        try:
            payload = json.loads(body)
        except ValueError as err:
            raise Problem(400, "body", f"not JSON ({err})") from None
        except RecursionError:
            raise Problem(400, "body", "JSON nested too deeply") from None
        single = isinstance(payload, dict)
        queries = [payload] if single else payload
        if not isinstance(queries, list) or not queries:
            raise Problem(422, "body", "must be a query object or a non-empty list of them")
        if len(queries) > limits.max_queries:
            raise Problem(413, "body", f"{len(queries)} queries, over the limit of {limits.max_queries}")
        if len(queries) > batcher.room():  # refused before any tokenizing
            raise Problem(503, None, f"busy: {len(batcher.pending)} queries are waiting", RETRY_AFTER)
        prepared = await asyncio.get_running_loop().run_in_executor(
            tokenizing, lambda: [pipeline.prepare(q, "" if single else f"[{i}].") for i, q in enumerate(queries)])
        try:
            futures = batcher.enqueue(prepared)
        except Overloaded as err:  # filled up while this request was tokenized
            raise Problem(503, None, f"busy: {err}", RETRY_AFTER) from None
        outcomes = await asyncio.gather(*futures, return_exceptions=True)
        failed = [(i, o) for i, o in enumerate(outcomes) if isinstance(o, BaseException)]
        if failed:
            i, err = failed[0]
            return server_fault(err, "the reader failed on this query", None if single else f"[{i}]")
        total_ms = (time.perf_counter() - received) * 1000
        answers = [reply(timed, total_ms) for timed in outcomes]
        return answers[0] if single else answers

    return app


def reply(timed: Timed, total_ms: float) -> dict:
    return {**timed.result.to_json(), "batch_size": timed.batch_size,
            "timing_ms": {"queue": round(timed.queue_ms, 2), "model": round(timed.model_ms, 2),
                          "total": round(total_ms, 2)}}


def serve(pipeline: ReaderPipeline, *, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info",
          **app_options) -> None:
    """Run the app until SIGTERM / SIGINT; requests in flight are answered before it exits."""
    import uvicorn

    uvicorn.run(create_app(pipeline, **app_options), host=host, port=port, log_level=log_level)
