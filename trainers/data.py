"""Training and evaluation data: loading, checking, and the intents the data implies.

Accepted files (JSON array or JSON Lines), one record per utterance:

- the seed format ``{"instruction": "我想听音乐", "output": "play_music()"}``;
- the datasets format, which adds the structured gold call ``"name"`` and ``"args"``;
  ``"output": null`` marks an out-of-scope utterance (the model should answer ``no_intent()``);
- multi-turn records whose ``instruction`` is a list of user turns, joined as the prompt
  module joins a session's turns.

Every problem is reported with the file and line it came from.
"""

from __future__ import annotations

import inspect
import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from intentkit import NO_INTENT, Call, ParseError, PromptFormat, Registry, parse_calls
from intentkit.calls import Value, render_call
from intentkit.errors import DataError, IntentKitError
from intentkit.text import can_copy, normalize_utterance

__all__ = [
    "DataError",
    "DataIssue",
    "DataReport",
    "Record",
    "build_registry",
    "in_utterance_order",
    "load_records",
    "read_objects",
    "read_text",
    "records_from_rows",
    "validate_records",
]


@dataclass(frozen=True, slots=True)
class Record:
    """One utterance and its gold answer. ``calls`` is empty for out-of-scope utterances."""

    instruction: str
    output: str | None
    calls: tuple[Call, ...]
    source: str

    @property
    def in_scope(self) -> bool:
        return self.output is not None

    @property
    def intent(self) -> str:
        """The first call's name, or ``no_intent`` for an out-of-scope utterance."""
        return self.calls[0].name if self.calls else NO_INTENT

    @property
    def target(self) -> str:
        """The text the model is trained to answer."""
        return self.output if self.output is not None else f"{NO_INTENT}()"


def read_objects(path: str | Path, *, problems: list[DataError] | None = None) -> list[tuple[str, Any]]:
    """``(source, object)`` for each row of a JSON array or JSON Lines file; the source is
    ``file[index]`` or ``file:line``. Raises :class:`DataError` naming file and line; with a
    ``problems`` list, a JSON Lines row that does not parse is appended to it and skipped instead,
    so that one pass reports them all. A file without a single row is an error too (an empty
    training or evaluation file is a mistake, never a result)."""
    path = Path(path)
    text = read_text(path)
    if text.lstrip().startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{exc.lineno}", f"invalid JSON: {exc.msg} (column {exc.colno})") from None
        if not data:
            _report(DataError(str(path), "holds no records (an empty JSON array)"), problems)
        return [(f"{path}[{i}]", row) for i, row in enumerate(data)]
    if not text.strip():
        _report(DataError(str(path), "holds no records (an empty file)"), problems)
    rows: list[tuple[str, Any]] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append((f"{path}:{lineno}", json.loads(line)))
        except json.JSONDecodeError as exc:
            _report(DataError(f"{path}:{lineno}", f"invalid JSON: {exc.msg} (column {exc.colno})"), problems)
    return rows


def read_text(path: Path) -> str:
    """A data file's text; a missing file or one that is not UTF-8 is a :class:`DataError`
    naming it."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(str(path), "no such file") from None
    except UnicodeDecodeError as exc:
        raise DataError(str(path), f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def _report(problem: DataError, problems: list[DataError] | None) -> None:
    if problems is None:
        raise problem
    problems.append(problem)


def load_records(
    path: str | Path, *, prompt: PromptFormat | None = None, problems: list[DataError] | None = None
) -> list[Record]:
    """Read a JSON array or JSON Lines file of records; raises :class:`DataError` naming file and
    line, or, given a ``problems`` list, collects every such error there and skips those rows."""
    return records_from_rows(read_objects(path, problems=problems), prompt=prompt, problems=problems)


def records_from_rows(
    rows: Iterable[tuple[str, Any]], *, prompt: PromptFormat | None = None, problems: list[DataError] | None = None
) -> list[Record]:
    """Turn ``(source, object)`` pairs into records; the source names the row in errors (raised, or
    appended to ``problems`` with the row skipped)."""
    prompt = prompt or PromptFormat()
    records = []
    for source, row in rows:
        try:
            records.append(_record(source, row, prompt))
        except DataError as exc:
            _report(exc, problems)
    return records


def _record(source: str, row: Any, prompt: PromptFormat) -> Record:
    if not isinstance(row, dict):
        raise DataError(source, f"expected an object, got {type(row).__name__}")
    if "instruction" not in row:
        raise DataError(source, f"missing 'instruction' (keys: {', '.join(row) or 'none'})")
    instruction = row["instruction"]
    if isinstance(instruction, list) and all(isinstance(t, str) for t in instruction):
        instruction = prompt.join_turns(instruction)
    if not isinstance(instruction, str) or not instruction.strip():
        raise DataError(source, "'instruction' must be non-empty text or a list of turns")
    if "output" not in row:
        raise DataError(source, "missing 'output' (a call as text, or null for an out-of-scope utterance)")
    output = row["output"]
    if output is not None and not isinstance(output, str):
        raise DataError(source, f"'output' must be a call as text or null, got {type(output).__name__}")
    calls: tuple[Call, ...] = ()
    if output is not None:
        try:
            calls = tuple(c for c in parse_calls(output) if c.name != NO_INTENT)
        except ParseError as exc:
            raise DataError(source, f"'output' does not parse: {exc.message} at position {exc.position}: {output!r}") from None
        if not calls:
            output = None  # an explicit no_intent() answer is out of scope
    return Record(instruction.strip(), output, calls, source)


def in_utterance_order(record: Record) -> Record:
    """The record with each call's keyword arguments in the order their values occur in the
    utterance (``weather_query(city="杭州", datetime_date="明天")`` for ``杭州明天天气``, whatever
    order the annotation wrote them in). Arguments whose value is not in the utterance keep their
    order, after the others. The answer means the same call; a model trained on it copies values
    in reading order instead of looking ahead for the slot the annotation happened to write first.
    A record already in that order is returned as it is."""
    if record.output is None:
        return record
    text = record.instruction

    def where(value: Value) -> int:
        items = value if isinstance(value, list) else [value]
        found = [text.find(v if isinstance(v, str) else json.dumps(v)) for v in items]
        return min((f for f in found if f >= 0), default=len(text))

    output = record.output
    for call in reversed(record.calls):  # spans are replaced from the end, so earlier ones stay valid
        kwargs = dict(sorted(call.kwargs.items(), key=lambda item: where(item[1])))
        if list(kwargs) != list(call.kwargs):
            start, end = call.span
            output = output[:start] + render_call(call.name, call.args, kwargs) + output[end:]
    if output == record.output:
        return record
    return Record(record.instruction, output, tuple(c for c in parse_calls(output) if c.name != NO_INTENT), record.source)


@dataclass(frozen=True, slots=True)
class DataIssue:
    """One finding of :func:`validate_records`: ``level`` is ``error`` or ``warning``."""

    level: str
    source: str
    message: str

    def __str__(self) -> str:
        return f"{self.level}: {self.source}: {self.message}"


@dataclass(slots=True)
class DataReport:
    """Counts and findings for a data set."""

    records: int
    per_intent: dict[str, int]
    out_of_scope: int
    issues: list[DataIssue] = field(default_factory=list)

    @property
    def errors(self) -> list[DataIssue]:
        return [i for i in self.issues if i.level == "error"]

    @property
    def imbalance(self) -> float:
        """Largest intent count over the smallest (1.0 is perfectly balanced)."""
        counts = list(self.per_intent.values())
        return max(counts) / min(counts) if counts else 1.0

    def summary(self) -> str:
        lines = [
            f"{self.records} records, {len(self.per_intent)} intents, {self.out_of_scope} out of scope, "
            f"imbalance {self.imbalance:.1f}x"
        ]
        width = max((len(name) for name in self.per_intent), default=0)
        lines += [f"  {name:<{width}}  {count}" for name, count in self.per_intent.items()]
        lines += [str(issue) for issue in self.issues]
        return "\n".join(lines)


def validate_records(
    records: Sequence[Record],
    *,
    registry: Registry | None = None,
    dev: Sequence[Record] = (),
    min_per_intent: int = 50,
    unreadable: Sequence[DataError] = (),
) -> DataReport:
    """Check a training set: sparse intents, duplicates, conflicts, train/dev leakage and, with a
    registry, calls to unregistered intents or with arguments that do not bind. ``unreadable``
    (the ``problems`` :func:`load_records` collected) are reported first, as errors."""
    per_intent = Counter(r.intent for r in records if r.in_scope)
    report = DataReport(len(records), dict(per_intent.most_common()), sum(not r.in_scope for r in records))
    issues = report.issues
    issues += [DataIssue("error", problem.source, problem.message) for problem in unreadable]
    first_source = {r.intent: r.source for r in reversed(records)}
    for intent, count in per_intent.items():
        if count < min_per_intent:
            issues.append(
                DataIssue("warning", first_source[intent], f"intent {intent} has {count} examples (fewer than {min_per_intent})")
            )
    if records and not report.out_of_scope:
        issues.append(
            DataIssue(
                "warning",
                records[0].source.rsplit(":", 1)[0],
                'no out-of-scope rows ("output": null): the model will never learn to answer no_intent(); '
                "add chit-chat and requests the app does not handle (about 10 % of the data), "
                "or fit an out-of-scope detector after training (intentkit export DIR --scope-from TRAIN)",
            )
        )
    seen: dict[str, Record] = {}
    for record in records:
        key = normalize_utterance(record.instruction)
        previous = seen.get(key)
        if previous is None:
            seen[key] = record
        elif previous.target != record.target:
            issues.append(
                DataIssue(
                    "error",
                    record.source,
                    f"same utterance as {previous.source} with another answer: {record.target!r} vs {previous.target!r}",
                )
            )
        else:
            issues.append(DataIssue("warning", record.source, f"duplicate of {previous.source}"))
    for record in dev:
        match = seen.get(normalize_utterance(record.instruction))
        if match is not None:
            issues.append(DataIssue("error", record.source, f"dev utterance also in training data at {match.source}"))
    if registry is not None:
        for record in records:
            for call in record.calls:
                try:
                    registry.bind(call)
                except IntentKitError as exc:
                    issues.append(DataIssue("error", record.source, str(exc)))
    for record in records:
        unreachable = _uncopyable_values(record, registry)
        if unreachable:
            issues.append(
                DataIssue(
                    "warning",
                    record.source,
                    f"{', '.join(unreachable)}: not in the utterance as whole words; constrained decoding copies "
                    "values from the utterance at word boundaries and cannot produce this "
                    "(declare the parameter Param(from_utterance=False) if the app normalises it)",
                )
            )
    return report


def _uncopyable_values(record: Record, registry: Registry | None) -> list[str]:
    """``slot="value"`` for each text value of ``record`` that decoding could not copy from its
    utterance (:func:`intentkit.text.can_copy`); parameters the registry declares
    ``from_utterance=False`` are skipped."""
    out = []
    for call in record.calls:
        spec = None
        if registry is not None:
            try:
                spec = registry.get(call.name)
            except IntentKitError:
                pass  # reported above as an unregistered intent
        names = [p.name for p in spec.params] if spec is not None else []
        free = {p.name for p in spec.params if not p.from_utterance} if spec is not None else set()
        positional = [(names[i] if i < len(names) else f"arg{i}", v) for i, v in enumerate(call.args)]
        named = positional + list(call.kwargs.items())
        for slot, value in named:
            if slot in free:
                continue
            for item in value if isinstance(value, list) else [value]:
                if isinstance(item, str) and not can_copy(record.instruction, item):
                    out.append(f"{slot}={json.dumps(item, ensure_ascii=False)}")
    return out


def build_registry(records: Iterable[Record]) -> Registry:
    """A registry of the intents a data set uses, each taking the arguments seen with it as optional
    text (lists allowed); positional arguments become ``arg0``, ``arg1``, … Evaluation and
    constrained decoding use it when no app registry exists."""
    params: dict[str, dict[str, bool]] = {}
    for record in records:
        for call in record.calls:
            slots = params.setdefault(call.name, {})
            for index, value in enumerate(call.args):
                slots[f"arg{index}"] = slots.get(f"arg{index}", False) or isinstance(value, list)
            for key, value in call.kwargs.items():
                slots[key] = slots.get(key, False) or isinstance(value, list)
    registry = Registry()
    for name, slots in params.items():
        registry.register(_handler(name, slots), name=name)
    return registry


def _handler(name: str, slots: dict[str, bool]) -> Any:
    """A handler that returns its arguments, with a signature built from the slots."""

    def handler(**arguments: Any) -> dict[str, Any]:
        return arguments

    ordered = sorted(slots, key=lambda s: (not s.startswith("arg"), s if s.startswith("arg") else ""))
    annotations = {slot: (list[str] | None) if slots[slot] else (str | None) for slot in ordered}
    handler.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [
            inspect.Parameter(slot, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None, annotation=annotations[slot])
            for slot in ordered
        ]
    )
    handler.__annotations__ = annotations
    handler.__name__ = name
    return handler
