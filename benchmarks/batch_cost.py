"""What one llama.cpp evaluation costs by what is in its batch: the embedded default's real
prompts (the demo dev set), 1 to 8 sequences evaluated together, so the gain of batching
concurrent requests (``LlamaCppBackend(parallel=N)``) can be read off, and its ceiling.

    python benchmarks/batch_cost.py                # n = 1, 2, 4, 8 sequences, 8 rounds each

For each n: one batch of n prompts' uncached tokens (the utterance and the turn markers, about
10 tokens each, the shared system prompt cached per sequence) with one logits row each, then one
batch of one decoding step per sequence; then, at n = 8, the prompt batch with a logits row on
every token. A least-squares fit over those batches gives the fixed cost of a batch (reading the
weights), the cost per token and per logits row (the output head over the vocabulary). Then the
same prompt batches as the router evaluates them (the logits computed from the hidden state,
:class:`~intentkit.backends.llamacpp.head.HeadRow`): the cost of a row there."""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(ROOT / "examples" / "demo" / "dev.jsonl"))
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--sequences", default="1,2,4,8")
    args = parser.parse_args()

    from intentkit import Router
    from intentkit.backends.decoding import reusable_prefix
    from intentkit.backends.llamacpp import LlamaCppBackend
    from intentkit.backends.llamacpp.bindings import LlamaContext, _Job
    from trainers.data import load_records

    counts = [int(n) for n in args.sequences.split(",")]
    texts = [r.instruction for r in load_records(args.data)]
    with Router.default(fast_path=False) as router:
        backend = router.backend
        assert isinstance(backend, LlamaCppBackend)
        prompts = [backend._model.tokenize(router.prompt.render(t), special=True, bos=True) for t in texts]
        path = backend.loaded_path
    shared = min(reusable_prefix(prompts[0], p) for p in prompts)
    context = LlamaContext(path, None, 1024, 64, 2, 1.0, n_seq=max(counts))
    samples: list[tuple[int, int, int, float]] = []  # (batches, tokens, rows, seconds)

    def timed(jobs: list[_Job]) -> float:
        started = time.perf_counter()
        context._run(jobs)
        seconds = time.perf_counter() - started
        samples.append((1, sum(len(j.tokens) for j in jobs), sum(len(j.outputs) for j in jobs), seconds))
        return seconds

    try:
        for seq in range(max(counts)):  # the system prompt, cached in every sequence
            context._run([_Job(seq, 0, prompts[0][:shared], [])])
        print("| sequences | prompt batch | per request | decoding step | per request |")
        print("|---|---|---|---|---|")
        for n in counts:
            prompt_s, step_s = [], []
            for r in range(args.rounds):
                group = [prompts[(r * max(counts) + k) % len(prompts)] for k in range(n)]
                rests = [p[shared:] for p in group]
                prompt_s.append(timed([_Job(k, shared, rest, [len(rest) - 1], drop_from=shared) for k, rest in enumerate(rests)]))
                step_s.append(timed([_Job(k, len(p), [p[-1]], [0]) for k, p in enumerate(group)]))
            p, s = statistics.median(prompt_s) * 1e3, statistics.median(step_s) * 1e3
            print(f"| {n} | {p:.1f} ms | {p / n:.1f} ms | {s:.1f} ms | {s / n:.1f} ms |")
        n = max(counts)
        for r in range(args.rounds):
            group = [prompts[(r * n + k) % len(prompts)][shared:] for k in range(n)]
            timed([_Job(k, shared, rest, list(range(len(rest))), drop_from=shared) for k, rest in enumerate(group)])
        # The same batches as the router evaluates them: hidden states, the logits read computed
        # from the head's rows (HeadRow), not llama.cpp's head over the vocabulary.
        fitted = len(samples)
        context.load_head()
        context._run([_Job(0, shared, prompts[0][shared:], [0], drop_from=shared)])  # checks the head
        if context.computes_columns:
            for r in range(args.rounds):
                group = [prompts[(r * n + k) % len(prompts)][shared:] for k in range(n)]
                timed([_Job(k, shared, t, list(range(len(t))), full=False, drop_from=shared) for k, t in enumerate(group)])
                timed([_Job(k, shared, t, [len(t) - 1], full=False, drop_from=shared) for k, t in enumerate(group)])
    finally:
        context.close()
    design = np.array([[b, t, w] for b, t, w, _ in samples[:fitted]], dtype=float)
    fixed, per_token, per_row = np.linalg.lstsq(design, np.array([s for *_, s in samples[:fitted]]), rcond=None)[0] * 1e3
    print(f"\nfit over {fitted} batches: {fixed:.1f} ms per batch + {per_token:.2f} ms per token", end="")
    print(f" + {per_row:.2f} ms per logits row")
    columns = samples[fitted:]
    if columns:
        every = statistics.median(seconds for i, (*_, seconds) in enumerate(columns) if i % 2 == 0) * 1e3
        one = statistics.median(seconds for i, (*_, seconds) in enumerate(columns) if i % 2 == 1) * 1e3
        rows = statistics.median(w for i, (_, _, w, _) in enumerate(columns) if i % 2 == 0) - n
        print(f"computing only the columns read ({n} sequences' prompts): a row on every token {every:.1f} ms, ", end="")
        print(f"one row each {one:.1f} ms: {(every - one) / max(rows, 1):.2f} ms per extra row")


if __name__ == "__main__":
    main()
