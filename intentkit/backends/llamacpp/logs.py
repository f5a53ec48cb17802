"""llama.cpp's log output: silenced for an embedded router unless asked for."""

from __future__ import annotations

import ctypes
import threading
from typing import Any

__all__ = ["init_backend", "quiet_llama_cpp"]

_backend_ready = False
_init_lock = threading.Lock()


def _silence(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
    """llama.cpp logs every load to stderr; an embedded router stays quiet unless asked."""


def quiet_llama_cpp() -> None:
    """Stop llama.cpp's log output (it logs every load and quantization to stderr)."""
    import llama_cpp as lc

    callback = lc.llama_log_callback(_silence)
    quiet_llama_cpp.callback = callback  # type: ignore[attr-defined]  # keep it alive
    lc.llama_log_set(callback, ctypes.c_void_p(0))


def init_backend(lc: Any, verbose: bool) -> None:
    """Initialise llama.cpp once per process (quiet unless ``verbose``)."""
    global _backend_ready
    with _init_lock:
        if not _backend_ready:
            if not verbose:
                quiet_llama_cpp()
            lc.llama_backend_init()
            _backend_ready = True
