"""One place that turns a backend's name and options into a backend (the CLI's ``--backend``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from ..errors import ConfigError
from ..model_dir import ModelInfo
from .base import Backend

__all__ = ["BACKENDS", "load_backend"]

BackendName = Literal["llamacpp", "transformers", "openai"]
#: The backends :func:`load_backend` makes, with the other names each answers to.
BACKENDS: dict[str, tuple[str, ...]] = {"llamacpp": ("llama.cpp",), "transformers": ("hf",), "openai": ()}


def load_backend(
    name: str = "llamacpp",
    *,
    model: str | Path | None = None,
    adapter: str | Path | None = None,
    base_url: str | None = None,
    api_key: str | None = None,
    api_model: str | None = None,
    **options: Any,
) -> Backend:
    """A backend by name (``llamacpp``, ``transformers``, ``openai``; ``hf`` means transformers).

    - ``llamacpp``: nothing given, the embedded default model; ``model`` a model directory
      (``intentkit train --out``), a GGUF that ``intentkit export`` wrote (its record beside
      it), or any other base GGUF to run the bundled adapter on; ``adapter`` a model directory
      or a GGUF LoRA, merged into ``model`` (default: the base the adapter's directory was
      trained from);
    - ``transformers``: ``model`` an HF directory or a GGUF (dequantized), ``adapter`` a PEFT
      adapter directory;
    - ``openai``: ``base_url`` and ``api_model`` (``api_key`` defaults to ``$OPENAI_API_KEY``).

    ``options`` go to the backend's constructor."""
    kind = next((key for key, aliases in BACKENDS.items() if name == key or name in aliases), None)
    if kind is None:
        known = ", ".join(f"{k} ({', '.join(a)})" if a else k for k, a in BACKENDS.items())
        raise ConfigError(f"unknown backend {name!r}; backends: {known}")
    if kind == "openai":
        from .openai import OpenAIBackend

        if not base_url or not api_model:
            raise ConfigError("the openai backend needs a base URL and a model name (--base-url, --api-model)")
        return OpenAIBackend(base_url, model=api_model, api_key=api_key or os.environ.get("OPENAI_API_KEY"), **options)
    if kind == "transformers":
        from .transformers import TransformersBackend

        if model is None:
            raise ConfigError("the transformers backend needs a model (an HF model directory or a .gguf file)")
        return TransformersBackend(model, adapter=adapter, **options)
    return _llamacpp(Path(model) if model is not None else None, Path(adapter) if adapter is not None else None, **options)


def _llamacpp(model: Path | None, adapter: Path | None, **options: Any) -> Backend:
    from .llamacpp import LlamaCppBackend

    if model is None and adapter is None:
        return LlamaCppBackend.default(**options)
    if adapter is None:
        assert model is not None
        if model.is_dir():
            return LlamaCppBackend.from_model_dir(model, **options)
        if ModelInfo.exists(model.parent):  # an exported GGUF: it runs as it is, its record beside it
            return LlamaCppBackend(model, **options)
        from .llamacpp.bundled import bundled_model_dir

        return LlamaCppBackend.from_model_dir(bundled_model_dir(), base=model, **options)  # any other GGUF: the bundled adapter
    if adapter.is_dir():
        return LlamaCppBackend.from_model_dir(adapter, base=model, **options)
    if not adapter.is_file():
        raise FileNotFoundError(f"adapter not found: {adapter}")
    from .llamacpp.bundled import deployment_base

    base = model or deployment_base(adapter.parent)
    return LlamaCppBackend(base, adapter=adapter, merge_adapter=True, **options)
