"""Out-of-scope detection without out-of-scope training data: the nearest training utterance.

A model fine-tuned on in-scope requests only has never learned to say ``no_intent()``: asked
something else, it names the closest intent, often confidently. Its hidden state tells the two
apart better. :class:`ScopeDetector` keeps the final hidden state at the last prompt token — the
state the first answer token is read from — for every training utterance, L2-normalised, and
measures an utterance by its cosine distance to the nearest one (deep nearest neighbours, Sun et
al., ICML 2022). On SMP2020 dev + dev_oos that distance separates in- from out-of-scope with
AUROC 0.988, the intent confidence with 0.936 (the features compared: docs/design/scope.md).

The threshold is a quantile of the distances of in-scope utterances the index has not seen (a dev
file; without one, each training utterance against the others), so fitting needs no
out-of-scope examples.

With a dev file the model's intent confidence joins the distance (:class:`ConfidenceEvidence`):
each is turned into the share of held-out in-scope utterances at least as far (at most as
confident), and the two shares are combined as in Fisher's method, ``-log p_distance - w·log
p_confidence``; the threshold is the same quantile of that score over the held-out rows. Since the
score is never below its distance term, an utterance whose distance alone passes the threshold is
still turned away before decoding; the others are scored again once the intent is decoded. How much
that helps is measured in docs/design/scope.md.

A detector is fitted for one model: its features mean nothing to another. It is saved as
``scope.npz`` next to the adapter, and the local backends load it from there.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ConfigError, ScopeFileError

__all__ = [
    "DEFAULT_CONFIDENCE_WEIGHT",
    "DEFAULT_QUANTILE",
    "SCOPE_FILE",
    "ConfidenceEvidence",
    "ScopeDetector",
    "ScopeFileError",
    "ScopeVerdict",
    "resolve_scope",
]

SCOPE_FILE = "scope.npz"
DEFAULT_QUANTILE = 0.975
DEFAULT_CONFIDENCE_WEIGHT = 0.5
_FORMAT = 2  # 1: distance only, still read


@dataclass(frozen=True, slots=True)
class ScopeVerdict:
    """One utterance measured: its distance to the nearest training utterance and that one's
    intent. ``score`` is what ``threshold`` bounds: the distance itself, or, for a detector with
    :class:`ConfidenceEvidence`, the combined score (its distance term alone until ``confidence``
    is known)."""

    distance: float
    threshold: float
    nearest_intent: str
    score: float
    confidence: float | None = None
    #: The detector weighs the intent confidence too (``score`` is the combined score).
    combined: bool = False

    @property
    def in_scope(self) -> bool:
        return self.score <= self.threshold

    @property
    def out_of_scope(self) -> bool:
        return not self.in_scope

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view (``score`` and ``confidence`` once the confidence was weighed)."""
        out: dict[str, Any] = {
            "distance": round(self.distance, 5),
            "threshold": round(self.threshold, 5),
            "nearest_intent": self.nearest_intent,
            "out_of_scope": self.out_of_scope,
        }
        if self.combined:
            out.update(score=round(self.score, 5), confidence=self.confidence)
        return out


@dataclass(frozen=True)
class ConfidenceEvidence:
    """The distances and intent confidences of held-out in-scope utterances, against which an
    utterance's own are ranked: ``score = -log p_d - weight·log p_c``, ``p_d`` the share (add-one)
    of those utterances at least as far as it, ``p_c`` the share at most as confident."""

    distances: np.ndarray
    confidences: np.ndarray
    weight: float = DEFAULT_CONFIDENCE_WEIGHT

    def __post_init__(self) -> None:
        distances = np.sort(np.asarray(self.distances, dtype=np.float64))
        confidences = np.sort(np.asarray(self.confidences, dtype=np.float64))
        if distances.ndim != 1 or len(distances) == 0 or distances.shape != confidences.shape:
            raise ValueError(f"need as many distances as confidences, got {distances.shape} and {confidences.shape}")
        if not np.all(np.isfinite(confidences)):
            raise ValueError("confidences must be finite numbers")
        if self.weight < 0:
            raise ValueError(f"weight must be >= 0, got {self.weight}")
        object.__setattr__(self, "distances", distances)
        object.__setattr__(self, "confidences", confidences)

    def score(self, distance: float, confidence: float | None = None) -> float:
        """The combined score; without ``confidence``, its distance term (a lower bound)."""
        n = len(self.distances)
        farther = n - int(np.searchsorted(self.distances, distance, side="left"))
        score = -math.log((1 + farther) / (n + 1))
        if confidence is not None:
            less_sure = int(np.searchsorted(self.confidences, confidence, side="right"))
            score -= self.weight * math.log((1 + less_sure) / (n + 1))
        return score


class ScopeDetector:
    """``ScopeDetector.fit(features, intents, calibration=dev_features)``, then :meth:`check`.

    ``features`` are rows of hidden states (any width), ``intents`` the intent of each row.
    ``threshold`` is the largest cosine distance still in scope or, with ``evidence``, the largest
    combined score; ``info`` records how it was chosen and for which model (saved with the file).
    """

    def __init__(
        self,
        features: np.ndarray,
        intents: Sequence[str],
        threshold: float,
        *,
        info: dict[str, Any] | None = None,
        evidence: ConfidenceEvidence | None = None,
    ):
        features = np.asarray(features, dtype=np.float32)
        if features.ndim != 2 or len(features) == 0:
            raise ValueError(f"features must be a non-empty 2-D array, got shape {features.shape}")
        if len(intents) != len(features):
            raise ValueError(f"{len(features)} feature rows but {len(intents)} intents")
        self.features = _normalise(features)
        self.intents = list(intents)
        self.threshold = float(threshold)
        self.info = dict(info or {})
        self.evidence = evidence

    @property
    def width(self) -> int:
        return int(self.features.shape[1])

    def distances(
        self, features: np.ndarray, *, exclude_self: bool = False, exclude: Sequence[Sequence[int]] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Cosine distance of each row to its nearest indexed row, and that row's index.

        ``exclude_self``: ``features`` are the indexed rows themselves (leave-one-out).
        ``exclude``: per row of ``features``, the indexed rows it is not measured against (its
        own entries, where it is also indexed)."""
        query = self._query(features)
        if exclude_self:
            if exclude is not None:
                raise ValueError("exclude_self and exclude both name the entries to leave out: give one")
            exclude = [[i] for i in range(len(query))]
        if exclude is not None and len(exclude) != len(query):
            raise ValueError(f"exclude names {len(exclude)} rows' entries for {len(query)} rows")
        best = np.empty(len(query), dtype=np.float32)
        where = np.empty(len(query), dtype=np.int64)
        for start in range(0, len(query), 1024):  # bounded memory for large calibration sets
            sims = query[start : start + 1024] @ self.features.T
            for i, entries in enumerate(exclude[start : start + len(sims)] if exclude is not None else ()):
                sims[i, list(entries)] = -np.inf
            where[start : start + len(sims)] = sims.argmax(1)
            best[start : start + len(sims)] = sims.max(1)
        return 1.0 - best, where

    def _query(self, features: np.ndarray) -> np.ndarray:
        """``features`` as normalised rows, checked against the indexed width."""
        query = _normalise(np.atleast_2d(np.asarray(features, dtype=np.float32)))
        if query.shape[1] != self.width:
            raise ValueError(f"features are {query.shape[1]} wide; this detector was fitted on {self.width}")
        return query

    def check(self, feature: np.ndarray) -> ScopeVerdict:
        """Measure one utterance's feature vector.

        ``einsum`` rather than a BLAS product: a multithreaded BLAS leaves its threads spinning
        after the call, and on a 2-core box they took the cores from llama.cpp's decoding (the
        request after each check decoded at half speed)."""
        query = self._query(np.asarray(feature).reshape(1, -1))[0]
        sims = np.einsum("ij,j->i", self.features, query)
        where = int(sims.argmax())
        distance = float(1.0 - sims[where])
        score = self.evidence.score(distance) if self.evidence is not None else distance
        return ScopeVerdict(distance, self.threshold, self.intents[where], score, combined=self.evidence is not None)

    @property
    def uses_confidence(self) -> bool:
        """Whether the intent confidence, once decoded, can still turn an utterance away."""
        return self.evidence is not None

    def with_confidence(self, verdict: ScopeVerdict, confidence: float | None) -> ScopeVerdict:
        """``verdict`` scored again with the decoded intent's confidence (unchanged without evidence
        or without a confidence, as from unconstrained decoding)."""
        if self.evidence is None or confidence is None:
            return verdict
        score = self.evidence.score(verdict.distance, confidence)
        return ScopeVerdict(verdict.distance, verdict.threshold, verdict.nearest_intent, score, confidence, combined=True)

    @classmethod
    def fit(
        cls,
        features: np.ndarray,
        intents: Sequence[str],
        *,
        calibration: np.ndarray | None = None,
        calibration_confidences: Sequence[float] | np.ndarray | None = None,
        calibration_indexed: Sequence[Sequence[int]] | None = None,
        confidence_weight: float = DEFAULT_CONFIDENCE_WEIGHT,
        quantile: float = DEFAULT_QUANTILE,
        info: dict[str, Any] | None = None,
    ) -> ScopeDetector:
        """Index ``features``; the threshold is the ``quantile`` of in-scope distances.

        ``calibration``: features of in-scope utterances the model was not trained on (a dev file,
        the rows held back from training). Without it, each indexed row is measured against the
        others. ``calibration_indexed``: per calibration row, the indexed rows that are the same
        utterance (none for most dev files), left out when it is measured: the held-back rows can
        join the index and still set the threshold, each as an utterance the index has not seen.
        ``calibration_confidences``: the
        model's intent confidence for each calibration row; with them the threshold bounds the
        combined score (:class:`ConfidenceEvidence`, ``confidence_weight``) instead of the
        distance. ``quantile`` is the share of such in-scope utterances kept in scope (0.975:
        2.5 % are turned away)."""
        if not 0 < quantile <= 1:
            raise ValueError(f"quantile must be in (0, 1], got {quantile}")
        detector = cls(features, intents, threshold=np.inf)
        if calibration_confidences is not None and (calibration is None or len(calibration_confidences) != len(calibration)):
            raise ValueError("calibration_confidences needs one confidence per calibration row")
        if calibration_indexed is not None and (calibration is None or len(calibration_indexed) != len(calibration)):
            raise ValueError("calibration_indexed needs one list of indexed rows per calibration row")
        if calibration is not None and len(calibration):
            distances, _ = detector.distances(calibration, exclude=calibration_indexed)
            if not np.all(np.isfinite(distances)):
                raise ConfigError("a calibration utterance is every indexed row: nothing else to measure it against")
            source = f"{len(calibration)} held-out in-scope utterances"
            indexed_too = sum(bool(rows) for rows in calibration_indexed or ())
            if indexed_too:
                source += f", {indexed_too} of them also indexed and measured against the others"
            if calibration_confidences is not None:
                evidence = ConfidenceEvidence(distances, np.asarray(calibration_confidences), confidence_weight)
                distances = np.array([evidence.score(d, c) for d, c in zip(distances, calibration_confidences, strict=True)])
                detector.evidence = evidence
                source += f" (distance and intent confidence, weight {confidence_weight})"
        elif len(detector.features) > 1:
            distances, _ = detector.distances(detector.features, exclude_self=True)
            source = f"{len(detector.features)} training utterances, leave-one-out"
        else:
            raise ConfigError("one training utterance and no calibration set: cannot choose a threshold")
        detector.threshold = float(np.quantile(distances, quantile))
        detector.info = {**(info or {}), "quantile": quantile, "calibrated_on": source}
        return detector

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        arrays: dict[str, Any] = {
            "features": self.features.astype(np.float16),
            "intents": np.array(self.intents),
            "threshold": np.float64(self.threshold),
            "info": np.array(json.dumps({"format": _FORMAT, **self.info}, ensure_ascii=False)),
        }
        if self.evidence is not None:
            arrays["calibration_distances"] = self.evidence.distances
            arrays["calibration_confidences"] = self.evidence.confidences
            arrays["confidence_weight"] = np.float64(self.evidence.weight)
        np.savez_compressed(path, **arrays)
        return path

    @classmethod
    def load(cls, path: str | Path, *, width: int | None = None) -> ScopeDetector:
        """Read a ``scope.npz``; ``width`` (the model's hidden size) is checked when given."""
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as data:
                features, intents = data["features"], [str(x) for x in data["intents"]]
                threshold, info = float(data["threshold"]), json.loads(str(data["info"]))
                evidence = None
                if "calibration_distances" in data.files:
                    evidence = ConfidenceEvidence(
                        data["calibration_distances"], data["calibration_confidences"], float(data["confidence_weight"])
                    )
        except FileNotFoundError:
            raise
        except (OSError, KeyError, ValueError) as exc:
            raise ScopeFileError(f"{path}: not an intentkit scope file ({exc})") from None
        if info.get("format") not in (1, _FORMAT):
            raise ScopeFileError(f"{path}: scope file format {info.get('format')!r}, this intentkit reads 1 and {_FORMAT}")
        if width is not None and features.shape[1] != width:
            raise ScopeFileError(
                f"{path}: fitted on {features.shape[1]}-wide features, the model's are {width} wide (another model?)"
            )
        info.pop("format")
        return cls(features.astype(np.float32), intents, threshold, info=info, evidence=evidence)

    def __repr__(self) -> str:
        on = " on distance and confidence" if self.evidence is not None else ""
        return (
            f"ScopeDetector({len(self.intents)} utterances, {len(set(self.intents))} intents, threshold={self.threshold:.4f}{on})"
        )


def _normalise(rows: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return rows / np.maximum(norms, 1e-12)


def resolve_scope(scope: ScopeDetector | str | Path | None, model_dir: Path | None, width: int) -> ScopeDetector | None:
    """What a backend's ``scope=`` argument means: ``"auto"`` loads ``scope.npz`` from the
    model's directory when there is one; a path loads that file; ``None`` turns detection off."""
    if scope is None or isinstance(scope, ScopeDetector):
        detector = scope
    elif scope == "auto":
        path = model_dir / SCOPE_FILE if model_dir is not None else None
        detector = ScopeDetector.load(path, width=width) if path is not None and path.is_file() else None
    else:
        detector = ScopeDetector.load(Path(scope), width=width)
    return detector  # a passed-in detector's width is checked where it is installed (LocalGenerator.set_scope)
