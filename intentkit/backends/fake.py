"""A scripted backend for tests and demos: no model, deterministic answers."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence

from ..errors import BackendError
from .base import Backend, GenerateRequest, Generation

__all__ = ["FakeBackend"]

Script = str | Sequence[str] | Mapping[str, str] | Callable[[GenerateRequest], "str | Generation"]


class FakeBackend(Backend):
    """Answers from a script instead of a model.

    ``script`` is one of:

    - a string: every request gets it;
    - a sequence: answers in order (a request past the end raises :class:`BackendError`);
    - a mapping from utterance to answer (an unscripted utterance raises :class:`BackendError`);
    - a function of the request returning the answer text or a full :class:`Generation`.

    ``confidence`` is attached to every text answer. Every request is kept in :attr:`requests`.
    """

    def __init__(self, script: Script, *, confidence: float | None = None) -> None:
        if isinstance(script, Sequence) and not isinstance(script, str):
            script = list(script)
        self._script = script
        self._confidence = confidence
        self._lock = threading.Lock()
        self._position = 0
        self.requests: list[GenerateRequest] = []
        self.closed = False

    def generate(self, request: GenerateRequest) -> Generation:
        if self.closed:
            raise BackendError("FakeBackend is closed")
        with self._lock:
            self.requests.append(request)
            answer = self._answer(request)
        if isinstance(answer, Generation):
            return answer
        return Generation(answer, confidence=self._confidence)

    def _answer(self, request: GenerateRequest) -> str | Generation:
        script = self._script
        if isinstance(script, str):
            return script
        if isinstance(script, list):
            if self._position >= len(script):
                raise BackendError(f"FakeBackend script exhausted after {len(script)} answers")
            self._position += 1
            return script[self._position - 1]
        if isinstance(script, Mapping):
            try:
                return script[request.text]
            except KeyError:
                raise BackendError(f"FakeBackend has no scripted answer for {request.text!r}") from None
        return script(request)

    def close(self) -> None:
        self.closed = True
