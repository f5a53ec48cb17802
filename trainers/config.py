"""Training settings, apart from the training code so that the CLI can read their defaults and
help text without importing torch or the trainer."""

from __future__ import annotations

from typing import Literal

import pydantic

__all__ = ["DEFAULT_BASE", "DEFAULT_HOLDOUT", "DEFAULT_HOLDOUT_SEED", "TrainConfig"]

DEFAULT_BASE = "default"
#: The share of the training rows held back, by default, to choose on: early stopping, the weights
#: kept, the out-of-scope detector's threshold. What a run reports on (``dev``) chooses nothing.
DEFAULT_HOLDOUT = 0.1
#: The held-back rows are drawn with this seed whatever the training seed (intentkit 0.2 drew them
#: with the training seed).
DEFAULT_HOLDOUT_SEED = 42


class TrainConfig(pydantic.BaseModel):
    """Training settings (JSON round-trip: ``TrainConfig.model_validate_json(cfg.model_dump_json())``)."""

    model_config = pydantic.ConfigDict(extra="forbid")

    base: str = pydantic.Field(DEFAULT_BASE, description="'default' (bundled gemma-3-270m GGUF), an HF model dir or a .gguf file")
    method: Literal["lora", "qlora", "full"] = "lora"
    epochs: float = pydantic.Field(
        4.0, gt=0, description="passes over the data; the weights kept are those of the best evaluation"
    )
    learning_rate: float = pydantic.Field(3e-4, gt=0)
    batch_size: int = pydantic.Field(8, gt=0, description="examples per device per step")
    grad_accum: int = pydantic.Field(1, gt=0, description="global batch = devices × batch_size × grad_accum")
    warmup_ratio: float = pydantic.Field(0.05, ge=0, lt=1)
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    lora_r: int = pydantic.Field(
        64, gt=0, description="LoRA rank (64: on SMP2020 held-back rows 82.2 % exact against 81.0 % at 16, for 5 % more time)"
    )
    lora_alpha: int | None = pydantic.Field(None, gt=0, description="LoRA scaling numerator (default: 2 × lora_r)")
    lora_dropout: float = 0.05
    target_modules: list[str] | str = "all-linear"
    train_embeddings: bool = pydantic.Field(
        False,
        description="method='full': also train the token embeddings (and an output head tied to them); "
        "gemma-3-270m's are 168M of its 268M weights, so this costs far more memory and time per step",
    )
    max_length: int | None = pydantic.Field(None, description="default: next power of two over the longest example")
    eval_every: int | None = pydantic.Field(None, description="steps between dev evaluations (default: once per epoch)")
    patience: int | None = pydantic.Field(None, description="stop after this many dev evaluations without improvement")
    select_on: Literal["loss", "exact"] = pydantic.Field(
        "exact",
        description="what picks the weights kept and drives early stopping: dev exact match (the share of dev "
        "answers greedy decoding reproduces token for token; ties go to the lower loss), or dev loss",
    )
    average_decays: list[float] = pydantic.Field(
        default_factory=list,
        description="decays of exponential moving averages of the weights, each evaluated beside the trained "
        "weights at every held-back evaluation; the best of them all is kept (e.g. 0.99: about the last 100 steps)",
    )
    save_every: int | None = pydantic.Field(None, description="steps between resumable checkpoints")
    seed: int = 42
    threads: int | None = None
    share_prefix: bool = pydantic.Field(True, description="evaluate a batch's common prompt prefix once")
    precision: Literal["auto", "bf16", "fp32"] = pydantic.Field(
        "auto",
        description="'bf16': the forward and backward passes under bf16 autocast (weights and optimizer stay fp32); "
        "'auto': bf16 on a CUDA device that supports it or a CPU with AVX512-BF16/AMX, else fp32",
    )
    trimmed_head: bool = pydantic.Field(
        True,
        description="when the deployment runs on a trimmed vocabulary (keep_tokens.npy), train the output softmax "
        "over that vocabulary alone: the distribution the deployment decodes from, and a head 2.5x smaller",
    )
    init_from: str | None = pydantic.Field(
        None,
        description="a model directory (intentkit train --out, or a bundled model) whose LoRA adapter training "
        "continues from, e.g. on old data plus corrections; its rank and targets are kept",
    )
    argument_order: Literal["utterance", "as_given"] = pydantic.Field(
        "as_given",
        description="the order of keyword arguments in the answers trained on: 'utterance' writes them in the "
        "order their values occur in the utterance (the same calls), 'as_given' as the data has them",
    )

    @pydantic.field_validator("average_decays")
    @classmethod
    def _decays(cls, decays: list[float]) -> list[float]:
        for decay in decays:
            if not 0.0 < decay < 1.0:
                raise ValueError(f"an average's decay must lie strictly between 0 and 1, not {decay}")
        if len(set(decays)) != len(decays):
            raise ValueError(f"average_decays names a decay twice: {decays}")
        return decays

    @pydantic.model_validator(mode="after")
    def _alpha(self) -> TrainConfig:
        if self.lora_alpha is None:
            self.lora_alpha = 2 * self.lora_r
        return self
