"""A trained model directory and its record, ``intentkit.json`` (:class:`ModelInfo`).

The trainer writes the directory (``intentkit train --out DIR``); export, the card writer, the
CLI and the backends read it, all through :class:`ModelInfo`::

    DIR/
      intentkit.json              the record: schema version, base, method, prompt, intents, run
      adapter_model.safetensors   the PEFT adapter (LoRA, QLoRA) or model.safetensors (full)
      adapter.gguf | model.gguf   what llama.cpp runs: the GGUF LoRA, or the whole fine-tune
      keep_tokens.npy             optional: the vocabulary the deployment is trimmed to
      scope.npz                   optional: the out-of-scope detector
      drafts.jsonl                optional: the training rows answers are drafted from
      drafts.crf                  optional: the slot tagger drafted values are read with
      README.md                   the model card

The record carries :data:`SCHEMA_VERSION`; a record without one is version 1 (what intentkit
0.1 wrote), a newer one is refused with a message naming the file, not half read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import pydantic

from .errors import ModelDirError
from .prompt import PromptFormat

__all__ = [
    "KEEP_FILE",
    "META_FILE",
    "SCHEMA_VERSION",
    "DataSummary",
    "DevEvaluation",
    "ModelInfo",
]

#: The record's file name inside a model directory.
META_FILE = "intentkit.json"
#: The token ids a model's deployment keeps (``intentkit export --vocabulary-from``).
KEEP_FILE = "keep_tokens.npy"
#: The version of :class:`ModelInfo` this intentkit writes and reads.
SCHEMA_VERSION = 1


class DataSummary(pydantic.BaseModel):
    """What a model was trained on."""

    model_config = pydantic.ConfigDict(extra="forbid")

    training_rows: int = 0
    out_of_scope_rows: int = 0
    dev_rows: int = 0
    chosen_on: Literal["dev", "held-back"] = pydantic.Field(
        "dev", description="what the evaluations during training read: the dev file, or rows held back from training"
    )
    files: list[str] = pydantic.Field(default_factory=list)


class DevEvaluation(pydantic.BaseModel):
    """One dev evaluation during training."""

    model_config = pydantic.ConfigDict(extra="forbid")

    step: int
    dev_loss: float | None = None
    dev_exact: float | None = None
    averages: dict[str, dict[str, float]] = pydantic.Field(
        default_factory=dict, description="averaged weights evaluated beside them: name -> dev_loss, dev_exact"
    )


class ModelInfo(pydantic.BaseModel):
    """The record of a trained model directory (``intentkit.json``).

    ``ModelInfo.load(directory)`` reads it (an empty record when the directory has none),
    :meth:`save` writes it; :attr:`deployed_file` is the file llama.cpp runs."""

    model_config = pydantic.ConfigDict(extra="forbid", protected_namespaces=())

    schema_version: int = SCHEMA_VERSION
    base: str = pydantic.Field("default", description="'default' (the bundled gemma-3-270m GGUF), an HF directory or a .gguf")
    method: Literal["lora", "qlora", "full"] = "lora"
    model_type: str | None = pydantic.Field(None, description="the base's transformers model_type (gemma3_text)")
    prompt: dict[str, Any] | None = pydantic.Field(None, description="PromptFormat.to_dict() of the prompt trained on")
    intents: list[str] = pydantic.Field(default_factory=list)
    config: dict[str, Any] = pydantic.Field(default_factory=dict, description="the TrainConfig of the run")
    best: dict[str, int | float | str] = pydantic.Field(
        default_factory=dict, description="the evaluation whose weights were kept ('weights': which average, if one)"
    )
    train_seconds: float | None = None
    train_tokens: int | None = None
    tokens_per_second: float | None = None
    steps: int | None = None
    sequence_length: int | None = None
    precision: Literal["bf16", "fp32"] | None = pydantic.Field(None, description="what the training passes ran in")
    softmax_vocabulary: int | None = pydantic.Field(
        None, description="tokens the output softmax was trained over (None: the base's whole vocabulary)"
    )
    data: DataSummary | None = None
    dev_evaluations: list[DevEvaluation] = pydantic.Field(default_factory=list)

    @property
    def deployed_file(self) -> str:
        """The GGUF llama.cpp runs from this directory: the whole model for a full fine-tune,
        else the LoRA adapter over the base."""
        return "model.gguf" if self.method == "full" else "adapter.gguf"

    @property
    def is_full(self) -> bool:
        return self.method == "full"

    @property
    def prompt_format(self) -> PromptFormat | None:
        """The prompt format the model was trained with, when it recorded one."""
        return PromptFormat.from_dict(self.prompt) if self.prompt else None

    @property
    def base_gguf(self) -> Path | None:
        """The base GGUF the model was trained from, when it names one (``None``: the default)."""
        return Path(self.base) if self.base.endswith(".gguf") else None

    @classmethod
    def exists(cls, directory: str | Path) -> bool:
        return (Path(directory) / META_FILE).is_file()

    @classmethod
    def load(cls, directory: str | Path) -> ModelInfo:
        """``directory/intentkit.json``; an empty record when there is none. Raises
        :class:`~intentkit.errors.ModelDirError` naming the file when it cannot be used."""
        path = Path(directory) / META_FILE
        if not path.is_file():
            return cls()
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelDirError(path, f"unreadable model record ({exc})") from None
        if not isinstance(data, dict):
            raise ModelDirError(path, f"a model record is a JSON object, not {type(data).__name__}")
        version = data.get("schema_version", 1)
        if version != SCHEMA_VERSION:
            raise ModelDirError(
                path,
                f"schema_version {version!r}; this intentkit reads version {SCHEMA_VERSION} "
                "(written by another intentkit release: upgrade intentkit, or train the model again)",
            )
        try:
            return cls.model_validate(data)
        except pydantic.ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(record)'}: {e['msg']}" for e in exc.errors())
            raise ModelDirError(path, f"not a valid model record: {problems}") from None

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / META_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        data = self.model_dump(mode="json", exclude_none=True)
        path.write_text(json.dumps(data, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
        return path

    def updated(self, **values: Any) -> ModelInfo:
        """A copy with ``values`` set (validated)."""
        return type(self).model_validate({**self.model_dump(), **values})
