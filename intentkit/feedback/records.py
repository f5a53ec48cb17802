"""Between the router and the log: a routed result as a log row, a correction checked against the
registry, and labelled rows back out in the datasets format."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from ..calls import NO_INTENT
from ..errors import ArgumentError, IntentKitError, ParseError, UnknownIntentError
from ..parser import parse_calls
from ..registry import Registry
from .store import LoggedRequest, RequestLog

__all__ = ["CorrectionError", "dataset_row", "dataset_rows", "from_result", "validate_correction"]

#: How many of the model's next-best intents a log row keeps.
RUNNERS_UP = 3


class CorrectionError(IntentKitError, ValueError):
    """A correction that does not parse, names no registered intent, or has arguments its
    intent's signature refuses; the message says which and where."""


def from_result(
    result: Any,
    request_id: str,
    *,
    endpoint: str,
    session_id: str | None = None,
    latency_ms: float | None = None,
    fingerprint: str | None = None,
    created_at: float | None = None,
) -> LoggedRequest:
    """The log row of one :class:`~intentkit.RouteResult`."""
    scores = dict(result.intent_scores or {})
    intent = result.intent
    runners = sorted(((n, float(p)) for n, p in scores.items() if n != intent), key=lambda x: -x[1])[:RUNNERS_UP]
    scope = result.scope
    return LoggedRequest(
        id=request_id,
        created_at=created_at if created_at is not None else time.time(),
        utterance=result.text,
        model_input=result.model_input if result.model_input != result.text else None,
        session_id=session_id,
        endpoint=endpoint,
        status=result.status.value,
        path=result.path.value,
        intent=intent,
        call_text=result.call_text if result.calls else (result.raw_output or f"{NO_INTENT}()")[:2000],
        confidence=result.confidence,
        runners_up=[(n, round(p, 5)) for n, p in runners],
        latency_ms=latency_ms,
        fingerprint=fingerprint,
        scope_distance=float(scope.distance) if scope is not None else None,
        out_of_scope=bool(scope.out_of_scope) if scope is not None else None,
    )


def validate_correction(registry: Registry, text: str) -> str:
    """``text`` as one canonical, validated call (``no_intent()`` for out of scope); raises
    :class:`CorrectionError` saying what is wrong."""
    try:
        calls = parse_calls(text)
    except ParseError as exc:
        raise CorrectionError(f"correct: does not parse: {exc.message} at position {exc.position}: {text!r}") from None
    if not calls:
        raise CorrectionError(f"correct: no call in {text!r}")
    if len(calls) == 1 and calls[0].name == NO_INTENT:
        if calls[0].args or calls[0].kwargs:
            raise CorrectionError(f"correct: {NO_INTENT}() takes no arguments: {text!r}")
        return f"{NO_INTENT}()"
    rendered = []
    for call in calls:
        if call.name == NO_INTENT:
            raise CorrectionError(f"correct: {NO_INTENT}() cannot stand beside other calls: {text!r}")
        try:
            rendered.append(registry.bind(call).render())
        except UnknownIntentError as exc:
            raise CorrectionError(f"correct: {exc}") from None
        except ArgumentError as exc:
            raise CorrectionError(f"correct: {call.name}: {exc}") from None
    return "; ".join(rendered)


def dataset_row(instruction: str, call_text: str) -> dict[str, Any]:
    """One row in the datasets format: ``instruction``, ``output`` (``null`` for out of scope),
    and the first call's ``name`` and ``args``."""
    calls = [c for c in parse_calls(call_text) if c.name != NO_INTENT]
    first = calls[0] if calls else None
    return {
        "instruction": instruction,
        "output": call_text if calls else None,
        "name": first.name if first else NO_INTENT,
        "args": dict(first.kwargs) if first else {},
    }


def dataset_rows(labelled: Iterable[tuple[LoggedRequest, str]]) -> list[dict[str, Any]]:
    """Rows in the datasets format (:func:`dataset_row`), with ``request_id`` and
    ``labelled_by`` kept so a row can be traced back."""
    return [
        {
            **dataset_row(request.model_input or request.utterance, label),
            "request_id": request.id,
            "labelled_by": "correction" if request.correction is not None else "vote",
        }
        for request, label in labelled
    ]


def export_corrections(log: RequestLog, *, since: float | None = None) -> list[dict[str, Any]]:
    """Every labelled request of ``log`` as a datasets row (:func:`dataset_rows`), oldest first."""
    return dataset_rows(log.labelled(since=since))
