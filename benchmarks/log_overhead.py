"""What the request log costs a request: the service in a process of its own (as deployed), with
the log off and on (SQLite, the embedded default), sequential ``POST /v1/route`` calls
alternating between the two in blocks so that both see the same machine. Target: p50 difference
≤ 1 ms.

    python benchmarks/log_overhead.py                       # fake backend, 2,000 requests each
    python benchmarks/log_overhead.py --kind llama --requests 300
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def main() -> None:
    import httpx
    from load_test import _serve_process

    from intentkit.feedback import RequestLog
    from trainers.data import load_records

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kind", choices=["fake", "llama"], default="fake")
    parser.add_argument("--requests", type=int, default=2000, help="per configuration")
    parser.add_argument("--block", type=int, default=50, help="requests in a row before switching")
    parser.add_argument("--data", default=str(ROOT / "examples" / "demo" / "dev.jsonl"))
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args()
    texts = [r.instruction for r in load_records(args.data)]
    directory = tempfile.mkdtemp(prefix="intentkit-log-")
    log_url = f"sqlite:///{directory}/log.db"
    off_url, off = _serve_process(args.kind)
    on_url, on = _serve_process(args.kind, log_url)
    latencies: dict[str, list[float]] = {"off": [], "on": []}
    try:
        with httpx.Client(timeout=60) as client:
            for url in (off_url, on_url):  # warm both
                for text in texts[:20]:
                    client.post(f"{url}/v1/route", json={"text": text})
            done = 0
            while done < args.requests:
                for name, url in (("off", off_url), ("on", on_url)):
                    for i in range(done, min(done + args.block, args.requests)):
                        start = time.perf_counter()
                        response = client.post(f"{url}/v1/route", json={"text": texts[i % len(texts)]})
                        latencies[name].append((time.perf_counter() - start) * 1000)
                        response.raise_for_status()
                done += args.block
    finally:
        for process in (off, on):
            process.terminate()
            process.wait(30)
    with RequestLog(log_url) as log:
        stored = log.count()
    result = {"kind": args.kind, "requests": args.requests}
    for name, values in latencies.items():
        values.sort()
        result[name] = {
            "p50_ms": round(statistics.median(values), 3),
            "p95_ms": round(values[int(0.95 * (len(values) - 1))], 3),
            "mean_ms": round(statistics.fmean(values), 3),
        }
    result["p50_difference_ms"] = round(result["on"]["p50_ms"] - result["off"]["p50_ms"], 3)
    result["rows_logged"] = stored  # the warm-up's 20 as well
    print(json.dumps(result, ensure_ascii=False))
    if args.out:
        Path(args.out).write_text(json.dumps(result, ensure_ascii=False, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
