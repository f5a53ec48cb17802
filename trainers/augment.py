"""Template augmentation: a few phrasings and slot value lists → many varied training rows.

A template file (JSON) looks like::

    {
      "slots": {"city": ["杭州", "北京"], "date": ["今天", "明天"]},
      "prefixes": ["", "请"], "suffixes": ["", "吧"],
      "intents": {
        "weather_search": {"params": {"city": "city name", "date": "day"},
                           "templates": ["帮我查{city}{date}的天气", "{city}[冷不冷|热不热]"]}
      },
      "out_of_scope": ["你好", "讲个笑话"]
    }

``{slot}`` takes a value from ``slots`` and becomes a keyword argument of the call (in the order
of ``params``); ``[a|b|]`` picks one alternative (an empty one is allowed). Prefixes and suffixes
are added to Chinese templates; ``en_prefixes``/``en_suffixes`` (optional) to templates without
Chinese characters. Every fifth template of an intent is held out for the dev split, so dev
measures phrasings the model never saw. Problems raise :class:`~trainers.data.DataError` naming
the file and the template (``templates.json: intents.weather_search.templates[3]``).
"""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import regex

from intentkit import NO_INTENT, render_call

from .data import DataError, Record, records_from_rows

__all__ = ["Augmented", "TemplateSet", "augment", "expand_template", "load_templates", "swap_values"]

_SLOT = regex.compile(r"\{([^{}]*)\}")
_CHOICE = regex.compile(r"\[([^\[\]]*)\]")
_CJK = regex.compile(r"\p{Han}")
_DEV_EVERY = 5


@dataclass(frozen=True, slots=True)
class IntentTemplates:
    name: str
    params: tuple[str, ...]
    templates: tuple[str, ...]
    description: str = ""


@dataclass(frozen=True, slots=True)
class TemplateSet:
    """A parsed, checked template file."""

    intents: tuple[IntentTemplates, ...]
    slots: Mapping[str, tuple[str, ...]]
    out_of_scope: tuple[str, ...] = ()
    prefixes: tuple[str, ...] = ("",)
    suffixes: tuple[str, ...] = ("",)
    en_prefixes: tuple[str, ...] = ("",)
    en_suffixes: tuple[str, ...] = ("",)
    source: str = "<templates>"


@dataclass(slots=True)
class Augmented:
    """Rows in the datasets format, split by template."""

    train: list[dict[str, Any]] = field(default_factory=list)
    dev: list[dict[str, Any]] = field(default_factory=list)

    def write(self, train_path: str | Path, dev_path: str | Path | None = None) -> None:
        _write_jsonl(Path(train_path), self.train)
        if dev_path is not None:
            _write_jsonl(Path(dev_path), self.dev)


def load_templates(path: str | Path) -> TemplateSet:
    """Read and check a template file; raises :class:`DataError` naming file and template."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(str(path), "no such file") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{exc.lineno}", f"invalid JSON: {exc.msg} (column {exc.colno})") from None
    return parse_templates(data, source=str(path))


def parse_templates(data: Any, *, source: str = "<templates>") -> TemplateSet:
    """Check a template mapping (the parsed JSON of a template file)."""
    if not isinstance(data, dict) or not isinstance(data.get("intents"), dict) or not data["intents"]:
        raise DataError(source, "expected an object with a non-empty 'intents' object")
    slots = {name: tuple(_strings(values, f"{source}: slots.{name}")) for name, values in data.get("slots", {}).items()}
    for name, values in slots.items():
        if not values:
            raise DataError(f"{source}: slots.{name}", "needs at least one value")
    intents = []
    for name, spec in data["intents"].items():
        where = f"{source}: intents.{name}"
        if not isinstance(spec, dict):
            raise DataError(where, "expected an object with 'templates'")
        params = spec.get("params", {})
        params = tuple(params) if isinstance(params, (dict, list)) else ()
        templates = tuple(_strings(spec.get("templates"), f"{where}.templates"))
        if not templates:
            raise DataError(f"{where}.templates", "needs at least one template")
        for index, template in enumerate(templates):
            for slot in _SLOT.findall(template):
                if slot not in slots:
                    raise DataError(f"{where}.templates[{index}]", f"unknown slot {{{slot}}}; slots: {', '.join(slots)}")
                if slot not in params:
                    raise DataError(f"{where}.templates[{index}]", f"slot {{{slot}}} is not a parameter of {name}")
            if template.count("[") != template.count("]") or template.count("{") != template.count("}"):
                raise DataError(f"{where}.templates[{index}]", f"unbalanced brackets in {template!r}")
        intents.append(IntentTemplates(name, params, templates, str(spec.get("description", ""))))

    def strings(key: str) -> tuple[str, ...]:
        return tuple(_strings(data.get(key, [""]), f"{source}: {key}")) or ("",)

    return TemplateSet(
        tuple(intents),
        slots,
        tuple(_strings(data.get("out_of_scope", []), f"{source}: out_of_scope")),
        strings("prefixes"),
        strings("suffixes"),
        strings("en_prefixes"),
        strings("en_suffixes"),
        source,
    )


def expand_template(template: str, slots: Mapping[str, Sequence[str]], rng: random.Random) -> tuple[str, dict[str, str]]:
    """One random filling of ``template``: ``("帮我查杭州明天的天气", {"city": "杭州", "date": "明天"})``."""
    text = _CHOICE.sub(lambda m: rng.choice(m.group(1).split("|")), template)
    values: dict[str, str] = {}

    def fill(match: regex.Match[str]) -> str:
        values[match.group(1)] = rng.choice(list(slots[match.group(1)]))
        return values[match.group(1)]

    return _SLOT.sub(fill, text), values


def augment(templates: TemplateSet, *, per_intent: int = 80, dev_per_intent: int = 12, seed: int = 0) -> Augmented:
    """Expand every intent to about ``per_intent`` distinct train rows (and dev rows from held-out
    templates); out-of-scope sentences get the same prefixes/suffixes. Deterministic for a seed."""
    rng = random.Random(seed)
    out = Augmented()
    for intent in templates.intents:
        held = [t for i, t in enumerate(intent.templates) if i % _DEV_EVERY == _DEV_EVERY - 1]
        kept = [t for t in intent.templates if t not in held] or list(intent.templates)
        out.train += _rows(intent, kept, templates, per_intent, rng)
        if held:
            out.dev += _rows(intent, held, templates, dev_per_intent, rng)
    oos = list(templates.out_of_scope)
    held_oos = oos[_DEV_EVERY - 1 :: _DEV_EVERY]
    kept_oos = [t for t in oos if t not in held_oos]
    no_intent = IntentTemplates(NO_INTENT, (), ())
    out.train += _rows(no_intent, kept_oos, templates, 2 * len(kept_oos), rng)
    out.dev += _rows(no_intent, held_oos, templates, len(held_oos), rng)
    rng.shuffle(out.train)
    return out


def _rows(
    intent: IntentTemplates, pool: Sequence[str], templates: TemplateSet, count: int, rng: random.Random
) -> list[dict[str, Any]]:
    """Up to ``count`` distinct rows, cycling through the templates so each is used evenly."""
    rows: dict[str, dict[str, Any]] = {}
    for attempt, template in zip(range(count * 20), itertools.cycle(pool), strict=False):
        if len(rows) >= count:
            break
        text, values = expand_template(template, templates.slots, rng)
        chinese = bool(_CJK.search(template))
        # Bare templates first, then with the fillers a speaker adds.
        if attempt >= len(pool):
            prefix = rng.choice(templates.prefixes if chinese else templates.en_prefixes)
            suffix = rng.choice(templates.suffixes if chinese else templates.en_suffixes)
            text = f"{prefix}{text}{suffix}"
        text = text.strip()
        if not text or text in rows:
            continue
        rows[text] = _row(intent, text, values)
    return list(rows.values())


def _row(intent: IntentTemplates, text: str, values: dict[str, str]) -> dict[str, Any]:
    if intent.name == NO_INTENT:
        return {"instruction": text, "output": None, "name": None, "args": {}}
    args = {param: values[param] for param in intent.params if param in values}
    return {"instruction": text, "output": render_call(intent.name, (), args), "name": intent.name, "args": args}


def _strings(values: Any, where: str) -> list[str]:
    if values is None:
        return []
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise DataError(where, "expected a list of strings")
    return values


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")


def swap_values(records: Sequence[Record], *, copies: int = 1, seed: int = 0) -> list[Record]:
    """New rows recombined from ``records``' own slot values, for data whose phrasings each come
    with few values.

    In each copy of a row, every keyword value is replaced by another value that the same
    parameter of the same intent takes elsewhere in ``records`` (``播放{安徽卫视}高清`` →
    ``播放{长沙经贸台}高清``), so the model sees the same phrasing around values of other
    lengths and shapes: where a value starts and ends is what it has to learn. A row is only
    copied when each of its values is a single string found exactly once in the utterance, the
    values do not overlap, and its call is the only one; out-of-scope rows are not copied. A copy
    whose utterance is already in ``records`` (or made earlier) is dropped. Returns the new rows
    only, each sourced ``<row's source>+swap<k>``."""
    rng = random.Random(seed)
    pool: dict[tuple[str, str], list[str]] = {}
    for record in records:
        if len(record.calls) == 1:
            for key, value in record.calls[0].kwargs.items():
                if isinstance(value, str) and value:
                    values = pool.setdefault((record.calls[0].name, key), [])
                    if value not in values:
                        values.append(value)
    seen = {r.instruction for r in records}
    rows: list[tuple[str, dict[str, Any]]] = []
    for record in records:
        spans = _value_spans(record)
        if not spans:
            continue
        call = record.calls[0]
        for k in range(1, copies + 1):
            text, kwargs = record.instruction, dict(call.kwargs)
            for start, end, key in sorted(spans, reverse=True):  # right to left: earlier offsets stay valid
                others = [v for v in pool[(call.name, key)] if v != kwargs[key]]
                if others:
                    value = rng.choice(others)
                    kwargs[key] = value
                    text = text[:start] + value + text[end:]
            if text in seen:
                continue
            seen.add(text)
            rows.append((f"{record.source}+swap{k}", {"instruction": text, "output": render_call(call.name, call.args, kwargs)}))
    return records_from_rows(rows)


def _value_spans(record: Record) -> list[tuple[int, int, str]]:
    """(start, end, parameter) of each keyword value in the utterance; empty when the row cannot
    be recombined safely (several calls, positional or non-text values, a value missing, repeated
    or overlapping another)."""
    if len(record.calls) != 1 or record.calls[0].args or not record.calls[0].kwargs:
        return []
    spans = []
    for key, value in record.calls[0].kwargs.items():
        if not isinstance(value, str) or not value or record.instruction.count(value) != 1:
            return []
        start = record.instruction.index(value)
        spans.append((start, start + len(value), key))
    spans.sort()
    if any(a[1] > b[0] for a, b in itertools.pairwise(spans)):
        return []
    return spans
