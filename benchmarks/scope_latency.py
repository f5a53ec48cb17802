"""What the out-of-scope detector's hidden state costs a request: the state read back from the
logits row (the default) against llama.cpp's embeddings mode, side by side in one process.

    python benchmarks/scope_latency.py --train examples/demo/train.jsonl --dev examples/demo/dev.jsonl

Fits a detector on the bundled demo model (every ``--every``-th training row indexed, a disjoint
slice calibrated on), routes ``--dev`` through each mode ``--rounds`` times, and prints p50 / mean
per mode, whether the answers and verdicts are the same, and the largest difference in distance.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from intentkit.backends.base import GenerateRequest
from intentkit.backends.llamacpp import LlamaCppBackend
from intentkit.prompt import PromptFormat
from trainers.data import build_registry, load_records
from trainers.scope import fit_scope


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=Path, required=True)
    parser.add_argument("--dev", type=Path, required=True)
    parser.add_argument("--every", type=int, default=8, help="index every N-th training row")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    train, dev = load_records(args.train), load_records(args.dev)
    with LlamaCppBackend.default() as backend:
        model = backend._model  # type: ignore[attr-defined]
        detector = fit_scope(backend, train[:: args.every], calibration=train[args.every // 2 :: args.every * 2])
        backend.set_scope(detector)
        read_back = model._inverse
        if not isinstance(read_back, tuple):
            raise SystemExit("the hidden state could not be read back from this model's logits")
        catalog = build_registry(train).catalog
        prompt = backend.prompt or PromptFormat()

        def route(inverse: object) -> tuple[list[tuple[str, bool, float]], list[float]]:
            model._inverse = inverse
            answers, times = [], []
            for record in dev:
                t0 = time.perf_counter()
                out = backend.generate(GenerateRequest(record.instruction, catalog, prompt))
                times.append((time.perf_counter() - t0) * 1e3)
                assert out.scope is not None
                answers.append((out.text, out.scope.out_of_scope, out.scope.distance))
            return answers, times

        print(f"{len(dev)} utterances, detector over {len(detector.intents)} training rows")
        for _ in range(args.rounds):
            embedded, t_embedded = route(False)
            logits, t_logits = route(read_back)
            for name, times in (("embeddings mode", t_embedded), ("read from logits", t_logits)):
                print(f"{name:18} p50 {statistics.median(times):6.1f} ms   mean {statistics.mean(times):6.1f} ms")
            same = sum(a[:2] == b[:2] for a, b in zip(embedded, logits, strict=True))
            worst = max(abs(a[2] - b[2]) for a, b in zip(embedded, logits, strict=True))
            ratio = statistics.median(t_logits) / statistics.median(t_embedded)
            print(f"same answers and verdicts: {same}/{len(dev)}; largest distance difference {worst:.5f}; p50 ratio {ratio:.2f}")


if __name__ == "__main__":
    main()
