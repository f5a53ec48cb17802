"""Export a trained PEFT LoRA adapter as a GGUF LoRA adapter that llama.cpp loads over the base GGUF.

The tensors keep their PEFT shapes — ``lora_a`` is ``(r, in)`` and ``lora_b`` is ``(out, r)`` —
which in GGUF's reversed dimension order is what llama.cpp checks against the base weight
(``a.ne[0] == in``, ``b.ne[1] == out``). Names come from the ``gguf`` package's tensor map, e.g.
``model.layers.0.self_attn.q_proj`` → ``blk.0.attn_q.weight.lora_a``. The scale llama.cpp applies
is ``alpha / r``, as in PEFT. The adapter's ``intentkit.json`` (prompt fingerprint, intents) is
copied next to the GGUF so a backend can check the prompt it was trained with.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from intentkit import MissingDependencyError
from intentkit.bundled import KEEP_FILE, META_FILE, read_model_meta
from intentkit.scope import SCOPE_FILE

from .card import write_model_card

__all__ = ["ExportError", "domain_vocabulary", "export_full_gguf", "export_gguf_lora", "export_merged_gguf", "write_vocabulary"]

# Architectures whose converter permutes the q/k projections; their LoRA B matrices would need the
# same permutation, which this exporter does not do.
_PERMUTED = {"llama", "mistral", "granite"}


class ExportError(ValueError):
    """The adapter cannot be exported (unsupported layout or architecture)."""


def export_gguf_lora(adapter_dir: str | Path, out_path: str | Path | None = None, *, dtype: str = "f16") -> Path:
    """Write ``adapter_dir``'s PEFT LoRA as a GGUF adapter; returns its path (default ``adapter.gguf`` inside)."""
    try:
        import gguf
        from safetensors.numpy import load_file
    except ImportError:
        raise MissingDependencyError("gguf/safetensors", "train") from None
    adapter_dir = Path(adapter_dir)
    out = Path(out_path) if out_path else adapter_dir / "adapter.gguf"
    try:
        config = json.loads((adapter_dir / "adapter_config.json").read_text(encoding="utf-8"))
        tensors = load_file(str(adapter_dir / "adapter_model.safetensors"))
    except FileNotFoundError as exc:
        raise ExportError(f"{adapter_dir} is not a PEFT adapter directory ({Path(exc.filename).name} missing)") from None
    if config.get("peft_type") != "LORA":
        raise ExportError(f"{adapter_dir}: only LoRA adapters can be exported, not {config.get('peft_type')}")
    if config.get("use_dora") or config.get("use_rslora"):
        raise ExportError(f"{adapter_dir}: DoRA / rsLoRA adapters are not supported by llama.cpp's LoRA loader")
    model_type = _model_type(adapter_dir, config)
    arch = _arch(gguf, model_type)
    if model_type in _PERMUTED:
        raise ExportError(f"{model_type}: q/k projections are permuted in GGUF; export a merged model instead")
    embedding = sorted({name.split(".lora_embedding_")[0] for name in tensors if ".lora_embedding_" in name})
    if embedding:
        raise ExportError(
            f"{adapter_dir}: a LoRA on the token embeddings ({', '.join(embedding)}) is not exported to GGUF "
            "(peft adapts only the input lookup of an embedding the output head may share, as gemma's does, "
            "and this exporter writes linear layers only); train without it (target_modules 'all-linear', the default) "
            "to serve through llama.cpp, or load the PEFT adapter with the transformers backend"
        )
    layers = 1 + max((int(part) for name in tensors for part in _layer_numbers(name)), default=0)
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
    _copy_meta(adapter_dir, out)
    return out


def export_merged_gguf(adapter_dir: str | Path, out_path: str | Path, *, base: str | Path | None = None) -> Path:
    """Write one self-contained GGUF: ``base`` (default: the bundled gemma-3-270m Q4_K_M) with
    ``adapter_dir``'s LoRA merged in, quantized to 8 bits (Q8_0). The GGUF LoRA is
    exported first if the directory has none; ``intentkit.json`` is copied next to the output so a
    backend loading it still checks the prompt it was trained with. A full fine-tune's directory
    goes to :func:`export_full_gguf`."""
    from intentkit.bundled import base_model_path
    from intentkit.gguf_edit import write_merged_gguf

    adapter_dir, out = Path(adapter_dir), Path(out_path)
    if read_model_meta(adapter_dir).get("method") == "full":
        return export_full_gguf(adapter_dir, out, base=base)
    adapter = adapter_dir / "adapter.gguf"
    if not adapter.exists():
        export_gguf_lora(adapter_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_merged_gguf(Path(base) if base else base_model_path(), adapter, out, keep=_keep(adapter_dir))
    _copy_meta(adapter_dir, out)
    return out


def export_full_gguf(model_dir: str | Path, out_path: str | Path | None = None, *, base: str | Path | None = None) -> Path:
    """Write a full fine-tune (``intentkit train --method full``) as one GGUF for llama.cpp;
    returns its path (default ``model.gguf`` inside ``model_dir``).

    The base GGUF it was trained from (``base``; default: the one ``intentkit.json`` names) is
    loaded the way training loaded it, and every weight that training changed gets its change
    added to the GGUF's tensor (:func:`intentkit.gguf_edit.write_updated_gguf`); the file is then
    quantized to 8 bits (Q8_0), like a merged LoRA. Weights training left alone — the token
    embeddings, unless ``train_embeddings`` — keep the base's own values. ``keep_tokens.npy`` in
    ``model_dir`` (``intentkit export --vocabulary-from``) trims the vocabulary in the same pass.
    """
    try:
        import gguf
        from safetensors.numpy import load_file
    except ImportError:
        raise MissingDependencyError("gguf/safetensors", "train") from None
    from intentkit.gguf_edit import write_updated_gguf
    from trainers.train import load_base

    model_dir = Path(model_dir)
    out = Path(out_path) if out_path else model_dir / "model.gguf"
    meta = read_model_meta(model_dir)
    if meta.get("method") != "full":
        raise ExportError(f"{model_dir}: not a full fine-tune ({META_FILE} says method={meta.get('method')!r})")
    base_gguf = Path(base) if base else _base_gguf(model_dir, str(meta.get("base", "")))
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise ExportError(f"{model_dir}: no *.safetensors weights")
    model_type = str(meta.get("model_type") or "")
    if model_type in _PERMUTED:
        raise ExportError(f"{model_type}: q/k projections are permuted in GGUF; convert with llama.cpp's convert_hf_to_gguf.py")
    arch = _arch(gguf, model_type)
    start, _ = load_base(str(base_gguf))
    initial = {name: tensor.detach().numpy() for name, tensor in start.state_dict().items()}
    tied = bool(getattr(start.config, "tie_word_embeddings", False))
    layers = 1 + max((int(part) for name in initial for part in _layer_numbers(name)), default=0)
    names = gguf.get_tensor_name_map(arch, layers)
    deltas: dict[str, np.ndarray] = {}
    for file in files:
        for name, value in load_file(str(file)).items():
            if tied and name == "lm_head.weight":  # the same tensor as the embeddings
                continue
            if name not in initial or initial[name].shape != value.shape:
                raise ExportError(f"{file}: {name} {value.shape} does not match the base {base_gguf}")
            delta = value.astype(np.float32) - initial[name]
            if not delta.any():
                continue
            module, _, kind = name.rpartition(".")
            target = names.get_name(module)
            if target is None:
                raise ExportError(f"{file}: no GGUF name for {name} of {model_type}")
            deltas[f"{target}.{kind}"] = delta
    del start, initial
    out.parent.mkdir(parents=True, exist_ok=True)
    write_updated_gguf(base_gguf, deltas, out, keep=_keep(model_dir))
    _copy_meta(model_dir, out)
    return out


def _base_gguf(model_dir: Path, base: str) -> Path:
    from intentkit.bundled import base_model_path
    from trainers.train import DEFAULT_BASE

    if base in ("", DEFAULT_BASE):
        return base_model_path()
    if base.endswith(".gguf"):
        return Path(base)
    raise ExportError(
        f"{model_dir} was trained from {base}, not a GGUF: convert that base with llama.cpp's convert_hf_to_gguf.py "
        "and pass it as base="
    )


def _keep(model_dir: Path) -> np.ndarray | None:
    keep = model_dir / KEEP_FILE
    return np.load(keep) if keep.is_file() else None


def _copy_meta(adapter_dir: Path, out: Path) -> None:
    """Put the training record (and the out-of-scope detector, when fitted) next to an exported
    file, so a backend loading it checks the prompt and turns away what the model never saw. An
    export into the directory itself is added to its model card instead."""
    if out.parent.resolve() == adapter_dir.resolve():
        write_model_card(adapter_dir)
        return
    for name in (META_FILE, SCOPE_FILE):
        if (adapter_dir / name).exists():
            shutil.copy(adapter_dir / name, out.parent / name)


def write_vocabulary(model_dir: str | Path, records: Iterable[Any], *, base: str | Path | None = None, top: int = 50_000) -> Path:
    """Write ``model_dir/keep_tokens.npy``: :func:`domain_vocabulary` over the prompt the model was
    trained with and ``records`` (utterances and answers). A backend given the directory's adapter
    then runs on a base trimmed to those tokens (:func:`intentkit.bundled.deployment_base`)."""
    from intentkit.bundled import base_model_path, trained_prompt
    from intentkit.prompt import PromptFormat

    model_dir = Path(model_dir)
    prompt = trained_prompt(read_model_meta(model_dir)) or PromptFormat()
    texts = [prompt.render(r.instruction) + r.target for r in records]
    if not texts:
        raise ExportError("no records to take the vocabulary from")
    keep = domain_vocabulary(Path(base) if base else base_model_path(), texts, top=top)
    path = model_dir / KEEP_FILE
    np.save(path, keep)
    write_model_card(model_dir)
    return path


def _layer_numbers(name: str) -> list[str]:
    parts = name.split(".")
    return [parts[i + 1] for i, part in enumerate(parts[:-1]) if part == "layers" and parts[i + 1].isdigit()]


def _model_type(adapter_dir: Path, config: dict[str, object]) -> str:
    meta = read_model_meta(adapter_dir)
    if meta.get("model_type"):
        return str(meta["model_type"])
    base = config.get("base_model_name_or_path") or ""
    config_path = Path(str(base)) / "config.json"
    if config_path.exists():
        return str(json.loads(config_path.read_text(encoding="utf-8"))["model_type"])
    raise ExportError(f"{adapter_dir}: cannot tell the base architecture (no model_type in {META_FILE})")


def _arch(gguf: Any, model_type: str) -> Any:
    wanted = model_type.removesuffix("_text")
    for arch, name in gguf.MODEL_ARCH_NAMES.items():
        if name == wanted:
            return arch
    raise ExportError(f"no GGUF architecture named {wanted!r} (from model_type {model_type!r})")


def domain_vocabulary(base_gguf: str | Path, texts: Iterable[str], *, top: int = 50_000, scripts: str = r"\p{Han}") -> np.ndarray:
    """The token ids a domain needs, for :func:`intentkit.bundled.write_trimmed_gguf`.

    Kept: every non-normal token (control, byte fallback, user-defined), every single-character
    token, every token written only in ``scripts`` (default: Chinese characters and CJK
    punctuation), the ``top`` highest-ranked tokens, every token of ``texts`` (prompt and data, as
    the full vocabulary tokenizes them) — and every token inside a kept token, so the tokenizer can
    still reach it by merges. On the demo and smp2020/cais dev sets the trimmed vocabulary
    tokenizes ≥ 99.5 % of utterances exactly as the full one.
    """
    try:
        import gguf
        import llama_cpp
        import regex
    except ImportError:
        raise MissingDependencyError("gguf/llama-cpp-python", "llamacpp") from None
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
    from intentkit.backends.llamacpp import quiet_llama_cpp

    quiet_llama_cpp()  # Llama(verbose=False) still logs its context creation
    llm = llama_cpp.Llama(str(base_gguf), vocab_only=True, verbose=False)
    for text in texts:
        keep.update(llm.tokenize(text.encode(), add_bos=True, special=True))
    index = {text: i for i, text in enumerate(tokens) if normal[i]}
    for i in list(keep):
        text = tokens[i]
        keep.update(index[text[a:b]] for a in range(len(text)) for b in range(a + 2, len(text) + 1) if text[a:b] in index)
    return np.array(sorted(keep), dtype=np.uint32)
