"""Public test helpers: route through a scripted backend instead of a model, or start a real
third-party OpenAI-compatible server on loopback."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from .backends.fake import FakeBackend

__all__ = ["FakeBackend", "free_port", "llama_cpp_server"]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def llama_cpp_server(gguf: str | Path, *, alias: str = "intentkit", threads: int = 2, timeout_s: float = 120) -> Iterator[str]:
    """llama-cpp-python's OpenAI-compatible server (``pip install 'llama-cpp-python[server]'``)
    on ``gguf``, on a free loopback port: yields its ``/v1`` URL (the model is called ``alias``)
    and stops it afterwards. Raises ``RuntimeError`` with the server's output when it does not
    come up."""
    import httpx

    port = free_port()
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--model_alias", alias]
    command += ["--host", "127.0.0.1", "--port", str(port), "--n_ctx", "1024", "--n_threads", str(threads)]
    command += ["--verbose", "False"]
    log = tempfile.TemporaryFile(mode="w+", encoding="utf-8")  # a pipe nobody reads would fill and stall it
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if process.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"llama_cpp.server exited with {process.returncode}:\n{log.read()[-3000:]}")
            try:
                if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"llama_cpp.server did not answer on {url} within {timeout_s:.0f} s")
            time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
