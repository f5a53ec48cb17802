"""Accuracy run: train the default base on one file, evaluate on others (paths are arguments).

    python benchmarks/accuracy.py --train ../shared/datasets/smp2020/train.jsonl \\
        --dev ../shared/datasets/smp2020/dev.jsonl --dev ../shared/datasets/smp2020/dev_oos.jsonl \\
        --out runs/smp2020

Runs what ``intentkit train`` runs (:func:`trainers.pipeline.build_model`: train a LoRA adapter
or, ``--method full``, all weights but the embeddings, with ``--epochs``, ``--lr``, … as in
``intentkit train``; export it for llama.cpp; unless ``--no-scope``, fit the out-of-scope detector
on the training utterances). Everything the run chooses — early stopping, the weights kept, the
detector's threshold — is chosen on ``--holdout`` of the training rows (``holdout.jsonl``), as
``intentkit train`` does by default; ``--holdout 0`` chooses on the first ``--dev`` file instead,
whose figures then read high. Then it
evaluates every ``--dev`` file (and all of them together) through the model's llama.cpp deployment
(:meth:`LlamaCppBackend.from_model_dir`, the one ``intentkit eval --model DIR`` runs) with
constrained decoding and a registry derived from the training file. ``--skip-train`` evaluates an
existing ``--out``. Reports land in ``--out`` as ``eval-<name>/report.{json,md}``;
the summary is printed.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", required=True, type=Path)
    parser.add_argument("--dev", action="append", type=Path, required=True, help="evaluation file (repeatable)")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument("--method", choices=["lora", "full"], default="lora")
    parser.add_argument(
        "--swap-copies", type=int, default=0, help="add N recombined copies of each row (trainers.augment.swap_values)"
    )
    parser.add_argument("--seed", type=int, default=42, help="seed for the adapter's initial weights and the batch order")
    parser.add_argument("--select-on", choices=["loss", "exact"], default="loss", help="what picks the weights kept")
    parser.add_argument(
        "--argument-order", choices=["utterance", "as_given"], default="as_given", help="keyword order in the answers trained on"
    )
    parser.add_argument(
        "--limit", type=int, default=0, help="evaluate (and calibrate the detector on) the first N records of each file"
    )
    parser.add_argument("--unconstrained", action="store_true", help="greedy decoding without constraints")
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--no-scope", action="store_true", help="no out-of-scope detector")
    parser.add_argument("--scope-quantile", type=float, default=0.975)
    parser.add_argument("--holdout", type=float, default=0.1, help="share of the training rows held back to choose on")
    args = parser.parse_args()

    from intentkit.backends.llamacpp import LlamaCppBackend
    from trainers.augment import swap_values
    from trainers.card import write_model_card
    from trainers.config import TrainConfig
    from trainers.data import build_registry, load_records
    from trainers.evaluate import backend_predictor, percent, predict_records, score
    from trainers.pipeline import build_model, fit_model_scope

    records = load_records(args.train)
    dev_sets = {path.stem: load_records(path) for path in args.dev}
    # --limit: a quick run all through; with a held-back slice the pipeline calibrates on it
    calibration = None if args.holdout else next(iter(dev_sets.values()))[: args.limit or None]
    if not args.skip_train:
        config = TrainConfig(
            epochs=args.epochs,
            learning_rate=args.lr,
            batch_size=args.batch_size,
            method=args.method,
            lora_r=args.lora_r,
            select_on=args.select_on,
            seed=args.seed,
            argument_order=args.argument_order,
        )
        extra = swap_values(records, copies=args.swap_copies) if args.swap_copies else []
        if extra:
            print(f"swap_values: {len(extra)} recombined rows added to {len(records)}")
        # Choices are made on the held-back slice (or, --holdout 0, the first dev file).
        started = time.perf_counter()
        built = build_model(
            [*records, *extra],
            args.out,
            config,
            dev=next(iter(dev_sets.values())),
            holdout=args.holdout,
            scope=not args.no_scope,
            calibration=calibration,
            scope_quantile=args.scope_quantile,
        )
        result = built.train
        print(f"trained: {result.steps} steps, {result.tokens_per_second:.0f} tokens/s, {result.seconds / 60:.1f} min")
        print(f"kept: {result.kept}; exported and fitted in {time.perf_counter() - started - result.seconds:.0f} s")
    elif not args.no_scope:  # an existing model: the detector is fitted again as the options say
        start = time.perf_counter()
        from trainers.pipeline import HOLDOUT_FILE

        held = args.out / HOLDOUT_FILE
        chosen_on = load_records(held) if calibration is None and held.is_file() else (calibration or [])
        kept_back = {(r.instruction, r.output) for r in chosen_on} if calibration is None else set()  # never indexed
        indexed = [r for r in records if (r.instruction, r.output) not in kept_back]
        detector = fit_model_scope(args.out, indexed, chosen_on, quantile=args.scope_quantile)
        print(f"out-of-scope detector: {detector!r}, {time.perf_counter() - start:.0f} s")
    registry = build_registry(records)
    constrained = not args.unconstrained
    scope = None if args.no_scope else "auto"
    backend = LlamaCppBackend.from_model_dir(args.out, constrained=constrained, scope=scope)
    predict = backend_predictor(backend, registry, backend.prompt)
    suffix = ("-unconstrained" if args.unconstrained else "") + ("-noscope" if args.no_scope else "")
    everything = []
    for name, dev in dev_sets.items():
        predictions = predict_records(dev[: args.limit or None], predict)
        everything += predictions
        report = score(predictions)
        report.save(args.out / f"eval-{name}{suffix}")
        print(f"\n== {name} ==\n{report.summary()}")
    if len(dev_sets) > 1:  # all files together: in-scope accuracy and out-of-scope F1 in one report
        report = score(everything)
        report.save(args.out / f"eval-all{suffix}")
        print(f"\n== all ==\n{report.summary()}")
    if any(p.confidence is not None for p in everything):
        print("\n== confidence threshold (answers below it count as no_intent) ==")
        print("| threshold | intent acc. | in-scope intent acc. | exact call | OOS P | OOS R | OOS F1 |")
        print("|---|---|---|---|---|---|---|")
        for threshold in (0.0, 0.5, 0.7, 0.8, 0.9, 0.95, 0.99):
            cut = [
                dataclasses.replace(p, calls=[]) if p.confidence is not None and p.confidence < threshold else p
                for p in everything
            ]
            r = score(cut)
            oos = r.out_of_scope or {"precision": 0.0, "recall": 0.0, "f1": 0.0}
            print(
                f"| {threshold} | {r.intent_accuracy:.2%} | {percent(r.in_scope_intent_accuracy)} | "
                f"{r.exact_call_accuracy:.2%} | "
                f"{oos['precision']:.2%} | {oos['recall']:.2%} | {oos['f1']:.3f} |"
            )
    if not args.no_scope and any(not p.record.in_scope for p in everything):
        separation(backend, predict, [p.record for p in everything])
    backend.close()
    write_model_card(args.out)


def separation(backend: Any, predict: Any, records: list[Any]) -> None:
    """How well each signal tells in-scope from out-of-scope rows (AUROC, 0.5 = chance): the
    detector's distance, the model's intent confidence (decoded with the detector off) and, for a
    detector that weighs both, its combined score."""
    import numpy as np

    detector = backend.scope
    backend.set_scope(None)
    try:
        confidence = np.array([predict(r.instruction).confidence or 0.0 for r in records])
        distance, _ = detector.distances(np.stack([backend.hidden_state(r.instruction) for r in records]))
    finally:
        backend.set_scope(detector)
    out = np.array([not r.in_scope for r in records])
    print("\n== in-scope vs out-of-scope separation (AUROC) ==")
    line = f"intent confidence: {auroc(-confidence, out):.3f}; nearest-utterance distance: {auroc(distance, out):.3f}"
    if detector.evidence is not None:
        combined = np.array([detector.evidence.score(d, c) for d, c in zip(distance, confidence, strict=True)])
        line += f"; the detector's combined score: {auroc(combined, out):.3f}"
    print(line)


def auroc(scores: Any, positive: Any) -> float:
    """Probability that a positive row scores above a negative one (ties count half)."""

    pos, neg = scores[positive], scores[~positive]
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (len(pos) * len(neg)))


if __name__ == "__main__":
    main()
