"""Normalising argument values the way people and small models write them.

Numbers may come as ``20``, ``"20"``, ``"２０"`` or ``"二十"``; choices may come misspelt or, from a
speech recogniser, as a homophone ("杭洲" for 杭州). These helpers turn such values into what the
handler declared, or say precisely why they cannot.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import regex
from rapidfuzz import fuzz

__all__ = [
    "ChoiceMatch",
    "fold",
    "match_choice",
    "pinyin_of",
    "prepare_numerals",
    "script_variants",
    "to_bool",
    "to_float",
    "to_int",
]

_CN_NUMERAL = regex.compile(r"[负正]?[零〇一二两三四五六七八九十百千万亿点壹贰叁肆伍陆柒捌玖拾佰仟]+")
_HAN = regex.compile(r"\p{Han}")
_TRUE = frozenset({"true", "yes", "y", "on", "1", "是", "对", "真", "开", "打开", "开启", "好"})
_FALSE = frozenset({"false", "no", "n", "off", "0", "否", "不", "错", "假", "关", "关闭", "不要"})


def _cn_to_number(text: str) -> int | float | None:
    if not _CN_NUMERAL.fullmatch(text):
        return None
    import cn2an  # loaded by prepare_numerals() when a numeric parameter is registered

    try:
        value = cn2an.cn2an(text, "normal")
    except (ValueError, KeyError, IndexError):
        return None
    return value


def prepare_numerals() -> None:
    """Load the Chinese-numeral reader now. Importing cn2an compiles its patterns (0.1–0.2 s on
    this CPU, more from a cold disk), which would otherwise land on the first request whose number
    is written "二十六"; the registry calls this when an int or float parameter is registered, so
    the cost moves to start-up, and only for apps that have such parameters."""
    import cn2an  # noqa: F401


def _number(value: object) -> int | float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return value
    if not isinstance(value, str):
        return None
    text = unicodedata.normalize("NFKC", value).strip().replace(",", "")
    try:
        return int(text)
    except ValueError:
        pass
    try:
        number = float(text)
    except ValueError:
        return _cn_to_number(text)
    return number if number == number and number not in (float("inf"), float("-inf")) else None


def to_int(value: object) -> int | None:
    """An int from ``20``, ``20.0``, ``"20"``, ``"２０"`` or ``"二十"``; ``None`` when it is not one."""
    number = _number(value)
    if isinstance(number, float):
        return int(number) if number.is_integer() else None
    return number


def to_float(value: object) -> float | None:
    """A float from a number, a numeric string or a Chinese numeral (``"三点五"``)."""
    number = _number(value)
    return None if number is None else float(number)


def to_bool(value: object) -> bool | None:
    """A bool from ``true``/``false``, ``1``/``0``, ``yes``/``no`` or ``是``/``否``, ``开``/``关``."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        key = value.strip().casefold()
        if key in _TRUE:
            return True
        if key in _FALSE:
            return False
    return None


class ChoiceMatch:
    """The outcome of matching a value against declared choices."""

    __slots__ = ("choice", "runner_up", "score")

    def __init__(self, choice: str | None, score: float, runner_up: str | None = None) -> None:
        self.choice = choice
        self.score = score
        self.runner_up = runner_up


@lru_cache(maxsize=4096)
def _pinyin(text: str) -> str:
    from pypinyin import lazy_pinyin  # imported on the first Chinese near-miss only

    return " ".join(lazy_pinyin(text))


@lru_cache(maxsize=4096)
def _simplified(text: str) -> str:
    """``text`` in simplified characters where opencc (the homeassistant extra) is installed;
    without it, traditional characters still match their simplified names through pinyin."""
    converter = _t2s()
    return converter.convert(text) if converter is not None else text


@lru_cache(maxsize=1)
def _t2s() -> Any:
    try:
        import opencc
    except ImportError:
        return None
    return opencc.OpenCC("t2s")


@lru_cache(maxsize=1)
def _to_traditional() -> tuple[Any, ...]:
    """opencc's converters to traditional characters: generic, Taiwan's and Hong Kong's forms."""
    try:
        import opencc
    except ImportError:
        return ()
    return tuple(opencc.OpenCC(config) for config in ("s2t", "s2tw", "s2hk"))


def script_variants(text: str) -> list[str]:
    """``text`` in simplified and in traditional characters (客厅, 客廳), where they differ and
    opencc is installed: the forms a name may be written in, e.g. for a trie of choices that a
    model copies from an utterance in either script."""
    if not _HAN.search(text):
        return []
    found = []
    for converter in (_t2s(), *_to_traditional()):
        if converter is not None:
            other = converter.convert(text)
            if other != text and other not in found:
                found.append(other)
    return found


def fold(text: str) -> str:
    """``text`` as names are compared: NFKC, case-folded, in simplified characters (客廳 → 客厅)."""
    folded = unicodedata.normalize("NFKC", text).strip().casefold()
    return _simplified(folded) if _HAN.search(folded) else folded


def pinyin_of(text: str) -> str:
    """The pinyin of ``text``'s Chinese characters, syllables separated by spaces (how a name
    sounds: 床头等 and 床头灯 read the same); ``""`` for text without any."""
    return _pinyin(text) if _HAN.search(text) else ""


def _similarity(value: str, choice: str) -> float:
    score = fuzz.ratio(value, choice)
    # Speech recognisers confuse homophones (杭洲/杭州): compare the pinyin as well.
    if score < 100 and _HAN.search(value) and _HAN.search(choice):
        score = max(score, fuzz.ratio(_pinyin(value), _pinyin(choice)))
    return score


def match_choice(value: str, choices: Sequence[str], cutoff: float) -> ChoiceMatch:
    """Find the declared choice ``value`` means.

    An exact or case-folded match wins outright. Otherwise the best choice by character and
    pinyin similarity (0–100) is taken if it scores at least ``cutoff`` and strictly beats every
    other choice; a tie is ambiguous and matches nothing.
    """
    if value in choices:
        return ChoiceMatch(value, 100.0)
    folded = unicodedata.normalize("NFKC", value).strip().casefold()
    for choice in choices:
        if unicodedata.normalize("NFKC", choice).casefold() == folded:
            return ChoiceMatch(choice, 100.0)
    if _HAN.search(folded) and (simplified := _simplified(folded)) != folded:  # 客廳 -> 客厅
        for choice in choices:
            if _simplified(unicodedata.normalize("NFKC", choice).casefold()) == simplified:
                return ChoiceMatch(choice, 100.0)
    scored = sorted(
        ((_similarity(folded, unicodedata.normalize("NFKC", c).casefold()), c) for c in choices),
        reverse=True,
    )
    if not scored:
        return ChoiceMatch(None, 0.0)
    best_score, best = scored[0]
    # Script variants of one name (床头灯, 床頭燈) are the same choice, not a tie.
    others = [(score, c) for score, c in scored[1:] if _simplified(c.casefold()) != _simplified(best.casefold())]
    runner_up = others[0] if others else None
    if best_score < cutoff or (runner_up is not None and runner_up[0] == best_score):
        return ChoiceMatch(None, best_score, best)
    return ChoiceMatch(best, best_score, runner_up[1] if runner_up else None)
