"""Write and rewrite GGUF model files for deployment, with the ``gguf`` package and llama.cpp's quantizer.

- :func:`write_lora_gguf` — a PEFT LoRA adapter as a GGUF LoRA that llama.cpp loads over the
  base GGUF. The tensors keep their PEFT shapes — ``lora_a`` is ``(r, in)`` and ``lora_b`` is
  ``(out, r)`` — which in GGUF's reversed dimension order is what llama.cpp checks against the
  base weight; names come from the ``gguf`` package's tensor map
  (``model.layers.0.self_attn.q_proj`` → ``blk.0.attn_q.weight.lora_a``); the scale is
  ``alpha / r``, as in PEFT.
- :func:`domain_vocabulary` — the token ids a domain needs, for trimming.
- :func:`write_trimmed_gguf` — the vocabulary cut to the token ids a domain uses. gemma's
  262k-token embedding, which is also its output head, is most of the model's memory and of every
  decode step; a domain needs a fraction of it. Byte-fallback tokens are kept, so any text still
  encodes; the token ids change, the text of every kept token does not.
- :func:`write_merged_gguf` — a GGUF LoRA adapter folded into the weights it adapts
  (``W + scale · B·A``), then quantized to 8 bits; :func:`write_updated_gguf` does the same
  with dense updates (a full fine-tune's ``W_trained − W_base``). llama.cpp applies an unmerged adapter as two
  extra matrix products per adapted weight, every token; a merged model does not pay for them.
  Not back to the base's 4–5-bit mix: a LoRA update is mostly smaller than a 4-bit step, so
  re-quantizing snaps the weights back to the base's grid and the adapter is largely lost
  (docs/design/merging.md has the measurement).

They read any GGUF of an architecture llama.cpp knows; the cache-aware wrappers that build them
once for a deployment live in :mod:`.bundled`.
"""

from __future__ import annotations

import ctypes
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...errors import BackendError, ExportError, MissingDependencyError
from .logs import quiet_llama_cpp

if TYPE_CHECKING:
    from ...prompt import PromptFormat

__all__ = [
    "PERMUTED_ARCHITECTURES",
    "domain_vocabulary",
    "gguf_architecture",
    "layer_numbers",
    "write_lora_gguf",
    "write_merged_gguf",
    "write_trimmed_gguf",
    "write_updated_gguf",
]

_TOKEN_ARRAYS = ("tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type")
#: Architectures whose converter permutes the q/k projections; their LoRA B matrices would need the
#: same permutation, which is not done here.
PERMUTED_ARCHITECTURES = frozenset({"llama", "mistral", "granite"})


def write_lora_gguf(adapter_dir: str | Path, out: str | Path, *, model_type: str | None, dtype: str = "f16") -> Path:
    """Write ``adapter_dir``'s PEFT LoRA (``adapter_config.json`` + ``adapter_model.safetensors``)
    as a GGUF LoRA adapter at ``out``. ``model_type`` is the base's transformers model type
    (``gemma3_text``); without one, the adapter config's base directory is asked."""
    try:
        import gguf
        import numpy as np
        from safetensors.numpy import load_file
    except ImportError as exc:
        raise MissingDependencyError("safetensors" if "safetensors" in str(exc) else "gguf") from None
    adapter_dir, out = Path(adapter_dir), Path(out)
    try:
        config = json.loads((adapter_dir / "adapter_config.json").read_text(encoding="utf-8"))
        tensors = load_file(str(adapter_dir / "adapter_model.safetensors"))
    except FileNotFoundError as exc:
        raise ExportError(f"{adapter_dir} is not a PEFT adapter directory ({Path(str(exc.filename)).name} missing)") from None
    if config.get("peft_type") != "LORA":
        raise ExportError(f"{adapter_dir}: only LoRA adapters can be exported, not {config.get('peft_type')}")
    if config.get("use_dora") or config.get("use_rslora"):
        raise ExportError(f"{adapter_dir}: DoRA / rsLoRA adapters are not supported by llama.cpp's LoRA loader")
    model_type = model_type or _config_model_type(adapter_dir, config)
    arch = gguf_architecture(gguf, model_type)
    if model_type in PERMUTED_ARCHITECTURES:
        raise ExportError(f"{model_type}: q/k projections are permuted in GGUF; export a merged model instead")
    embedding = sorted({name.split(".lora_embedding_")[0] for name in tensors if ".lora_embedding_" in name})
    if embedding:
        raise ExportError(
            f"{adapter_dir}: a LoRA on the token embeddings ({', '.join(embedding)}) is not exported to GGUF "
            "(peft adapts only the input lookup of an embedding the output head may share, as gemma's does, "
            "and this exporter writes linear layers only); train without it (target_modules 'all-linear', the default) "
            "to serve through llama.cpp, or load the PEFT adapter with the transformers backend"
        )
    layers = 1 + max((int(part) for name in tensors for part in layer_numbers(name)), default=0)
    names = gguf.get_tensor_name_map(arch, layers)
    np_dtype = np.float16 if dtype == "f16" else np.float32
    out.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(out), gguf.MODEL_ARCH_NAMES[arch])
    writer.add_string(gguf.Keys.General.TYPE, gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(config["lora_alpha"]))
    count = 0
    for name in sorted(tensors):
        if ".lora_A." not in name and ".lora_B." not in name:
            raise ExportError(f"{adapter_dir}: tensor {name} is not a LoRA matrix (modules_to_save is not supported)")
        module = name.split(".lora_")[0].removeprefix("base_model.model.")
        target = names.get_name(module)
        if target is None:
            raise ExportError(f"{adapter_dir}: no GGUF name for module {module} of {model_type}")
        suffix = "lora_a" if ".lora_A." in name else "lora_b"
        writer.add_tensor(f"{target}.weight.{suffix}", np.ascontiguousarray(tensors[name].astype(np_dtype)))
        count += 1
    if not count:
        raise ExportError(f"{adapter_dir}: the adapter holds no tensors")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out


def _config_model_type(adapter_dir: Path, config: dict[str, Any]) -> str:
    base = config.get("base_model_name_or_path") or ""
    config_path = Path(str(base)) / "config.json"
    if config_path.exists():
        return str(json.loads(config_path.read_text(encoding="utf-8"))["model_type"])
    raise ExportError(f"{adapter_dir}: cannot tell the base architecture (no model_type in its intentkit.json)")


def gguf_architecture(gguf: Any, model_type: str) -> Any:
    """The ``gguf`` package's architecture for a transformers ``model_type``."""
    wanted = model_type.removesuffix("_text")
    for arch, name in gguf.MODEL_ARCH_NAMES.items():
        if name == wanted:
            return arch
    raise ExportError(f"no GGUF architecture named {wanted!r} (from model_type {model_type!r})")


def layer_numbers(name: str) -> list[str]:
    """The layer indices in a transformers weight name (``model.layers.3.mlp`` → ``["3"]``)."""
    parts = name.split(".")
    return [parts[i + 1] for i, part in enumerate(parts[:-1]) if part == "layers" and parts[i + 1].isdigit()]


def write_trimmed_gguf(source: Path, target: Path, keep: Any, *, prompt: PromptFormat | None = None) -> None:
    """Copy ``source`` keeping only the token ids in ``keep``: tokenizer arrays, special-token ids
    and the rows of ``token_embd.weight``; every other tensor is copied as is. With ``prompt``,
    the file describes it (``tokenizer.chat_template`` and the end-of-turn token)."""
    gguf, _ = _imports()
    _rewrite(gguf, gguf.GGUFReader(str(source)), target, keep=keep, deltas={}, prompt=prompt)


#: llama.cpp's ``LLAMA_FTYPE_MOSTLY_Q8_0``.
Q8_0 = 7


def write_merged_gguf(
    source: Path,
    adapter: Path,
    target: Path,
    *,
    scale: float = 1.0,
    keep: Any = None,
    quantize: bool = True,
    file_type: int = Q8_0,
    prompt: PromptFormat | None = None,
) -> None:
    """Write ``source`` with the GGUF LoRA ``adapter`` merged in, quantized to ``file_type``
    (a llama.cpp ``LLAMA_FTYPE_*``; default Q8_0, see the module docstring for why not 4 bits).

    ``scale`` multiplies the adapter's ``alpha / rank`` as llama.cpp's ``lora_scale`` does;
    ``keep`` optionally trims the vocabulary in the same pass. The merged weights are written in
    float32 (to a temporary file next to ``target``) and quantized from there by llama.cpp;
    ``quantize=False`` leaves them in float32, for other quantization tools.
    """
    gguf, np = _imports()
    reader = gguf.GGUFReader(str(source))
    deltas = _lora_factors(gguf, np, reader, Path(adapter), scale)
    _write_updated(gguf, reader, target, keep=keep, deltas=deltas, quantize=quantize, file_type=file_type, prompt=prompt)


def write_updated_gguf(
    source: Path,
    deltas: Mapping[str, Any],
    target: Path,
    *,
    keep: Any = None,
    quantize: bool = True,
    file_type: int = Q8_0,
    prompt: PromptFormat | None = None,
) -> None:
    """Write ``source`` with dense updates added to its tensors, quantized as in
    :func:`write_merged_gguf`: ``deltas`` maps GGUF tensor names (``blk.0.attn_q.weight``) to
    arrays in numpy order (``(out, in)`` for a matrix), e.g. a full fine-tune's trained weights
    minus the base weights it started from. Tensors not named are copied as they are."""
    gguf, np = _imports()
    reader = gguf.GGUFReader(str(source))
    shapes = {t.name: tuple(int(n) for n in reversed(t.shape)) for t in reader.tensors}
    checked = {}
    for name, delta in deltas.items():
        array = np.asarray(delta, dtype=np.float32)
        if name not in shapes:
            raise BackendError(f"{source}: no tensor {name} to update (weights of another architecture?)")
        if array.shape != shapes[name]:
            raise BackendError(f"{source}: {name} is {shapes[name]}, the update is {array.shape}")
        checked[name] = array
    _write_updated(gguf, reader, target, keep=keep, deltas=checked, quantize=quantize, file_type=file_type, prompt=prompt)


def _write_updated(
    gguf: Any,
    reader: Any,
    target: Path,
    *,
    keep: Any,
    deltas: Mapping[str, Any],
    quantize: bool,
    file_type: int,
    prompt: PromptFormat | None = None,
) -> None:
    if not quantize:
        _rewrite(gguf, reader, target, keep=keep, deltas=deltas, prompt=prompt)
        return
    unquantized = target.with_name(target.name + ".f32")
    try:
        _rewrite(gguf, reader, unquantized, keep=keep, deltas=deltas, prompt=prompt)
        _quantize(unquantized, target, file_type)
    finally:
        unquantized.unlink(missing_ok=True)


def _imports() -> tuple[Any, Any]:
    try:
        import gguf
        import numpy as np
    except ImportError:
        raise MissingDependencyError("gguf") from None
    return gguf, np


def _lora_factors(gguf: Any, np: Any, base: Any, adapter: Path, scale: float) -> dict[str, _LowRank]:
    """``{base tensor name: (A, B, factor)}`` from a GGUF LoRA adapter, checked against ``base``."""
    reader = gguf.GGUFReader(str(adapter))
    kind = reader.fields.get("adapter.type")
    if kind is None or kind.contents() != "lora":
        raise BackendError(f"{adapter}: not a GGUF LoRA adapter (no adapter.type = lora)")
    arch, base_arch = (r.fields["general.architecture"].contents() for r in (reader, base))
    if arch != base_arch:
        raise BackendError(f"{adapter}: a {arch} adapter cannot be merged into a {base_arch} model")
    alpha_field = reader.fields.get("adapter.lora.alpha")
    alpha = float(alpha_field.contents()) if alpha_field is not None else 0.0
    pairs: dict[str, dict[str, Any]] = {}
    for tensor in reader.tensors:
        name, _, part = tensor.name.rpartition(".")
        if part not in ("lora_a", "lora_b"):
            raise BackendError(f"{adapter}: tensor {tensor.name} is not a LoRA matrix")
        pairs.setdefault(name, {})[part] = np.asarray(gguf.quants.dequantize(tensor.data, tensor.tensor_type), np.float32)
    shapes = {t.name: tuple(int(n) for n in reversed(t.shape)) for t in base.tensors}  # numpy order: (out, in)
    factors = {}
    for name, pair in pairs.items():
        if set(pair) != {"lora_a", "lora_b"}:
            raise BackendError(f"{adapter}: {name} has only {', '.join(pair)}")
        a, b = pair["lora_a"], pair["lora_b"]
        if name not in shapes:
            raise BackendError(f"{adapter}: the base model has no tensor {name} (adapter trained on another base?)")
        if (b.shape[0], a.shape[1]) != shapes[name] or a.shape[0] != b.shape[1]:
            raise BackendError(f"{adapter}: {name} is {shapes[name]} in the base, the adapter gives {b.shape} × {a.shape}")
        rank = a.shape[0]
        factors[name] = _LowRank(a, b, scale * alpha / rank if alpha else scale)  # llama.cpp's scaling
    return factors


@dataclass(frozen=True, slots=True)
class _LowRank:
    """A LoRA update ``factor · B·A``, made dense only when its tensor is written."""

    a: Any
    b: Any
    factor: float

    def dense(self) -> Any:
        return self.factor * (self.b @ self.a)


#: The GGUF keys of the prompt an exported model describes (:func:`_prompt_fields`).
CHAT_TEMPLATE_KEY = "tokenizer.chat_template"
EOT_KEY = "tokenizer.ggml.eot_token_id"


def _rewrite(
    gguf: Any, reader: Any, target: Path, *, keep: Any, deltas: Mapping[str, Any], prompt: PromptFormat | None = None
) -> None:
    _, np = _imports()
    kept = np.unique(np.asarray(keep, dtype=np.int64)) if keep is not None else None
    remap = {int(old): new for new, old in enumerate(kept)} if kept is not None else None
    writer = gguf.GGUFWriter(str(target), str(reader.fields["general.architecture"].contents()))
    described = _prompt_fields(reader, kept, prompt) if prompt is not None else {}
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture" or name in described:
            continue
        sub_type = field.types[1] if len(field.types) > 1 else None
        if kept is not None and name in _TOKEN_ARRAYS:
            parts = [field.parts[field.data[i]] for i in kept]
            values: Any = (
                [bytes(p).decode("utf-8", "surrogateescape") for p in parts]
                if name == "tokenizer.ggml.tokens"
                else [p[0].item() for p in parts]
            )
            writer.add_key_value(name, values, field.types[0], sub_type)
            continue
        value = field.contents()
        if remap is not None and name.startswith("tokenizer.ggml.") and name.endswith("_token_id"):
            value = remap[int(value)]
        writer.add_key_value(name, value, field.types[0], sub_type)
    if CHAT_TEMPLATE_KEY in described:
        writer.add_string(CHAT_TEMPLATE_KEY, described[CHAT_TEMPLATE_KEY])
    if EOT_KEY in described:
        writer.add_uint32(EOT_KEY, described[EOT_KEY])
    for tensor in reader.tensors:
        trim = tensor.name == "token_embd.weight" and kept is not None
        if tensor.name in deltas:
            delta = deltas[tensor.name]
            weight = np.asarray(gguf.quants.dequantize(tensor.data, tensor.tensor_type), np.float32)
            weight = weight + (delta.dense() if isinstance(delta, _LowRank) else delta)
            writer.add_tensor(tensor.name, np.ascontiguousarray(weight[kept] if trim else weight, dtype=np.float32))
            continue
        data = np.ascontiguousarray(tensor.data[kept]) if trim else tensor.data
        writer.add_tensor(tensor.name, data, raw_dtype=tensor.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _prompt_fields(reader: Any, kept: Any, prompt: PromptFormat) -> dict[str, Any]:
    """The chat template rendering ``prompt``'s text, and the id (after trimming) of the token that
    ends an answer, as an end-of-turn token: what llama.cpp's and other servers need to render the
    trained prompt and stop where the model stops."""
    fields: dict[str, Any] = {CHAT_TEMPLATE_KEY: prompt.chat_template()}
    tokens = reader.fields.get("tokenizer.ggml.tokens")
    if tokens is not None:
        ids = kept if kept is not None else range(len(tokens.data))
        end = prompt.answer_end
        for new, old in enumerate(ids):
            if bytes(tokens.parts[tokens.data[int(old)]]).decode("utf-8", "surrogateescape") == end:
                fields[EOT_KEY] = new
                break
    return fields


def _quantize(source: Path, target: Path, file_type: int) -> None:
    """llama.cpp's quantizer with ``file_type``'s per-tensor choices."""
    try:
        import llama_cpp as lc
    except ImportError:
        raise MissingDependencyError("llama-cpp-python") from None

    quiet_llama_cpp()
    params = lc.llama_model_quantize_default_params()
    params.ftype = file_type
    params.nthread = os.cpu_count() or 1
    params.allow_requantize = True  # unmerged tensors (e.g. a 4-bit embedding) may be converted too
    status = lc.llama_model_quantize(str(source).encode(), str(target).encode(), ctypes.byref(params))
    if status != 0:
        raise BackendError(f"llama.cpp could not quantize {source} to file type {file_type} (status {status})")


def domain_vocabulary(base_gguf: str | Path, texts: Iterable[str], *, top: int = 50_000, scripts: str = r"\p{Han}") -> Any:
    """The token ids a domain needs, for :func:`write_trimmed_gguf`.

    Kept: every non-normal token (control, byte fallback, user-defined), every single-character
    token, every token written only in ``scripts`` (default: Chinese characters and CJK
    punctuation), the ``top`` highest-ranked tokens, every token of ``texts`` (prompt and data, as
    the full vocabulary tokenizes them) — and every token inside a kept token, so the tokenizer can
    still reach it by merges (docs/design/vocabulary.md measures how close it tokenizes).
    """
    try:
        import gguf
        import llama_cpp
    except ImportError as exc:
        raise MissingDependencyError("gguf" if "gguf" in str(exc) else "llama-cpp-python") from None
    import numpy as np
    import regex

    reader = gguf.GGUFReader(str(base_gguf))
    field = reader.fields["tokenizer.ggml.tokens"]
    tokens = [bytes(field.parts[i]).decode("utf-8", "ignore") for i in field.data]
    types = np.array(
        [int(reader.fields["tokenizer.ggml.token_type"].parts[i][0]) for i in reader.fields["tokenizer.ggml.token_type"].data]
    )
    scores = np.array(
        [float(reader.fields["tokenizer.ggml.scores"].parts[i][0]) for i in reader.fields["tokenizer.ggml.scores"].data]
    )
    normal = types == 1
    keep = set(np.nonzero(~normal)[0].tolist())
    ranked = np.nonzero(normal)[0]
    keep |= set(ranked[np.argsort(-scores[ranked], kind="stable")][:top].tolist())
    domain = regex.compile(rf"^(?:{scripts}|[\u3000-\u303f\uff00-\uffef▁])+$")
    keep |= {i for i, text in enumerate(tokens) if normal[i] and (len(text) == 1 or domain.match(text))}
    quiet_llama_cpp()  # Llama(verbose=False) still logs its context creation
    llm = llama_cpp.Llama(str(base_gguf), vocab_only=True, verbose=False)
    for text in texts:
        keep.update(llm.tokenize(text.encode(), add_bos=True, special=True))
    index = {text: i for i, text in enumerate(tokens) if normal[i]}
    for i in list(keep):
        text = tokens[i]
        keep.update(index[text[a:b]] for a in range(len(text)) for b in range(a + 2, len(text) + 1) if text[a:b] in index)
    return np.array(sorted(keep), dtype=np.uint32)
