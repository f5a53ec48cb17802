"""Fit the out-of-scope detector (:mod:`intentkit.scope`) for a trained model.

    intentkit export runs/mine --scope-from train.jsonl --scope-calibrate dev.jsonl

Every in-scope training utterance is run through the deployment backend's prompt (no decoding) and
its hidden state is indexed; the threshold comes from the in-scope rows of the calibration file
(or, without one, from the training utterances left out one at a time). Out-of-scope rows
(``output: null``) are not indexed: the model already answers ``no_intent()`` for what they cover.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from intentkit.scope import DEFAULT_QUANTILE, ScopeDetector

from .data import Record, build_registry

__all__ = ["fit_scope"]


def fit_scope(
    backend: Any,
    records: Sequence[Record],
    *,
    calibration: Sequence[Record] = (),
    quantile: float = DEFAULT_QUANTILE,
    progress: Callable[[int, int], None] | None = None,
) -> ScopeDetector:
    """Index ``records``' in-scope utterances through ``backend`` (one with ``hidden_state``:
    llama.cpp or transformers) and calibrate the threshold on ``calibration``'s in-scope rows."""
    if not hasattr(backend, "hidden_state"):
        raise TypeError(f"{type(backend).__name__} exposes no hidden states; use the llama.cpp or transformers backend")
    indexed = [r for r in records if r.calls]
    if not indexed:
        where = records[0].source.rsplit(":", 1)[0] if records else "the training data"
        raise ValueError(f"{where}: no in-scope rows to index")
    held_out = [r for r in calibration if r.calls]
    catalog = build_registry(records).catalog
    total = len(indexed) + len(held_out)

    def features(rows: Sequence[Record], done: int) -> np.ndarray:
        out = []
        for i, record in enumerate(rows, 1):
            out.append(backend.hidden_state(record.instruction, catalog))
            if progress:
                progress(done + i, total)
        return np.stack(out)

    train_features = features(indexed, 0)
    calibration_features = features(held_out, len(indexed)) if held_out else None
    intents = ["+".join(call.name for call in r.calls) for r in indexed]
    info = {"model": str(getattr(backend, "loaded_path", "") or getattr(backend, "source", "")), "indexed": len(indexed)}
    return ScopeDetector.fit(train_features, intents, calibration=calibration_features, quantile=quantile, info=info)
