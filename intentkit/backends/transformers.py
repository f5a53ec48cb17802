"""transformers backend: an HF model directory or a GGUF file (dequantized), optional PEFT adapter.

Uses the same prompt module and the same constrained decoder (:mod:`intentkit.decoding`) as the
llama.cpp backend, over a KV cache that keeps the previous request's prefix. The device is CUDA
when present, else the CPU. :meth:`TransformersBackend.generate_batch` runs unconstrained greedy
generation for many utterances in one padded batch (the throughput path on a GPU).
``pip install 'intentkit-router[hf]'``.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..bundled import read_model_meta, trained_prompt
from ..decoding import LocalBackendMixin, LocalGenerator
from ..errors import BackendError, MissingDependencyError
from ..prompt import PromptFormat
from ..scope import ScopeDetector, resolve_scope
from .base import Backend, GenerateRequest, Generation

__all__ = ["TransformersBackend", "cache_name", "quiet_peft"]


@functools.cache
def cache_name() -> str:
    """The name transformers gives the KV cache, as a ``forward`` keyword and an output field:
    ``cache`` in recent releases (5.24 has it, and warns on every call that still says
    ``past_key_values``), ``past_key_values`` in earlier ones."""
    from transformers.modeling_outputs import BaseModelOutputWithPast

    return "cache" if "cache" in BaseModelOutputWithPast.__dataclass_fields__ else "past_key_values"


@contextlib.contextmanager
def quiet_peft() -> Iterator[None]:
    """Import peft and load or wrap a model with it, without two messages that say nothing about
    the user's run: bitsandbytes, which peft imports when it is installed, logs on CPUs with
    AVX512-BF16 that it could not fetch a CPU 4-bit kernel from the Hub (nothing here runs 4-bit on
    the CPU, nor downloads anything), and peft 0.21 reads transformers' deprecated
    ``is_gradient_checkpointing`` (a FutureWarning on every load). Both are restored on exit."""
    bitsandbytes = logging.getLogger("bitsandbytes.backends.cpu.ops")
    level = bitsandbytes.level
    bitsandbytes.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
            yield
    finally:
        bitsandbytes.setLevel(level)


class _HFModel:
    """A causal LM with a rewindable KV cache (implements ``decoding.TokenModel``)."""

    def __init__(self, model: Any, tokenizer: Any, end_tokens: set[int]) -> None:
        import torch

        self.torch = torch
        self.model, self.tokenizer = model, tokenizer
        self.device = next(model.parameters()).device
        self.end_tokens = end_tokens
        self.tokens: list[int] = []
        self.cache: Any = None
        self._pieces: dict[int, bytes] = {}
        self._keep_hidden = False
        self._hidden: np.ndarray | None = None

    @property
    def n_tokens(self) -> int:
        return len(self.tokens)

    def tokenize(self, text: str, *, special: bool = False, bos: bool = False) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=bos)["input_ids"])

    def piece(self, token: int) -> bytes:
        cached = self._pieces.get(token)
        if cached is None:
            name = self.tokenizer.convert_ids_to_tokens(token)
            if isinstance(name, str) and len(name) == 6 and name.startswith("<0x") and name.endswith(">"):
                cached = bytes([int(name[3:5], 16)])  # byte-fallback token
            else:
                cached = self.tokenizer.convert_tokens_to_string([name]).encode()
            self._pieces[token] = cached
        return cached

    def is_end(self, token: int) -> bool:
        return token in self.end_tokens

    def rewind(self, n_tokens: int) -> None:
        if n_tokens >= len(self.tokens):
            return
        kept = self.tokens[:n_tokens]
        try:
            self.cache.crop(n_tokens)
            self.tokens = kept
        except Exception:  # caches that cannot crop (some sliding-window layouts): rebuild the prefix
            self.cache, self.tokens = None, []
            if kept:
                self.feed(kept)

    def feed(self, tokens: Sequence[int], *, all_logits: bool = False, hidden: bool = False) -> np.ndarray:
        torch = self.torch
        ids = torch.tensor([list(tokens)], device=self.device)
        with torch.inference_mode():
            out = self.model(
                input_ids=ids,
                use_cache=True,
                logits_to_keep=len(tokens) if all_logits else 1,
                output_hidden_states=hidden,
                **{cache_name(): self.cache},
            )
        if hidden:  # the last entry is after the final norm, as llama.cpp's embeddings
            self._hidden = out.hidden_states[-1][0, -1].float().cpu().numpy()
        self.cache = getattr(out, cache_name())
        self.tokens.extend(tokens)
        return out.logits[0].float().cpu().numpy()

    @property
    def hidden_width(self) -> int:
        return int(self.model.get_input_embeddings().embedding_dim)

    def enable_hidden(self) -> None:
        self._keep_hidden = True

    def hidden(self) -> np.ndarray:
        if self._hidden is None:
            raise BackendError("no hidden state yet (enable_hidden(), then evaluate a prompt)")
        return self._hidden

    def prefill(self, tokens: list[int]) -> tuple[np.ndarray, int]:
        common = 0
        for cached, new in zip(self.tokens, tokens, strict=False):
            if cached != new:
                break
            common += 1
        common = min(common, len(tokens) - 1)
        self.rewind(common)
        if len(self.tokens) != common:  # the rebuild fallback may have left nothing cached
            common = len(self.tokens)
        return self.feed(tokens[common:], hidden=self._keep_hidden)[-1], common  # decode steps keep none


class TransformersBackend(LocalBackendMixin, Backend):
    """``TransformersBackend("path/to/model")``, ``TransformersBackend("base.gguf", adapter="runs/mine")``
    or :meth:`from_model` for an already loaded model and tokenizer.

    ``scope``: the out-of-scope detector, as for :class:`~intentkit.backends.llamacpp.LlamaCppBackend`
    (``"auto"``: ``scope.npz`` in the adapter's or model's directory)."""

    def __init__(
        self,
        model: str | Path,
        *,
        adapter: str | Path | None = None,
        device: str | None = None,
        dtype: Any = None,
        constrained: bool = True,
        scope: ScopeDetector | str | Path | None = "auto",
    ) -> None:
        try:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError:
            raise MissingDependencyError("transformers/torch", "hf") from None
        path = Path(model)
        if not path.exists():
            raise FileNotFoundError(f"model not found: {path}")
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        kwargs: dict[str, Any] = {"dtype": dtype or (torch.bfloat16 if device.startswith("cuda") else torch.float32)}
        if path.suffix == ".gguf":
            kwargs["gguf_file"] = path.name
            path = path.parent
        tokenizer = AutoTokenizer.from_pretrained(path, **({"gguf_file": kwargs["gguf_file"]} if "gguf_file" in kwargs else {}))
        loaded = AutoModelForCausalLM.from_pretrained(path, **kwargs)
        meta: dict[str, Any] = {}
        model_dir = path if path.is_dir() else path.parent
        if adapter is not None:
            adapter_dir = Path(adapter)
            if adapter_dir.suffix == ".gguf":
                adapter_dir = adapter_dir.parent  # the PEFT adapter lives next to its GGUF export
            with quiet_peft():
                try:
                    from peft import PeftModel
                except ImportError:
                    raise MissingDependencyError("peft", "hf") from None
                loaded = PeftModel.from_pretrained(loaded, adapter_dir).merge_and_unload()
            meta = read_model_meta(adapter_dir)
            model_dir = adapter_dir
        self._setup(loaded.to(device).eval(), tokenizer, meta, constrained, str(adapter or model))  # type: ignore[arg-type]
        self._generator.set_scope(resolve_scope(scope, model_dir, self._model.hidden_width))

    @classmethod
    def from_model(
        cls,
        model: Any,
        tokenizer: Any,
        *,
        meta: dict[str, Any] | None = None,
        constrained: bool = True,
        scope: ScopeDetector | str | Path | None = None,
    ) -> TransformersBackend:
        """Wrap a loaded model and tokenizer (tests, notebooks, custom loading)."""
        backend = cls.__new__(cls)
        backend._setup(model.eval(), tokenizer, meta or {}, constrained, type(model).__name__)
        backend._generator.set_scope(resolve_scope(None if scope == "auto" else scope, None, backend._model.hidden_width))
        return backend

    def _setup(self, model: Any, tokenizer: Any, meta: dict[str, Any], constrained: bool, source: str) -> None:
        self.meta, self.constrained, self.source = meta, constrained, source
        ends = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
        for marker in ("<end_of_turn>", "<|im_end|>"):
            token = tokenizer.convert_tokens_to_ids(marker)
            if isinstance(token, int) and token != tokenizer.unk_token_id:
                ends.add(token)
        self._model = _HFModel(model, tokenizer, ends)
        self._generator = LocalGenerator(self._model, meta=meta, source=source, constrained=constrained)
        self._lock = threading.Lock()

    @property
    def prompt(self) -> PromptFormat | None:
        return trained_prompt(self.meta)

    @property
    def device(self) -> Any:
        return self._model.device

    def generate(self, request: GenerateRequest) -> Generation:
        with self._lock:
            try:
                return self._generator.run(request)
            except RuntimeError as exc:  # CUDA out of memory, shape errors: the router reports backend_error
                self._model.cache, self._model.tokens = None, []
                raise BackendError(f"transformers failed: {exc}") from exc

    def generate_batch(self, requests: Sequence[GenerateRequest], *, batch_size: int = 32) -> list[Generation]:
        """Unconstrained greedy answers for many requests, ``batch_size`` at a time (left padding)."""
        torch = self._model.torch
        tokenizer, model = self._model.tokenizer, self._model.model
        answers: list[Generation] = []
        with self._lock:
            side, tokenizer.padding_side = tokenizer.padding_side, "left"
            if tokenizer.pad_token_id is None:
                tokenizer.pad_token = tokenizer.eos_token
            try:
                for start in range(0, len(requests), batch_size):
                    chunk = requests[start : start + batch_size]
                    texts = [r.prompt.render(r.text, r.catalog) for r in chunk]
                    batch = tokenizer(texts, return_tensors="pt", padding=True).to(self._model.device)
                    with torch.inference_mode():
                        out = model.generate(
                            **batch,
                            max_new_tokens=max(r.max_tokens for r in chunk),
                            do_sample=False,
                            eos_token_id=sorted(self._model.end_tokens),
                            pad_token_id=tokenizer.pad_token_id,
                        )
                    for row in out[:, batch["input_ids"].shape[1] :].tolist():
                        cut = next((i for i, t in enumerate(row) if t in self._model.end_tokens), len(row))
                        text = b"".join(self._model.piece(t) for t in row[:cut] if t != tokenizer.pad_token_id)
                        answers.append(Generation(text.decode("utf-8", errors="replace").strip()))
            finally:
                tokenizer.padding_side = side
        return answers

    def close(self) -> None:
        with self._lock:
            self._model.cache = None
