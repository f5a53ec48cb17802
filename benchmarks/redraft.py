"""Drafting again where the prompt's draft stops holding, side by side with the prompt's draft
only: the same requests, the two ways alternately in one process (so a slower minute of the
machine hits both), the answers compared.

    python benchmarks/redraft.py                                              # demo dev set, bundled model
    python benchmarks/redraft.py --model runs/smp64 --data runs/smp64/holdout.jsonl

Reports per way: p50 / p95 / mean latency of ``backend.generate``, model evaluations after the
prompt, and how many answers differ (there should be none: a draft only saves evaluations)."""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(ROOT / "examples" / "demo" / "dev.jsonl"))
    parser.add_argument("--model", help="a model directory (default: the bundled model)")
    parser.add_argument("--limit", type=int)
    args = parser.parse_args()

    from intentkit.backends.base import GenerateRequest
    from intentkit.backends.local import LocalBackend
    from intentkit.cli import build_router
    from trainers.data import load_records

    records = load_records(args.data)[: args.limit]
    router = build_router(model=Path(args.model) if args.model else None)
    backend = router.backend
    assert isinstance(backend, LocalBackend)
    generators = backend._generators
    ways = {"prompt's draft only": False, "drafted again": True}
    seen: dict[str, list[tuple[float, int, str]]] = {way: [] for way in ways}
    try:
        for index, record in enumerate(records):
            request = GenerateRequest(record.instruction, router.registry.catalog, router.prompt)
            order = list(ways) if index % 2 == 0 else list(reversed(ways))
            for way in order:
                for generator in generators:
                    generator.redraft = ways[way]
                started = time.perf_counter()
                generation = backend.generate(request)
                seen[way].append(((time.perf_counter() - started) * 1e3, generation.info.get("evaluations", 0), generation.text))
    finally:
        router.close()
    print(f"{len(records)} requests from {args.data}")
    print("| way | p50 ms | p95 ms | mean ms | evaluations after the prompt |")
    print("|---|---|---|---|---|")
    for way, rows in seen.items():
        latencies = sorted(r[0] for r in rows)
        p95 = latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))]
        p50, mean, evaluations = statistics.median(latencies), statistics.mean(latencies), statistics.mean(r[1] for r in rows)
        print(f"| {way} | {p50:.1f} | {p95:.1f} | {mean:.1f} | {evaluations:.2f} |")
    first, second = seen.values()
    print(f"answers that differ: {sum(a[2] != b[2] for a, b in zip(first, second, strict=True))}")


if __name__ == "__main__":
    main()
