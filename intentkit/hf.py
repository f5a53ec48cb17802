"""Helpers for transformers and peft, shared by the transformers backend and the trainers.

Nothing here imports torch, transformers or peft at import time.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import warnings
from collections.abc import Iterator

__all__ = ["cache_name", "quiet_peft"]


@functools.cache
def cache_name() -> str:
    """The name transformers gives the KV cache, as a ``forward`` keyword and an output field:
    ``cache`` in recent releases (5.24 has it, and warns on every call that still says
    ``past_key_values``), ``past_key_values`` in earlier ones."""
    from transformers.modeling_outputs import BaseModelOutputWithPast

    return "cache" if "cache" in BaseModelOutputWithPast.__dataclass_fields__ else "past_key_values"


@contextlib.contextmanager
def quiet_peft() -> Iterator[None]:
    """Import peft and load or wrap a model with it, without two messages that say nothing about
    the user's run: bitsandbytes, which peft imports when it is installed, logs on CPUs with
    AVX512-BF16 that it could not fetch a CPU 4-bit kernel from the Hub (nothing here runs 4-bit on
    the CPU, nor downloads anything), and peft 0.21 reads transformers' deprecated
    ``is_gradient_checkpointing`` (a FutureWarning on every load). Both are restored on exit."""
    bitsandbytes = logging.getLogger("bitsandbytes.backends.cpu.ops")
    level = bitsandbytes.level
    bitsandbytes.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
            yield
    finally:
        bitsandbytes.setLevel(level)
