"""Answering known utterances without the model.

Utterances registered as ``examples=`` are indexed by their normalised text. An exact match
answers at once; otherwise the closest example (rapidfuzz ratio) answers only if it scores above
the threshold *and* beats the best example of every other intent by a margin, so that
"把灯调亮一点" never fuzzily answers for "把灯调暗一点".
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from rapidfuzz import fuzz, process

from .calls import Call
from .registry import BoundCall, IntentSpec
from .text import normalize_utterance

__all__ = ["FastMatch", "FastPath"]


@dataclass(frozen=True, slots=True)
class FastMatch:
    """The example that answered: its bound call, the similarity (0–100) and whether it was exact."""

    bound: BoundCall
    example: str
    score: float
    exact: bool


class FastPath:
    """An index of example utterances. ``threshold`` and ``margin`` are rapidfuzz ratios (0–100);
    utterances shorter than ``min_fuzzy_chars`` (after normalising) must match exactly."""

    def __init__(self, *, threshold: float = 92.0, margin: float = 5.0, min_fuzzy_chars: int = 5) -> None:
        self.threshold = threshold
        self.margin = margin
        self.min_fuzzy_chars = min_fuzzy_chars
        self._exact: dict[str, tuple[BoundCall, str]] = {}
        self._keys: list[str] = []
        self._intents: list[str] = []

    def __len__(self) -> int:
        return len(self._exact)

    def rebuild(self, intents: Iterable[IntentSpec]) -> None:
        """Index every example of ``intents``. Examples were validated at registration."""
        exact: dict[str, tuple[BoundCall, str]] = {}
        for spec in intents:
            for example in spec.examples:
                key = normalize_utterance(example.text)
                if key and key not in exact:  # the first registration of a text wins
                    exact[key] = (spec.bind(Call(spec.name, (), dict(example.arguments))), example.text)
        self._exact = exact
        self._keys = list(exact)
        self._intents = [exact[k][0].name for k in self._keys]

    def lookup(self, text: str) -> FastMatch | None:
        """The example that answers ``text``, or ``None`` to ask the model."""
        key = normalize_utterance(text)
        hit = self._exact.get(key)
        if hit is not None:
            return FastMatch(_copy(hit[0]), hit[1], 100.0, True)
        if len(key) < self.min_fuzzy_chars or not self._keys:
            return None
        candidates = process.extract(key, self._keys, scorer=fuzz.ratio, limit=8, score_cutoff=self.threshold - self.margin)
        if not candidates or candidates[0][1] < self.threshold:
            return None
        _, best_score, best_index = candidates[0]
        best_intent = self._intents[best_index]
        for _, score, index in candidates[1:]:
            if self._intents[index] != best_intent and best_score - score < self.margin:
                return None  # two intents are about as close: not a question for a lookup table
        bound, example = self._exact[self._keys[best_index]]
        return FastMatch(_copy(bound), example, best_score, False)


def _copy(bound: BoundCall) -> BoundCall:
    # Handlers may mutate their arguments; the index must not change with them.
    arguments = {k: list(v) if isinstance(v, list) else v for k, v in bound.arguments.items()}
    return BoundCall(bound.name, arguments, bound.call)
