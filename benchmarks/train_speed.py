"""Training speed: intentkit's trainer against a plain transformers ``Trainer`` on the same data.

    python benchmarks/train_speed.py --train ../shared/datasets/smp2020/train.jsonl --steps 30

Both train the same LoRA (rank ``--lora-r`` on all linear layers, lr 3e-4) over the default base
(or ``--base``) for ``--steps`` optimizer steps of ``--batch-size`` examples, drawn from the
training file in one fixed order, and each starts from its own copy of the freshly loaded base.
The plain run is what the seed recipe does: peft's LoRA, ``Trainer``, and a seq2seq collator that
pads each batch and masks the prompt's labels — the model still computes the 262k-row LM head at
every position. intentkit's run is :func:`trainers.train.train` with its defaults (the head on
answer tokens only, the batch's shared prompt prefix evaluated once, length-grouped batches, bf16
autocast where the CPU or GPU computes in bf16, and — over a GGUF base — the softmax over the
vocabulary the deployment is trimmed to, as ``intentkit train`` runs it). ``--variants`` adds
intentkit's trainer with each of those two switched off, side by side in the same run:

    python benchmarks/train_speed.py --train ../shared/datasets/smp2020/train.jsonl --steps 30 --variants

``--ranks 16,64`` instead runs intentkit's trainer alone at each LoRA rank, side by side on the same
batches (what a rank costs in training time):

    python benchmarks/train_speed.py --train ../shared/datasets/smp2020/train.jsonl --steps 15 --ranks 16,64

Tokens are counted the same way for all: the examples' unpadded lengths. Prints tokens/s of each
and the ratios; ``--json`` also writes them to a file.
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from intentkit import PromptFormat  # noqa: E402
from trainers.data import Record  # noqa: E402
from trainers.train import TrainConfig  # noqa: E402


def sample(records: Sequence[Record], steps: int, batch_size: int, seed: int = 0) -> list[Record]:
    """``steps`` batches' worth of records in one fixed shuffled order (repeated if the file is short)."""
    order = list(records)
    random.Random(seed).shuffle(order)
    needed = steps * batch_size
    return (order * (needed // len(order) + 1))[:needed]


def plain_trainer(records: Sequence[Record], model: Any, tokenizer: Any, config: TrainConfig) -> dict:
    """The seed recipe's run: transformers ``Trainer`` over the LoRA intentkit's trainer wraps the
    model in (the same peft configuration); tokens/s over ``train()``."""
    import torch
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

    from trainers.train import _wrap, encode_records

    steps = len(records) // config.batch_size

    examples, _ = encode_records(records, tokenizer, PromptFormat())
    rows = [  # the loss on the answer only, as intentkit's; the LM head still runs at every position
        {
            "input_ids": e.input_ids,
            "attention_mask": [1] * len(e.input_ids),
            "labels": [-100] * e.answer_start + e.input_ids[e.answer_start :],
        }
        for e in examples
    ]
    model = _wrap(model, config)
    with tempfile.TemporaryDirectory() as scratch:
        args = TrainingArguments(
            output_dir=scratch,
            max_steps=steps,
            per_device_train_batch_size=config.batch_size,
            learning_rate=config.learning_rate,
            warmup_steps=int(steps * config.warmup_ratio),  # as intentkit warms up
            logging_strategy="no",
            save_strategy="no",
            report_to=[],
            disable_tqdm=True,
            use_cpu=not torch.cuda.is_available(),
            seed=config.seed,
        )
        trainer = Trainer(
            model=model,
            args=args,
            train_dataset=rows,
            data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100),
        )
        started = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - started
    tokens = sum(len(row["input_ids"]) for row in rows)
    return {"steps": steps, "tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds}


def intentkit_trainer(
    records: Sequence[Record], model: Any, tokenizer: Any, config: TrainConfig, vocabulary: Sequence[int] | None = None
) -> dict:
    """The same records through :func:`trainers.train.train` (one epoch)."""
    from trainers.train import train

    with tempfile.TemporaryDirectory() as scratch:
        result = train(records, scratch, config, model_and_tokenizer=(model, tokenizer), progress=False, vocabulary=vocabulary)
        precision = json.loads((Path(scratch) / "intentkit.json").read_text(encoding="utf-8"))["precision"]
    return {
        "steps": result.steps,
        "tokens": result.train_tokens,
        "seconds": result.seconds,
        "tokens_per_s": result.tokens_per_second,
        "precision": precision,
        "softmax_vocabulary": len(result.vocabulary) if result.vocabulary is not None else None,
        "final_loss": result.history[-1]["loss"] if result.history else None,
    }


# intentkit's trainer with one of its speed-ups switched off (config overrides, trimmed head or not)
VARIANTS: dict[str, tuple[dict[str, Any], bool]] = {
    "fp32, whole head": ({"precision": "fp32"}, False),
    "bf16, whole head": ({"precision": "bf16"}, False),
    "fp32, trimmed head": ({"precision": "fp32"}, True),
}


def measure(
    records: Sequence[Record],
    model: Any,
    tokenizer: Any,
    *,
    steps: int,
    batch_size: int = 8,
    lora_r: int = 16,
    vocabulary: Sequence[int] | None = None,
    variants: bool = False,
) -> dict:
    """The runs, each on its own copy of ``model``: intentkit's defaults (over ``vocabulary`` when
    given, as ``intentkit train`` trains over a GGUF base), with ``variants`` each of
    :data:`VARIANTS`, then the plain one."""
    chosen = sample(records, steps, batch_size)
    config = TrainConfig(epochs=1, batch_size=batch_size, lora_r=lora_r, lora_alpha=2 * lora_r)
    ours = intentkit_trainer(chosen, copy.deepcopy(model), tokenizer, config, vocabulary)
    others = {}
    for name, (overrides, trimmed) in VARIANTS.items() if variants else ():
        if trimmed and vocabulary is None:
            continue
        varied = config.model_copy(update=overrides)
        others[name] = intentkit_trainer(chosen, copy.deepcopy(model), tokenizer, varied, vocabulary if trimmed else None)
    plain = plain_trainer(chosen, copy.deepcopy(model), tokenizer, config)
    return {
        "intentkit": ours,
        "variants": others,
        "plain_trainer": plain,
        "speed_up": ours["tokens_per_s"] / plain["tokens_per_s"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", required=True, type=Path, help="training data (any format intentkit train reads)")
    parser.add_argument("--steps", type=int, default=30, help="optimizer steps of each run")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument("--base", default="default", help="'default', an HF model directory or a GGUF file")
    parser.add_argument("--variants", action="store_true", help="also intentkit's trainer with bf16 or the trimmed head off")
    parser.add_argument("--ranks", help="comma-separated LoRA ranks: intentkit's trainer at each, nothing else")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if args.steps < 1 or args.batch_size < 1:
        parser.error("--steps and --batch-size must be at least 1")

    from trainers.data import load_records
    from trainers.train import load_base

    records = load_records(args.train)
    started = time.perf_counter()
    model, tokenizer = load_base(args.base)
    print(f"base loaded in {time.perf_counter() - started:.1f} s; {args.steps} steps × {args.batch_size} examples each run")
    vocabulary = None
    if args.base == "default" or args.base.endswith(".gguf"):  # intentkit train trims the deployment's vocabulary
        from trainers.export import deployment_vocabulary

        vocabulary = deployment_vocabulary(records, base=None if args.base == "default" else args.base).tolist()
    if args.ranks:
        chosen = sample(records, args.steps, args.batch_size)
        figures = {}
        for rank in (int(r) for r in args.ranks.split(",")):
            config = TrainConfig(epochs=1, batch_size=args.batch_size, lora_r=rank, lora_alpha=2 * rank)
            figures[f"r={rank}"] = run = intentkit_trainer(chosen, copy.deepcopy(model), tokenizer, config, vocabulary)
            first = next(iter(figures.values()))
            print(
                f"r={rank:<4} {run['tokens']:7d} tokens in {run['seconds']:6.1f} s = {run['tokens_per_s']:6.1f} tokens/s"
                f"  ({first['tokens_per_s'] / run['tokens_per_s']:.2f}× the first rank's time per token)"
            )
        if args.json:
            args.json.write_text(json.dumps(figures, indent=2), encoding="utf-8")
        return
    figures = measure(
        records,
        model,
        tokenizer,
        steps=args.steps,
        batch_size=args.batch_size,
        lora_r=args.lora_r,
        vocabulary=vocabulary,
        variants=args.variants,
    )
    ours = figures["intentkit"]
    runs = {
        f"intentkit ({ours['precision']}, {'trimmed' if ours['softmax_vocabulary'] else 'whole'} head)": ours,
        **{f"intentkit ({name})": run for name, run in figures["variants"].items()},
        "plain Trainer": figures["plain_trainer"],
    }
    for name, run in runs.items():
        ratio = ours["tokens_per_s"] / run["tokens_per_s"]
        print(
            f"{name:32} {run['tokens']:7d} tokens in {run['seconds']:6.1f} s = {run['tokens_per_s']:6.1f} tokens/s"
            + ("" if run is ours else f"  (defaults: {ratio:.2f}×)")
        )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
