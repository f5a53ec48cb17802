"""Prometheus metrics of one app (its own registry, so several apps in one process do not clash).

Besides request counts and stage times: the confidence of each intent's answers, out-of-scope
answers, feedback votes, and how far utterances fall from the training data by the out-of-scope
detector's measure (``distance / threshold``; above 1 the detector calls it out of scope): a share
of "far" requests that climbs is drift, users asking what the model was not trained on. With a
request log, its backlog and dropped rows. ``docs/grafana-dashboard.json`` charts them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import fields
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from ..calls import NO_INTENT
from ..router import RouteResult, Status

if TYPE_CHECKING:
    from ..feedback import RequestLog

_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_CONFIDENCE = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)
_DISTANCE = (0.25, 0.5, 0.75, 0.9, 1.0, 1.1, 1.25, 1.5, 2.0, 3.0)


class Metrics:
    def __init__(
        self, *, log: RequestLog | None = None, batching: Callable[[], Mapping[str, float] | None] | None = None
    ) -> None:
        """``batching``: the backend's batch counts (``LlamaCppBackend.batching``), where it has them."""
        self.registry = r = CollectorRegistry()
        self.requests = Counter("intentkit_requests", "Routed requests", ["endpoint", "status", "path"], registry=r)
        self.stage = Histogram("intentkit_stage_seconds", "Time per routing stage", ["stage"], buckets=_BUCKETS, registry=r)
        self.intents = Counter("intentkit_intent", "Calls routed per intent", ["intent"], registry=r)
        self.confidence = Histogram(
            "intentkit_confidence", "Confidence of the answer, per intent", ["intent"], buckets=_CONFIDENCE, registry=r
        )
        self.low_confidence = Counter("intentkit_low_confidence", "Answers below the confidence threshold", registry=r)
        self.out_of_scope = Counter("intentkit_out_of_scope", "Requests answered no_intent (out of scope)", registry=r)
        self.scope_distance = Histogram(
            "intentkit_scope_distance_ratio",
            "Out-of-scope detector: distance to the nearest training utterance / threshold",
            buckets=_DISTANCE,
            registry=r,
        )
        self.scope_far = Counter(
            "intentkit_scope_far", "Requests the detector finds far from the training data (ratio above 1)", registry=r
        )
        self.feedback_votes = Counter("intentkit_feedback", "Feedback received", ["vote", "corrected"], registry=r)
        self.errors = Counter("intentkit_errors", "Errors by type", ["type"], registry=r)
        if batching is not None and batching() is not None:  # llama.cpp with parallel > 1
            for key, help_text in (
                ("batches", "llama.cpp batches evaluated (concurrent requests share them)"),
                ("jobs", "Requests' evaluations in those batches: jobs / batches is requests per batch"),
                ("tokens", "Tokens evaluated in those batches"),
                ("busy_s", "Seconds spent evaluating batches"),
            ):
                Gauge(f"intentkit_llama_{key}", help_text, registry=r).set_function(_reader(batching, key))
        if log is not None:
            Gauge("intentkit_log_pending", "Request rows queued, not yet committed", registry=r).set_function(lambda: log.pending)
            Gauge(
                "intentkit_log_dropped", "Request rows the log could not take (queue full, write failed)", registry=r
            ).set_function(lambda: log.dropped)
            Gauge("intentkit_log_written", "Request rows committed", registry=r).set_function(lambda: log.written)

    def observe(self, endpoint: str, result: RouteResult) -> None:
        self.requests.labels(endpoint, result.status.value, result.path.value).inc()
        for field in fields(result.timings):
            self.stage.labels(field.name.removesuffix("_ms")).observe(getattr(result.timings, field.name) / 1000)
        for call in result.calls:
            self.intents.labels(call.name).inc()
        if result.confidence is not None:
            self.confidence.labels(result.intent or NO_INTENT).observe(result.confidence)
        if result.status is Status.LOW_CONFIDENCE:
            self.low_confidence.inc()
        if result.status is Status.NO_INTENT:
            self.out_of_scope.inc()
        scope = result.scope
        if scope is not None and scope.threshold > 0:
            ratio = scope.score / scope.threshold
            self.scope_distance.observe(ratio)
            if ratio > 1:
                self.scope_far.inc()
        for error in result.errors:
            self.errors.labels(type(error).__name__).inc()

    def feedback(self, vote: str | None, corrected: bool) -> None:
        self.feedback_votes.labels(vote or "none", "yes" if corrected else "no").inc()

    def error(self, kind: str) -> None:
        self.errors.labels(kind).inc()

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def _reader(counts: Callable[[], Mapping[str, float] | None], key: str) -> Callable[[], float]:
    return lambda: float((counts() or {}).get(key, 0))
