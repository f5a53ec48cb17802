"""Load test of ``POST /v1/route`` on a real uvicorn server on 127.0.0.1 (loopback only, bounded),
in a process of its own as it is deployed (``--no-separate``: a thread of the load generator's
process, where the two share one GIL and the client's own work is counted against the service).

    python benchmarks/load_test.py                      # both runs below, at concurrency 1, 4, 8 and 32
    python benchmarks/load_test.py --only fake --requests 5000 --concurrency 32

- ``fake``: the FakeBackend router, ``--requests`` at each ``--concurrency`` level → errors, lost
  responses, throughput and p50/p95/p99 latency;
- ``llama``: the embedded default (llama.cpp), ``--llama-requests`` at each ``--llama-concurrency``
  level, compared with the same router's single-stream capacity (sequential ``handle`` calls
  in-process); one service for each ``--parallel`` value (requests evaluated together in one
  llama.cpp batch; 1: one at a time).

One service process per backend serves every level, one after the other (warmed up first).

Utterances come from ``--data`` (the demo dev set by default). Every response is checked: status
200 and a JSON body whose ``text`` is the utterance sent.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _serve(app: Any) -> tuple[str, Any, threading.Thread]:
    import uvicorn

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    return f"http://127.0.0.1:{port}", server, thread


async def _load(url: str, texts: list[str], requests: int, concurrency: int, timeout_s: float) -> dict[str, Any]:
    import httpx

    latencies: list[float] = []
    errors: list[str] = []
    semaphore = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=timeout_s, limits=limits) as client:

        async def one(i: int) -> None:
            text = texts[i % len(texts)]
            async with semaphore:
                start = time.perf_counter()
                try:
                    response = await client.post("/v1/route", json={"text": text})
                    body = response.json()
                    if response.status_code != 200 or body.get("text") != text:
                        errors.append(f"{response.status_code}: {str(body)[:200]}")
                except Exception as exc:  # a lost response is exactly what this test looks for
                    errors.append(f"{type(exc).__name__}: {exc}")
                latencies.append((time.perf_counter() - start) * 1000)

        started = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(requests)))
        seconds = time.perf_counter() - started
    latencies.sort()
    return {
        "requests": requests,
        "concurrency": concurrency,
        "answered": len(latencies) - len(errors),
        "errors": len(errors),
        "first_errors": errors[:5],
        "seconds": round(seconds, 2),
        "throughput_rps": round(requests / seconds, 1),
        "p50_ms": round(statistics.median(latencies), 1),
        "p95_ms": round(latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))], 1),
        "p99_ms": round(latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))], 1),
    }


def _router(kind: str, parallel: int = 1) -> Any:
    from intentkit import Router
    from intentkit.demo import SmartHome
    from intentkit.testing import FakeBackend

    if kind == "llama":
        from intentkit.backends.llamacpp import LlamaCppBackend

        backend: Any = LlamaCppBackend.default(parallel=parallel)
    else:
        backend = FakeBackend('weather_search(city="杭州")')
    router = Router(backend, fast_path=False)
    SmartHome().register(router)
    return router


def _serve_process(kind: str, log: str | None = None, parallel: int = 1) -> tuple[str, subprocess.Popen[bytes]]:
    """The service in a process of its own, as it is deployed: the load generator (httpx, in
    this process) then competes with it for CPU but not for the GIL."""
    import httpx

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [sys.executable, __file__, "--serve", kind, "--port", str(port), "--parallel", str(parallel)]
    command += ["--log", log] if log else []
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the service exited: {process.stderr.read().decode()[-2000:] if process.stderr else ''}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return url, process
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("the service did not start within 300 s")


def _serve_here(kind: str, port: int, log: str | None = None, parallel: int = 1) -> None:
    import uvicorn

    from intentkit.server import create_app

    app = create_app(_router(kind, parallel), log=log)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="error", access_log=False)


def _run(
    kind: str, texts: list[str], requests: int, levels: list[int], *, separate: bool, timeout_s: float, parallel: int = 1
) -> list[dict[str, Any]]:
    """Each concurrency level against one service (warmed up with a few requests first)."""
    from intentkit.server import create_app

    def at_each(url: str) -> list[dict[str, Any]]:
        asyncio.run(_load(url, texts, min(len(texts), 16), 1, timeout_s=timeout_s))
        return [asyncio.run(_load(url, texts, requests, level, timeout_s=timeout_s)) for level in levels]

    if separate:
        url, process = _serve_process(kind, parallel=parallel)
        try:
            return at_each(url)
        finally:
            process.terminate()
            process.wait(30)
    router = _router(kind, parallel)
    url, server, thread = _serve(create_app(router))
    try:
        return at_each(url)
    finally:
        server.should_exit = True
        thread.join(10)
        router.close()


def _single_stream(kind: str, texts: list[str]) -> float:
    """Sequential ``handle`` calls in this process, requests per second."""
    router = _router(kind)
    try:
        sample = texts[: min(len(texts), 200)]
        router.handle(sample[0])
        started = time.perf_counter()
        for text in sample:
            router.handle(text)
        return len(sample) / (time.perf_counter() - started)
    finally:
        router.close()


def run(
    kind: str, texts: list[str], requests: int, levels: list[int], *, separate: bool = True, parallel: tuple[int, ...] = (1,)
) -> list[dict[str, Any]]:
    single = _single_stream(kind, texts)
    results = []
    for together in parallel:
        timeout_s = 60 if kind == "fake" else 300
        for result in _run(kind, texts, requests, levels, separate=separate, timeout_s=timeout_s, parallel=together):
            result.update(parallel=together, single_stream_rps=round(single, 1))
            result["vs_single_stream"] = round(result["throughput_rps"] / single, 3)
            results.append(result)
    return results


def _levels(text: str) -> list[int]:
    try:
        levels = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"concurrency levels are whole numbers separated by commas, not {text!r}") from None
    if not levels or min(levels) < 1:
        raise argparse.ArgumentTypeError(f"concurrency levels are at least 1: {text!r}")
    return levels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(ROOT / "examples" / "demo" / "dev.jsonl"))
    parser.add_argument("--only", choices=["fake", "llama"])
    parser.add_argument("--requests", type=int, default=5000, help="fake backend: requests per concurrency level")
    parser.add_argument("--concurrency", type=_levels, default=[1, 4, 8, 32], help="fake backend: levels, e.g. 1,4,8,32")
    parser.add_argument("--llama-requests", type=int, default=400, help="embedded model: requests per level")
    parser.add_argument("--llama-concurrency", type=_levels, default=[1, 4, 8, 32], help="embedded model: levels")
    parser.add_argument(
        "--separate",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run the service in its own process (default); --no-separate: in a thread of this one",
    )
    parser.add_argument(
        "--parallel", type=_levels, default=[1, 4, 8], help="embedded model: requests evaluated together, one service each"
    )
    parser.add_argument("--out", help="write the results as JSON here")
    parser.add_argument("--serve", choices=["fake", "llama"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--log", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        _serve_here(args.serve, args.port, args.log, args.parallel[0])
        return
    from trainers.data import load_records

    texts = [r.instruction for r in load_records(args.data)]
    results: dict[str, list[dict[str, Any]]] = {}
    if args.only in (None, "fake"):
        results["fake"] = run("fake", texts, args.requests, args.concurrency, separate=args.separate)
    if args.only in (None, "llama"):
        results["llama"] = run(
            "llama", texts, args.llama_requests, args.llama_concurrency, separate=args.separate, parallel=tuple(args.parallel)
        )
    print("| backend | parallel | concurrency | requests | errors | req/s | × sequential in-process | p50 ms | p95 ms | p99 ms |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for kind, levels in results.items():
        for r in levels:
            print(
                f"| {kind} | {r.get('parallel', 1) if kind == 'llama' else '—'} | {r['concurrency']} | {r['requests']} | "
                f"{r['errors']} | {r['throughput_rps']} | "
                f"{r['vs_single_stream']} ({r['single_stream_rps']} req/s) | {r['p50_ms']} | {r['p95_ms']} | {r['p99_ms']} |"
            )
    if args.out:
        Path(args.out).write_text(json.dumps(results, ensure_ascii=False, indent=2), encoding="utf-8")
    if any(r["errors"] for levels in results.values() for r in levels):
        sys.exit(1)


if __name__ == "__main__":
    main()
