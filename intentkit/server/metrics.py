"""Prometheus metrics of one app (its own registry, so several apps in one process do not clash)."""

from __future__ import annotations

from dataclasses import fields

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

from ..router import RouteResult, Status

_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("intentkit_requests", "Routed requests", ["endpoint", "status", "path"], registry=self.registry)
        self.stage = Histogram(
            "intentkit_stage_seconds", "Time per routing stage", ["stage"], buckets=_BUCKETS, registry=self.registry
        )
        self.intents = Counter("intentkit_intent", "Calls routed per intent", ["intent"], registry=self.registry)
        self.low_confidence = Counter(
            "intentkit_low_confidence", "Answers below the confidence threshold", registry=self.registry
        )
        self.errors = Counter("intentkit_errors", "Errors by type", ["type"], registry=self.registry)

    def observe(self, endpoint: str, result: RouteResult) -> None:
        self.requests.labels(endpoint, result.status.value, result.path.value).inc()
        for field in fields(result.timings):
            self.stage.labels(field.name.removesuffix("_ms")).observe(getattr(result.timings, field.name) / 1000)
        for call in result.calls:
            self.intents.labels(call.name).inc()
        if result.status is Status.LOW_CONFIDENCE:
            self.low_confidence.inc()
        for error in result.errors:
            self.errors.labels(type(error).__name__).inc()

    def error(self, kind: str) -> None:
        self.errors.labels(kind).inc()

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
