"""Fine-tuning a routing model: LoRA (default), QLoRA or full, with transformers + peft.

What makes it fast on a small CPU, beyond a plain ``Trainer`` run:

- the loss — and the LM head — is computed only at answer positions. gemma-3-270m's head is a
  262k × 640 matrix: applying it to every prompt token costs more than the rest of the model;
- batches are grouped by length (dynamic padding with little padding);
- the tokens every example of a batch starts with (the chat markers and the system prompt, about
  half of a routing example) are evaluated once per batch, not once per example: their keys and
  values are computed for one row and repeated for the others (``share_prefix``). The loss and
  the gradients are the same as without it (a test checks this); with LoRA dropout on, the
  shared tokens share one dropout mask;
- sequence length is derived from the data (next power of two over the longest example);
- the passes run under bf16 autocast where the hardware has bf16 arithmetic (``precision``;
  1.14× alone and 1.62× with the trimmed head on an AVX512-BF16 CPU, benchmarks/train_speed.py
  --variants), the weights and the optimizer staying fp32;
- when the deployment runs on a trimmed vocabulary, the softmax is trained over that vocabulary
  alone (``vocabulary``, :class:`TrimmedHead`): the distribution llama.cpp decodes from, over a
  head of about 106k rows instead of 262k.

The prompt comes from :mod:`intentkit.prompt`; its fingerprint is saved next to the adapter.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal

from intentkit import PromptFormat
from intentkit.errors import ConfigError, DataError
from intentkit.hf import cache_name, quiet_peft
from intentkit.model_dir import ModelInfo

from .averaging import WeightAverage
from .base import load_base, qlora_device
from .card import write_model_card
from .checkpoint import CHECKPOINT_DIR, load_checkpoint, run_identity, save_checkpoint, stop_on_interrupt
from .config import TrainConfig
from .data import Record, in_utterance_order
from .progress import progress_bar

__all__ = [
    "DevEval",
    "TrainConfig",  # re-exported from trainers.config
    "TrainResult",
    "TrimmedHead",
    "answer_loss",
    "autocast_dtype",
    "encode_records",
    "evaluate_dev",
    "load_base",
    "shared_prefix",
    "train",
]


@dataclass(slots=True)
class TrainResult:
    output_dir: Path
    steps: int
    train_tokens: int
    seconds: float
    history: list[dict[str, Any]]
    kept: dict[str, Any] | None = None  # the dev evaluation whose weights were saved ('weights': an average)
    resumed_from: int = 0  # the checkpoint's step when the run continued one
    vocabulary: list[int] | None = None  # the token ids the softmax was trained over (None: all)

    @property
    def best_dev_loss(self) -> float | None:
        """The dev loss of the weights kept (None without dev data)."""
        return self.kept["dev_loss"] if self.kept else None

    @property
    def tokens_per_second(self) -> float:
        return self.train_tokens / self.seconds if self.seconds else 0.0


@dataclass(slots=True)
class Encoded:
    input_ids: list[int]
    answer_start: int  # index of the first answer token


def encode_records(
    records: Sequence[Record], tokenizer: Any, prompt: PromptFormat, max_length: int | None = None
) -> tuple[list[Encoded], int]:
    """Tokenize prompt + answer; returns the examples and the sequence length used."""
    encoded = []
    for record in records:
        # The prompt gets the tokenizer's special prefix (BOS), exactly as backends tokenize it.
        prompt_ids = tokenizer(prompt.render(record.instruction), add_special_tokens=True)["input_ids"]
        answer_ids = tokenizer(record.target + prompt.answer_end, add_special_tokens=False)["input_ids"]
        encoded.append(Encoded(prompt_ids + answer_ids, len(prompt_ids)))
    longest = max((len(e.input_ids) for e in encoded), default=1)
    length = max_length or 2 ** math.ceil(math.log2(max(longest, 2)))
    for e in encoded:
        if len(e.input_ids) > length:  # keep the answer; cut the start of the prompt
            cut = len(e.input_ids) - length
            e.input_ids = e.input_ids[cut:]
            e.answer_start = max(1, e.answer_start - cut)
    return encoded, length


def _batches(examples: list[Encoded], batch_size: int, rng: random.Random) -> list[list[Encoded]]:
    """Shuffled batches of similar length: shuffle, then sort inside windows of 50 batches."""
    order = examples[:]
    rng.shuffle(order)
    window = batch_size * 50
    batches = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start : start + window], key=lambda e: len(e.input_ids))
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def _collate(batch: list[Encoded], pad_id: int, device: Any) -> tuple[Any, Any, Any]:
    import torch

    width = max(len(e.input_ids) for e in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    labels = torch.full((len(batch), width), -100, dtype=torch.long)
    for row, e in enumerate(batch):
        n = len(e.input_ids)
        ids[row, :n] = torch.tensor(e.input_ids)
        mask[row, :n] = 1
        labels[row, e.answer_start : n] = ids[row, e.answer_start : n]
    return ids.to(device), mask.to(device), labels.to(device)


def shared_prefix(batch: Sequence[Encoded], model_config: Any = None) -> int:
    """How many leading tokens all examples of ``batch`` share before their first answer token
    is predicted: the part :func:`answer_loss` may evaluate once. 0 when sharing would not help
    (one example) or is not safe (a sequence longer than a sliding attention window, whose cache
    would be cut)."""
    if len(batch) < 2:
        return 0
    window = getattr(model_config, "sliding_window", None)
    if window and max(len(e.input_ids) for e in batch) > window:
        return 0
    limit = min(e.answer_start for e in batch) - 1  # the position that predicts the first answer token stays
    first = batch[0].input_ids
    n = 0
    while n < limit and all(e.input_ids[n] == first[n] for e in batch):
        n += 1
    return n


def autocast_dtype(precision: str, device: Any) -> Any:
    """The dtype the passes run in under autocast for ``TrainConfig.precision`` on ``device``,
    or None for fp32. ``auto`` takes bf16 only where the hardware computes in it (a CUDA device
    that supports it, a CPU with AVX512-BF16 or AMX); elsewhere bf16 is emulated and slower."""
    import torch

    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    if device.type == "cpu":
        checks = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
        return torch.bfloat16 if any(check is not None and check() for check in checks) else None
    return None


def _autocast(device: Any, dtype: Any) -> Any:
    """``torch.autocast`` to ``dtype`` on ``device``'s kind, or a context that changes nothing for None."""
    import torch

    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


class TrimmedHead:
    """The output head restricted to ``vocabulary`` (the token ids the deployment keeps): logits
    over those rows alone, and targets renumbered into them. The head is tied to the frozen
    embeddings, so its rows are gathered once, in the dtype the passes run in."""

    def __init__(self, model: Any, vocabulary: Iterable[int], dtype: Any = None) -> None:
        import torch

        head = model.get_output_embeddings()
        if head.weight.requires_grad:
            raise ConfigError("a trimmed output head needs frozen output embeddings (train_embeddings=False)")
        if getattr(head, "bias", None) is not None:
            raise ConfigError("a trimmed output head needs an output layer without bias")
        device = head.weight.device
        self.ids = torch.as_tensor(sorted({int(i) for i in vocabulary}), dtype=torch.long, device=device)
        if len(self.ids) == 0 or int(self.ids[-1]) >= head.weight.shape[0] or int(self.ids[0]) < 0:
            raise ConfigError(f"vocabulary: token ids must lie in 0..{head.weight.shape[0] - 1}")
        self.weight = head.weight.detach().index_select(0, self.ids).to(dtype or head.weight.dtype)
        self.index = torch.full((head.weight.shape[0],), -1, dtype=torch.long, device=device)
        self.index[self.ids] = torch.arange(len(self.ids), device=device)

    def __len__(self) -> int:
        return len(self.ids)

    def __call__(self, hidden: Any) -> Any:
        import torch.nn.functional as F

        return F.linear(hidden.to(self.weight.dtype), self.weight)

    def targets(self, targets: Any) -> Any:
        mapped = self.index[targets]
        if bool((mapped < 0).any()):
            missing = sorted({int(t) for t in targets[mapped < 0]})
            raise ConfigError(f"answer tokens {missing[:5]} are not in the trimmed vocabulary")
        return mapped


def answer_loss(
    model: Any, ids: Any, mask: Any, labels: Any, *, prefix: int = 0, head: TrimmedHead | None = None
) -> tuple[Any, int]:
    """Cross-entropy over answer tokens, with the LM head applied only where there are labels
    (``head``: over a trimmed vocabulary, else the model's own).

    ``prefix``: the first ``prefix`` tokens are the same in every row (:func:`shared_prefix`);
    they are evaluated for one row and their keys and values repeated for the rest."""
    import torch.nn.functional as F

    logits, targets, _ = _answer_logits(model, ids, mask, labels, prefix=prefix, head=head)
    return F.cross_entropy(logits.float(), targets), len(targets)


def _answer_logits(
    model: Any, ids: Any, mask: Any, labels: Any, *, prefix: int = 0, head: TrimmedHead | None = None
) -> tuple[Any, Any, Any]:
    """The logits at every answer position (the LM head nowhere else), their target tokens (in
    ``head``'s numbering when given), and the batch row of each."""
    import torch

    decoder = model.get_decoder()
    if prefix > 0:
        cache = getattr(decoder(input_ids=ids[:1, :prefix], use_cache=True), cache_name())
        cache.batch_repeat_interleave(ids.shape[0])
        positions = torch.arange(prefix, ids.shape[1], device=ids.device)
        hidden = decoder(  # the cache positions follow from the cache's length
            input_ids=ids[:, prefix:],
            attention_mask=mask,
            position_ids=positions.unsqueeze(0).expand(ids.shape[0], -1),
            use_cache=True,
            **{cache_name(): cache},
        ).last_hidden_state
        targets = labels[:, prefix + 1 :]
    else:
        hidden = decoder(input_ids=ids, attention_mask=mask).last_hidden_state
        targets = labels[:, 1:]
    where = targets != -100
    logits = (head or model.get_output_embeddings())(hidden[:, :-1][where])
    cap = getattr(model.config, "final_logit_softcapping", None)
    if cap:
        logits = (logits / cap).tanh() * cap
    answers = targets[where]
    return logits, head.targets(answers) if head is not None else answers, where.nonzero()[:, 0]


def _wrap(model: Any, config: TrainConfig) -> Any:
    if config.method == "full":
        if not config.train_embeddings:
            for module in (model.get_input_embeddings(), model.get_output_embeddings()):
                if module is not None:
                    module.weight.requires_grad_(False)
        return model
    with quiet_peft():
        from peft import LoraConfig, PeftModel, get_peft_model, prepare_model_for_kbit_training

        if config.method == "qlora":
            if not getattr(model, "is_loaded_in_4bit", False):
                raise ConfigError("method='qlora' trains over a base loaded in 4 bits (trainers.base.load_base(four_bit_on=...))")
            # Norms and embeddings to fp32 for stable updates, inputs that carry gradients (peft's recipe).
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        if config.init_from is not None:
            return PeftModel.from_pretrained(model, config.init_from, is_trainable=True)

        lora = LoraConfig(
            r=config.lora_r,
            lora_alpha=config.lora_alpha or 2 * config.lora_r,  # always set once validated
            lora_dropout=config.lora_dropout,
            target_modules=config.target_modules,
            task_type="CAUSAL_LM",
        )
        return get_peft_model(model, lora)


def check_init_from(config: TrainConfig, output_dir: Path) -> None:
    """``config.init_from`` names a LoRA model directory trained over the same base (checked
    before the base is loaded, so a wrong directory fails in a second)."""
    if config.init_from is None:
        return
    source = Path(config.init_from)
    if config.method == "full":
        raise ConfigError("init_from continues a LoRA adapter; to continue a full fine-tune, give its directory as base")
    if not (source / "adapter_config.json").is_file():
        raise ConfigError(f"init_from {source}: no adapter_config.json (expected a LoRA model directory from intentkit train)")
    if source.resolve() == output_dir.resolve():
        raise ConfigError(f"init_from {source} is the output directory; write the continued model somewhere else")
    info = ModelInfo.load(source) if ModelInfo.exists(source) else None
    if info is not None and info.base != config.base:
        raise ConfigError(f"init_from {source} was trained over base {info.base!r}, not {config.base!r}; pass --base {info.base}")


def train(
    records: Sequence[Record],
    output_dir: str | Path,
    config: TrainConfig | None = None,
    *,
    dev: Sequence[Record] = (),
    prompt: PromptFormat | None = None,
    model_and_tokenizer: tuple[Any, Any] | None = None,
    progress: bool = True,
    on_step: Callable[[dict[str, float]], None] | None = None,
    dev_name: Literal["dev", "held-back"] = "dev",
    vocabulary: Sequence[int] | None = None,
) -> TrainResult:
    """Fine-tune on ``records``; writes the adapter (or full model) and ``intentkit.json`` to ``output_dir``.

    ``vocabulary``: the token ids the deployment keeps (``keep_tokens.npy``); with
    ``config.trimmed_head`` the softmax is trained over them, plus every answer token of the
    data (:attr:`TrainResult.vocabulary` is the set used)."""
    import torch

    config = config or TrainConfig()
    prompt = prompt or PromptFormat()
    output_dir = Path(output_dir)
    if not records:
        raise DataError("the training data", "no training records")
    check_init_from(config, output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    if config.threads:
        torch.set_num_threads(config.threads)
    four_bit_on = qlora_device() if config.method == "qlora" else None
    model, tokenizer = model_and_tokenizer or load_base(config.base, four_bit_on=four_bit_on)
    model = _wrap(model, config)
    device = torch.device(four_bit_on or ("cuda" if torch.cuda.is_available() else "cpu"))
    if four_bit_on is None:  # a 4-bit model is placed by its loader and cannot be moved
        model.to(device)
    if config.argument_order == "utterance":
        records, dev = [in_utterance_order(r) for r in records], [in_utterance_order(r) for r in dev]
    examples, length = encode_records(records, tokenizer, prompt, config.max_length)
    dev_examples, _ = encode_records(dev, tokenizer, prompt, length) if dev else ([], length)
    amp = autocast_dtype(config.precision, device)
    head = None
    if vocabulary is not None and config.trimmed_head:
        answers = {t for e in [*examples, *dev_examples] for t in e.input_ids[e.answer_start :]}
        head = TrimmedHead(model, {*vocabulary, *answers}, amp)
    steps_per_epoch = math.ceil(math.ceil(len(examples) / config.batch_size) / config.grad_accum)
    total_steps = max(1, math.ceil(steps_per_epoch * config.epochs))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    warmup = int(total_steps * config.warmup_ratio)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: (s + 1) / max(1, warmup) if s < warmup else max(0.0, (total_steps - s) / max(1, total_steps - warmup)),
    )
    if config.average_decays and not dev_examples:
        raise ConfigError(
            "average_decays: averaged weights are kept only when they score better, which needs dev or held-back data"
        )
    averages = [WeightAverage(params, decay) for decay in config.average_decays]
    run = run_identity(config, examples, dev_examples)
    state = load_checkpoint(output_dir, model, optimizer, scheduler, run)
    for average, saved in zip(averages, state.get("averages", []), strict=False):
        average.load_state_dict(saved)
    step, tokens, history = state["step"], state["tokens"], state["history"]
    resumed_from = step
    best, bad_evals = state.get("best"), state.get("bad_evals", 0)
    if isinstance(best, float):  # a checkpoint written before exact match was measured
        best = {"step": 0, "dev_loss": best, "dev_exact": 0.0}
    if "epoch_rng" in state:  # back to the interrupted epoch's batch order, past the batches done
        rng.setstate(state["epoch_rng"])
    done_in_epoch = state.get("offset", 0)
    eval_every = config.eval_every or steps_per_epoch
    bar = _progress(total_steps, step) if progress else None
    if bar is not None and step:
        bar.write(f"resuming from step {step} ({output_dir / CHECKPOINT_DIR})")
    started = time.perf_counter()
    run_tokens = 0
    model.train()
    stop = False
    with stop_on_interrupt() as interrupted:
        while step < total_steps and not stop:
            epoch_rng = rng.getstate()
            batches = _batches(examples, config.batch_size, rng)
            for start in range(done_in_epoch, len(batches), config.grad_accum):
                group = batches[start : start + config.grad_accum]
                loss_sum = 0.0
                for batch in group:
                    prefix = shared_prefix(batch, model.config) if config.share_prefix else 0
                    with _autocast(device, amp):
                        loss, _ = answer_loss(model, *_collate(batch, tokenizer.pad_token_id, device), prefix=prefix, head=head)
                    (loss / len(group)).backward()
                    loss_sum += loss.item() / len(group)
                    batch_tokens = sum(len(e.input_ids) for e in batch)
                    tokens += batch_tokens
                    run_tokens += batch_tokens
                torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                for average in averages:
                    average.update()
                step += 1
                elapsed = time.perf_counter() - started
                record: dict[str, Any] = {
                    "step": step,
                    "loss": loss_sum,
                    "lr": scheduler.get_last_lr()[0],
                    "tokens_per_s": run_tokens / elapsed if elapsed else 0.0,
                }
                if dev_examples and (step % eval_every == 0 or step == total_steps):
                    evaluate = partial(
                        evaluate_dev,
                        model,
                        dev_examples,
                        config.batch_size,
                        tokenizer.pad_token_id,
                        device,
                        share=config.share_prefix,
                        head=head,
                        autocast=amp,
                    )
                    dev_eval = evaluate()
                    record["dev_loss"], record["dev_exact"] = dev_eval.loss, dev_eval.exact_rate
                    chosen, chosen_average = _choose(record, averages, evaluate, config)
                    improved = best is None or _rank(chosen, config) < _rank(best, config)
                    if improved:
                        best, bad_evals = chosen, 0
                        with chosen_average.applied() if chosen_average is not None else contextlib.nullcontext():
                            kept = {k: v for k, v in chosen.items() if k != "averages"}
                            _save(model, tokenizer, output_dir, config, prompt, records, kept)
                    else:
                        bad_evals += 1
                        stop = config.patience is not None and bad_evals >= config.patience
                    if bar is not None:
                        averaged = "".join(
                            f"; {name}: {score['dev_loss']:.4f}, {score['dev_exact']:.2%}"
                            for name, score in record.get("averages", {}).items()
                        )
                        which = f" ({chosen.get('weights', 'trained weights')})" if averages else ""
                        bar.write(
                            f"step {step}/{total_steps} (epoch {step / steps_per_epoch:.2f}): {dev_name} loss "
                            f"{record['dev_loss']:.4f}, exact match {record['dev_exact']:.2%}{averaged}"
                            + (f" (best{which}, saved)" if improved else f" (best: step {best['step'] if best else '-'})")
                        )
                history.append(record)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss_sum:.3f}", tok_s=f"{record['tokens_per_s']:.0f}")
                if on_step is not None:
                    on_step(record)
                if (config.save_every and step % config.save_every == 0) or interrupted():
                    position = {
                        "epoch_rng": epoch_rng,
                        "offset": start + len(group),
                        "bad_evals": bad_evals,
                        "averages": [a.state_dict() for a in averages],
                    }
                    save_checkpoint(
                        output_dir,
                        model,
                        optimizer,
                        scheduler,
                        {"step": step, "tokens": tokens, "history": history, "best": best, "run": run, **position},
                    )
                if interrupted():
                    if bar is not None:
                        bar.close()
                    raise KeyboardInterrupt(
                        f"training stopped at step {step} of {total_steps}; the checkpoint is in "
                        f"{output_dir / CHECKPOINT_DIR}: the same call resumes from it"
                    )
                if step >= total_steps or stop:
                    break
            done_in_epoch = 0
    if bar is not None:
        bar.close()
    seconds = time.perf_counter() - started
    if not dev_examples:
        _save(model, tokenizer, output_dir, config, prompt, records, history[-1] if history else {})
    trained_on = [int(i) for i in head.ids.tolist()] if head is not None else None
    result = TrainResult(output_dir, step, run_tokens, seconds, history, best, resumed_from, trained_on)
    _update_meta(
        output_dir,
        {
            "train_seconds": round(seconds, 1),
            "train_tokens": run_tokens,
            "tokens_per_second": round(result.tokens_per_second, 1),
            "steps": step,
            "sequence_length": length,
            "precision": "bf16" if amp is not None else "fp32",
            "softmax_vocabulary": len(head) if head is not None else None,
            "data": {
                "training_rows": len(records),
                "out_of_scope_rows": sum(not r.in_scope for r in records),
                "dev_rows": len(dev),
                "chosen_on": dev_name,
                "files": sorted({r.source.rsplit(":", 1)[0] for r in records}),
            },
            "dev_evaluations": [
                {k: r[k] for k in ("step", "dev_loss", "dev_exact", "averages") if k in r} for r in history if "dev_loss" in r
            ],
        },
    )
    return result


@dataclass(slots=True)
class DevEval:
    loss: float  # mean cross-entropy per answer token
    exact: list[bool]  # per example: greedy decoding would reproduce its answer token for token

    @property
    def exact_rate(self) -> float:
        return sum(self.exact) / len(self.exact) if self.exact else 0.0


def evaluate_dev(
    model: Any,
    examples: Sequence[Encoded],
    batch_size: int,
    pad_id: int,
    device: Any,
    *,
    share: bool = True,
    head: TrimmedHead | None = None,
    autocast: Any = None,
) -> DevEval:
    """Dev loss and exact match in one teacher-forced pass. An answer is an exact match when the
    model's top token is the answer's own at every answer position: exactly the answers greedy
    decoding (unconstrained, same prompt, over ``head``'s vocabulary when given) would write,
    end-of-turn marker included, without decoding anything. ``autocast``: the dtype the
    training passes run in (None: fp32)."""
    import torch
    import torch.nn.functional as F

    model.eval()
    total, count, exact = 0.0, 0, []
    device = torch.device(device)
    with torch.no_grad(), _autocast(device, autocast):
        for i in range(0, len(examples), batch_size):
            batch = list(examples[i : i + batch_size])
            prefix = shared_prefix(batch, model.config) if share else 0
            logits, targets, rows = _answer_logits(model, *_collate(batch, pad_id, device), prefix=prefix, head=head)
            total += F.cross_entropy(logits.float(), targets, reduction="sum").item()
            count += len(targets)
            wrong = torch.zeros(len(batch), dtype=torch.long, device=targets.device)
            wrong.index_add_(0, rows, (logits.argmax(-1) != targets).long())
            exact += (wrong == 0).tolist()
    model.train()
    return DevEval(total / max(1, count), exact)


def _choose(
    record: dict[str, Any], averages: Sequence[WeightAverage], evaluate: Callable[[], DevEval], config: TrainConfig
) -> tuple[dict[str, Any], WeightAverage | None]:
    """The best of the trained weights (``record``, already scored) and each average, scored
    here and written into ``record["averages"]``; the trained weights win ties."""
    chosen: tuple[dict[str, Any], WeightAverage | None] = (record, None)
    for average in averages:
        with average.applied():
            scored = evaluate()
        score = {"dev_loss": scored.loss, "dev_exact": scored.exact_rate}
        record.setdefault("averages", {})[average.name] = score
        candidate = {"step": record["step"], **score, "weights": average.name}
        if _rank(candidate, config) < _rank(chosen[0], config):
            chosen = (candidate, average)
    return chosen


def _rank(record: dict[str, Any], config: TrainConfig) -> tuple[float, ...]:
    """Lower is better: the dev loss, or with ``select_on="exact"`` the exact match first."""
    if config.select_on == "exact":
        return (-record.get("dev_exact", 0.0), record["dev_loss"])
    return (record["dev_loss"],)


def _progress(total: int, initial: int) -> Any:
    return progress_bar(total, "train", "step", initial=initial)


def _save(
    model: Any,
    tokenizer: Any,
    output_dir: Path,
    config: TrainConfig,
    prompt: PromptFormat,
    records: Sequence[Record],
    metrics: dict[str, float],
) -> None:
    if config.method == "full":
        model.save_pretrained(output_dir)
        tokenizer.save_pretrained(output_dir)
    else:
        # Said outright: peft's "auto" looks for the base's config.json, on the Hub too, and warns
        # when the base is a GGUF (it has none).
        model.save_pretrained(output_dir, save_embedding_layers=_adapts_embeddings(model))
    intents = sorted({r.intent for r in records})
    _update_meta(
        output_dir,
        {
            "base": config.base,
            "model_type": getattr(getattr(model, "config", None), "model_type", None),
            "method": config.method,
            "prompt": prompt.to_dict(),
            "intents": intents,
            "config": config.model_dump(),
            "best": metrics,
        },
    )


def _adapts_embeddings(model: Any) -> bool:
    """Whether a LoRA sits on an embedding (``target_modules`` naming it), whose weights the adapter must then carry."""
    import torch
    from peft.tuners.lora import LoraLayer

    return any(isinstance(m, LoraLayer) and isinstance(m.get_base_layer(), torch.nn.Embedding) for m in model.modules())


def _update_meta(output_dir: Path, values: dict[str, Any]) -> None:
    ModelInfo.load(output_dir).updated(**values).save(output_dir)
    write_model_card(output_dir)  # after save_pretrained, whose generic template it replaces
