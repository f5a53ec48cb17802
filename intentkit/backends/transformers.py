"""transformers backend: an HF model directory or a GGUF file (dequantized), optional PEFT adapter.

Uses the same prompt module and the same constrained decoder (:mod:`intentkit.backends.decoding`) as the
llama.cpp backend, over a KV cache that keeps the previous request's prefix. The device is CUDA
when present, else the CPU. :meth:`TransformersBackend.generate_batch` runs unconstrained greedy
generation for many utterances in one padded batch (the throughput path on a GPU).
``pip install 'intentkit-router[hf]'``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import BackendError, MissingDependencyError
from ..hf import cache_name, quiet_peft
from ..model_dir import KEEP_FILE, ModelInfo
from .base import GenerateRequest, Generation
from .decoding import reusable_prefix
from .local import LocalBackend

if TYPE_CHECKING:
    from ..drafts import DraftIndex
    from ..scope import ScopeDetector

__all__ = ["TransformersBackend"]


class _HFModel:
    """A causal LM with a rewindable KV cache (implements :class:`~intentkit.backends.decoding.TokenModel`)."""

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
        self.blocked: np.ndarray | None = None  # token ids outside the model's vocabulary (keep_tokens.npy)

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
        logits = out.logits[0].float().cpu().numpy()
        if self.blocked is not None:
            logits[:, self.blocked] = -np.inf
        return logits

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
        common = reusable_prefix(self.tokens, tokens)
        self.rewind(common)
        if len(self.tokens) != common:  # the rebuild fallback may have left nothing cached
            common = len(self.tokens)
        return self.feed(tokens[common:], hidden=self._keep_hidden)[-1], common  # decode steps keep none


class TransformersBackend(LocalBackend):
    """``TransformersBackend("path/to/model")``, ``TransformersBackend("base.gguf", adapter="runs/mine")``
    or :meth:`from_model` for an already loaded model and tokenizer.

    ``adapter`` is a PEFT adapter directory (what ``intentkit train`` writes; a ``.gguf`` path
    inside one means its directory); it is merged into the weights on load. ``scope``: the
    out-of-scope detector, and ``drafts``: the index answers are drafted from, as for
    :class:`~intentkit.backends.llamacpp.LlamaCppBackend` (``"auto"``: ``scope.npz`` and
    ``drafts.jsonl`` in the adapter's or model's directory)."""

    def __init__(
        self,
        model: str | Path,
        *,
        adapter: str | Path | None = None,
        device: str | None = None,
        dtype: Any = None,
        constrained: bool = True,
        scope: ScopeDetector | str | Path | None = "auto",
        drafts: DraftIndex | str | Path | None = "auto",
    ) -> None:
        try:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError as exc:
            raise MissingDependencyError("torch" if "torch" in str(exc) else "transformers") from None
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
        model_dir = path if path.is_dir() else path.parent
        info = ModelInfo.load(model_dir) if "gguf_file" not in kwargs else ModelInfo()
        if adapter is not None:
            adapter_dir = Path(adapter)
            if adapter_dir.suffix == ".gguf":
                adapter_dir = adapter_dir.parent  # the PEFT adapter lives next to its GGUF export
            with quiet_peft():
                try:
                    from peft import PeftModel
                except ImportError:
                    raise MissingDependencyError("peft") from None
                loaded = PeftModel.from_pretrained(loaded, adapter_dir).merge_and_unload()
            info = ModelInfo.load(adapter_dir)
            model_dir = adapter_dir
        model_obj = loaded.to(device).eval()  # type: ignore[arg-type]  # transformers types .to() for dtypes
        self._install(model_obj, tokenizer, info, constrained, str(adapter or model), scope, model_dir, drafts)

    @classmethod
    def from_model(
        cls,
        model: Any,
        tokenizer: Any,
        *,
        info: ModelInfo | None = None,
        constrained: bool = True,
        scope: ScopeDetector | str | Path | None = None,
        drafts: DraftIndex | str | Path | None = None,
    ) -> TransformersBackend:
        """Wrap a loaded model and tokenizer (tests, notebooks, custom loading)."""
        backend = cls.__new__(cls)
        backend._install(model.eval(), tokenizer, info or ModelInfo(), constrained, type(model).__name__, scope, None, drafts)
        return backend

    def _install(
        self,
        model: Any,
        tokenizer: Any,
        info: ModelInfo,
        constrained: bool,
        source: str,
        scope: ScopeDetector | str | Path | None,
        model_dir: Path | None,
        drafts: DraftIndex | str | Path | None = None,
    ) -> None:
        ends = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
        for marker in ("<end_of_turn>", "<|im_end|>"):
            token = tokenizer.convert_tokens_to_ids(marker)
            if isinstance(token, int) and token != tokenizer.unk_token_id:
                ends.add(token)
        hf_model = _HFModel(model, tokenizer, ends)
        keep = model_dir / KEEP_FILE if model_dir is not None else None
        if keep is not None and keep.is_file():
            # Decode from the vocabulary the model was trained and is deployed over, as llama.cpp does.
            allowed = np.zeros(int(model.get_output_embeddings().weight.shape[0]), dtype=bool)
            allowed[np.load(keep).astype(np.int64)] = True
            hf_model.blocked = np.flatnonzero(~allowed)
        self._start(hf_model, info=info, source=source, constrained=constrained, scope=scope, scope_dir=model_dir, drafts=drafts)
        self._hf = hf_model

    @property
    def device(self) -> Any:
        return self._hf.device

    def generate_batch(self, requests: Sequence[GenerateRequest], *, batch_size: int = 32) -> list[Generation]:
        """Unconstrained greedy answers for many requests, ``batch_size`` at a time (left padding)."""
        torch = self._hf.torch
        tokenizer, model = self._hf.tokenizer, self._hf.model
        answers: list[Generation] = []
        with self._every_generator():
            self._check_open()
            side, tokenizer.padding_side = tokenizer.padding_side, "left"
            if tokenizer.pad_token_id is None:
                tokenizer.pad_token = tokenizer.eos_token
            try:
                for start in range(0, len(requests), batch_size):
                    chunk = requests[start : start + batch_size]
                    texts = [r.prompt.render(r.text, r.catalog) for r in chunk]
                    batch = tokenizer(texts, return_tensors="pt", padding=True).to(self._hf.device)
                    with torch.inference_mode():
                        out = model.generate(
                            **batch,
                            max_new_tokens=max(r.max_tokens for r in chunk),
                            do_sample=False,
                            eos_token_id=sorted(self._hf.end_tokens),
                            pad_token_id=tokenizer.pad_token_id,
                        )
                    for row in out[:, batch["input_ids"].shape[1] :].tolist():
                        cut = next((i for i, t in enumerate(row) if t in self._hf.end_tokens), len(row))
                        text = b"".join(self._hf.piece(t) for t in row[:cut] if t != tokenizer.pad_token_id)
                        answers.append(Generation(text.decode("utf-8", errors="replace").strip()))
            finally:
                tokenizer.padding_side = side
        return answers

    def _reset(self) -> None:
        self._hf.cache, self._hf.tokens = None, []

    def _release(self) -> None:
        self._reset()
        self._hf.model = None  # the weights go with the last reference
