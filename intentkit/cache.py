"""intentkit's file cache (``$INTENTKIT_CACHE``, default ``~/.cache/intentkit``): models assembled,
trimmed or merged once and reused. Every file is built under a per-process temporary name and
renamed into place, so a crash or a concurrent first run never leaves a half-written file."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

__all__ = ["build_once", "cache_dir", "digest"]


def cache_dir() -> Path:
    return Path(os.environ.get("INTENTKIT_CACHE") or Path.home() / ".cache" / "intentkit")


def build_once(name: str, build: Callable[[Path], None]) -> Path:
    """``cache_dir() / name``, built by ``build(partial_path)`` if it is not there yet."""
    path = cache_dir() / name
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")  # per process: concurrent first runs do not collide
    try:
        build(partial)
        partial.replace(path)  # atomic: never a truncated file under the final name
    finally:
        partial.unlink(missing_ok=True)
    return path


def digest(*parts: bytes) -> str:
    """A short hex digest naming a derived file after what it was derived from."""
    return hashlib.sha256(b"\0".join(parts)).hexdigest()[:12]
