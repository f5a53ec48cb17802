"""Text helpers shared by routing, decoding and data validation; no numpy, no model.

- :func:`normalize_utterance` — the form utterances are compared in (fast path, duplicates);
- :func:`word_boundaries` / :func:`can_copy` — where a value copied from an utterance may start
  and end, which is what constrained decoding allows and what data validation checks.
"""

from __future__ import annotations

import functools
import unicodedata

import regex

__all__ = ["can_copy", "normalize_utterance", "occurrences", "whole_words", "word_boundaries"]

_NOISE = regex.compile(r"[\p{P}\p{S}\s]+")
# Letters of scripts written without spaces between words: every character boundary is a word boundary.
_UNSPACED = regex.compile(r"[\p{Han}\p{Hiragana}\p{Katakana}\p{Thai}\p{Lao}\p{Khmer}\p{Myanmar}\p{Tibetan}]")
_LETTER = regex.compile(r"[\p{L}\p{M}]")


def normalize_utterance(text: str) -> str:
    """NFKC, case-folded, with punctuation, symbols and spaces removed."""
    return _NOISE.sub("", unicodedata.normalize("NFKC", text).casefold())


def _word_class(char: str) -> str | None:
    """What ``char`` is inside a word: ``"L"``, a letter of a script written with spaces; ``"N"``, a
    digit; None, anything else (punctuation, spaces, letters of scripts where each character may
    end a word)."""
    if char.isdigit():
        return "N"
    if _LETTER.match(char) and not _UNSPACED.match(char):
        return "L"
    return None


@functools.lru_cache(maxsize=4096)  # asked again for one utterance: each draft's values, each copied value
def word_boundaries(text: str) -> tuple[frozenset[int], frozenset[int]]:
    """The byte offsets (UTF-8) of ``text`` where a value copied from it may start, and where it may
    end. A value never starts or ends on whitespace, nor between two letters (or two digits) of a
    script written with spaces: ``breathtaking`` yields no ``breath``, while any character of
    ``帮我查杭州天气`` may start or end a value, and ``PlayStation官方杂志`` splits where the script
    changes."""
    offsets = [0]
    for char in text:
        offsets.append(offsets[-1] + len(char.encode()))
    classes = [_word_class(c) for c in text]

    def joined(k: int) -> bool:  # characters k-1 and k belong to one word
        return 0 < k < len(text) and classes[k - 1] is not None and classes[k - 1] == classes[k]

    starts = frozenset(offsets[k] for k in range(len(text)) if not text[k].isspace() and not joined(k))
    ends = frozenset(offsets[k] for k in range(1, len(text) + 1) if not text[k - 1].isspace() and not joined(k))
    return starts, ends


def whole_words(text: str, start: int, end: int) -> tuple[int, int]:
    """The character span ``start:end`` of ``text`` widened to the words it cuts into, as
    :func:`word_boundaries` draws them: ``0008`` in ``代码000800的`` widens to ``000800``."""
    while 0 < start < len(text) and (cls := _word_class(text[start])) is not None and _word_class(text[start - 1]) == cls:
        start -= 1
    while 0 < end < len(text) and (cls := _word_class(text[end - 1])) is not None and _word_class(text[end]) == cls:
        end += 1
    return start, end


def occurrences(text: bytes, value: bytes, starts: frozenset[int]) -> list[int]:
    """The byte offsets where ``value`` occurs in ``text`` starting at one of ``starts``."""
    found, at = [], text.find(value)
    while at >= 0:
        if at in starts:
            found.append(at)
        at = text.find(value, at + 1)
    return found


def can_copy(utterance: str, value: str) -> bool:
    """Whether constrained decoding can copy ``value`` from ``utterance``: it occurs there starting
    and ending at word boundaries (:func:`word_boundaries`)."""
    starts, ends = word_boundaries(utterance)
    data = value.encode()
    return any(at + len(data) in ends for at in occurrences(utterance.encode(), data, starts))
