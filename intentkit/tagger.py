"""A slot tagger for drafted calls: which span of an utterance is which parameter's value.

:class:`~intentkit.drafts.DraftIndex` drafts a call by carrying the nearest training rows' values
over to a new utterance through the two texts' alignment; where the utterance is phrased unlike
any row, the alignment misplaces values or the rows disagree on which parameters are said. A
linear-chain CRF (CRFsuite, through python-crfsuite) reads the utterance itself: each character
is tagged ``B-param`` / ``I-param`` / ``O`` from the characters around it and the drafted intent,
as slot fillers are in the published intent/slot systems. On SMP2020's held-back training rows
the whole call was drafted right for 69.5 % of them with the tagger, against 59.4 % by carried
values; on the dev set, the model's own answer for 67.8 % against 55.4 %.

The tagger is trained with the drafts (``intentkit train`` writes ``drafts.crf`` beside
``drafts.jsonl``: a few seconds for 3k rows, averaged perceptron) and only for the intents whose
every parameter is said verbatim (a value the utterance does not contain, ``minutes=5`` for
``五分钟``, is no span to tag).
"""

from __future__ import annotations

import ctypes
import sys
import threading
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from .calls import Call
from .errors import ModelDirError

__all__ = ["TAGGER_FILE", "SlotTagger", "spans_of", "tag_labels", "taggable_intents"]

#: The file name inside a model directory (beside ``drafts.jsonl``).
TAGGER_FILE = "drafts.crf"
# A parameter is tagged when at least this share of its values are said verbatim in their rows.
_VERBATIM = 0.9
# Averaged perceptron, this many passes: as good as L-BFGS on SMP2020's held-back rows (69.8 %
# of whole calls against 69.5 % after 200 iterations), in 6 s rather than 90 s.
_ALGORITHM, _PASSES = "ap", 10
# Features seen once are left out from this many tagged rows on: the model file is 2.6 times
# smaller (1.5 MB for SMP2020's 2.7k rows, against 3.9 MB) for about as many calls drafted right
# (held-back rows 69.5 % against 71.7 %, dev answers 67.8 % against 66.6 %). In a few dozen
# rows, a feature seen once is most of the evidence.
_PRUNED_FROM = 500
# CRFsuite's online trainers shuffle the rows before every pass with the C library's rand(), whose
# state is the process's: unseeded, the same rows gave another tagger after anything else in the
# process had called rand() (the tests' tiny rows tagged 下 for 杭州 after 1,000 calls). Training seeds it
# first, under one lock, so that the same rows always give the same file.
_SHUFFLE_SEED = 0
_TRAINING = threading.Lock()


def taggable_intents(rows: Iterable[tuple[str, Call]]) -> set[str]:
    """The intents of ``rows`` whose every keyword parameter is said verbatim in at least 90 % of
    its rows (a text value found in the utterance); intents with positional values are left out."""
    said: Counter[tuple[str, str]] = Counter()
    total: Counter[tuple[str, str]] = Counter()
    names: set[str] = set()
    untaggable: set[str] = set()
    for utterance, call in rows:
        names.add(call.name)
        if call.args:
            untaggable.add(call.name)
        for key, value in call.kwargs.items():
            total[(call.name, key)] += 1
            said[(call.name, key)] += isinstance(value, str) and bool(value) and value in utterance
    untaggable.update(name for name, key in total if said[(name, key)] < _VERBATIM * total[(name, key)])
    return names - untaggable


def tag_labels(utterance: str, call: Call) -> list[str] | None:
    """The BIO labels of ``utterance``'s characters for ``call``'s values (each at its first
    occurrence not taken by another value); ``None`` where a value is not said verbatim."""
    labels = ["O"] * len(utterance)
    for key, value in call.kwargs.items():
        if not isinstance(value, str) or not value:
            return None
        at = utterance.find(value)
        while at >= 0 and any(label != "O" for label in labels[at : at + len(value)]):
            at = utterance.find(value, at + 1)
        if at < 0:
            return None
        labels[at : at + len(value)] = [f"B-{key}"] + [f"I-{key}"] * (len(value) - 1)
    return labels


def spans_of(utterance: str, labels: Sequence[str]) -> dict[str, str]:
    """Each parameter's first tagged span in ``utterance`` (an ``I-`` label that does not continue
    its parameter's span opens one)."""
    spans: dict[str, str] = {}
    open_key, start = "", 0
    for i, label in enumerate([*labels, "O"]):
        continues = label.startswith("I-") and label[2:] == open_key
        if continues:
            continue
        if open_key and open_key not in spans:
            spans[open_key] = utterance[start:i]
        open_key, start = (label[2:], i) if label != "O" else ("", i)
    return spans


def _features(utterance: str, intent: str) -> list[list[str]]:
    """Per character: the characters two either side, the bigrams and trigram around it, the
    intent, and the intent with the character and its bigrams (the same character is a value in
    one intent's rows and context in another's)."""
    padded = f"^^{utterance}$$"
    items = []
    for i in range(2, len(padded) - 2):
        a, b, c, d, e = padded[i - 2], padded[i - 1], padded[i], padded[i + 1], padded[i + 2]
        item = [
            "c0=" + c, "c-1=" + b, "c1=" + d, "c-2=" + a, "c2=" + e,
            "b-1=" + b + c, "b1=" + c + d, "b-2=" + a + b, "b2=" + d + e, "t=" + b + c + d,
            "I=" + intent, "Ic0=" + intent + c, "Ib-1=" + intent + b + c, "Ib1=" + intent + c + d,
        ]  # fmt: skip
        if c.isdigit():
            item.append("digit")
        elif c.isascii() and c.isalpha():
            item.append("latin")
        items.append(item)
    return items


class SlotTagger:
    """A trained CRF over an index's taggable intents; :meth:`tag` gives an utterance's spans
    per parameter under a given intent. Thread-safe (the CRFsuite tagger is not: calls take a lock)."""

    def __init__(self, path: str | Path) -> None:
        pycrfsuite = _import()
        self.path = Path(path)
        self._tagger = pycrfsuite.Tagger()
        try:
            self._tagger.open(str(self.path))
        except (OSError, ValueError) as exc:
            raise ModelDirError(self.path, f"not a CRFsuite slot tagger ({exc})") from None
        labels = self._tagger.labels()
        if not labels or any(label != "O" and label[:2] not in ("B-", "I-") for label in labels):
            raise ModelDirError(self.path, f"not a slot tagger's labels: {labels[:5]}")
        self._lock = threading.Lock()

    @classmethod
    def fit(cls, rows: Iterable[tuple[str, Call]], path: str | Path) -> SlotTagger | None:
        """Train on ``rows``' taggable intents (:func:`taggable_intents`; rows whose values are not
        all said verbatim are left out), write the model to ``path`` and load it; ``None`` (and no
        file) when no row has a value to tag."""
        pycrfsuite = _import()
        rows = list(rows)
        taggable = taggable_intents(rows)
        trainer = pycrfsuite.Trainer(algorithm=_ALGORITHM, verbose=False)
        tagged = sequences = 0
        for utterance, call in rows:
            labels = tag_labels(utterance, call) if call.name in taggable and utterance else None
            if labels is not None:
                trainer.append(_features(utterance, call.name), labels)
                tagged += any(label != "O" for label in labels)
                sequences += 1
        trainer.set_params({"max_iterations": _PASSES, "feature.minfreq": 2 if sequences >= _PRUNED_FROM else 1})
        path = Path(path)
        if not tagged:
            path.unlink(missing_ok=True)
            return None
        path.parent.mkdir(parents=True, exist_ok=True)
        with _TRAINING:
            _seed_c_rand(_SHUFFLE_SEED)
            trainer.train(str(path))
        return cls(path)

    def tag(self, utterance: str, intent: str) -> dict[str, str]:
        """``utterance``'s spans per parameter, read as ``intent``'s (empty for an empty text)."""
        if not utterance:
            return {}
        items = _features(utterance, intent)
        with self._lock:
            labels = self._tagger.tag(items)
        return spans_of(utterance, labels)


def _seed_c_rand(seed: int) -> None:
    """``srand(seed)`` in the C library CRFsuite's ``rand()`` comes from: the process's own
    symbols on Linux and macOS, the universal CRT on Windows (whose rand state is per thread, and
    training runs in this one)."""
    try:
        libc = ctypes.CDLL("ucrtbase") if sys.platform == "win32" else ctypes.CDLL(None)
        libc.srand(ctypes.c_uint(seed))
    except (OSError, AttributeError):  # pragma: no cover - a C library without srand: order stays the process's
        pass


def _import() -> Any:
    try:
        import pycrfsuite
    except ImportError:  # pragma: no cover - an install without the extra
        raise ImportError("drafting with a slot tagger needs python-crfsuite: pip install 'intentkit-router[llamacpp]'") from None
    return pycrfsuite
