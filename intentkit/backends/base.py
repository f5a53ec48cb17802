"""The one interface every backend implements (llama.cpp, transformers, OpenAI-compatible, fake).

A backend turns a :class:`GenerateRequest` (the utterance, the intent catalog, so a backend can
constrain its decoding to registered intents, and the prompt format to render it with) into a
:class:`Generation`: the call text and, when the backend can tell, how confident it is.

The contract: :meth:`Backend.generate` (and :meth:`Backend.agenerate`) answer or raise
:class:`~intentkit.errors.BackendError`; :attr:`Backend.prompt` is the prompt the model was
trained with, when known; after :meth:`Backend.close` every request raises
:class:`~intentkit.errors.BackendError`, and closing twice is harmless.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any

from ..prompt import PromptFormat
from ..registry import IntentCatalog

if TYPE_CHECKING:
    from ..drafts import Draft
    from ..scope import ScopeVerdict

__all__ = ["Backend", "GenerateRequest", "Generation"]


@dataclass(frozen=True, slots=True)
class GenerateRequest:
    """What the router asks of a backend for one utterance (a session's turns already joined).

    ``draft`` is a guess at the call offered with the request (the registry's
    :attr:`~intentkit.Registry.drafter`: Home Assistant's own templates, for one): a local backend
    verifies it in one batch with the prompt, in place of its own nearest-row draft, and keeps
    only what its decoder would have chosen anyway; other backends ignore it."""

    text: str
    catalog: IntentCatalog
    prompt: PromptFormat
    max_tokens: int = 64
    draft: Draft | None = None

    def messages(self) -> list[dict[str, str]]:
        """The chat messages of this request (:meth:`PromptFormat.messages`)."""
        return self.prompt.messages(self.text, self.catalog)


@dataclass(slots=True)
class Generation:
    """A backend's answer.

    ``text`` is the raw call text. ``confidence`` (0–1) is the probability of the chosen intent
    when the backend computes one; ``intent_scores`` the distribution it came from, keyed by
    intent name (``no_intent`` included); ``argument_confidence`` the probability of each argument
    value. ``scope`` is the out-of-scope detector's verdict when the backend has one
    (:class:`~intentkit.scope.ScopeVerdict`). ``prompt_tokens`` / ``completion_tokens`` count the
    tokens read and written, where the backend knows them; ``info`` holds backend-specific detail
    (timings, cache hits).
    """

    text: str
    confidence: float | None = None
    intent_scores: Mapping[str, float] | None = None
    argument_confidence: Mapping[str, float] | None = None
    scope: ScopeVerdict | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    info: dict[str, Any] = field(default_factory=dict)


class Backend(abc.ABC):
    """Base class of backends: implement :meth:`generate`; override :meth:`agenerate` when the
    backend has native async I/O (the default runs :meth:`generate` in a worker thread), and
    :meth:`close` when it holds a model or connections."""

    @property
    def prompt(self) -> PromptFormat | None:
        """The prompt format the model was trained with, when the backend knows it (the router
        then renders requests with it)."""
        return None

    @abc.abstractmethod
    def generate(self, request: GenerateRequest) -> Generation:
        """Answer one request. Raise :class:`~intentkit.errors.BackendError` on failure."""

    async def agenerate(self, request: GenerateRequest) -> Generation:
        """Async :meth:`generate`; the default runs it in a worker thread."""
        return await asyncio.to_thread(self.generate, request)

    def close(self) -> None:
        """Release models, connections and threads; later requests raise BackendError. Safe to call twice."""

    async def aclose(self) -> None:
        """Async :meth:`close`."""
        self.close()

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    async def __aenter__(self) -> Backend:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.aclose()
