"""The output head of a GGUF model, read from the file to compute a few columns of a logits row.

A decision of the constrained decoder reads the logits of a handful of tokens (the branches of an
intent trie, the pieces a copied value can go on with), while llama.cpp's head computes every
token of the vocabulary for each row: on the bundled model that is as much compute per row as a
token's pass through all the layers. So :class:`~intentkit.backends.llamacpp.bindings.LlamaContext`
stops llama.cpp's graph at its final norm (``result_norm``) and :class:`HeadRow` computes the
columns a decision reads from that hidden state, the way llama.cpp would: the activation quantized
as its kernels quantize it for the head's type (``Q8_0``: blocks of 32 with a half-precision scale;
``F16``: rounded to half precision), the same integer products, the same soft-capping. A context
checks it against llama.cpp's own rows once before it relies on it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ...cache import build_once, digest

__all__ = ["Head", "HeadRow", "load_head"]

# ggml's type ids (ggml.h) for the head types computed here.
_F32, _F16, _Q8_0 = 0, 1, 8
_BLOCK = 32  # values per Q8_0 block; a block is a float16 scale and 32 int8 values


@dataclass(frozen=True)
class Head:
    """The head's weights (``rows`` × ``width``, memory-mapped from the GGUF), its ggml type and
    the model's final soft-capping (0: none)."""

    weights: np.ndarray
    kind: int
    softcap: float

    def prepare(self, hidden: np.ndarray) -> tuple[np.ndarray, ...]:
        """The hidden state as the head's kernel takes it."""
        if self.kind == _Q8_0:
            blocks = hidden.astype(np.float32).reshape(-1, _BLOCK)
            scale = np.abs(blocks).max(axis=1) / 127
            inverse = np.divide(1.0, scale, out=np.zeros_like(scale), where=scale > 0)
            values = np.rint(blocks * inverse[:, None]).astype(np.int32)  # ggml rounds half to even too
            return scale.astype(np.float16).astype(np.float32), values
        if self.kind == _F16:
            return (hidden.astype(np.float16).astype(np.float32),)
        return (hidden.astype(np.float32),)

    def logits(self, prepared: tuple[np.ndarray, ...], tokens: np.ndarray) -> np.ndarray:
        """The logits of ``tokens`` (a 1-d array of ids) for a :meth:`prepare`\\ d hidden state."""
        if not len(tokens):
            return np.zeros(0, dtype=np.float32)
        rows = self.weights[tokens]
        if self.kind == _Q8_0:
            scale, values = prepared
            blocks = rows.reshape(len(tokens), -1, _BLOCK + 2)
            weight_scale = blocks[:, :, :2].copy().view(np.float16)[..., 0].astype(np.float32)
            sums = np.einsum("kbj,bj->kb", blocks[:, :, 2:].view(np.int8).astype(np.int32), values)
            out = (sums.astype(np.float32) * weight_scale * scale).sum(axis=1)
        else:
            dtype = np.float16 if self.kind == _F16 else np.float32
            # einsum's own loop, not BLAS: OpenBLAS's threads spin on after a call and take the
            # cores from llama.cpp's.
            out = np.einsum("kj,j->k", rows.view(dtype).astype(np.float32), prepared[0])
        if self.softcap:
            out = np.tanh(out / self.softcap) * self.softcap
        return out.astype(np.float32)


class HeadRow:
    """A logits row whose columns are computed when read: ``row[tokens]`` gives the logits of those
    token ids, as an array does. ``hidden`` is llama.cpp's final hidden state (after the norm)."""

    __slots__ = ("_prepared", "head", "hidden")

    def __init__(self, head: Head, hidden: np.ndarray) -> None:
        self.head, self.hidden = head, hidden
        self._prepared: tuple[np.ndarray, ...] | None = None

    def __getitem__(self, tokens: Any) -> Any:
        ids = np.asarray(tokens, dtype=np.int64)
        if self._prepared is None:
            self._prepared = self.head.prepare(self.hidden)
        out = self.head.logits(self._prepared, ids.reshape(-1))
        return out[0] if ids.ndim == 0 else out.reshape(ids.shape)

    def __repr__(self) -> str:
        return f"HeadRow(width={len(self.hidden)})"


def load_head(path: Path, n_vocab: int, n_embd: int) -> Head | None:
    """``path``'s output head, or ``None`` where its type is not one computed here (the model then
    keeps llama.cpp's whole rows). Where the head lies in the file is found once per GGUF file
    and kept in the cache: parsing a GGUF takes seconds."""
    stat = path.stat()
    key = digest(path.name.encode(), f"{stat.st_size}:{stat.st_mtime_ns}".encode())
    info = json.loads(build_once(f"{path.stem}.head-{key}.json", lambda out: _write_head_info(path, out)).read_text())
    if not info or info["rows"] != n_vocab or info["width"] != n_embd:
        return None
    width = n_embd // _BLOCK * (_BLOCK + 2) if info["kind"] == _Q8_0 else n_embd * (2 if info["kind"] == _F16 else 4)
    weights = np.memmap(path, dtype=np.uint8, mode="r", offset=info["offset"], shape=(n_vocab, width))
    return Head(weights, info["kind"], info["softcap"])


def _write_head_info(path: Path, out: Path) -> None:
    import gguf

    reader = gguf.GGUFReader(str(path))
    tensors = {t.name: t for t in reader.tensors}
    head = tensors.get("output.weight") or tensors.get("token_embd.weight")
    info: dict[str, Any] = {}
    if head is not None and int(head.tensor_type) in (_F32, _F16, _Q8_0) and len(head.shape) == 2:
        width, rows = (int(n) for n in head.shape)
        if int(head.tensor_type) != _Q8_0 or width % _BLOCK == 0:
            arch = reader.fields.get("general.architecture")
            name = bytes(arch.parts[arch.data[0]]).decode() if arch is not None else ""
            softcap = reader.fields.get(f"{name}.final_logit_softcapping")
            info = {
                "offset": int(head.data_offset),
                "kind": int(head.tensor_type),
                "rows": rows,
                "width": width,
                "softcap": float(softcap.parts[softcap.data[0]][0]) if softcap is not None else 0.0,
            }
    out.write_text(json.dumps(info))
