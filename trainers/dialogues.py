"""Dialogue rows derived from single-turn ones, so that a model learns to leave out what was not said.

    intentkit data dialogues train.jsonl --out multi.jsonl

A model trained only on complete requests invents a value when the user gave none. For each
intent, the arguments present in every one of its rows are the ones it needs (``call_contact``'s
``contact``); from a row whose utterance holds such a value, two rows are derived:

- the **incomplete request**: the value (and the words that only go with it: ``的``, a unit, a
  dangling ``给``) taken out of the utterance, answered by the call without that argument
  (``打电话`` → ``call_contact()``), which the router turns into a question;
- the **dialogue**: that request, then the user's reply giving the value (``张三``, ``就张三吧``,
  ``是张三``), answered by the complete call, in the seed's multi-turn format
  (``{"instruction": ["打电话", "张三"], "output": "call_contact(contact=\\"张三\\")"}``).

The seed recipe's guidance holds: dialogue rows are ``share`` (default 25 %) of the source rows,
spread evenly over the intents that have such arguments (which also occur single-turn); half of
them (``incomplete``) also give their incomplete request as a single-turn row, so that the
dialogues stay above 20 % of all single-turn rows.
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import regex

from intentkit.calls import render_call
from intentkit.text import normalize_utterance

from .data import Record

__all__ = ["DialogueRows", "dialogue_rows", "remove_value", "write_dialogue_rows"]

_CJK = regex.compile(r"\p{Han}")
# What goes with a value and makes no sense without it: "杭州的天气", "26度", "制冷模式".
_AFTER = ("的", "度", "模式", "这首歌", "的歌", "这首", "点钟", " degrees", " mode", " please")
# Words left dangling at the end once the value is gone: "打电话给", "调成", "设为", "wake me up at".
_DANGLING = regex.compile(r"(?:给|到|成|为|在|是|叫|放|个|一个|一首|首|听|唱|把|用)+$|(?:\s+(?:to|at|for|in|the|a|on))+$")
# What may follow the value and still leave it at the end of the request: "…调成制冷吧", "…, thanks".
_CLOSING = regex.compile(r"^(?:[\p{P}\s]|吧|好吗|呗|啊|呀|谢谢|可以吗|行吗|一下|please|thanks)*$")
# Wake words, politeness and particles: not what tells one request from another.
_FILLERS = regex.compile(r"小度小度|小爱同学|小爱|hey|嗯|那个|麻烦你|麻烦|帮我|请|吧|谢谢|好吗|啊|呗|呀|一下|please|[\p{P}\s]")
_REPLIES_ZH = ("{v}", "{v}", "{v}吧", "就{v}", "就{v}吧", "是{v}", "{v}就行", "嗯，{v}", "{v}。", "要{v}")
_REPLIES_EN = ("{v}", "{v}", "{v}, please", "make it {v}", "{v}.", "it's {v}")


@dataclass(frozen=True, slots=True)
class DialogueRows:
    """The derived rows (JSON-ready): incomplete requests and the dialogues completing them."""

    incomplete: list[dict[str, Any]]
    dialogues: list[dict[str, Any]]

    @property
    def rows(self) -> list[dict[str, Any]]:
        return [*self.incomplete, *self.dialogues]


def remove_value(utterance: str, value: str) -> str | None:
    """``utterance`` without ``value`` and the words that only go with it, or ``None`` when the
    value is not in it or too little is left to be a request."""
    at = utterance.find(value)
    if at < 0 or not value.strip():
        return None
    before, after = utterance[:at], utterance[at + len(value) :]
    for word in _AFTER:
        if after.startswith(word):
            after = after[len(word) :]
            break
    if _CLOSING.fullmatch(after):
        before = _DANGLING.sub("", before.rstrip())
    text = regex.sub(r"\s{2,}", " ", (before + after)).strip(" ，,")
    core = _FILLERS.sub("", text)
    if value in text or len(regex.sub(r"[\p{P}\s]", "", core)) < (3 if _CJK.search(text) else 6):
        return None  # "开吧", "play": too little left to be a request of this intent
    return text


def dialogue_rows(records: Sequence[Record], *, share: float = 0.25, incomplete: float = 0.5, seed: int = 0) -> DialogueRows:
    """Derive ``share`` × the rows as dialogues from the single-turn ``records`` (see the module
    docstring); ``incomplete`` of them also give their first turn as a row of its own."""
    rng = random.Random(seed)
    single = [r for r in records if r.in_scope and len(r.calls) == 1 and not r.calls[0].args]
    by_intent: dict[str, list[Record]] = defaultdict(list)
    for record in single:
        by_intent[record.calls[0].name].append(record)
    needed: dict[str, set[str]] = {}
    for intent, rows in by_intent.items():
        common = set.intersection(*(set(r.calls[0].kwargs) for r in rows))
        if common:
            needed[intent] = common
    said = {normalize_utterance(r.instruction): r.calls[0].name for r in single}
    cues = _cues(by_intent)
    candidates: dict[str, list[tuple[Record, str]]] = defaultdict(list)
    for intent, names in needed.items():
        for record in by_intent[intent]:
            for name in sorted(names):
                value = record.calls[0].kwargs[name]
                if isinstance(value, str) and value in record.instruction:
                    candidates[intent].append((record, name))
    wanted = round(share * len(records))
    intents = sorted(candidates)
    incomplete_rows: list[dict[str, Any]] = []
    dialogues: list[dict[str, Any]] = []
    usable: dict[str, list[tuple[str, str, Record]]] = defaultdict(list)  # intent -> (request, name, record)
    for intent in intents:
        for record, name in candidates[intent]:
            value = record.calls[0].kwargs[name]
            assert isinstance(value, str)
            request = remove_value(record.instruction, value)
            if request is not None and not _said_for_another(request, intent, said) and _has_cue(request, cues[intent]):
                usable[intent].append((request, name, record))
            # else e.g. "打开空调(制冷模式)" is ac_on's "打开空调": not an incomplete ac_set_mode
    # Round robin over the intents, so that each gets its share and the ones with more
    # candidates make up for the ones with fewer; a request is used at most twice (two replies).
    asked: set[str] = set()
    for _ in range(2):
        pools = {intent: rng.sample(usable[intent], len(usable[intent])) for intent in intents}
        while len(dialogues) < wanted and any(pools.values()):
            for intent in intents:
                if len(dialogues) >= wanted or not pools[intent]:
                    continue
                request, name, record = pools[intent].pop()
                call = record.calls[0]
                rest = {k: v for k, v in call.kwargs.items() if k != name}
                styles = _REPLIES_ZH if _CJK.search(record.instruction) else _REPLIES_EN
                reply = rng.choice(styles).format(v=call.kwargs[name])
                if rng.random() < incomplete and request not in asked:
                    asked.add(request)  # one row per incomplete request: its dialogues vary the reply
                    incomplete_rows.append({"instruction": request, "output": render_call(intent, (), rest)})
                dialogues.append({"instruction": [request, reply], "output": render_call(intent, (), dict(call.kwargs))})
    return DialogueRows(incomplete_rows, dialogues)


def _units(text: str) -> set[str]:
    """Character pairs of the Chinese in ``text``, and its other words, lower-cased."""
    text = normalize_utterance(text)
    units = {w for w in regex.findall(r"[^\p{Han}\W]+", text)}
    for run in regex.findall(r"\p{Han}+", text):
        units |= {run[i : i + 2] for i in range(len(run) - 1)}
    return units


def _cues(by_intent: dict[str, list[Record]]) -> dict[str, set[str]]:
    """For each intent, the words (Chinese character pairs) that mark its requests apart from the
    values: in at least 15 % of its utterances once the values are taken out, in at most 2 % of
    other intents' (set_alarm: 闹钟; ac_set_mode: 模式; call_contact: 电话)."""
    seen: dict[str, list[set[str]]] = {}
    for intent, rows in by_intent.items():
        texts = []
        for record in rows:
            text = record.instruction
            for value in record.calls[0].kwargs.values():
                if isinstance(value, str) and value:
                    text = text.replace(value, " ")
            texts.append(_units(text))
        seen[intent] = texts
    cues: dict[str, set[str]] = {}
    for intent, texts in seen.items():
        counts: dict[str, int] = defaultdict(int)
        for units in texts:
            for unit in units:
                counts[unit] += 1
        others = [units for other, rows in seen.items() if other != intent for units in rows]
        cues[intent] = {
            unit
            for unit, count in counts.items()
            if count >= 0.15 * len(texts) and sum(unit in units for units in others) <= 0.02 * max(1, len(others))
        }
    return cues


def _has_cue(request: str, cues: set[str]) -> bool:
    """Whether ``request`` still says which intent it is ("设个闹钟"), not only what it does to
    what ("空调开啊", from "空调开制冷模式啊", which is ac_on's request)."""
    return bool(_units(request) & cues)


def _said_for_another(request: str, intent: str, said: dict[str, str]) -> bool:
    """Whether ``request`` is (nearly) what the data says for another intent."""
    from rapidfuzz import fuzz, process

    key = normalize_utterance(request)
    if said.get(key, intent) != intent:
        return True
    match = process.extractOne(key, said.keys(), scorer=fuzz.ratio, score_cutoff=88)
    return match is not None and said[match[0]] != intent


def write_dialogue_rows(records: Sequence[Record], derived: DialogueRows, path: str | Path) -> Path:
    """The source rows (as read) and the derived ones, as JSON Lines: a training file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as out:
        for record in records:
            out.write(json.dumps({"instruction": record.instruction, "output": record.output}, ensure_ascii=False) + "\n")
        for row in derived.rows:
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path
