"""llama.cpp backend: a GGUF model (plus an optional GGUF LoRA adapter) on the CPU, offline.

Built on llama-cpp-python's raw bindings (:mod:`.bindings`) rather than its ``Llama`` class,
because routing needs three things a text-completion API does not give:

- **a prefix cache** — the tokens of the previous request stay in the KV cache and only the
  part after the longest common prefix (the utterance) is evaluated;
- **constrained decoding** (:mod:`intentkit.backends.decoding`) — a handful of decisions over
  the registered intents and their parameters instead of free generation;
- **batched verification** — drafted argument values are checked in one evaluation.

The package also owns what deploying on llama.cpp takes: GGUF rewriting (:mod:`.gguf`: trimmed
vocabulary, merged adapters, full fine-tunes), the embedded default model (:mod:`.bundled`) and
llama.cpp's log output (:mod:`.logs`). ``pip install 'intentkit-router[llamacpp]'``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...errors import ConfigError, MissingDependencyError, ModelDirError
from ...model_dir import ModelInfo
from ..local import LocalBackend
from .bundled import (
    DEFAULT_ADAPTER,
    adapter_gguf,
    base_model_path,
    bundled_model_dir,
    deployment_base,
    merged_model_path,
    trimmed_model_path,
)

if TYPE_CHECKING:
    from ...drafts import DraftIndex
    from ...scope import ScopeDetector

__all__ = [
    "DEFAULT_ADAPTER",
    "LlamaCppBackend",
    "base_model_path",
    "bundled_model_dir",
    "deployment_base",
    "merged_model_path",
    "trimmed_model_path",
]


class LlamaCppBackend(LocalBackend):
    """A GGUF model through llama.cpp, with prefix caching and constrained decoding.

    ``LlamaCppBackend("model.gguf", adapter="adapter.gguf")``, :meth:`from_model_dir` for a
    directory ``intentkit train`` wrote, or :meth:`default` for the embedded smart-home model.
    ``constrained=False`` decodes greedily without constraints (for models not trained on
    intentkit's call format, and for comparison). ``n_threads`` defaults to the CPU count;
    ``n_ctx`` bounds prompt + answer tokens.

    ``parallel`` is how many requests run at once (for a service): each on its own sequence of
    one llama.cpp context, their evaluations put together in one batch, so that one pass through
    the weights serves every waiting request. Answers are the same as one at a time; a request
    waits at most ``gather_ms`` for the others to join a batch.

    ``merge_adapter=True`` folds the adapter into the weights once (an 8-bit copy of the model in
    the cache, :func:`~intentkit.backends.llamacpp.bundled.merged_model_path`) and runs that
    instead: the adapter's extra matrix products are gone, the answers stay the same.

    ``drafts`` is the :class:`~intentkit.drafts.DraftIndex` answers are drafted from (one batch
    with the prompt verifies the nearest training utterance's call): by default (``"auto"``)
    ``drafts.jsonl`` in the model's directory when there is one; a path, an index, or ``None``.

    ``scope`` is the out-of-scope detector (:mod:`intentkit.scope`): by default (``"auto"``) the
    ``scope.npz`` next to the adapter (or model), when one was fitted; a path or a
    :class:`~intentkit.scope.ScopeDetector`; ``None`` for none. ``model_dir`` is the directory
    whose record (``intentkit.json``) and detector describe the model (default: the adapter's, or
    the model's, own directory); ``info`` passes the record itself.
    """

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        adapter: str | Path | None = None,
        adapter_scale: float = 1.0,
        n_ctx: int = 1024,
        n_batch: int = 64,
        n_threads: int | None = None,
        parallel: int = 1,
        gather_ms: float = 5.0,
        constrained: bool = True,
        merge_adapter: bool = False,
        scope: ScopeDetector | str | Path | None = "auto",
        drafts: DraftIndex | str | Path | None = "auto",
        info: ModelInfo | None = None,
        model_dir: str | Path | None = None,
        verbose: bool = False,
    ) -> None:
        try:
            import llama_cpp as lc
        except ImportError:
            raise MissingDependencyError("llama-cpp-python") from None
        from .bindings import LlamaContext
        from .logs import init_backend

        if parallel < 1:
            raise ConfigError(f"parallel must be at least 1 (requests evaluated together), not {parallel}")
        path = Path(model_path) if model_path is not None else base_model_path()
        adapter_path = Path(adapter) if adapter is not None else None
        for what, p in (("model", path), ("adapter", adapter_path)):
            if p is not None and not p.is_file():
                raise FileNotFoundError(f"{what} not found: {p}")
        init_backend(lc, verbose)
        merged = merge_adapter and adapter_path is not None
        home = Path(model_dir) if model_dir is not None else (adapter_path or path).parent
        info = info if info is not None else ModelInfo.load(home)
        #: The GGUF actually loaded: ``model_path``, or its merged copy with ``merge_adapter``
        #: (which describes the trained prompt, for third-party servers).
        self.loaded_path = (
            merged_model_path(path, adapter_path, scale=adapter_scale, prompt=info.prompt_format)
            if merged and adapter_path
            else path
        )
        threads = n_threads or os.cpu_count() or 1
        self._context = LlamaContext(
            self.loaded_path,
            None if merged else adapter_path,
            n_ctx,
            n_batch,
            threads,
            adapter_scale,
            n_seq=parallel,
            gather_s=gather_ms / 1e3,
        )
        self.model_path, self.adapter_path = path, adapter_path
        try:
            self._start(
                *self._context.sequences(),
                info=info,
                source=str(adapter_path or path),
                constrained=constrained,
                n_ctx=n_ctx,
                scope=scope,
                scope_dir=home,
                drafts=drafts,
            )
        except BaseException:
            self._context.close()
            raise

    @classmethod
    def from_model_dir(
        cls,
        directory: str | Path,
        *,
        base: str | Path | None = None,
        trim_vocabulary: bool = True,
        merge_adapter: bool = True,
        **kwargs: Any,
    ) -> LlamaCppBackend:
        """The deployment of a model directory (``intentkit train --out``, ``models/<name>``):
        a full fine-tune's ``model.gguf`` as it is; an adapter over ``base`` (default: the base
        the directory was trained from, vocabulary-trimmed when it ships ``keep_tokens.npy``),
        merged into its weights unless ``merge_adapter=False``. Keywords go to the constructor."""
        directory = Path(directory)
        if not directory.is_dir():
            raise FileNotFoundError(f"model directory not found: {directory}")
        info = ModelInfo.load(directory)
        deployed = directory / info.deployed_file
        if info.is_full:
            if not deployed.is_file():
                raise ModelDirError(directory, f"no {info.deployed_file} (run: intentkit export {directory})")
            return cls(deployed, info=info, **kwargs)
        try:
            deployed = adapter_gguf(directory, info)
        except FileNotFoundError as exc:
            raise ModelDirError(directory, f"{exc} (train into it: intentkit train --out {directory})") from None
        base_path = Path(base) if base is not None else deployment_base(directory, info, trim_vocabulary=trim_vocabulary)
        return cls(base_path, adapter=deployed, merge_adapter=merge_adapter, info=info, model_dir=directory, **kwargs)

    @classmethod
    def default(cls, *, trim_vocabulary: bool = True, merge_adapter: bool = True, **kwargs: Any) -> LlamaCppBackend:
        """The embedded default: gemma-3-270m Q4_K_M plus the bundled smart-home adapter.

        With ``trim_vocabulary`` (the default) the base's vocabulary is cut to the tokens the
        adapter's languages use (Chinese, frequent English; byte fallback keeps any text
        encodable): less memory and a cheaper output head per step. With ``merge_adapter`` (the
        default) the adapter is merged into the weights. Both are built once into the cache."""
        return cls.from_model_dir(
            bundled_model_dir(DEFAULT_ADAPTER), trim_vocabulary=trim_vocabulary, merge_adapter=merge_adapter, **kwargs
        )

    @property
    def batching(self) -> dict[str, float] | None:
        """With ``parallel > 1``, what the batches held so far: ``batches``, ``jobs`` (one
        sequence's tokens in a batch), ``tokens``, ``rows`` (logits rows computed) and ``busy_s``
        (seconds evaluating); ``None`` with one sequence."""
        scheduler = self._context._scheduler
        if scheduler is None:
            return None
        return {key: getattr(scheduler, key) for key in ("batches", "jobs", "tokens", "rows", "busy_s")}

    def _release(self) -> None:
        self._context.close()
