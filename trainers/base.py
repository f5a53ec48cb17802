"""The base model a fine-tune starts from: an HF causal-LM directory or a GGUF file, loaded in
full precision (LoRA, full fine-tune) or with its linear weights in 4-bit NF4 (QLoRA).

transformers reads a GGUF file by dequantizing it, and cannot quantize it again to 4 bits on
load; for QLoRA the dequantized model is written once as an HF directory (bf16 safetensors) into
the cache (:func:`hf_copy`) and loaded from there through bitsandbytes.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Any

from intentkit.backends.llamacpp.bundled import base_model_path
from intentkit.cache import cache_dir
from intentkit.errors import ConfigError, MissingDependencyError

from .config import DEFAULT_BASE

__all__ = ["DEFAULT_BASE", "base_path", "hf_copy", "load_base", "qlora_device"]


def base_path(base: str) -> Path:
    """``"default"`` (the bundled gemma-3-270m Q4_K_M GGUF, assembled once; no network) or a path."""
    path = base_model_path() if base == DEFAULT_BASE else Path(base)
    if not path.exists():
        raise FileNotFoundError(f"base model not found: {path}")
    return path


def qlora_device() -> str:
    """The device QLoRA trains on; a clear error where it cannot run. Called before the base is
    loaded, so a wrong machine fails in a second rather than after loading the model."""
    import torch

    if not torch.cuda.is_available():
        raise ConfigError("QLoRA needs a CUDA GPU and bitsandbytes; use method='lora' on this machine")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise MissingDependencyError("bitsandbytes") from None
    return "cuda"


def load_base(base: str, *, dtype: Any = None, four_bit_on: str | None = None) -> tuple[Any, Any]:
    """Load a causal LM and its tokenizer from an HF directory or a GGUF file (dequantized).

    ``four_bit_on``: a device (``"cuda"``) to load the linear weights onto in 4-bit NF4 with
    double quantization and bf16 compute, as QLoRA trains them; embeddings, norms and the output
    head stay in bf16."""
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:
        raise MissingDependencyError("torch" if "torch" in str(exc) else "transformers") from None
    path = base_path(base)
    if four_bit_on is not None:
        return _load_four_bit(hf_copy(path) if path.suffix == ".gguf" else path, four_bit_on)
    kwargs: dict[str, Any] = {"dtype": dtype or torch.float32}
    if path.suffix == ".gguf":
        directory, gguf = str(path.parent), path.name
        tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=gguf)
        model = AutoModelForCausalLM.from_pretrained(directory, gguf_file=gguf, **kwargs)
        # The weights are plain floats now, but the GGUF quantizer tag stays and makes
        # transformers refuse to train: clear it.
        model.hf_quantizer = None  # type: ignore[assignment]
        model.is_quantized = False  # type: ignore[assignment]
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
    else:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    return model, _with_pad(tokenizer)


def hf_copy(gguf: Path, *, loaded: tuple[Any, Any] | None = None) -> Path:
    """``gguf`` dequantized and saved as an HF directory (bf16 safetensors and its tokenizer) in
    the cache, built once (atomically) and named by the file's name and size. ``loaded``: the
    model and tokenizer already loaded from ``gguf`` (:func:`load_base`), saved as they are
    instead of dequantizing the file again."""
    import torch

    digest = hashlib.sha256(f"{gguf.name}:{gguf.stat().st_size}".encode()).hexdigest()[:12]
    path = cache_dir() / f"{gguf.stem}.hf-{digest}"
    if not path.exists():
        partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
        try:
            model, tokenizer = loaded if loaded is not None else load_base(str(gguf), dtype=torch.bfloat16)
            model.save_pretrained(partial)
            tokenizer.save_pretrained(partial)
            partial.replace(path)  # a crash never leaves a half-written copy under the final name
        finally:
            shutil.rmtree(partial, ignore_errors=True)
    return path


def _load_four_bit(directory: Path, device: str) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    quantization = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
    )
    model = AutoModelForCausalLM.from_pretrained(
        directory, quantization_config=quantization, device_map={"": device}, dtype=torch.bfloat16
    )
    return model, _with_pad(AutoTokenizer.from_pretrained(directory))


def _with_pad(tokenizer: Any) -> Any:
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
