"""llama-cpp-python's raw bindings as a :class:`~intentkit.backends.decoding.TokenModel`: one model
and context with a rewindable token cache, logits and (on request) the final hidden state."""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ...cache import build_once, digest
from ...errors import BackendError
from ..decoding import reusable_prefix

__all__ = ["LlamaModel"]


class LlamaModel:
    """A llama.cpp model + context with a rewindable token cache (implements :class:`~intentkit.backends.decoding.TokenModel`)."""

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
        self._path = path
        #: Reads the hidden state back from the logits row (:meth:`_head_inverse`); None until
        #: checked against llama.cpp's own hidden state on the first prompt, False where it failed.
        self._inverse: tuple[np.ndarray, np.ndarray] | bool | None = None
        self._built: tuple[np.ndarray, np.ndarray] | None = None

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

    def feed(
        self, tokens: Sequence[int], *, all_logits: bool = False, logits: bool = True, outputs: Sequence[int] | None = None
    ) -> np.ndarray:
        """Append ``tokens``; the logits of the last (``all_logits``: of each; ``outputs``: of the
        tokens at those indices, in order) — none with ``logits=False``."""
        if not tokens:
            raise ValueError("nothing to evaluate")
        if len(self.tokens) + len(tokens) > self.n_ctx:
            raise BackendError(f"context full: {len(self.tokens) + len(tokens)} tokens > n_ctx={self.n_ctx}")
        if outputs is None:
            outputs = range(len(tokens)) if all_logits else [len(tokens) - 1]
        wanted = set(outputs)
        # The rows come from the last batch: the tokens asked for must all fall into it.
        starts = list(range(0, len(tokens), self.n_batch))
        if logits and min(wanted) < starts[-1]:
            raise ValueError(f"cannot return logits for more than n_batch={self.n_batch} tokens at once")
        for start in starts:
            chunk = tokens[start : start + self.n_batch]
            last = start + len(chunk) == len(tokens)
            batch = self.batch
            batch.n_tokens = len(chunk)
            for i, token in enumerate(chunk):
                batch.token[i] = token
                batch.pos[i] = len(self.tokens) + i
                batch.n_seq_id[i] = 1
                batch.seq_id[i][0] = 0
                batch.logits[i] = logits and last and start + i in wanted
            status = self.lc.llama_decode(self.ctx, batch)
            if status != 0:
                self.lc.llama_memory_seq_rm(self.memory, 0, len(self.tokens), -1)
                raise BackendError(f"llama_decode failed with status {status}")
            self.tokens.extend(chunk)
        if not logits:
            return np.empty((0, self.n_vocab), dtype=np.float32)
        if wanted == {len(tokens) - 1}:  # the last output row, however many the batch produced
            pointer = self.lc.llama_get_logits_ith(self.ctx, -1)
            return np.ctypeslib.as_array(pointer, shape=(1, self.n_vocab)).copy()
        # llama_get_logits_ith takes the index in the batch (embeddings on: every token is an output).
        offset = starts[-1]
        rows = [self.lc.llama_get_logits_ith(self.ctx, i - offset) for i in sorted(wanted)]
        return np.stack([np.ctypeslib.as_array(row, shape=(self.n_vocab,)) for row in rows])

    def prefill(self, tokens: list[int]) -> tuple[np.ndarray, int]:
        """Evaluate ``tokens`` reusing the cached common prefix; returns (last logits, tokens reused)."""
        rows, common = self.prefill_draft(tokens, [], ())
        return rows[0], common

    def prefill_draft(self, tokens: list[int], draft: list[int], reads: Sequence[int]) -> tuple[np.ndarray, int]:
        """:meth:`prefill` with ``draft`` evaluated in the same batch as the prompt's uncached
        tokens; returns the logits after the prompt's last token, then after each drafted token
        ``reads`` indexes (the hidden state, when kept, is the prompt's last token's)."""
        common = reusable_prefix(self.tokens, tokens)
        self.rewind(common)
        rest = [*tokens[common:], *draft]
        from_logits = self.keep_hidden and isinstance(self._inverse, tuple)
        if len(rest) > self.n_batch or (self.keep_hidden and not from_logits):
            # Embeddings make every token of a batch an output (the LM head on each): the prompt
            # before its last token goes first without them.
            if len(tokens) - common > 1:
                self.feed(tokens[common:-1], logits=False)
            rest = [tokens[-1], *draft]
        last = len(rest) - len(draft) - 1  # the prompt's last token
        outputs = [last, *(last + 1 + i for i in reads)]
        if not self.keep_hidden:
            return self.feed(rest, outputs=outputs), common
        if from_logits:
            rows = self.feed(rest, outputs=outputs)
            self._hidden = self._from_logits(rows[0])
            return rows, common
        self.lc.llama_set_embeddings(self.ctx, True)
        try:
            rows = self.feed(rest, outputs=outputs)
            pointer = self.lc.llama_get_embeddings_ith(self.ctx, last)
            if not pointer:
                raise BackendError("llama.cpp returned no hidden state")
            self._hidden = np.ctypeslib.as_array(pointer, shape=(self.n_embd,)).copy()
        finally:
            self.lc.llama_set_embeddings(self.ctx, False)
        if self._inverse is None:
            self._inverse = self._head_inverse(rows[0], self._hidden)
        return rows, common

    def _from_logits(self, logits: np.ndarray) -> np.ndarray:
        return self._read_back(self._inverse, logits)  # type: ignore[arg-type]

    @staticmethod
    def _read_back(built: tuple[np.ndarray, np.ndarray], logits: np.ndarray) -> np.ndarray:
        rows, inverse = built
        # einsum's own loop, not BLAS: OpenBLAS's threads spin on after a call and took the two
        # cores from llama.cpp's (p50 2.2x slower on the demo set).
        return np.einsum("ij,j->i", inverse, logits[rows])

    # The logits are the output head times the final hidden state, so that state can be read back
    # from the logits row decoding needs anyway (least squares over a few thousand head rows)
    # instead of asking llama.cpp for embeddings, which makes every token of the batch an output:
    # the head over the whole vocabulary on each drafted token, and the prompt split in two batches.
    # It holds for a head without soft-capping or bias (gemma-3); it is checked once against
    # llama.cpp's own hidden state, and any model where it does not hold keeps the embeddings.
    _HEAD_ROWS = 4096
    _MIN_COSINE = 0.9999

    def _build_inverse(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The head rows and their pseudo-inverse, or ``None`` where the head cannot be read.
        Built once per GGUF file into the cache: parsing the GGUF took about 4 s at each load."""
        if self.adapter is not None:
            return None
        stat = self._path.stat()
        key = digest(self._path.name.encode(), f"{stat.st_size}:{stat.st_mtime_ns}:{self._HEAD_ROWS}".encode())
        try:
            with np.load(build_once(f"{self._path.stem}.head-inverse-{key}.npz", self._write_inverse)) as saved:
                rows, inverse = saved["rows"], saved["inverse"]
        except Exception:  # an unreadable or unusual GGUF: keep asking llama.cpp for the hidden state
            return None
        return (rows, inverse) if len(rows) else None

    def _write_inverse(self, out: Path) -> None:
        import gguf

        rows, inverse = np.zeros(0, np.int64), np.zeros((0, 0), np.float32)  # saved as such: no head to read
        reader = gguf.GGUFReader(str(self._path))
        tensors = {t.name: t for t in reader.tensors}
        head = tensors.get("output.weight") or tensors.get("token_embd.weight")
        if head is not None and int(head.shape[-1]) == self.n_vocab:
            rng = np.random.default_rng(0)
            rows = np.sort(rng.choice(self.n_vocab, min(self._HEAD_ROWS, self.n_vocab), replace=False))
            weights = gguf.quants.dequantize(np.asarray(head.data)[rows], head.tensor_type).astype(np.float64)
            inverse = np.linalg.pinv(weights).astype(np.float32)
        with out.open("wb") as file:  # a file object: np.savez would add ".npz" to the temporary name
            np.savez(file, rows=rows, inverse=inverse)

    def _head_inverse(self, logits: np.ndarray, hidden: np.ndarray) -> tuple[np.ndarray, np.ndarray] | bool:
        """The read-back (built at :meth:`enable_hidden`) if it gives ``hidden`` from ``logits``, else False."""
        built = self._built
        if built is None:
            return False
        guess = self._read_back(built, logits)
        cosine = float(guess @ hidden / (np.linalg.norm(guess) * np.linalg.norm(hidden) + 1e-12))
        return built if cosine >= self._MIN_COSINE else False

    @property
    def hidden_width(self) -> int:
        return int(self.n_embd)

    def enable_hidden(self) -> None:
        # Built here, at load (or read from the cache), not on the first request.
        if not self.keep_hidden and self._inverse is None:
            self._built = self._build_inverse()
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
