"""The one interface every backend implements (llama.cpp, transformers, OpenAI-compatible, fake).

A backend turns a :class:`GenerateRequest` (the chat messages plus the intent catalog, so a
backend can constrain its decoding to registered intents) into a :class:`Generation`: the call
text and, when the backend can tell, how confident it is.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from ..prompt import Message, PromptFormat
from ..registry import IntentCatalog

__all__ = ["Backend", "GenerateRequest", "Generation"]


@dataclass(frozen=True, slots=True)
class GenerateRequest:
    """What the router asks of a backend for one utterance."""

    text: str
    messages: list[Message]
    catalog: IntentCatalog
    prompt: PromptFormat
    max_tokens: int = 64


@dataclass(slots=True)
class Generation:
    """A backend's answer.

    ``text`` is the raw call text. ``confidence`` (0–1) is the probability of the chosen intent
    when the backend computes one; ``intent_scores`` the distribution it came from, keyed by
    intent name (``no_intent`` included); ``argument_confidence`` the probability of each argument
    value; ``info`` holds backend-specific detail (tokens, cache hits).
    """

    text: str
    confidence: float | None = None
    intent_scores: Mapping[str, float] | None = None
    argument_confidence: Mapping[str, float] | None = None
    info: dict[str, Any] = field(default_factory=dict)


class Backend(abc.ABC):
    """Base class of backends: implement :meth:`generate`; override :meth:`agenerate` when the
    backend has native async I/O (the default runs :meth:`generate` in a worker thread)."""

    @abc.abstractmethod
    def generate(self, request: GenerateRequest) -> Generation:
        """Answer one request. Raise :class:`~intentkit.errors.BackendError` on failure."""

    async def agenerate(self, request: GenerateRequest) -> Generation:
        """Async :meth:`generate`; the default runs it in a worker thread."""
        return await asyncio.to_thread(self.generate, request)

    def close(self) -> None:
        """Release models, connections and threads. Safe to call twice."""

    async def aclose(self) -> None:
        self.close()

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    async def __aenter__(self) -> Backend:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.aclose()
