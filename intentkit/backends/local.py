"""The base class of backends that run a model in this process (llama.cpp, transformers).

A subclass loads its model as a :class:`~intentkit.backends.decoding.TokenModel` and calls
:meth:`LocalBackend._start`; the base class then owns the rest: one lock around the model
(concurrent callers queue, memory stays bounded), the request orchestration
(:class:`~intentkit.backends.generator.LocalGenerator`), the out-of-scope detector, hidden states
for fitting one, and one close semantics (after :meth:`close`, every request is a
:class:`~intentkit.errors.BackendError`)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import BackendError
from ..model_dir import ModelInfo
from ..prompt import PromptFormat
from ..registry import IntentCatalog, Registry
from .base import Backend, GenerateRequest, Generation
from .decoding import TokenModel
from .generator import LocalGenerator

if TYPE_CHECKING:
    import numpy as np

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
    ) -> None:
        """Install ``model``; ``scope`` as documented on the subclasses (``"auto"``: ``scope.npz``
        in ``scope_dir``)."""
        from ..scope import resolve_scope

        self._model, self.info, self.constrained, self.source = model, info, constrained, source
        self._lock = threading.Lock()
        self._closed = False
        self._generator = LocalGenerator(model, trained_prompt=info.prompt, source=source, constrained=constrained, n_ctx=n_ctx)
        self._generator.set_scope(resolve_scope(scope, scope_dir, model.hidden_width))

    @property
    def prompt(self) -> PromptFormat | None:
        """The prompt format the model was trained with, when it recorded one."""
        return self.info.prompt_format

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def scope(self) -> ScopeDetector | None:
        """The out-of-scope detector in use (``scope.npz`` next to the model, or set)."""
        return self._generator.scope

    def set_scope(self, detector: ScopeDetector | None) -> None:
        with self._lock:
            self._generator.set_scope(detector)

    def generate(self, request: GenerateRequest) -> Generation:
        with self._lock:
            self._check_open()
            try:
                return self._generator.run(request)
            except BackendError:
                raise
            except RuntimeError as exc:  # out of memory, shape errors: the router reports backend_error
                self._reset()
                raise BackendError(f"{type(self).__name__} failed: {exc}") from exc

    def hidden_state(self, text: str, catalog: IntentCatalog | None = None) -> np.ndarray:
        """The hidden state a :class:`~intentkit.scope.ScopeDetector` measures for ``text``,
        under the prompt the model was trained with."""
        prompt = self.prompt or PromptFormat()
        request = GenerateRequest(text, catalog or Registry().catalog, prompt)
        with self._lock:
            self._check_open()
            return self._generator.hidden_state(request)

    def close(self) -> None:
        """Free the model; later requests raise :class:`BackendError`. Safe to call twice."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._release()

    def _check_open(self) -> None:
        if self._closed:
            raise BackendError(f"the {type(self).__name__} is closed")

    def _release(self) -> None:
        """Free what the model holds (called once, under the lock)."""

    def _reset(self) -> None:
        """Forget the cached prefix after a failed request."""
