"""llama-cpp-python's raw bindings as :class:`~intentkit.backends.decoding.TokenModel`\\ s: one model
and context (:class:`LlamaContext`) shared by one or more sequences (:class:`LlamaModel`), each
with a rewindable token cache, logits and (on request) the final hidden state. With more than one
sequence, one scheduler thread evaluates what concurrent requests ask for together, in one
llama.cpp batch (:class:`_Scheduler`)."""

from __future__ import annotations

import ctypes
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ...cache import build_once, digest
from ...errors import BackendError
from ..decoding import reusable_prefix

__all__ = ["LlamaContext", "LlamaModel"]


@dataclass(eq=False)
class _Job:
    """Tokens one sequence appends in one evaluation, and what comes back: the logits after the
    tokens ``outputs`` indexes (in order) and, where ``embed`` is set, llama.cpp's hidden state
    after that token."""

    seq: int
    pos: int
    tokens: Sequence[int]
    outputs: list[int]
    embed: int | None = None
    drop_from: int | None = None  # the sequence's cache from this position leaves first (a rewind)
    rows: np.ndarray | None = None
    hidden: np.ndarray | None = None
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)


class LlamaContext:
    """A llama.cpp model and context shared by ``n_seq`` sequences (:meth:`sequences`), each
    bounded to ``n_ctx`` tokens; ``n_batch`` tokens per sequence and evaluation.

    With ``n_seq > 1`` the evaluations run on a scheduler thread of the context's own, which puts
    the tokens of every sequence that is waiting into one batch (llama.cpp's compute threads then
    always belong to that one thread). A sequence is *active* while a request runs on it
    (:meth:`LlamaModel.active`); the scheduler waits up to ``gather_s`` for every active sequence
    to ask before it evaluates what it has."""

    def __init__(
        self,
        path: Path,
        lora: Path | None,
        n_ctx: int,
        n_batch: int,
        n_threads: int,
        lora_scale: float,
        *,
        n_seq: int = 1,
        gather_s: float = 0.005,
    ) -> None:
        import llama_cpp as lc

        if n_seq < 1:
            raise ValueError(f"n_seq must be at least 1, not {n_seq}")
        self.lc = lc
        self.ctx: Any = None
        self.adapter: Any = None
        self.batch: Any = None
        self.model = lc.llama_model_load_from_file(str(path).encode(), lc.llama_model_default_params())
        if not self.model:
            raise BackendError(f"llama.cpp could not load {path} (not a GGUF model file?)")
        params = lc.llama_context_default_params()
        # One unified cache for every sequence: llama.cpp then evaluates their tokens as one
        # batch (per-sequence streams split it into a batch per sequence: 1.3x slower at 8).
        params.n_ctx, params.n_batch, params.n_ubatch = n_ctx * n_seq, n_batch * n_seq, n_batch * n_seq
        params.n_threads = params.n_threads_batch = n_threads
        params.n_seq_max, params.kv_unified = n_seq, n_seq > 1
        self.ctx = lc.llama_init_from_model(self.model, params)
        if not self.ctx:
            self.close()
            raise BackendError(f"llama.cpp could not create a context for {path} (n_ctx={n_ctx}, sequences={n_seq})")
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
        self.n_ctx, self.n_batch, self.n_seq = n_ctx, n_batch, n_seq
        self.memory = lc.llama_get_memory(self.ctx)
        self.batch = lc.llama_batch_init(n_batch * n_seq, 0, 1)
        self.n_embd = lc.llama_model_n_embd(self.model)
        self._pieces: dict[int, bytes] = {}
        self._piece_buf = ctypes.create_string_buffer(256)
        self._path = path
        #: Reads the hidden state back from the logits row (:meth:`_head_inverse`); None until
        #: checked against llama.cpp's own hidden state on the first prompt, False where it failed.
        self._inverse: tuple[np.ndarray, np.ndarray] | bool | None = None
        self._built: tuple[np.ndarray, np.ndarray] | None = None
        self._scheduler = _Scheduler(self, gather_s) if n_seq > 1 else None
        self._sequences = [LlamaModel(self, seq) for seq in range(n_seq)]

    def sequences(self) -> list[LlamaModel]:
        """The context's sequences, one :class:`~intentkit.backends.decoding.TokenModel` each."""
        return list(self._sequences)

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
            buf = self._piece_buf if self._scheduler is None else ctypes.create_string_buffer(256)
            n = self.lc.llama_token_to_piece(self.vocab, token, buf, 256, 0, True)
            cached = buf.raw[: max(n, 0)]
            self._pieces[token] = cached
        return cached

    def evaluate(self, job: _Job) -> None:
        """Run ``job`` (on the scheduler with several sequences; here with one); its rows and
        hidden state are set, or its error raised."""
        if self._scheduler is None:
            self._run([job])
        else:
            self._scheduler.submit(job)
        if job.error is not None:
            raise job.error

    def _run(self, jobs: list[_Job]) -> None:
        """Evaluate ``jobs`` in one llama.cpp batch (a job with ``embed`` set comes alone)."""
        lc, batch = self.lc, self.batch
        for job in jobs:
            if job.drop_from is not None:
                lc.llama_memory_seq_rm(self.memory, job.seq, job.drop_from, -1)
        n = 0
        for job in jobs:
            wanted = set(job.outputs)
            for i, token in enumerate(job.tokens):
                batch.token[n] = token
                batch.pos[n] = job.pos + i
                batch.n_seq_id[n] = 1
                batch.seq_id[n][0] = job.seq
                batch.logits[n] = i in wanted
                n += 1
        batch.n_tokens = n
        embed = any(job.embed is not None for job in jobs)
        if embed:
            lc.llama_set_embeddings(self.ctx, True)
        try:
            status = lc.llama_decode(self.ctx, batch)
            if status != 0:
                for job in jobs:
                    lc.llama_memory_seq_rm(self.memory, job.seq, job.pos, -1)
                raise BackendError(f"llama_decode failed with status {status}")
            first = 0
            for job in jobs:
                rows = [lc.llama_get_logits_ith(self.ctx, first + i) for i in job.outputs]
                job.rows = np.stack([np.ctypeslib.as_array(row, shape=(self.n_vocab,)) for row in rows]) if rows else None
                if job.embed is not None:
                    pointer = lc.llama_get_embeddings_ith(self.ctx, first + job.embed)
                    if not pointer:
                        raise BackendError("llama.cpp returned no hidden state")
                    job.hidden = np.ctypeslib.as_array(pointer, shape=(self.n_embd,)).copy()
                first += len(job.tokens)
        finally:
            if embed:
                lc.llama_set_embeddings(self.ctx, False)

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

    def close(self) -> None:
        lc = self.lc
        if getattr(self, "_scheduler", None) is not None:
            self._scheduler.close()  # type: ignore[union-attr]
            self._scheduler = None
        if self.batch is not None:
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


class _Scheduler:
    """The thread that evaluates every sequence's jobs, those waiting together in one batch."""

    def __init__(self, context: LlamaContext, gather_s: float) -> None:
        self.context, self.gather_s = context, gather_s
        self.capacity = context.n_batch * context.n_seq
        self._cond = threading.Condition()
        self._jobs: list[_Job] = []
        self._active = 0
        self._closed = False
        #: Batches evaluated, the jobs (one sequence's tokens each), tokens and logits rows in them,
        #: and the seconds spent evaluating: jobs / batches is how many requests shared a batch.
        self.batches = self.jobs = self.tokens = self.rows = 0
        self.busy_s = 0.0
        self._thread = threading.Thread(target=self._loop, name="intentkit-llama-batch", daemon=True)
        self._thread.start()

    @contextmanager
    def active(self) -> Iterator[None]:
        with self._cond:
            self._active += 1
        try:
            yield
        finally:
            with self._cond:
                self._active -= 1
                self._cond.notify_all()

    def submit(self, job: _Job) -> None:
        with self._cond:
            if self._closed:
                raise BackendError("the llama.cpp context is closed")
            self._jobs.append(job)
            self._cond.notify_all()
        job.done.wait()

    def _take(self) -> list[_Job] | None:
        with self._cond:
            while not self._jobs and not self._closed:
                self._cond.wait()
            if not self._jobs:
                return None
            # Every active sequence asks soon after the last batch ends: wait for the rest briefly.
            deadline = time.monotonic() + self.gather_s
            while len(self._jobs) < self._active and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            if self._jobs[0].embed is not None:  # a batch of its own: every token becomes an output
                return [self._jobs.pop(0)]
            taken: list[_Job] = []
            size = 0
            for job in list(self._jobs):
                if job.embed is None and size + len(job.tokens) <= self.capacity:
                    taken.append(job)
                    size += len(job.tokens)
            for job in taken:
                self._jobs.remove(job)
            return taken

    def _loop(self) -> None:
        while (jobs := self._take()) is not None:
            t0 = time.perf_counter()
            try:
                self.context._run(jobs)
            except BaseException as exc:
                if len(jobs) == 1:
                    jobs[0].error = exc
                else:  # one sequence's failure is not the others': each again on its own
                    for job in jobs:
                        try:
                            self.context._run([job])
                        except BaseException as alone:
                            job.error = alone
            self.batches += 1
            self.jobs += len(jobs)
            self.tokens += sum(len(job.tokens) for job in jobs)
            self.rows += sum(len(job.outputs) for job in jobs)
            self.busy_s += time.perf_counter() - t0
            for job in jobs:
                job.done.set()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join()
        for job in self._jobs:  # none while the backend waits for its requests; never left hanging
            job.error = BackendError("the llama.cpp context is closed")
            job.done.set()


class LlamaModel:
    """One sequence of a :class:`LlamaContext`: a rewindable token cache (implements
    :class:`~intentkit.backends.decoding.TokenModel`). Runs one request at a time."""

    def __init__(self, context: LlamaContext, seq: int = 0) -> None:
        self.context, self.seq = context, seq
        self.n_vocab, self.n_ctx, self.n_batch = context.n_vocab, context.n_ctx, context.n_batch
        self.tokens: list[int] = []
        self.keep_hidden = False
        self._hidden: np.ndarray | None = None
        self._drop_from: int | None = None

    @property
    def n_tokens(self) -> int:
        return len(self.tokens)

    def tokenize(self, text: str, *, special: bool = False, bos: bool = False) -> list[int]:
        return self.context.tokenize(text, special=special, bos=bos)

    def piece(self, token: int) -> bytes:
        return self.context.piece(token)

    def is_end(self, token: int) -> bool:
        return bool(self.context.lc.llama_vocab_is_eog(self.context.vocab, token))

    @contextmanager
    def active(self) -> Iterator[None]:
        """Mark a request running on this sequence: the scheduler waits for its evaluations."""
        scheduler = self.context._scheduler
        if scheduler is None:
            yield
        else:
            with scheduler.active():
                yield

    def rewind(self, n_tokens: int) -> None:
        # The cache leaves with the next evaluation (on the scheduler's thread, before the batch).
        if n_tokens < len(self.tokens):
            self._drop_from = n_tokens if self._drop_from is None else min(self._drop_from, n_tokens)
            del self.tokens[n_tokens:]

    def _evaluate(self, tokens: Sequence[int], outputs: list[int], embed: int | None = None) -> _Job:
        job = _Job(self.seq, len(self.tokens), tokens, outputs, embed, self._drop_from)
        self._drop_from = None
        try:
            self.context.evaluate(job)
        except BaseException:
            self._drop_from = len(self.tokens)  # whatever a failed batch left behind
            raise
        self.tokens.extend(tokens)
        return job

    def feed(
        self, tokens: Sequence[int], *, all_logits: bool = False, logits: bool = True, outputs: Sequence[int] | None = None
    ) -> np.ndarray:
        """Append ``tokens``; the logits of the last (``all_logits``: of each; ``outputs``: of the
        tokens at those indices, in order) — none with ``logits=False``."""
        return self._feed(tokens, all_logits=all_logits, logits=logits, outputs=outputs)[0]

    def _feed(
        self,
        tokens: Sequence[int],
        *,
        all_logits: bool = False,
        logits: bool = True,
        outputs: Sequence[int] | None = None,
        embed: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        if not tokens:
            raise ValueError("nothing to evaluate")
        if len(self.tokens) + len(tokens) > self.n_ctx:
            raise BackendError(f"context full: {len(self.tokens) + len(tokens)} tokens > n_ctx={self.n_ctx}")
        if outputs is None:
            outputs = range(len(tokens)) if all_logits else [len(tokens) - 1]
        wanted = sorted(set(outputs)) if logits else []
        # The rows come from the last batch: the tokens asked for must all fall into it.
        starts = list(range(0, len(tokens), self.n_batch))
        if wanted and wanted[0] < starts[-1]:
            raise ValueError(f"cannot return logits for more than n_batch={self.n_batch} tokens at once")
        if embed is not None and embed < starts[-1]:
            raise ValueError(f"the hidden state must come from the last n_batch={self.n_batch} tokens")
        job = None
        for start in starts:
            chunk = tokens[start : start + self.n_batch]
            last = start + len(chunk) == len(tokens)
            job = self._evaluate(
                chunk, [i - start for i in wanted] if last else [], embed - start if last and embed is not None else None
            )
        assert job is not None
        if not wanted:
            return np.empty((0, self.n_vocab), dtype=np.float32), job.hidden
        rows = job.rows
        assert rows is not None
        if list(outputs) != wanted:  # the order asked for (duplicates included)
            rows = rows[[wanted.index(i) for i in outputs]]
        return rows, job.hidden

    def prefill(self, tokens: list[int]) -> tuple[np.ndarray, int]:
        """Evaluate ``tokens`` reusing the cached common prefix; returns (last logits, tokens reused)."""
        rows, common = self.prefill_draft(tokens, [], ())
        return rows[0], common

    def prefill_draft(self, tokens: list[int], draft: list[int], reads: Sequence[int]) -> tuple[np.ndarray, int]:
        """:meth:`prefill` with ``draft`` evaluated in the same batch as the prompt's uncached
        tokens; returns the logits after the prompt's last token, then after each drafted token
        ``reads`` indexes (the hidden state, when kept, is the prompt's last token's)."""
        context = self.context
        common = reusable_prefix(self.tokens, tokens)
        self.rewind(common)
        rest = [*tokens[common:], *draft]
        from_logits = self.keep_hidden and isinstance(context._inverse, tuple)
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
        rows, hidden = self._feed(rest, outputs=outputs, embed=last)
        self._hidden = hidden
        if context._inverse is None:
            context._inverse = context._head_inverse(rows[0], hidden)  # type: ignore[arg-type]
        return rows, common

    def _from_logits(self, logits: np.ndarray) -> np.ndarray:
        return self.context._read_back(self.context._inverse, logits)  # type: ignore[arg-type]

    @property
    def hidden_width(self) -> int:
        return int(self.context.n_embd)

    def enable_hidden(self) -> None:
        context = self.context
        # Built here, at load (or read from the cache), not on the first request.
        if context._built is None and context._inverse is None:
            context._built = context._build_inverse()
        self.keep_hidden = True

    def hidden(self) -> np.ndarray:
        if self._hidden is None:
            raise BackendError("no hidden state yet (enable_hidden(), then evaluate a prompt)")
        return self._hidden
