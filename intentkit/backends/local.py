"""The base class of backends that run a model in this process (llama.cpp, transformers).

A subclass loads its model as one or more :class:`~intentkit.backends.decoding.TokenModel`\\ s
(sequences of one model that can run requests at the same time, e.g. llama.cpp's ``parallel``)
and calls :meth:`LocalBackend._start`; the base class then owns the rest: one request at a time
per sequence (more concurrent callers queue, memory stays bounded), the request orchestration
(:class:`~intentkit.backends.generator.LocalGenerator`), the out-of-scope detector, hidden states
for fitting one, and one close semantics (after :meth:`close`, every request is a
:class:`~intentkit.errors.BackendError`)."""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import BackendError
from ..model_dir import ModelInfo
from ..prompt import PromptFormat
from ..registry import IntentCatalog, Registry
from .base import Backend, GenerateRequest, Generation
from .decoding import TokenModel
from .generator import LocalGenerator

if TYPE_CHECKING:
    import numpy as np

    from ..drafts import DraftIndex
    from ..scope import ScopeDetector

__all__ = ["LocalBackend"]

T = TypeVar("T")


class LocalBackend(Backend):
    """Shared machinery of the in-process backends; see the module docstring."""

    _model: TokenModel
    #: What the model's directory records about it (prompt, intents, run); empty when it has none.
    info: ModelInfo
    constrained: bool

    def _start(
        self,
        model: TokenModel,
        *more: TokenModel,
        info: ModelInfo,
        source: str,
        constrained: bool,
        n_ctx: int | None = None,
        scope: ScopeDetector | str | Path | None = None,
        scope_dir: Path | None = None,
        drafts: DraftIndex | str | Path | None = None,
    ) -> None:
        """Install ``model`` (and ``more`` sequences of it: that many requests run at once);
        ``scope`` and ``drafts`` as documented on the subclasses (``"auto"``: ``scope.npz``,
        ``drafts.jsonl`` in ``scope_dir``)."""
        from ..drafts import resolve_drafts
        from ..scope import resolve_scope

        self._model, self.info, self.constrained, self.source = model, info, constrained, source
        self._lock = threading.Lock()  # the closed flag and the worker threads
        self._closed = False
        self._worker: ThreadPoolExecutor | None = None
        self._worker_idents: set[int] = set()
        self._generators = [
            LocalGenerator(m, trained_prompt=info.prompt, source=source, constrained=constrained, n_ctx=n_ctx)
            for m in (model, *more)
        ]
        self._generator = self._generators[0]
        #: The generators no request is running on, the last one freed first: at low concurrency
        #: one sequence serves every request (its cache and the model's stay small).
        self._free: queue.LifoQueue[LocalGenerator] = queue.LifoQueue()
        for generator in self._generators:
            self._free.put(generator)
        detector, index = resolve_scope(scope, scope_dir, model.hidden_width), resolve_drafts(drafts, scope_dir)
        for generator in self._generators:
            generator.set_scope(detector)
            generator.drafts = index

    @property
    def parallel(self) -> int:
        """How many requests run at once (the rest queue)."""
        return len(self._generators)

    @property
    def prompt(self) -> PromptFormat | None:
        """The prompt format the model was trained with, when it recorded one."""
        return self.info.prompt_format

    @property
    def scope(self) -> ScopeDetector | None:
        """The out-of-scope detector in use (``scope.npz`` next to the model, or set)."""
        return self._generator.scope

    def set_scope(self, detector: ScopeDetector | None) -> None:
        with self._every_generator() as generators:
            for generator in generators:
                generator.set_scope(detector)

    @property
    def drafts(self) -> DraftIndex | None:
        """The index answers are drafted from (``drafts.jsonl`` next to the model, or set)."""
        return self._generator.drafts

    def set_drafts(self, drafts: DraftIndex | None) -> None:
        """Draft answers from ``drafts`` (``None``: decode every decision step by step). The
        answers are the same either way; a draft only saves evaluations."""
        with self._every_generator() as generators:
            for generator in generators:
                generator.drafts = drafts

    def generate(self, request: GenerateRequest) -> Generation:
        return self._on_worker(self._generate, request)

    async def agenerate(self, request: GenerateRequest) -> Generation:
        """Async :meth:`generate` (the model's worker thread does the work; the loop is free)."""
        return await asyncio.wrap_future(self._submit(self._generate, request))

    def _generate(self, request: GenerateRequest) -> Generation:
        return self._on_generator(lambda generator: generator.run(request))

    def _on_generator(self, fn: Callable[[LocalGenerator], T]) -> T:
        """``fn`` on a free generator (waiting for one), with the model marked busy for it."""
        generator = self._free.get()
        try:
            self._check_open()
            with getattr(generator.model.base, "active", nullcontext)():
                return fn(generator)
        except BackendError:
            raise
        except RuntimeError as exc:  # out of memory, shape errors: the router reports backend_error
            self._reset()
            raise BackendError(f"{type(self).__name__} failed: {exc}") from exc
        finally:
            self._free.put(generator)

    @contextmanager
    def _every_generator(self) -> Iterator[list[LocalGenerator]]:
        """Every generator, once the requests running on them have finished (none starts meanwhile)."""
        taken = [self._free.get() for _ in self._generators]
        try:
            yield taken
        finally:
            for generator in taken:
                self._free.put(generator)

    # Every request runs on a worker thread of the backend's own, one per generator. With one
    # generator, every evaluation of the model happens on that one thread: llama.cpp's compute
    # threads belong to the thread that calls it, and called from a second thread both sets spin
    # (on 2 cores every decode after that measured 1.9x slower: the service's async requests and
    # a sync caller, say). With several, the model evaluates on one thread of its own
    # (:class:`~intentkit.backends.llamacpp.bindings.LlamaContext`).
    def _submit(self, fn: Any, *args: Any) -> Future[Any]:
        with self._lock:
            self._check_open()
            if self._worker is None:
                self._worker = ThreadPoolExecutor(
                    len(self._generators), thread_name_prefix=f"intentkit-{type(self).__name__}", initializer=self._mark_worker
                )
            return self._worker.submit(fn, *args)

    def _mark_worker(self) -> None:
        self._worker_idents.add(threading.get_ident())

    def _on_worker(self, fn: Any, *args: Any) -> Any:
        if threading.get_ident() in self._worker_idents:  # already there (a nested call)
            return fn(*args)
        return self._submit(fn, *args).result()

    def hidden_state(self, text: str, catalog: IntentCatalog | None = None) -> np.ndarray:
        """The hidden state a :class:`~intentkit.scope.ScopeDetector` measures for ``text``,
        under the prompt the model was trained with."""
        prompt = self.prompt or PromptFormat()
        request = GenerateRequest(text, catalog or Registry().catalog, prompt)

        return self._on_worker(self._on_generator, lambda generator: generator.hidden_state(request))

    def close(self) -> None:
        """Free the model once the requests running have finished; later requests raise
        :class:`BackendError`. Safe to call twice."""
        with self._every_generator():
            with self._lock:
                closing, self._closed = not self._closed, True
                worker, self._worker = self._worker, None
            if closing:
                self._release()
        if worker is not None:
            worker.shutdown(wait=False)

    def _check_open(self) -> None:
        if self._closed:
            raise BackendError(f"the {type(self).__name__} is closed")

    def _release(self) -> None:
        """Free what the model holds (called once, no request running)."""

    def _reset(self) -> None:
        """Forget the cached prefix after a failed request."""
