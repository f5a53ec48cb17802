"""llama-cpp-python's raw bindings as :class:`~intentkit.backends.decoding.TokenModel`\\ s: one model
and context (:class:`LlamaContext`) shared by one or more sequences (:class:`LlamaModel`), each
with a rewindable token cache, logits and (on request) the final hidden state. With more than one
sequence, one scheduler thread evaluates what concurrent requests ask for together, in one
llama.cpp batch (:class:`_Scheduler`)."""

from __future__ import annotations

import ctypes
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import BackendError
from ..decoding import Logits, Rows, reusable_prefix
from .head import Head, HeadRow, load_head

__all__ = ["LlamaContext", "LlamaModel"]


@dataclass(eq=False)
class _Job:
    """Tokens one sequence appends in one evaluation, and what comes back after the tokens
    ``outputs`` indexes (in order): llama.cpp's final hidden state, and its logits rows unless
    ``full`` is off and the context computes the columns read instead (:class:`HeadRow`)."""

    seq: int
    pos: int
    tokens: Sequence[int]
    outputs: list[int]
    full: bool = True
    drop_from: int | None = None  # the sequence's cache from this position leaves first (a rewind)
    rows: np.ndarray | None = None
    hidden: np.ndarray | None = None
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)


# The fields of ggml's tensor struct (ggml.h) that the evaluation callback reads: type, ne, name.
_TENSOR_NE, _TENSOR_DATA, _TENSOR_NAME = 16, 248, 256
_RESULT_NORM = b"result_norm\0"  # every llama.cpp model graph names its final norm so
# The callback runs at each of the graph's nodes (727 for gemma-3-270m): the name's first 8 bytes
# are compared as one integer (0.13 µs against 0.39 µs for reading them as bytes), the rest only then.
_NAME_START = int.from_bytes(_RESULT_NORM[:8], "little")
_u64_at = ctypes.c_uint64.from_address
# Tokenizations kept per context: texts of at most this many characters, this many at most.
_SHORT_TEXT, _SHORT_TEXTS_KEPT = 24, 20_000


def _tensor_reader(lc: Any) -> Callable[[int, np.ndarray], None] | None:
    """Copies a float32 tensor's data into an array, wherever the tensor lives: ggml's
    ``ggml_backend_tensor_get`` (a GPU build keeps the final norm in device memory, which the
    host must not read directly); without it, a plain read on a build without GPU offload;
    else ``None`` (no hidden state)."""
    try:
        from llama_cpp._ggml import libggml

        get = libggml.ggml_backend_tensor_get
        get.argtypes, get.restype = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t], None
        return lambda tensor, out: get(tensor, out.ctypes.data, 0, out.nbytes)
    except (ImportError, AttributeError, OSError):
        if lc.llama_supports_gpu_offload():
            return None

        def read(tensor: int, out: np.ndarray) -> None:
            data = ctypes.cast(tensor + _TENSOR_DATA, ctypes.POINTER(ctypes.c_void_p))[0]
            ctypes.memmove(out.ctypes.data, data, out.nbytes)

        return read


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
        # Called at each node of the graph: keeps the final hidden state, and ends the evaluation
        # there when no job needs llama.cpp's logits (the head over the whole vocabulary).
        self._norm: list[np.ndarray] = []
        self._stop = False
        self._read = _tensor_reader(lc)
        self._callback = lc.ggml_backend_sched_eval_callback(self._on_tensor)
        params.cb_eval = self._callback
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
        self._tokens: dict[str, tuple[int, ...]] = {}
        self._piece_buf = ctypes.create_string_buffer(256)
        self._path = path
        #: The output head read from the file (:meth:`load_head`), and whether it gives
        #: llama.cpp's own logits: None until checked on the first rows evaluated in full.
        self.head: Head | None = None
        self._head_ok: bool | None = None
        self._scheduler = _Scheduler(self, gather_s) if n_seq > 1 else None
        self._sequences = [LlamaModel(self, seq) for seq in range(n_seq)]

    def sequences(self) -> list[LlamaModel]:
        """The context's sequences, one :class:`~intentkit.backends.decoding.TokenModel` each."""
        return list(self._sequences)

    def tokenize(self, text: str, *, special: bool = False, bos: bool = False) -> list[int]:
        # Short plain texts are kept: the decoder tokenizes the utterance's substrings (the pieces a
        # copied value is written with), 20 to 40 per request, and utterances share most of them.
        short = len(text) <= _SHORT_TEXT and not special and not bos
        if short and (cached := self._tokens.get(text)) is not None:
            return list(cached)
        data = text.encode()
        size = len(data) + 8
        buf = (self.lc.llama_token * size)()
        n = self.lc.llama_tokenize(self.vocab, data, len(data), buf, size, bos, special)
        if n < 0:
            size = -n
            buf = (self.lc.llama_token * size)()
            n = self.lc.llama_tokenize(self.vocab, data, len(data), buf, size, bos, special)
        tokens = list(buf[:n])
        if short:
            if len(self._tokens) >= _SHORT_TEXTS_KEPT:
                self._tokens.clear()
            self._tokens[text] = tuple(tokens)
        return tokens

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

    def load_head(self) -> None:
        """Compute the logits a decision reads from the hidden state from now on, where the head's
        type allows it (:mod:`~intentkit.backends.llamacpp.head`): checked against llama.cpp's
        own rows on the first evaluation that computes them. Not with a LoRA adapter applied at
        run time, which may change the head."""
        if self.head is None and self.adapter is None and self._head_ok is None:
            self.head = load_head(self._path, self.n_vocab, self.n_embd)
            if self.head is None:
                self._head_ok = False

    @property
    def computes_columns(self) -> bool:
        """Whether rows evaluated without ``full`` come as :class:`HeadRow`."""
        return self._head_ok is True

    def _on_tensor(self, tensor: int, ask: bool, _: Any) -> bool:
        try:
            if _u64_at(tensor + _TENSOR_NAME).value != _NAME_START:
                return False
            if ctypes.string_at(tensor + _TENSOR_NAME, len(_RESULT_NORM)) != _RESULT_NORM:
                return False
            if ask:
                return True
            kind = ctypes.c_int32.from_address(tensor).value
            width, rows, *more = ctypes.cast(tensor + _TENSOR_NE, ctypes.POINTER(ctypes.c_int64))[0:4]
            if self._read is None or kind != 0 or width != self.n_embd or more != [1, 1]:  # 0: GGML_TYPE_F32
                return True  # no hidden state: the graph runs on, and decisions read whole rows
            out = np.empty((rows, width), dtype=np.float32)
            if rows:
                self._read(tensor, out)
            self._norm.append(out)
            return not self._stop
        except Exception:  # never stop llama.cpp's graph by accident; the hidden state is then missing
            return True

    def _run(self, jobs: list[_Job]) -> None:
        """Evaluate ``jobs`` in one llama.cpp batch."""
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
        self._norm.clear()
        self._stop = stop = self._head_ok is True and not any(job.full for job in jobs)
        status = lc.llama_decode(self.ctx, batch)
        if status != 0:
            for job in jobs:
                lc.llama_memory_seq_rm(self.memory, job.seq, job.pos, -1)
            raise BackendError(f"llama_decode failed with status {status}")
        outputs = sum(len(job.outputs) for job in jobs)
        hidden = np.concatenate(self._norm) if self._norm else None
        if hidden is not None and len(hidden) != outputs:
            hidden = None
        if stop and hidden is None:
            raise BackendError("llama.cpp's graph gave no final hidden state")
        first = row = 0
        for job in jobs:
            if not stop:
                rows = [lc.llama_get_logits_ith(self.ctx, first + i) for i in job.outputs]
                job.rows = np.stack([np.ctypeslib.as_array(r, shape=(self.n_vocab,)) for r in rows]) if rows else None
            job.hidden = hidden[row : row + len(job.outputs)] if hidden is not None else None
            first += len(job.tokens)
            row += len(job.outputs)
        if self._head_ok is None and self.head is not None and not stop:
            self._check_head(jobs)

    def _check_head(self, jobs: list[_Job]) -> None:
        """Whether :class:`HeadRow` gives llama.cpp's logits, on the rows of this evaluation: the
        64 best tokens of each and 64 others, within a ten-thousandth of the largest logit."""
        head = self.head
        assert head is not None
        done = [job for job in jobs if job.rows is not None and job.hidden is not None]
        pairs = [pair for job in done for pair in zip(job.rows, job.hidden, strict=True)]  # type: ignore[arg-type]
        if not pairs:
            return
        rng = np.random.default_rng(0)
        ok = True
        for logits, hidden in pairs[:4]:
            tokens = np.concatenate([np.argpartition(logits, -64)[-64:], rng.integers(0, self.n_vocab, 64)])
            ours = HeadRow(head, hidden)[tokens]
            ok = ok and bool(np.abs(ours - logits[tokens]).max() <= 1e-4 * max(1.0, float(np.abs(logits).max())))
        self._head_ok = ok

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
            taken: list[_Job] = []
            size = 0
            for job in list(self._jobs):
                if size + len(job.tokens) <= self.capacity:
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
    :class:`~intentkit.backends.decoding.TokenModel`). Runs one request at a time.

    After :meth:`compute_columns`, the rows it returns may be :class:`HeadRow` objects, which compute
    the logits of the tokens read (:meth:`full_row` gives a whole row when a decision needs one)."""

    def __init__(self, context: LlamaContext, seq: int = 0) -> None:
        self.context, self.seq = context, seq
        self.n_vocab, self.n_ctx, self.n_batch = context.n_vocab, context.n_ctx, context.n_batch
        self.tokens: list[int] = []
        self.columns = False
        self._hidden: np.ndarray | None = None  # at the last prompt's last token (prefill_draft)
        self._hidden_rows: np.ndarray | None = None  # the last evaluation's, one per output
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

    def compute_columns(self) -> None:
        """Return rows as :class:`HeadRow` from now on, where the context can
        (:meth:`LlamaContext.load_head`): for a decoder that reads a few columns of each."""
        self.context.load_head()
        self.columns = True

    def rewind(self, n_tokens: int) -> None:
        # The cache leaves with the next evaluation (on the scheduler's thread, before the batch).
        if n_tokens < len(self.tokens):
            self._drop_from = n_tokens if self._drop_from is None else min(self._drop_from, n_tokens)
            del self.tokens[n_tokens:]

    def _evaluate(self, tokens: Sequence[int], outputs: list[int], full: bool) -> _Job:
        job = _Job(self.seq, len(self.tokens), tokens, outputs, full, self._drop_from)
        self._drop_from = None
        try:
            self.context.evaluate(job)
        except BaseException:
            self._drop_from = len(self.tokens)  # whatever a failed batch left behind
            raise
        self.tokens.extend(tokens)
        return job

    def feed(
        self,
        tokens: Sequence[int],
        *,
        all_logits: bool = False,
        logits: bool = True,
        outputs: Sequence[int] | None = None,
        full: bool = False,
    ) -> Rows:
        """Append ``tokens``; the logits of the last (``all_logits``: of each; ``outputs``: of the
        tokens at those indices, in order) — none with ``logits=False``. With ``full`` (or before
        :meth:`compute_columns`) llama.cpp's whole rows, else possibly :class:`HeadRow` objects."""
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
        full = full or not self.columns or not self.context.computes_columns
        job = None
        for start in starts:
            chunk = tokens[start : start + self.n_batch]
            last = start + len(chunk) == len(tokens)
            job = self._evaluate(chunk, [i - start for i in wanted] if last else [], full)
        assert job is not None
        self._hidden_rows = job.hidden if wanted else None
        if not wanted:
            return np.empty((0, self.n_vocab), dtype=np.float32)
        order = [wanted.index(i) for i in outputs] if list(outputs) != wanted else None  # duplicates included
        if job.rows is not None:
            return job.rows if order is None else job.rows[order]
        assert job.hidden is not None and self.context.head is not None
        rows = [HeadRow(self.context.head, hidden) for hidden in job.hidden]
        return rows if order is None else [rows[i] for i in order]

    def full_row(self) -> np.ndarray:
        """llama.cpp's whole logits row after the last token in the cache (that token is
        evaluated again where its row came as a :class:`HeadRow`)."""
        if not self.tokens:
            raise BackendError("nothing evaluated yet")
        last = self.tokens[-1]
        self.rewind(len(self.tokens) - 1)
        row: np.ndarray = self.feed([last], full=True)[0]  # type: ignore[assignment]  # full: an array
        return row

    def prefill(self, tokens: list[int]) -> tuple[Logits, int]:
        """Evaluate ``tokens`` reusing the cached common prefix; returns (last logits, tokens reused)."""
        rows, common = self.prefill_draft(tokens, [], ())
        return rows[0], common

    def prefill_draft(self, tokens: list[int], draft: list[int], reads: Sequence[int]) -> tuple[Rows, int]:
        """:meth:`prefill` with ``draft`` evaluated in the same batch as the prompt's uncached
        tokens; returns the logits after the prompt's last token, then after each drafted token
        ``reads`` indexes. The hidden state kept is the prompt's last token's."""
        common = reusable_prefix(self.tokens, tokens)
        self.rewind(common)
        rest = [*tokens[common:], *draft]
        if len(rest) > self.n_batch:
            if len(tokens) - common > 1:
                self.feed(tokens[common:-1], logits=False)
            rest = [tokens[-1], *draft]
        last = len(rest) - len(draft) - 1  # the prompt's last token
        rows = self.feed(rest, outputs=[last, *(last + 1 + i for i in reads)])
        self._hidden = self._hidden_rows[0] if self._hidden_rows is not None else None
        return rows, common

    @property
    def hidden_width(self) -> int:
        return int(self.context.n_embd)

    def enable_hidden(self) -> None:
        """Kept on every evaluation already (the context's callback reads llama.cpp's final norm)."""

    def hidden(self) -> np.ndarray:
        if self._hidden is None:
            if self.tokens:  # evaluated, yet the callback never saw the final norm
                raise BackendError(
                    "llama.cpp gave no final hidden state: its graph names no result_norm, or this "
                    f"llama-cpp-python ({getattr(self.context.lc, '__version__', '?')}) lays out ggml tensors "
                    "otherwise than the one intentkit reads them for"
                )
            raise BackendError("no hidden state yet (evaluate a prompt first)")
        return self._hidden
