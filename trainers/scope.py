"""Fit the out-of-scope detector (:mod:`intentkit.scope`) for a trained model.

    intentkit export runs/mine --scope-from train.jsonl --scope-calibrate dev.jsonl

Every in-scope training utterance is run through the deployment backend's prompt (no decoding) and
its hidden state is indexed; the threshold comes from the in-scope rows of the calibration file
(or, without one, from the training utterances left out one at a time). The calibration rows are
also decoded once, for the model's intent confidence, which the detector then weighs with the
distance (:class:`intentkit.scope.ConfidenceEvidence`; ``confidence_weight=0`` keeps the distance
alone). Out-of-scope rows (``output: null``) are not indexed: the model already answers
``no_intent()`` for what they cover.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from intentkit import Generation
from intentkit.errors import DataError
from intentkit.scope import DEFAULT_CONFIDENCE_WEIGHT, DEFAULT_QUANTILE, ScopeDetector

from .data import Record, build_registry
from .evaluate import backend_predictor

__all__ = ["fit_scope"]


def fit_scope(
    backend: Any,
    records: Sequence[Record],
    *,
    calibration: Sequence[Record] = (),
    quantile: float = DEFAULT_QUANTILE,
    confidence_weight: float = DEFAULT_CONFIDENCE_WEIGHT,
    progress: Callable[[int, int], None] | None = None,
) -> ScopeDetector:
    """Index ``records``' in-scope utterances through ``backend`` (one with ``hidden_state``:
    llama.cpp or transformers) and calibrate the threshold on ``calibration``'s in-scope rows.

    With calibration rows and ``confidence_weight > 0`` each of them is also decoded (with the
    backend's detector off) for its intent confidence; a backend that reports none (unconstrained
    decoding) gives a distance-only detector, as does no calibration file."""
    if not hasattr(backend, "hidden_state"):
        raise TypeError(f"{type(backend).__name__} exposes no hidden states; use the llama.cpp or transformers backend")
    indexed = [r for r in records if r.calls]
    if not indexed:
        where = records[0].source.rsplit(":", 1)[0] if records else "the training data"
        raise DataError(where, "no in-scope rows to index")
    held_out = [r for r in calibration if r.calls]
    registry = build_registry(records)
    catalog = registry.catalog
    weigh_confidence = bool(held_out) and confidence_weight > 0
    total = len(indexed) + len(held_out) * (2 if weigh_confidence else 1)

    def features(rows: Sequence[Record], done: int) -> np.ndarray:
        out = []
        for i, record in enumerate(rows, 1):
            out.append(backend.hidden_state(record.instruction, catalog))
            if progress:
                progress(done + i, total)
        return np.stack(out)

    train_features = features(indexed, 0)
    calibration_features = features(held_out, len(indexed)) if held_out else None
    confidences = None
    if weigh_confidence:
        confidences = _confidences(backend, held_out, registry, len(indexed) + len(held_out), total, progress)
    intents = ["+".join(call.name for call in r.calls) for r in indexed]
    info = {"model": str(getattr(backend, "loaded_path", "") or getattr(backend, "source", "")), "indexed": len(indexed)}
    return ScopeDetector.fit(
        train_features,
        intents,
        calibration=calibration_features,
        calibration_confidences=confidences,
        confidence_weight=confidence_weight,
        quantile=quantile,
        info=info,
    )


def _confidences(
    backend: Any, rows: Sequence[Record], registry: Any, done: int, total: int, progress: Callable[[int, int], None] | None
) -> list[float] | None:
    """The intent confidence the backend decodes for each row, its own detector off; ``None`` when
    it reports none."""
    predict = backend_predictor(backend, registry, backend.prompt)
    detector = getattr(backend, "scope", None)
    if detector is not None:
        backend.set_scope(None)
    try:
        out = []
        for i, record in enumerate(rows, 1):
            answer = predict(record.instruction)
            confidence = answer.confidence if isinstance(answer, Generation) else None
            if confidence is None:
                return None
            out.append(float(confidence))
            if progress:
                progress(done + i, total)
        return out
    finally:
        if detector is not None:
            backend.set_scope(detector)
