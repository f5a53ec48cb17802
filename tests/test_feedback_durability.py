"""Durability of the request log: 1,000 requests at concurrency 16 against the service in a
process of its own (fake backend, SQLite log), feedback on every third, then ``kill -9`` of the
server mid-run. After a restart every acknowledged feedback row is there, and the request rows
lost are at most those the writer had not committed yet (the last batch being gathered).

Run as a script (``python tests/test_feedback_durability.py --serve PORT LOG_URL``) it is that
service."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

BATCH = 64
REQUESTS, CONCURRENCY, KILL_AFTER = 1000, 16, 500
TEXTS = ["我想听音乐", "查下杭州天气", "放点啥", "讲个笑话"]


def serve(port: int, url: str) -> None:
    import uvicorn

    from intentkit import Router
    from intentkit.feedback import RequestLog
    from intentkit.server import create_app
    from intentkit.testing import FakeBackend

    script = {"我想听音乐": "play_music()", "查下杭州天气": 'weather_search(city="杭州")', "放点啥": "play_music()"}
    router = Router(FakeBackend(lambda r: script.get(r.text, "no_intent()"), confidence=0.5), fast_path=False)

    @router.intent
    def play_music() -> str:
        return "playing"

    @router.intent
    def weather_search(city: str) -> str:
        return city

    log = RequestLog(url, batch_size=BATCH)
    uvicorn.run(create_app(router, log=log), host="127.0.0.1", port=port, log_level="warning")


def _start(port: int, url: str, errors: Path) -> subprocess.Popen[bytes]:
    with errors.open("ab") as stderr:
        process = subprocess.Popen([sys.executable, __file__, "--serve", str(port), url], stderr=stderr)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"service exited: {errors.read_text(errors='replace')[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return process
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("service did not start")


async def _load(base: str, server: subprocess.Popen[bytes]) -> tuple[list[str], list[tuple[str, str]]]:
    import httpx

    routed: list[str] = []
    acknowledged: list[tuple[str, str]] = []
    counter = iter(range(REQUESTS))
    killed = False

    async with httpx.AsyncClient(base_url=base, timeout=10) as client:

        async def worker() -> None:
            nonlocal killed
            for i in counter:
                if i == KILL_AFTER and not killed:
                    killed = True
                    os.kill(server.pid, signal.SIGKILL)
                try:
                    response = await client.post("/v1/route", json={"text": TEXTS[i % len(TEXTS)]})
                except httpx.HTTPError:
                    return
                if response.status_code != 200:
                    return
                request_id = response.json()["request_id"]
                routed.append(request_id)
                if i % 3 == 0:
                    correct = 'weather_search(city="北京")' if i % 2 else "no_intent()"
                    try:
                        answer = await client.post(
                            "/v1/feedback", json={"request_id": request_id, "vote": "down", "correct": correct}
                        )
                    except httpx.HTTPError:
                        return
                    if answer.status_code == 200:
                        acknowledged.append((request_id, answer.json()["feedback"]["correct"]))

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return routed, acknowledged


def test_kill_minus_nine_loses_no_acknowledged_feedback(tmp_path: Path) -> None:
    pytest.importorskip("sqlalchemy")
    pytest.importorskip("uvicorn")
    pytest.importorskip("httpx")
    from intentkit.feedback import RequestLog

    url = f"sqlite:///{tmp_path / 'crash.db'}"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = _start(port, url, tmp_path / "stderr")
    try:
        routed, acknowledged = asyncio.run(_load(f"http://127.0.0.1:{port}", server))
    finally:
        server.kill()
        server.wait()
    assert len(routed) >= KILL_AFTER - CONCURRENCY and len(acknowledged) >= 100
    restarted = _start(port, url, tmp_path / "stderr")  # the service starts again on the crashed database
    try:
        import httpx

        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10).status_code == 200
    finally:
        restarted.send_signal(signal.SIGTERM)
        restarted.wait(30)
    with RequestLog(url) as log:
        stored = {r.id: r for r in log.requests()}
        for request_id, correct in acknowledged:
            assert request_id in stored and stored[request_id].correction == correct, request_id
        lost = [request_id for request_id in routed if request_id not in stored]
    # only rows still queued can go: the batch being gathered (≤ BATCH rows) and what arrived meanwhile
    assert len(lost) <= 2 * BATCH, f"{len(lost)} of {len(routed)} acknowledged requests lost"
    print(f"routed {len(routed)}, feedback acknowledged {len(acknowledged)}, request rows lost {len(lost)}")


if __name__ == "__main__" and sys.argv[1:2] == ["--serve"]:
    serve(int(sys.argv[2]), sys.argv[3])
