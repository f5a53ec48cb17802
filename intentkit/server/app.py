"""The HTTP service: intentkit's own route API plus OpenAI-compatible endpoints.

- ``POST /v1/route`` ``{"text", "session_id"?}`` → the :class:`~intentkit.RouteResult` as JSON
  (handlers run);
- ``GET /v1/models``, ``POST /v1/chat/completions`` (plain and SSE streaming): the answer is the
  call text (``play_music()``), handlers are *not* run — the caller executes the call, as with
  any model server;
- ``GET /healthz``, ``GET /metrics`` (Prometheus).

With a request log (``log=``, :class:`~intentkit.feedback.RequestLog` or its URL), every routed
request is stored off the request path under the ``request_id`` its answer carries (the
``request_id`` field of ``/v1/route``, the ``X-Request-Id`` header of chat completions), and:

- ``POST /v1/feedback`` ``{"request_id", "vote"?: "up"|"down", "correct"?: "call(...)", "note"?}``
  stores a vote or a correction, validated against the registry, committed before the answer;
- ``GET /review`` is the review page, over ``GET /v1/review`` (the queue),
  ``GET /v1/review/intents`` (the registry, for its form) and ``GET /v1/review/export``
  (labelled rows in the datasets format, JSON Lines).

A bearer token, when configured, is required on every ``/v1`` route. Requests larger than
``max_body_bytes`` get 413 before they are read. Concurrent requests share one router; the
backend queues them (the llama.cpp backend holds a lock around its one context).
"""

from __future__ import annotations

import json
import secrets
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..router import Router, Session, Status
from .metrics import Metrics
from .review import REVIEW_PAGE, registry_form

if TYPE_CHECKING:
    from ..feedback import RequestLog

__all__ = ["ChatRequest", "FeedbackRequest", "RouteRequest", "create_app"]

#: The cookie the review page carries the bearer token in (set by ``/review?token=…``).
TOKEN_COOKIE = "intentkit_token"


def _unicode_text(value: Any) -> Any:
    """Strings must be valid Unicode: JSON can carry a lone surrogate (``"\\ud800"``), which no
    model, log or response encoder can."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError(f"not valid Unicode text: {exc.reason} at character {exc.start}") from None
    return value


class RouteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(description="the user's utterance")
    session_id: str | None = Field(None, max_length=128, description="joins this turn with the session's earlier turns")
    dispatch: bool = Field(True, description="run the handlers (false: only predict and validate)")

    _valid_text = field_validator("text", "session_id")(_unicode_text)


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    request_id: str = Field(min_length=1, max_length=64, description="the request_id its answer carried")
    vote: Literal["up", "down"] | None = Field(None, description="thumbs up or down")
    correct: str | None = Field(
        None, max_length=4000, description='the right call, e.g. weather_search(city="杭州"); no_intent() for out of scope'
    )
    note: str | None = Field(None, max_length=4000)

    _valid_text = field_validator("request_id", "correct", "note")(_unicode_text)


class ChatMessage(BaseModel):
    role: str
    content: str | list[dict[str, Any]] | None = None

    @field_validator("content")
    @classmethod
    def _valid_content(cls, value: Any) -> Any:
        if isinstance(value, list):
            for part in value:
                _unicode_text(part.get("text"))
            return value
        return _unicode_text(value)


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")  # temperature, top_p, … are accepted and ignored

    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False


class _BodyLimit:
    """Answer 413 for bodies over ``limit`` bytes, whether or not Content-Length is declared."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await _too_large(self.limit, send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise _BodyTooLarge
            return message

        try:
            await self.app(scope, limited, send)
        except _BodyTooLarge:
            await _too_large(self.limit, send)


class _BodyTooLarge(Exception):
    pass


async def _too_large(limit: int, send: Send) -> None:
    body = json.dumps({"error": {"message": f"request body over {limit} bytes", "type": "request_too_large"}}).encode()
    await send({"type": "http.response.start", "status": 413, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


def create_app(
    router: Router,
    *,
    token: str | None = None,
    model_name: str = "intentkit",
    max_body_bytes: int = 64 * 1024,
    max_sessions: int = 10_000,
    session_ttl_s: float = 300.0,
    log: RequestLog | str | None = None,
    review_threshold: float = 0.6,
) -> FastAPI:
    """A FastAPI app serving ``router``. ``token`` enables bearer auth on ``/v1`` and the review
    page. Dialogues (``session_id``) are kept server-side: at most ``max_sessions``, the least
    recently used evicted first, each forgotten ``session_ttl_s`` seconds after its last turn.

    ``log``: a :class:`~intentkit.feedback.RequestLog`, or its URL (``sqlite:///intentkit.db``,
    ``postgresql://…``), which the app then opens and closes; off by default. Its queue is drained
    when the app shuts down. ``review_threshold``: answers below this confidence join the review
    queue."""
    request_log, owned = _open_log(log)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            if request_log is not None:  # drain: what was routed is written before the process ends
                await run_in_threadpool(request_log.close if owned else request_log.flush)

    app = FastAPI(
        title="intentkit", version="1", summary="Intent routing: utterance in, validated function call out.", lifespan=lifespan
    )
    metrics = Metrics(log=request_log, batching=lambda: getattr(router.backend, "batching", None))
    sessions: OrderedDict[str, Session] = OrderedDict()
    fingerprint = router.prompt.fingerprint

    def authorize(request: Request) -> None:
        if token is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            given = request.cookies.get(TOKEN_COOKIE, "")
        if not given or not secrets.compare_digest(given.encode(), token.encode()):
            raise HTTPException(401, "missing or invalid bearer token", headers={"WWW-Authenticate": "Bearer"})

    def the_log() -> RequestLog:
        if request_log is None:
            raise HTTPException(
                404, "no request log: start the service with a log (intentkit serve --log sqlite:///intentkit.db)"
            )
        return request_log

    if request_log is not None:
        from ..feedback import from_result

    def remember(result: Any, request_id: str, endpoint: str, session_id: str | None, started: float) -> None:
        if request_log is None:
            return
        latency = (time.perf_counter() - started) * 1000
        request_log.record(
            from_result(result, request_id, endpoint=endpoint, session_id=session_id, latency_ms=latency, fingerprint=fingerprint)
        )

    def session_for(session_id: str | None) -> Session | None:
        if session_id is None:
            return None
        now = time.monotonic()
        while sessions:  # the least recently used first: drop the ones past their TTL
            oldest = next(iter(sessions.values()))
            if now - oldest.last_used <= session_ttl_s:
                break
            sessions.popitem(last=False)
        session = sessions.get(session_id)
        if session is None:
            if len(sessions) >= max_sessions:
                sessions.popitem(last=False)  # memory stays bounded: the least recently used goes
            session = sessions[session_id] = router.session(ttl_s=session_ttl_s)
        sessions.move_to_end(session_id)
        session.last_used = now
        return session

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        metrics.error(f"http_{exc.status_code}")
        return JSONResponse(
            {"error": {"message": exc.detail, "type": "invalid_request_error", "code": exc.status_code}},
            status_code=exc.status_code,
            headers=exc.headers,
        )

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        if "json" not in request.headers.get("content-type", ""):
            problems += " (send a JSON body with Content-Type: application/json)"
        metrics.error("http_422")
        return JSONResponse({"error": {"message": problems, "type": "invalid_request_error", "code": 422}}, status_code=422)

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "intents": len(router.registry), "backend": type(router.backend).__name__}

    @app.get("/metrics")
    async def prometheus() -> Any:
        from fastapi.responses import Response

        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    @app.post("/v1/route", dependencies=[Depends(authorize)])
    async def route(body: RouteRequest) -> JSONResponse:
        started, request_id = time.perf_counter(), uuid.uuid4().hex
        result = await router.ahandle(body.text, session=session_for(body.session_id), dispatch=body.dispatch)
        metrics.observe("/v1/route", result)
        remember(result, request_id, "/v1/route", body.session_id, started)
        status = 503 if result.status is Status.BACKEND_ERROR else 200
        return JSONResponse({"request_id": request_id, **result.to_dict()}, status_code=status)

    @app.post("/v1/feedback", dependencies=[Depends(authorize)])
    async def feedback(body: FeedbackRequest) -> JSONResponse:
        from ..feedback import CorrectionError, validate_correction

        store = the_log()
        if body.vote is None and body.correct is None and not body.note:
            raise HTTPException(422, "feedback needs a vote ('up' or 'down'), a correction ('correct') or a note")
        correct = None
        if body.correct is not None:
            try:
                correct = validate_correction(router.registry, body.correct)
            except CorrectionError as exc:
                raise HTTPException(422, str(exc)) from None
        try:
            row = await run_in_threadpool(
                store.add_feedback, body.request_id, vote=body.vote, correct=correct, note=body.note, source="api"
            )
        except KeyError:
            raise HTTPException(404, f"request_id {body.request_id!r}: no such request in the log") from None
        metrics.feedback(body.vote, correct is not None)
        return JSONResponse({"ok": True, "feedback": row.to_dict()})

    @app.get("/v1/review", dependencies=[Depends(authorize)])
    async def review_queue(limit: int = 50, offset: int = 0, reviewed: bool = False) -> JSONResponse:
        if not 1 <= limit <= 500 or offset < 0:
            raise HTTPException(422, "limit must be 1–500 and offset at least 0")
        store = the_log()
        items = await run_in_threadpool(
            store.review_queue, threshold=review_threshold, limit=limit, offset=offset, reviewed=reviewed
        )
        stats = await run_in_threadpool(store.stats)
        return JSONResponse({"items": [i.to_dict() for i in items], "stats": stats, "threshold": review_threshold})

    @app.get("/v1/review/intents", dependencies=[Depends(authorize)])
    async def review_intents() -> JSONResponse:
        return JSONResponse({"intents": registry_form(router.registry)})

    @app.get("/v1/review/export", dependencies=[Depends(authorize)])
    async def review_export(since: float | None = None) -> Response:
        from ..feedback import export_corrections

        rows = await run_in_threadpool(export_corrections, the_log(), since=since)
        body = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        return Response(
            body,
            media_type="application/x-ndjson",
            headers={"Content-Disposition": 'attachment; filename="corrections.jsonl"', "X-Rows": str(len(rows))},
        )

    @app.get("/review", response_model=None)
    async def review_page(request: Request) -> Response:
        given = request.query_params.get("token")
        if given is not None and token is not None:  # a link with the token: keep it in a cookie, drop it from the URL
            if not secrets.compare_digest(given.encode(), token.encode()):
                raise HTTPException(401, "invalid token", headers={"WWW-Authenticate": "Bearer"})
            redirect = RedirectResponse("/review", status_code=303)
            redirect.set_cookie(TOKEN_COOKIE, given, httponly=True, samesite="strict")
            return redirect
        authorize(request)
        the_log()
        return HTMLResponse(REVIEW_PAGE)

    @app.get("/v1/models", dependencies=[Depends(authorize)])
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": model_name, "object": "model", "created": 0, "owned_by": "intentkit"}]}

    @app.post("/v1/chat/completions", dependencies=[Depends(authorize)], response_model=None)
    async def chat(body: ChatRequest) -> JSONResponse | StreamingResponse:
        if body.model != model_name:
            raise HTTPException(404, f"unknown model {body.model!r}; available: {model_name}")
        turns = [_content(m) for m in body.messages if m.role == "user"]
        if not turns or not turns[-1].strip():
            raise HTTPException(400, "messages need a non-empty user message")
        text = router.prompt.join_turns(turns)
        started, request_id = time.perf_counter(), uuid.uuid4().hex
        result = await router.ahandle(text, dispatch=False)
        metrics.observe("/v1/chat/completions", result)
        remember(result, request_id, "/v1/chat/completions", None, started)
        if result.status is Status.BACKEND_ERROR:
            raise HTTPException(503, f"backend failed: {result.error}")
        answer = result.call_text if result.status is not Status.INVALID else (result.raw_output or "")
        completion_id, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
        extra = {"status": result.status.value, "confidence": result.confidence, "request_id": request_id}
        usage = _usage(result)
        headers = {"X-Request-Id": request_id}
        if body.stream:
            return StreamingResponse(
                _stream(completion_id, created, model_name, answer, extra, usage),
                media_type="text/event-stream",
                headers=headers,
            )
        return JSONResponse(
            {
                "id": completion_id,
                "object": "chat.completion",
                "created": created,
                "model": model_name,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}],
                "usage": usage,
                "intentkit": extra,
            },
            headers=headers,
        )

    app.add_middleware(BaseHTTPMiddleware, dispatch=_count_unhandled(metrics))
    app.add_middleware(_BodyLimit, limit=max_body_bytes)
    app.state.router, app.state.metrics, app.state.log = router, metrics, request_log
    return app


def _open_log(log: RequestLog | str | None) -> tuple[RequestLog | None, bool]:
    """The log and whether the app opened it (and so closes it)."""
    if log is None or not isinstance(log, str):
        return log, False
    from ..feedback import RequestLog

    return RequestLog(log), True


def _usage(result: Any) -> dict[str, int]:
    """The OpenAI ``usage`` field: the tokens the model read and wrote for this answer, as the
    backend counted them. An answer from the fast path (or a backend that does not count) ran no
    model tokens it knows of, and says 0."""
    prompt, completion = result.prompt_tokens or 0, result.completion_tokens or 0
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _content(message: ChatMessage) -> str:
    if isinstance(message.content, list):  # content parts: keep the text ones
        return "".join(str(part.get("text", "")) for part in message.content if part.get("type") == "text")
    return message.content or ""


async def _stream(
    completion_id: str, created: int, model: str, answer: str, extra: dict[str, Any], usage: dict[str, int]
) -> AsyncIterator[bytes]:
    def chunk(delta: dict[str, Any], finish: str | None) -> bytes:
        payload = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        if finish:
            payload["intentkit"] = extra
            payload["usage"] = usage
        return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n".encode()

    yield chunk({"role": "assistant", "content": ""}, None)
    yield chunk({"content": answer}, None)
    yield chunk({}, "stop")
    yield b"data: [DONE]\n\n"


def _count_unhandled(metrics: Metrics) -> Any:
    async def middleware(request: Request, call_next: Any) -> Any:
        try:
            return await call_next(request)
        except Exception as exc:  # never a dropped connection: a structured 500 instead
            metrics.error(type(exc).__name__)
            return JSONResponse(
                {"error": {"message": f"internal error: {type(exc).__name__}: {exc}", "type": "server_error", "code": 500}},
                status_code=500,
            )

    return middleware
