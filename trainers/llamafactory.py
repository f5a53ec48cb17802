"""Training beyond one machine with LLaMA-Factory: a project directory that trains there and is an
intentkit model directory when it is done.

``intentkit data convert train.jsonl runs/lf --to llamafactory`` writes::

    runs/lf/
      llamafactory.yaml       an SFT config with intentkit's recipe: llamafactory-cli train runs/lf/llamafactory.yaml
      data/dataset_info.json  LLaMA-Factory's dataset registry: the two files below, ShareGPT columns
      data/train.json         the rows, each with intentkit's system prompt
      data/dev.json           optional: dev rows (LLaMA-Factory reports their loss)
      intentkit.json          the record export and the backends read: base, prompt, intents

LLaMA-Factory's ``gemma`` template renders exactly :class:`~intentkit.prompt.PromptFormat`'s gemma
text (the system text opening the user turn, then the answer and ``<end_of_turn>``), and its
``chatml`` template the chatml text, so the model learns the prompt intentkit serves with. The
config's ``output_dir`` is the project directory itself: LLaMA-Factory writes the PEFT adapter
(or the full model) beside the record, and ``intentkit export runs/lf`` / ``intentkit eval --model
runs/lf`` take it from there, as they take a directory ``intentkit train`` wrote.

LLaMA-Factory reads Hugging Face checkpoints, not GGUF: a GGUF base (the bundled default) is
dequantized once into the cache (:func:`trainers.base.hf_copy`) and the config points at that copy;
the adapter is then exported over the GGUF it came from, as ``intentkit train``'s are.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from intentkit.errors import ConfigError
from intentkit.model_dir import ModelInfo
from intentkit.prompt import PromptFormat

from .base import base_path, hf_copy
from .config import TrainConfig
from .data import Record

__all__ = [
    "CONFIG_FILE",
    "DATASET_INFO",
    "TEMPLATES",
    "LlamaFactoryProject",
    "is_llamafactory_project",
    "sync_trained_project",
    "write_llamafactory_project",
]

#: The LLaMA-Factory config inside a project directory.
CONFIG_FILE = "llamafactory.yaml"
#: LLaMA-Factory's dataset registry, inside the project's ``data/``.
DATASET_INFO = "dataset_info.json"
#: intentkit's prompt templates → the LLaMA-Factory templates that render the same text.
TEMPLATES = {"gemma": "gemma", "chatml": "chatml"}
_TRAIN, _DEV = "intentkit_train", "intentkit_dev"
_SHAREGPT_COLUMNS = {
    "formatting": "sharegpt",
    "columns": {"messages": "conversations", "system": "system"},
    "tags": {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt"},
}


@dataclass(frozen=True, slots=True)
class LlamaFactoryProject:
    """What :func:`write_llamafactory_project` wrote."""

    directory: Path
    config: Path
    base_checkpoint: Path
    cutoff_len: int
    train_rows: int
    dev_rows: int

    @property
    def command(self) -> str:
        """The command that trains it (several GPUs on one machine: the same, LLaMA-Factory starts torchrun)."""
        return f"llamafactory-cli train {self.config}"


def write_llamafactory_project(
    records: Sequence[Record],
    out: str | Path,
    config: TrainConfig | None = None,
    *,
    dev: Sequence[Record] = (),
    prompt: PromptFormat | None = None,
    files: Sequence[str] = (),
) -> LlamaFactoryProject:
    """Write a LLaMA-Factory project for ``records`` into ``out`` (see the module docstring).

    ``config`` gives the recipe (method, rank, rate, epochs, batch; default: ``intentkit train``'s);
    ``files`` names the data files in the record. Raises :class:`~intentkit.errors.ConfigError`
    for what LLaMA-Factory cannot train as intentkit would serve it."""
    config = config or TrainConfig()
    prompt = prompt or PromptFormat()
    if not records:
        raise ConfigError("no training rows to write")
    if prompt.list_intents:
        raise ConfigError("a prompt that lists the intents is for zero-shot models; LLaMA-Factory gets the plain system prompt")
    out = Path(out)
    if (out / "adapter_model.safetensors").exists() or (out / "model.safetensors").exists():
        raise ConfigError(f"{out} already holds trained weights; write the project into a new directory")
    source = base_path(config.base)
    checkpoint = hf_copy(source) if source.suffix == ".gguf" else source
    model_type = _model_type(checkpoint)
    cutoff = _cutoff_len(checkpoint, [*records, *dev], prompt, config.max_length)

    data = out / "data"
    data.mkdir(parents=True, exist_ok=True)
    info: dict[str, Any] = {_TRAIN: {"file_name": "train.json", **_SHAREGPT_COLUMNS}}
    _write_rows(data / "train.json", records, prompt)
    if dev:
        info[_DEV] = {"file_name": "dev.json", **_SHAREGPT_COLUMNS}
        _write_rows(data / "dev.json", dev, prompt)
    (data / DATASET_INFO).write_text(json.dumps(info, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")

    yaml_path = out / CONFIG_FILE
    yaml_path.write_text(_config_text(config, prompt, checkpoint, out, cutoff, bool(dev)), encoding="utf-8")
    ModelInfo(
        base=config.base,
        method=config.method,
        model_type=model_type,
        prompt=prompt.to_dict(),
        intents=sorted({r.intent for r in records}),
        config={"engine": "llamafactory", "engine_config": CONFIG_FILE, **_recipe(config)},
        data={"training_rows": len(records), "dev_rows": len(dev), "files": list(files)},
    ).save(out)
    return LlamaFactoryProject(out, yaml_path, checkpoint, cutoff, len(records), len(dev))


def _write_rows(path: Path, records: Sequence[Record], prompt: PromptFormat) -> None:
    rows = [
        {
            "conversations": [{"from": "human", "value": r.instruction}, {"from": "gpt", "value": r.target}],
            "system": prompt.system(),
        }
        for r in records
    ]
    path.write_text(json.dumps(rows, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")


def _model_type(checkpoint: Path) -> str | None:
    config = checkpoint / "config.json"
    if not config.is_file():
        raise ConfigError(f"{checkpoint}: not a Hugging Face checkpoint (no config.json); LLaMA-Factory cannot load it")
    return json.loads(config.read_text(encoding="utf-8")).get("model_type")


def _cutoff_len(checkpoint: Path, records: Sequence[Record], prompt: PromptFormat, fixed: int | None) -> int:
    """The length ``intentkit train`` pads to (the next power of two over the longest prompt +
    answer), doubled where LLaMA-Factory's newline after the end of turn would not fit: it cuts
    longer rows, and a cut answer teaches a wrong call."""
    if fixed:
        return fixed
    from transformers import AutoTokenizer

    from .train import encode_records

    examples, length = encode_records(records, AutoTokenizer.from_pretrained(checkpoint), prompt)
    return length if max(len(e.input_ids) for e in examples) < length else 2 * length


def _config_text(config: TrainConfig, prompt: PromptFormat, checkpoint: Path, out: Path, cutoff: int, has_dev: bool) -> str:
    method = {
        "lora": ["finetuning_type: lora"],
        "qlora": ["finetuning_type: lora", "quantization_bit: 4  # QLoRA: NF4 base, needs a CUDA GPU and bitsandbytes"],
        "full": ["finetuning_type: full  # LLaMA-Factory trains the embeddings too (intentkit train keeps them)"],
    }[config.method]
    if config.method != "full":
        targets = "all" if config.target_modules == "all-linear" else ",".join(config.target_modules)
        method += [
            f"lora_rank: {config.lora_r}",
            f"lora_alpha: {config.lora_alpha}",
            f"lora_dropout: {config.lora_dropout}",
            f"lora_target: {targets}",
        ]
    evaluation = (
        [f"eval_dataset: {_DEV}", "per_device_eval_batch_size: 8", "eval_strategy: epoch"] if has_dev else ["# no dev data given"]
    )
    directory = out.resolve()
    here = directory / CONFIG_FILE
    lines = [
        "# Written by intentkit (data convert --to llamafactory): intentkit train's recipe for LLaMA-Factory.",
        "# One machine, one or several GPUs (LLaMA-Factory starts torchrun for several):",
        f"#   llamafactory-cli train {here}",
        "# accelerate (FSDP, DeepSpeed, several machines):",
        f"#   accelerate launch --config_file ACCELERATE.yaml -m llamafactory.launcher {here}",
        "# Then, where intentkit is installed:",
        f"#   intentkit export {directory} --vocabulary-from TRAIN.jsonl --scope-from TRAIN.jsonl",
        f"#   intentkit eval DEV.jsonl --model {directory}",
        "# Keep template and cutoff_len: the template renders intentkit's prompt; a shorter cutoff cuts answers.",
        "",
        "### model",
        f"model_name_or_path: {json.dumps(str(checkpoint.resolve()))}",
        "",
        "### method",
        "stage: sft",
        "do_train: true",
        *method,
        "",
        "### dataset",
        f"dataset_dir: {json.dumps(str(directory / 'data'))}",
        f"dataset: {_TRAIN}",
        f"template: {TEMPLATES[prompt.template]}",
        f"cutoff_len: {cutoff}",
        "overwrite_cache: true",
        "",
        "### output: the project directory, beside intentkit.json",
        f"output_dir: {json.dumps(str(directory))}",
        "logging_steps: 10",
        "save_strategy: epoch",
        "save_total_limit: 1",
        "plot_loss: false",
        "report_to: none",
        "",
        "### train",
        f"per_device_train_batch_size: {config.batch_size}",
        f"gradient_accumulation_steps: {config.grad_accum}",
        f"learning_rate: {config.learning_rate:g}",
        f"num_train_epochs: {config.epochs:g}",
        "lr_scheduler_type: linear",
        f"warmup_ratio: {config.warmup_ratio:g}",
        f"weight_decay: {config.weight_decay:g}",
        f"max_grad_norm: {config.max_grad_norm:g}",
        f"seed: {config.seed}",
        f"bf16: {'false' if config.precision == 'fp32' else 'true'}  # false on a CPU or a GPU without bf16",
        "",
        "### eval",
        *evaluation,
        "",
    ]
    return "\n".join(lines)


#: LLaMA-Factory's config keys → the TrainConfig fields the record keeps.
_RECIPE_KEYS = {
    "lora_rank": "lora_r",
    "lora_alpha": "lora_alpha",
    "lora_dropout": "lora_dropout",
    "per_device_train_batch_size": "batch_size",
    "gradient_accumulation_steps": "grad_accum",
    "learning_rate": "learning_rate",
    "num_train_epochs": "epochs",
    "warmup_ratio": "warmup_ratio",
    "weight_decay": "weight_decay",
    "max_grad_norm": "max_grad_norm",
    "seed": "seed",
    "cutoff_len": "max_length",
}


def _recipe(config: TrainConfig) -> dict[str, Any]:
    """What the LLaMA-Factory config carries of ``config``: the rest (held-back selection, the
    trimmed softmax, bf16 autocast on a CPU) is intentkit's trainer's alone and not recorded."""
    fields = ["base", "method", "target_modules", *_RECIPE_KEYS.values()]
    return {field: value for field, value in config.model_dump().items() if field in fields}


def is_llamafactory_project(model_dir: str | Path) -> bool:
    """Whether ``model_dir`` is a project :func:`write_llamafactory_project` wrote."""
    return ModelInfo.load(model_dir).config.get("engine") == "llamafactory"


def sync_trained_project(model_dir: str | Path) -> ModelInfo:
    """Before ``intentkit export``: check that LLaMA-Factory has trained the project in
    ``model_dir`` (a clear error naming the command when it has not), and record the recipe that
    ran, read back from its config (which users edit), so that the model card tells the truth."""
    import yaml

    model_dir = Path(model_dir)
    info = ModelInfo.load(model_dir)
    config_path = model_dir / CONFIG_FILE
    weights = "model.safetensors" if info.is_full else "adapter_model.safetensors"
    if not (model_dir / weights).is_file() and not any(model_dir.glob("model-*.safetensors")):
        raise ConfigError(f"{model_dir}: no {weights} yet; train the project first: llamafactory-cli train {config_path}")
    try:
        settings = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{config_path}: unreadable LLaMA-Factory config ({exc})") from None
    if not isinstance(settings, dict):
        raise ConfigError(f"{config_path}: a LLaMA-Factory config is a mapping, not {type(settings).__name__}")
    template = TEMPLATES[(info.prompt_format or PromptFormat()).template]
    if settings.get("template") != template:
        raise ConfigError(
            f"{config_path}: template {settings.get('template')!r} renders another prompt than the one intentkit serves "
            f"({template!r}); train again with it"
        )
    recipe = {field: settings[key] for key, field in _RECIPE_KEYS.items() if key in settings}
    method = "full" if settings.get("finetuning_type") == "full" else "qlora" if settings.get("quantization_bit") else "lora"
    info = info.updated(method=method, config={**info.config, **recipe})
    info.save(model_dir)
    return info
