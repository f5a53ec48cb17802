"""The base class of backends that run a model in this process (llama.cpp, transformers).

A subclass loads its model as a :class:`~intentkit.backends.decoding.TokenModel` and calls
:meth:`LocalBackend._start`; the base class then owns the rest: one lock around the model
(concurrent callers queue, memory stays bounded), the request orchestration
(:class:`~intentkit.backends.generator.LocalGenerator`), the out-of-scope detector, hidden states
for fitting one, and one close semantics (after :meth:`close`, every request is a
:class:`~intentkit.errors.BackendError`)."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

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


class LocalBackend(Backend):
    """Shared machinery of the in-process backends; see the module docstring."""

    _model: TokenModel
    #: What the model's directory records about it (prompt, intents, run); empty when it has none.
    info: ModelInfo
    constrained: bool

    def _start(
        self,
        model: TokenModel,
        *,
        info: ModelInfo,
        source: str,
        constrained: bool,
        n_ctx: int | None = None,
        scope: ScopeDetector | str | Path | None = None,
        scope_dir: Path | None = None,
        drafts: DraftIndex | str | Path | None = None,
    ) -> None:
        """Install ``model``; ``scope`` and ``drafts`` as documented on the subclasses (``"auto"``:
        ``scope.npz``, ``drafts.jsonl`` in ``scope_dir``)."""
        from ..drafts import resolve_drafts
        from ..scope import resolve_scope

        self._model, self.info, self.constrained, self.source = model, info, constrained, source
        self._lock = threading.Lock()
        self._closed = False
        self._worker: ThreadPoolExecutor | None = None
        self._worker_ident: int | None = None
        self._generator = LocalGenerator(model, trained_prompt=info.prompt, source=source, constrained=constrained, n_ctx=n_ctx)
        self._generator.set_scope(resolve_scope(scope, scope_dir, model.hidden_width))
        self._generator.drafts = resolve_drafts(drafts, scope_dir)

    @property
    def prompt(self) -> PromptFormat | None:
        """The prompt format the model was trained with, when it recorded one."""
        return self.info.prompt_format

    @property
    def scope(self) -> ScopeDetector | None:
        """The out-of-scope detector in use (``scope.npz`` next to the model, or set)."""
        return self._generator.scope

    def set_scope(self, detector: ScopeDetector | None) -> None:
        with self._lock:
            self._generator.set_scope(detector)

    @property
    def drafts(self) -> DraftIndex | None:
        """The index answers are drafted from (``drafts.jsonl`` next to the model, or set)."""
        return self._generator.drafts

    def set_drafts(self, drafts: DraftIndex | None) -> None:
        """Draft answers from ``drafts`` (``None``: decode every decision step by step). The
        answers are the same either way; a draft only saves evaluations."""
        with self._lock:
            self._generator.drafts = drafts

    def generate(self, request: GenerateRequest) -> Generation:
        return self._on_worker(self._generate, request)

    async def agenerate(self, request: GenerateRequest) -> Generation:
        """Async :meth:`generate` (the model's worker thread does the work; the loop is free)."""
        return await asyncio.wrap_future(self._submit(self._generate, request))

    def _generate(self, request: GenerateRequest) -> Generation:
        with self._lock:
            self._check_open()
            try:
                return self._generator.run(request)
            except BackendError:
                raise
            except RuntimeError as exc:  # out of memory, shape errors: the router reports backend_error
                self._reset()
                raise BackendError(f"{type(self).__name__} failed: {exc}") from exc

    # Every evaluation of the model runs on one worker thread of the backend's own. It runs one
    # request at a time anyway, and llama.cpp's compute threads belong to the thread that calls it:
    # called from a second thread, both sets spin, and on 2 cores every decode after that measured
    # 1.9× slower (the service's async requests and a sync caller, say).
    def _submit(self, fn: Any, *args: Any) -> Future[Any]:
        with self._lock:
            self._check_open()
            if self._worker is None:
                self._worker = ThreadPoolExecutor(
                    1, thread_name_prefix=f"intentkit-{type(self).__name__}", initializer=self._mark_worker
                )
            return self._worker.submit(fn, *args)

    def _mark_worker(self) -> None:
        self._worker_ident = threading.get_ident()

    def _on_worker(self, fn: Any, *args: Any) -> Any:
        if threading.get_ident() == self._worker_ident:  # already there (a nested call)
            return fn(*args)
        return self._submit(fn, *args).result()

    def hidden_state(self, text: str, catalog: IntentCatalog | None = None) -> np.ndarray:
        """The hidden state a :class:`~intentkit.scope.ScopeDetector` measures for ``text``,
        under the prompt the model was trained with."""
        prompt = self.prompt or PromptFormat()
        request = GenerateRequest(text, catalog or Registry().catalog, prompt)

        def run() -> np.ndarray:
            with self._lock:
                self._check_open()
                return self._generator.hidden_state(request)

        return self._on_worker(run)

    def close(self) -> None:
        """Free the model; later requests raise :class:`BackendError`. Safe to call twice."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._release()
            worker, self._worker = self._worker, None
        if worker is not None:
            worker.shutdown(wait=False)

    def _check_open(self) -> None:
        if self._closed:
            raise BackendError(f"the {type(self).__name__} is closed")

    def _release(self) -> None:
        """Free what the model holds (called once, under the lock)."""

    def _reset(self) -> None:
        """Forget the cached prefix after a failed request."""
