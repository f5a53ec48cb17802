"""What the out-of-scope detector's settings cost and buy, measured once per utterance and then
swept: each row of the files is run through a trained model's llama.cpp deployment once (its
hidden state and its decoded answer, the detector off), and every (quantile, confidence weight)
pair is then applied offline: the threshold calibrated on ``--choose`` (the held-back slice
``intentkit train`` wrote, ``holdout.jsonl``), the figures read on ``--dev`` files.

    python benchmarks/scope_sweep.py --model runs/smp --choose runs/smp/holdout.jsonl \\
        --dev ../shared/datasets/smp2020/dev.jsonl --dev ../shared/datasets/smp2020/dev_oos.jsonl

The detector's index is the model's own ``scope.npz`` (its training utterances; a held-back row it
also holds is measured against the other rows, as ``intentkit train`` calibrates). Prints, for each
setting, the in-scope intent accuracy it leaves (and what the model alone scores), the share of
the held-back slice it turns away, and out-of-scope precision / recall / F1.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# Cosine distance below which an indexed row is the utterance itself (the same prompt's state,
# up to the batch's rounding: under 2e-7 on SMP2020's held-back rows, whose nearest other row is 5e-4 away).
_SAME_STATE = 1e-5


def measure(backend: Any, registry: Any, records: list[Any], detector: Any) -> list[dict[str, Any]]:
    from intentkit.calls import NO_INTENT
    from intentkit.parser import parse_calls_lenient
    from trainers.evaluate import backend_predictor

    predict = backend_predictor(backend, registry, backend.prompt)
    rows = []
    for record in records:
        feature = backend.hidden_state(record.instruction, registry.catalog)
        # An utterance the index holds (intentkit train indexes its held-back rows too) is measured
        # against the other rows, as the detector was calibrated: its own entries have its state.
        unit = feature / np.linalg.norm(feature)
        own = np.flatnonzero(1.0 - detector.features @ unit < _SAME_STATE)
        distance = float(detector.distances(feature.reshape(1, -1), exclude=[own.tolist()])[0][0])
        answer = predict(record.instruction)
        calls = [c for c in parse_calls_lenient(answer.text).calls if c.name != NO_INTENT]
        rows.append(
            {
                "gold": record.intent,
                "predicted": calls[0].name if calls else NO_INTENT,
                "confidence": answer.confidence,
                "distance": distance,
            }
        )
    return rows


def apply(rows: list[dict[str, Any]], evidence: Any, threshold: float, weight: float) -> list[str]:
    from intentkit.calls import NO_INTENT
    from intentkit.scope import ConfidenceEvidence

    out = []
    for row in rows:
        if isinstance(evidence, ConfidenceEvidence):
            score = ConfidenceEvidence(evidence.distances, evidence.confidences, weight).score(row["distance"], row["confidence"])
        else:
            score = row["distance"]
        out.append(NO_INTENT if score > threshold else row["predicted"])
    return out


def figures(rows: list[dict[str, Any]], predicted: list[str]) -> dict[str, float]:
    from intentkit.calls import NO_INTENT

    in_scope = [(r, p) for r, p in zip(rows, predicted, strict=True) if r["gold"] != NO_INTENT]
    tp = sum(r["gold"] == NO_INTENT and p == NO_INTENT for r, p in zip(rows, predicted, strict=True))
    said = sum(p == NO_INTENT for p in predicted)
    real = sum(r["gold"] == NO_INTENT for r in rows)
    precision, recall = (tp / said if said else 0.0), (tp / real if real else 0.0)
    return {
        "in_scope_intent": sum(r["gold"] == p for r, p in in_scope) / len(in_scope),
        "oos_precision": precision,
        "oos_recall": recall,
        "oos_f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
    }


def main() -> None:
    from intentkit.backends.llamacpp import LlamaCppBackend
    from intentkit.scope import ConfidenceEvidence, ScopeDetector
    from trainers.data import build_registry, load_records

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, type=Path)
    parser.add_argument("--train", type=Path, help="the training file (its registry); default: the model's holdout's")
    parser.add_argument("--choose", required=True, type=Path, help="in-scope rows to calibrate on (holdout.jsonl)")
    parser.add_argument("--dev", action="append", required=True, type=Path)
    parser.add_argument("--quantiles", default="0.95,0.975,0.99,0.995,1.0")
    parser.add_argument("--weights", default="0,0.5,1,2")
    parser.add_argument("--out", type=Path, help="write the sweep as JSON here")
    args = parser.parse_args()

    choose = [r for r in load_records(args.choose) if r.calls]
    dev = [r for path in args.dev for r in load_records(path)]
    registry = build_registry(load_records(args.train) if args.train else [*choose, *dev])
    detector = ScopeDetector.load(args.model / "scope.npz")
    with LlamaCppBackend.from_model_dir(args.model, scope=None) as backend:
        held = measure(backend, registry, choose, detector)
        measured = measure(backend, registry, dev, detector)
    model_alone = figures(measured, [r["predicted"] for r in measured])
    print(f"model alone: {json.dumps({k: round(v, 4) for k, v in model_alone.items()})}")
    distances = np.array([r["distance"] for r in held])
    confidences = np.array([r["confidence"] for r in held], dtype=np.float64)
    results = []
    for weight in (float(w) for w in args.weights.split(",")):
        evidence: Any = ConfidenceEvidence(distances, confidences, weight) if weight > 0 else None
        scores = np.array([evidence.score(d, c) for d, c in zip(distances, confidences, strict=True)]) if evidence else distances
        for quantile in (float(q) for q in args.quantiles.split(",")):
            threshold = float(np.quantile(scores, quantile))
            on_held = apply(held, evidence, threshold, weight)
            turned_away = sum(p == "no_intent" and r["predicted"] != "no_intent" for r, p in zip(held, on_held, strict=True))
            result = {
                "weight": weight,
                "quantile": quantile,
                "threshold": round(threshold, 4),
                "held_back_turned_away": round(turned_away / len(held), 4),
                **{k: round(v, 4) for k, v in figures(measured, apply(measured, evidence, threshold, weight)).items()},
            }
            results.append(result)
            print(json.dumps(result))
    if args.out:
        args.out.write_text(json.dumps({"model_alone": model_alone, "sweep": results}, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
