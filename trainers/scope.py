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

    A calibration row whose utterance is also among ``records`` is measured against the other
    indexed rows, not its own entry: the rows ``intentkit train`` held back are indexed with the
    rest and still calibrate as utterances the index has not seen, and a whole training file may be
    given beside the rows held back from it. With calibration rows and ``confidence_weight > 0``
    each of them is also decoded (with the backend's detector off) for its intent confidence; a
    backend that reports none (unconstrained decoding) gives a distance-only detector, as does no
    calibration file."""
    if not hasattr(backend, "hidden_state"):
        raise TypeError(f"{type(backend).__name__} exposes no hidden states; use the llama.cpp or transformers backend")
    indexed = [r for r in records if r.calls]
    if not indexed:
        where = records[0].source.rsplit(":", 1)[0] if records else "the training data"
        raise DataError(where, "no in-scope rows to index")
    held_out = [r for r in calibration if r.calls]
    entries: dict[str, list[int]] = {}
    for i, record in enumerate(indexed):
        entries.setdefault(record.instruction, []).append(i)
    also_indexed = [entries.get(r.instruction, []) for r in held_out]
    registry = build_registry(records)
    catalog = registry.catalog
    weigh_confidence = bool(held_out) and confidence_weight > 0
    unseen = [r for r, rows in zip(held_out, also_indexed, strict=True) if not rows]
    total = len(indexed) + len(unseen) + (len(held_out) if weigh_confidence else 0)

    def features(rows: Sequence[Record], done: int) -> list[np.ndarray]:
        out = []
        for i, record in enumerate(rows, 1):
            out.append(backend.hidden_state(record.instruction, catalog))
            if progress:
                progress(done + i, total)
        return out

    train_features = np.stack(features(indexed, 0))
    measured = iter(features(unseen, len(indexed)))
    # A calibration row that is indexed has its hidden state there already.
    calibration_features = (
        np.stack([train_features[rows[0]] if rows else next(measured) for rows in also_indexed]) if held_out else None
    )
    confidences = None
    if weigh_confidence:
        confidences = _confidences(backend, held_out, registry, len(indexed) + len(unseen), total, progress)
    intents = ["+".join(call.name for call in r.calls) for r in indexed]
    info = {"model": str(getattr(backend, "loaded_path", "") or getattr(backend, "source", "")), "indexed": len(indexed)}
    return ScopeDetector.fit(
        train_features,
        intents,
        calibration=calibration_features,
        calibration_confidences=confidences,
        calibration_indexed=also_indexed if any(also_indexed) else None,
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
