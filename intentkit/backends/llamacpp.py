"""llama.cpp backend: a GGUF model (plus an optional GGUF LoRA adapter) on the CPU, offline.

Built on llama-cpp-python's raw bindings rather than its ``Llama`` class, because routing needs
three things a text-completion API does not give:

- **a prefix cache** — the tokens of the previous request stay in the KV cache and only the
  part after the longest common prefix (the utterance) is evaluated;
- **constrained decoding** (:mod:`intentkit.decoding`) — a handful of decisions over the
  registered intents and their parameters instead of free generation;
- **batched verification** — drafted argument values are checked in one evaluation.

One context serves one request at a time; concurrent callers queue on a lock (the model is
loaded once, memory stays bounded). ``pip install 'intentkit-router[llamacpp]'``.
"""

from __future__ import annotations

import ctypes
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..bundled import (
    DEFAULT_ADAPTER,
    base_model_path,
    bundled_model_dir,
    deployment_base,
    merged_model_path,
    read_model_meta,
    trained_prompt,
)
from ..decoding import LocalBackendMixin, LocalGenerator
from ..errors import BackendError, MissingDependencyError
from ..prompt import PromptFormat
from ..scope import ScopeDetector, resolve_scope
from .base import Backend, GenerateRequest, Generation

__all__ = ["LlamaCppBackend"]

_backend_ready = False
_init_lock = threading.Lock()


def _silence(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
    """llama.cpp logs every load to stderr; an embedded router stays quiet unless asked."""


class _Model:
    """A llama.cpp model + context with a rewindable token cache (implements ``decoding.TokenModel``)."""

    def __init__(self, path: Path, lora: Path | None, n_ctx: int, n_batch: int, n_threads: int, lora_scale: float) -> None:
        import llama_cpp as lc

        self.lc = lc
        self.model = lc.llama_model_load_from_file(str(path).encode(), lc.llama_model_default_params())
        if not self.model:
            raise BackendError(f"llama.cpp could not load {path} (not a GGUF model file?)")
        params = lc.llama_context_default_params()
        params.n_ctx, params.n_batch, params.n_ubatch = n_ctx, n_batch, n_batch
        params.n_threads = params.n_threads_batch = n_threads
        params.n_seq_max = 1
        self.ctx = lc.llama_init_from_model(self.model, params)
        if not self.ctx:
            lc.llama_model_free(self.model)
            raise BackendError(f"llama.cpp could not create a context for {path} (n_ctx={n_ctx})")
        self.adapter = None
        if lora is not None:
            self.adapter = lc.llama_adapter_lora_init(self.model, str(lora).encode())
            if not self.adapter:
                self.close()
                raise BackendError(f"llama.cpp could not load the LoRA adapter {lora} (wrong base model?)")
            adapters = (type(self.adapter) * 1)(self.adapter)
            scales = (ctypes.c_float * 1)(lora_scale)
            if lc.llama_set_adapters_lora(self.ctx, adapters, 1, scales) != 0:
                self.close()
                raise BackendError(f"llama.cpp could not apply the LoRA adapter {lora}")
        self.vocab = lc.llama_model_get_vocab(self.model)
        self.n_vocab = lc.llama_vocab_n_tokens(self.vocab)
        self.n_ctx, self.n_batch = n_ctx, n_batch
        self.memory = lc.llama_get_memory(self.ctx)
        self.batch = lc.llama_batch_init(n_batch, 0, 1)
        self.tokens: list[int] = []
        self._pieces: dict[int, bytes] = {}
        self._piece_buf = ctypes.create_string_buffer(256)
        self.n_embd = lc.llama_model_n_embd(self.model)
        self.keep_hidden = False
        self._hidden: np.ndarray | None = None

    @property
    def n_tokens(self) -> int:
        return len(self.tokens)

    def tokenize(self, text: str, *, special: bool = False, bos: bool = False) -> list[int]:
        data = text.encode()
        size = len(data) + 8
        buf = (self.lc.llama_token * size)()
        n = self.lc.llama_tokenize(self.vocab, data, len(data), buf, size, bos, special)
        if n < 0:
            size = -n
            buf = (self.lc.llama_token * size)()
            n = self.lc.llama_tokenize(self.vocab, data, len(data), buf, size, bos, special)
        return list(buf[:n])

    def piece(self, token: int) -> bytes:
        cached = self._pieces.get(token)
        if cached is None:
            n = self.lc.llama_token_to_piece(self.vocab, token, self._piece_buf, 256, 0, True)
            cached = self._piece_buf.raw[: max(n, 0)]
            self._pieces[token] = cached
        return cached

    def is_end(self, token: int) -> bool:
        return bool(self.lc.llama_vocab_is_eog(self.vocab, token))

    def rewind(self, n_tokens: int) -> None:
        if n_tokens < len(self.tokens):
            self.lc.llama_memory_seq_rm(self.memory, 0, n_tokens, -1)
            del self.tokens[n_tokens:]

    def feed(self, tokens: Sequence[int], *, all_logits: bool = False, logits: bool = True) -> np.ndarray:
        """Append ``tokens``; the logits of the last (``all_logits``: of each) — none with ``logits=False``."""
        if not tokens:
            raise ValueError("nothing to evaluate")
        if len(self.tokens) + len(tokens) > self.n_ctx:
            raise BackendError(f"context full: {len(self.tokens) + len(tokens)} tokens > n_ctx={self.n_ctx}")
        if all_logits and len(tokens) > self.n_batch:
            raise ValueError(f"cannot return logits for more than n_batch={self.n_batch} tokens at once")
        for start in range(0, len(tokens), self.n_batch):
            chunk = tokens[start : start + self.n_batch]
            last = start + len(chunk) == len(tokens)
            batch = self.batch
            batch.n_tokens = len(chunk)
            for i, token in enumerate(chunk):
                batch.token[i] = token
                batch.pos[i] = len(self.tokens) + i
                batch.n_seq_id[i] = 1
                batch.seq_id[i][0] = 0
                batch.logits[i] = logits and last and (all_logits or i == len(chunk) - 1)
            status = self.lc.llama_decode(self.ctx, batch)
            if status != 0:
                self.lc.llama_memory_seq_rm(self.memory, 0, len(self.tokens), -1)
                raise BackendError(f"llama_decode failed with status {status}")
            self.tokens.extend(chunk)
        if not logits:
            return np.empty((0, self.n_vocab), dtype=np.float32)
        if not all_logits:  # the last output row, however many the batch produced
            pointer = self.lc.llama_get_logits_ith(self.ctx, -1)
            return np.ctypeslib.as_array(pointer, shape=(1, self.n_vocab)).copy()
        pointer = self.lc.llama_get_logits(self.ctx)
        return np.ctypeslib.as_array(pointer, shape=(len(tokens), self.n_vocab)).copy()

    def prefill(self, tokens: list[int]) -> tuple[np.ndarray, int]:
        """Evaluate ``tokens`` reusing the cached common prefix; returns (last logits, tokens reused)."""
        common = 0
        for cached, new in zip(self.tokens, tokens, strict=False):
            if cached != new:
                break
            common += 1
        common = min(common, len(tokens) - 1)  # the last token is always evaluated, for its logits
        self.rewind(common)
        if not self.keep_hidden:
            return self.feed(tokens[common:])[-1], common
        # With embeddings on, llama.cpp outputs every token of a batch (the LM head on each), so
        # only the last token is evaluated with them on.
        if len(tokens) - common > 1:
            self.feed(tokens[common:-1], logits=False)
        self.lc.llama_set_embeddings(self.ctx, True)
        try:
            logits = self.feed(tokens[-1:])[-1]
            pointer = self.lc.llama_get_embeddings_ith(self.ctx, -1)
            if not pointer:
                raise BackendError("llama.cpp returned no hidden state")
            self._hidden = np.ctypeslib.as_array(pointer, shape=(self.n_embd,)).copy()
        finally:
            self.lc.llama_set_embeddings(self.ctx, False)
        return logits, common

    @property
    def hidden_width(self) -> int:
        return int(self.n_embd)

    def enable_hidden(self) -> None:
        self.keep_hidden = True

    def hidden(self) -> np.ndarray:
        if self._hidden is None:
            raise BackendError("no hidden state yet (enable_hidden(), then evaluate a prompt)")
        return self._hidden

    def close(self) -> None:
        lc = self.lc
        if getattr(self, "batch", None) is not None:
            lc.llama_batch_free(self.batch)
            self.batch = None
        if self.adapter:
            lc.llama_adapter_lora_free(self.adapter)
            self.adapter = None
        if self.ctx:
            lc.llama_free(self.ctx)
            self.ctx = None
        if self.model:
            lc.llama_model_free(self.model)
            self.model = None


class LlamaCppBackend(LocalBackendMixin, Backend):
    """A GGUF model through llama.cpp, with prefix caching and constrained decoding.

    ``LlamaCppBackend("model.gguf", lora="adapter.gguf")`` or :meth:`default` for the embedded
    smart-home model. ``constrained=False`` decodes greedily without constraints (for models not
    trained on intentkit's call format, and for comparison). ``n_threads`` defaults to the CPU
    count; ``n_ctx`` bounds prompt + answer tokens.

    ``merge_lora=True`` folds the adapter into the weights once (an 8-bit copy of the model in
    the cache, :func:`intentkit.bundled.merged_model_path`) and runs that instead: the adapter's
    extra matrix products are gone (demo dev set: p50 45.0 → 37.1 ms, the same accuracy).

    ``scope`` is the out-of-scope detector (:mod:`intentkit.scope`): by default (``"auto"``) the
    ``scope.npz`` next to the adapter, when ``intentkit export --scope-from`` wrote one; a path
    or a :class:`~intentkit.scope.ScopeDetector`; ``None`` for none.
    """

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        lora: str | Path | None = None,
        lora_scale: float = 1.0,
        n_ctx: int = 1024,
        n_batch: int = 64,
        n_threads: int | None = None,
        constrained: bool = True,
        merge_lora: bool = False,
        scope: ScopeDetector | str | Path | None = "auto",
        verbose: bool = False,
    ) -> None:
        try:
            import llama_cpp as lc
        except ImportError:
            raise MissingDependencyError("llama-cpp-python", "llamacpp") from None
        path = Path(model_path) if model_path is not None else base_model_path()
        lora_path = Path(lora) if lora is not None else None
        for what, p in (("model", path), ("LoRA adapter", lora_path)):
            if p is not None and not p.is_file():
                raise FileNotFoundError(f"{what} not found: {p}")
        _init_backend(lc, verbose)
        merged = merge_lora and lora_path is not None
        #: The GGUF actually loaded: ``model_path``, or its merged copy with ``merge_lora``.
        self.loaded_path = merged_model_path(path, lora_path, scale=lora_scale) if merged and lora_path else path
        started = time.perf_counter()
        threads = n_threads or os.cpu_count() or 1
        self._model = _Model(self.loaded_path, None if merged else lora_path, n_ctx, n_batch, threads, lora_scale)
        self.load_seconds = time.perf_counter() - started
        self.model_path, self.lora_path = path, lora_path
        self.constrained = constrained
        #: What the model (adapter) recorded at training time: prompt, intents, config.
        self.meta = read_model_meta((lora_path or path).parent)
        self._lock = threading.Lock()
        self._generator = LocalGenerator(
            self._model, meta=self.meta, source=str(lora_path or path), constrained=constrained, n_ctx=n_ctx
        )
        self._closed = False
        try:
            self._generator.set_scope(resolve_scope(scope, (lora_path or path).parent, self._model.n_embd))
        except BaseException:
            self.close()
            raise

    @classmethod
    def default(cls, *, trim_vocabulary: bool = True, merge_lora: bool = True, **kwargs: Any) -> LlamaCppBackend:
        """The embedded default: gemma-3-270m Q4_K_M plus the bundled smart-home adapter.

        With ``trim_vocabulary`` (the default) the base's vocabulary is cut to the 106k tokens the
        adapter's languages use (Chinese, frequent English; byte fallback keeps any text
        encodable): about 140 MB less memory and a cheaper output head per step. With
        ``merge_lora`` (the default) the adapter is merged into the weights. Both are built once
        into the cache (about 15 s on the first run).
        """
        directory = bundled_model_dir(DEFAULT_ADAPTER)
        base = deployment_base(directory, trim_vocabulary=trim_vocabulary)
        return cls(base, lora=directory / "adapter.gguf", merge_lora=merge_lora, **kwargs)

    @property
    def prompt(self) -> PromptFormat | None:
        """The prompt format the adapter was trained with, when it recorded one."""
        return trained_prompt(self.meta)

    def generate(self, request: GenerateRequest) -> Generation:
        with self._lock:
            if self._closed:
                raise BackendError("the llama.cpp backend is closed")
            return self._generator.run(request)

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._model.close()


def quiet_llama_cpp() -> None:
    """Stop llama.cpp's log output (it logs every load and quantization to stderr)."""
    import llama_cpp as lc

    callback = lc.llama_log_callback(_silence)
    quiet_llama_cpp.callback = callback  # type: ignore[attr-defined]  # keep it alive
    lc.llama_log_set(callback, ctypes.c_void_p(0))


def _init_backend(lc: Any, verbose: bool) -> None:
    global _backend_ready
    with _init_lock:
        if not _backend_ready:
            if not verbose:
                quiet_llama_cpp()
            lc.llama_backend_init()
            _backend_ready = True
