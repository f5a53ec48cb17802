"""Export a trained model directory for llama.cpp (:mod:`intentkit.backends.llamacpp.gguf` does
the GGUF writing): the PEFT LoRA as a GGUF LoRA, one merged 8-bit GGUF, a full fine-tune as one
GGUF, and the trimmed vocabulary. The directory's ``intentkit.json`` (prompt fingerprint,
intents) and ``scope.npz`` go next to an exported file written elsewhere, so a backend loading it
checks the prompt it was trained with and turns away what the model never saw.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from intentkit.drafts import DRAFTS_FILE
from intentkit.errors import ExportError, MissingDependencyError
from intentkit.model_dir import KEEP_FILE, META_FILE, ModelInfo
from intentkit.prompt import PromptFormat
from intentkit.scope import SCOPE_FILE
from intentkit.tagger import TAGGER_FILE

from .card import write_model_card

__all__ = [
    "ExportError",
    "deployment_vocabulary",
    "export_full_gguf",
    "export_gguf_lora",
    "export_merged_gguf",
    "save_vocabulary",
    "write_vocabulary",
]


def export_gguf_lora(adapter_dir: str | Path, out_path: str | Path | None = None, *, dtype: str = "f16") -> Path:
    """Write ``adapter_dir``'s PEFT LoRA as a GGUF adapter; returns its path (default ``adapter.gguf`` inside)."""
    from intentkit.backends.llamacpp.gguf import write_lora_gguf

    adapter_dir = Path(adapter_dir)
    out = Path(out_path) if out_path else adapter_dir / "adapter.gguf"
    write_lora_gguf(adapter_dir, out, model_type=ModelInfo.load(adapter_dir).model_type, dtype=dtype)
    _copy_meta(adapter_dir, out)
    return out


def export_merged_gguf(adapter_dir: str | Path, out_path: str | Path, *, base: str | Path | None = None) -> Path:
    """Write one self-contained GGUF: ``base`` (default: the bundled gemma-3-270m Q4_K_M) with
    ``adapter_dir``'s LoRA merged in, quantized to 8 bits (Q8_0). The GGUF LoRA is
    exported first if the directory has none; ``intentkit.json`` is copied next to the output so a
    backend loading it still checks the prompt it was trained with. A full fine-tune's directory
    goes to :func:`export_full_gguf`."""
    from intentkit.backends.llamacpp.bundled import base_model_path
    from intentkit.backends.llamacpp.gguf import write_merged_gguf

    adapter_dir, out = Path(adapter_dir), Path(out_path)
    info = ModelInfo.load(adapter_dir)
    if info.is_full:
        return export_full_gguf(adapter_dir, out, base=base)
    adapter = adapter_dir / "adapter.gguf"
    if not adapter.exists():
        export_gguf_lora(adapter_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    source = Path(base) if base else (info.base_gguf or base_model_path())
    write_merged_gguf(source, adapter, out, keep=_keep(adapter_dir), prompt=info.prompt_format or PromptFormat())
    _copy_meta(adapter_dir, out)
    return out


def export_full_gguf(
    model_dir: str | Path,
    out_path: str | Path | None = None,
    *,
    base: str | Path | None = None,
    initial_weights: dict[str, Any] | None = None,
) -> Path:
    """Write a full fine-tune (``intentkit train --method full``) as one GGUF for llama.cpp;
    returns its path (default ``model.gguf`` inside ``model_dir``).

    The base GGUF it was trained from (``base``; default: the one ``intentkit.json`` names) is
    loaded the way training loaded it, and every weight that training changed gets its change
    added to the GGUF's tensor (:func:`intentkit.backends.llamacpp.gguf.write_updated_gguf`); the file is then
    quantized to 8 bits (Q8_0), like a merged LoRA. Weights training left alone — the token
    embeddings, unless ``train_embeddings`` — keep the base's own values. ``keep_tokens.npy`` in
    ``model_dir`` (``intentkit export --vocabulary-from``) trims the vocabulary in the same pass.
    ``initial_weights`` (name → array, the base as training loaded it) saves loading the base again
    when the caller still holds it.
    """
    try:
        import gguf
        from safetensors.numpy import load_file
    except ImportError as exc:
        raise MissingDependencyError("safetensors" if "safetensors" in str(exc) else "gguf") from None
    from intentkit.backends.llamacpp.gguf import PERMUTED_ARCHITECTURES, gguf_architecture, layer_numbers, write_updated_gguf

    from .base import load_base

    model_dir = Path(model_dir)
    out = Path(out_path) if out_path else model_dir / ModelInfo(method="full").deployed_file
    info = ModelInfo.load(model_dir)
    if not info.is_full:
        raise ExportError(f"{model_dir}: not a full fine-tune ({META_FILE} says method={info.method!r})")
    base_gguf = Path(base) if base else _base_gguf(model_dir, info.base)
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise ExportError(f"{model_dir}: no *.safetensors weights")
    model_type = info.model_type or ""
    if model_type in PERMUTED_ARCHITECTURES:
        raise ExportError(f"{model_type}: q/k projections are permuted in GGUF; convert with llama.cpp's convert_hf_to_gguf.py")
    arch = gguf_architecture(gguf, model_type)
    if initial_weights is None:
        start, _ = load_base(str(base_gguf))
        initial = {name: tensor.detach().numpy() for name, tensor in start.state_dict().items()}
        del start
    else:
        initial = dict(initial_weights)
    saved_config = model_dir / "config.json"  # save_pretrained writes it beside the weights
    tied = saved_config.is_file() and bool(json.loads(saved_config.read_text(encoding="utf-8")).get("tie_word_embeddings"))
    layers = 1 + max((int(part) for name in initial for part in layer_numbers(name)), default=0)
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
    del initial
    out.parent.mkdir(parents=True, exist_ok=True)
    write_updated_gguf(base_gguf, deltas, out, keep=_keep(model_dir), prompt=info.prompt_format or PromptFormat())
    _copy_meta(model_dir, out)
    return out


def _base_gguf(model_dir: Path, base: str) -> Path:
    from intentkit.backends.llamacpp.bundled import base_model_path

    from .base import DEFAULT_BASE

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
    """Put the training record (and the out-of-scope detector and drafts, when there) next to an exported
    file, so a backend loading it checks the prompt and turns away what the model never saw. An
    export into the directory itself is added to its model card instead."""
    if out.parent.resolve() == adapter_dir.resolve():
        write_model_card(adapter_dir)
        return
    for name in (META_FILE, SCOPE_FILE, DRAFTS_FILE, TAGGER_FILE):
        if (adapter_dir / name).exists():
            shutil.copy(adapter_dir / name, out.parent / name)


def deployment_vocabulary(
    records: Iterable[Any], *, prompt: PromptFormat | None = None, base: str | Path | None = None, top: int = 50_000
) -> np.ndarray:
    """The token ids a llama.cpp deployment of a model trained on ``records`` keeps:
    :func:`domain_vocabulary` over ``prompt`` (default: intentkit's) and the records' utterances
    and answers, for ``base`` (default: the bundled GGUF)."""
    from intentkit.backends.llamacpp.bundled import base_model_path
    from intentkit.backends.llamacpp.gguf import domain_vocabulary

    prompt = prompt or PromptFormat()
    texts = [prompt.render(r.instruction) + r.target for r in records]
    if not texts:
        raise ExportError("no records to take the vocabulary from")
    return np.asarray(domain_vocabulary(Path(base) if base else base_model_path(), texts, top=top))


def save_vocabulary(model_dir: str | Path, keep: Iterable[int]) -> Path:
    """Write ``model_dir/keep_tokens.npy`` (sorted, unique) and refresh the model card."""
    path = Path(model_dir) / KEEP_FILE
    np.save(path, np.unique(np.fromiter((int(i) for i in keep), dtype=np.int64)).astype(np.uint32))
    write_model_card(model_dir)
    return path


def write_vocabulary(model_dir: str | Path, records: Iterable[Any], *, base: str | Path | None = None, top: int = 50_000) -> Path:
    """Write ``model_dir/keep_tokens.npy``: :func:`deployment_vocabulary` over the prompt the
    model was trained with and ``records`` (utterances and answers). A backend given the
    directory's adapter then runs on a base trimmed to those tokens
    (:func:`intentkit.backends.llamacpp.deployment_base`)."""
    model_dir = Path(model_dir)
    info = ModelInfo.load(model_dir)
    keep = deployment_vocabulary(records, prompt=info.prompt_format, base=base or info.base_gguf, top=top)
    return save_vocabulary(model_dir, keep)


def export_hf_merged(
    model_dir: str | Path, out_dir: str | Path, *, base: str | Path | None = None, loaded: tuple[Any, Any] | None = None
) -> Path:
    """Write ``model_dir`` as one Hugging Face checkpoint that vLLM and TGI load: the adapter
    merged into the base weights (a full fine-tune as it is), bf16 safetensors, the tokenizer with
    ``chat_template`` rendering the trained prompt, generation stopping at the end-of-turn token,
    and ``intentkit.json``. ``loaded``: the base model and tokenizer already loaded (modified)."""
    import torch

    from .base import load_base

    model_dir, out = Path(model_dir), Path(out_dir)
    info = ModelInfo.load(model_dir)
    prompt = info.prompt_format or PromptFormat()
    if info.is_full:
        model, tokenizer = load_base(str(model_dir), dtype=torch.bfloat16)
    else:
        try:
            from peft import PeftModel
        except ImportError:
            raise MissingDependencyError("peft") from None
        model, tokenizer = loaded if loaded is not None else load_base(str(base or info.base))
        model = PeftModel.from_pretrained(model, str(model_dir)).merge_and_unload()
    model = model.to(torch.bfloat16)
    end = tokenizer.convert_tokens_to_ids(prompt.answer_end)
    tokenizer.chat_template = prompt.chat_template()
    if isinstance(end, int) and end != tokenizer.unk_token_id:
        stops = [t for t in (model.generation_config.eos_token_id, end) if t is not None]
        flat = sorted({int(x) for t in stops for x in (t if isinstance(t, list) else [t])})
        model.generation_config.eos_token_id = flat
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    shutil.copy(model_dir / META_FILE, out / META_FILE)
    return out


def write_ollama_modelfile(model_dir: str | Path, out_dir: str | Path, *, base: str | Path | None = None) -> Path:
    """An Ollama model in ``out_dir``: ``model.gguf`` (the merged model; a full fine-tune's own
    GGUF) and a ``Modelfile`` whose ``TEMPLATE`` and ``SYSTEM`` render the trained prompt, stopping
    at the end-of-turn text, greedy. ``ollama create NAME -f out_dir/Modelfile`` imports it; send
    the user's turns joined into one message (``OpenAIBackend`` does). Returns the Modelfile."""
    model_dir, out = Path(model_dir), Path(out_dir)
    info = ModelInfo.load(model_dir)
    prompt = info.prompt_format or PromptFormat()
    out.mkdir(parents=True, exist_ok=True)
    gguf = out / "model.gguf"
    if info.is_full:
        shutil.copy(export_full_gguf(model_dir, base=base), gguf)
    else:
        export_merged_gguf(model_dir, gguf, base=base)
    start, end = prompt.render("\x00").split("\x00")  # the text around the utterance
    head, tail = start.split(prompt.system_prompt, 1) if prompt.system_prompt in start else (start, "")
    template = head + "{{ .System }}" + tail + "{{ .Prompt }}" + end
    lines = [
        "# Written by intentkit export --ollama: the prompt this model was trained with.",
        "FROM ./model.gguf",
        f'TEMPLATE """{template}"""',
        f'SYSTEM """{prompt.system()}"""',
        f"PARAMETER stop {json.dumps(prompt.answer_end)}",
        "PARAMETER temperature 0",
        "PARAMETER num_ctx 1024",
    ]
    modelfile = out / "Modelfile"
    modelfile.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return modelfile
