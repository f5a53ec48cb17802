"""Converters between intentkit's ``{"instruction", "output"}`` rows and other tools' files.

Imports (each returns rows that :func:`trainers.data.records_from_rows` accepts, with their
``file:line`` sources):

- ``itag`` — iTAG manifest exports: one object per line, ``data.instruction`` and ``label-*`` keys
  whose ``results[0].MarkResult`` is a JSON string holding ``annotations[0].labels.output``;
- ``alpaca`` / ``sharegpt`` — LLaMA-Factory dataset files (``input`` is appended to
  ``instruction``; sharegpt takes ``conversations`` with ``from``/``value`` or ``messages`` with
  ``role``/``content``, its human turns joined as a multi-turn utterance);
- ``dialogue`` — dialogue records ``{"context", "response", "intent", "style"}``: ``context`` is
  the utterance (or list of turns), ``intent`` a call or a bare intent name; an empty intent or
  ``none`` is out of scope; ``response`` and ``style`` are the bot's reply and are not used.

Exports write alpaca or sharegpt files with the system prompt of :mod:`intentkit.prompt`, so a
model trained with LLaMA-Factory sees the prompt intentkit serves with.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from intentkit import NO_INTENT, PromptFormat

from .data import DataError, Record, read_objects

__all__ = ["EXPORTERS", "IMPORTERS", "export_rows", "import_rows"]

Row = tuple[str, dict[str, Any]]


def _object(source: str, value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise DataError(source, f"{what} must be an object, got {type(value).__name__}")
    return value


def _itag(path: Path) -> Iterator[Row]:
    for source, row in read_objects(path):
        row = _object(source, row, "an iTAG record")
        instruction = _object(source, row.get("data"), "'data'").get("instruction")
        labels = [key for key in row if key.startswith("label-")]
        if not labels:
            raise DataError(source, f"no 'label-*' key (keys: {', '.join(row)})")
        try:
            mark = row[labels[0]]["results"][0]["MarkResult"]
            output = json.loads(mark)["annotations"][0]["labels"]["output"]
        except (KeyError, IndexError, TypeError) as exc:
            raise DataError(source, f"{labels[0]} lacks results[0].MarkResult → annotations[0].labels.output ({exc!r})") from None
        except json.JSONDecodeError as exc:
            raise DataError(source, f"{labels[0]}: MarkResult is not JSON ({exc.msg} at column {exc.colno})") from None
        yield source, {"instruction": instruction, "output": output}


def _alpaca(path: Path) -> Iterator[Row]:
    for source, row in read_objects(path):
        row = _object(source, row, "an alpaca record")
        instruction = row.get("instruction")
        if isinstance(instruction, str) and row.get("input"):
            instruction = f"{instruction}\n{row['input']}"
        yield source, {"instruction": instruction, "output": _none_if_no_intent(row.get("output"))}


def _sharegpt(path: Path) -> Iterator[Row]:
    for source, row in read_objects(path):
        row = _object(source, row, "a sharegpt record")
        turns = row.get("conversations") or row.get("messages")
        if not isinstance(turns, list) or not turns:
            raise DataError(source, "needs a non-empty 'conversations' (or 'messages') list")
        users, answer = [], None
        for turn in turns:
            turn = _object(source, turn, "a turn")
            role = turn.get("from", turn.get("role"))
            text = turn.get("value", turn.get("content"))
            if role in ("human", "user"):
                users.append(text)
            elif role in ("gpt", "assistant"):
                answer = text
        if not users or answer is None:
            raise DataError(source, "needs a human/user turn followed by a gpt/assistant answer")
        yield source, {"instruction": users if len(users) > 1 else users[0], "output": _none_if_no_intent(answer)}


def _dialogue(path: Path) -> Iterator[Row]:
    for source, row in read_objects(path):
        row = _object(source, row, "a dialogue record")
        if "context" not in row:
            raise DataError(source, f"missing 'context' (keys: {', '.join(row) or 'none'})")
        intent = row.get("intent")
        if intent is not None and not isinstance(intent, str):
            raise DataError(source, f"'intent' must be text, got {type(intent).__name__}")
        intent = (intent or "").strip()
        if not intent or intent.lower() in ("none", "null", NO_INTENT, "oos", "out_of_scope"):
            output = None
        else:
            output = intent if "(" in intent else f"{intent}()"
        yield source, {"instruction": row["context"], "output": output}


def _none_if_no_intent(output: Any) -> Any:
    return None if isinstance(output, str) and output.strip() in (f"{NO_INTENT}()", NO_INTENT) else output


IMPORTERS: dict[str, Callable[[Path], Iterator[Row]]] = {
    "itag": _itag,
    "alpaca": _alpaca,
    "sharegpt": _sharegpt,
    "dialogue": _dialogue,
}


def import_rows(path: str | Path, fmt: str) -> list[Row]:
    """Read ``path`` in format ``fmt`` (one of :data:`IMPORTERS`) as ``(source, row)`` pairs."""
    try:
        reader = IMPORTERS[fmt]
    except KeyError:
        raise DataError(str(path), f"unknown format {fmt!r}; formats: {', '.join(IMPORTERS)}") from None
    return list(reader(Path(path)))


def _alpaca_row(record: Record, prompt: PromptFormat) -> dict[str, Any]:
    return {"instruction": record.instruction, "input": "", "output": record.target, "system": prompt.system_prompt}


def _sharegpt_row(record: Record, prompt: PromptFormat) -> dict[str, Any]:
    return {
        "conversations": [{"from": "human", "value": record.instruction}, {"from": "gpt", "value": record.target}],
        "system": prompt.system_prompt,
    }


def _datasets_row(record: Record, prompt: PromptFormat) -> dict[str, Any]:
    call = record.calls[0] if record.calls else None
    args = dict(call.kwargs) | {f"arg{i}": v for i, v in enumerate(call.args)} if call else {}
    return {"instruction": record.instruction, "output": record.output, "name": call.name if call else None, "args": args}


EXPORTERS: dict[str, Callable[[Record, PromptFormat], dict[str, Any]]] = {
    "alpaca": _alpaca_row,
    "sharegpt": _sharegpt_row,
    "jsonl": _datasets_row,
}


def export_rows(records: Sequence[Record], path: str | Path, fmt: str, *, prompt: PromptFormat | None = None) -> Path:
    """Write ``records`` as ``fmt`` (alpaca/sharegpt: a JSON array; jsonl: the datasets format)."""
    try:
        convert = EXPORTERS[fmt]
    except KeyError:
        raise DataError(str(path), f"unknown export format {fmt!r}; formats: {', '.join(EXPORTERS)}") from None
    prompt = prompt or PromptFormat()
    rows = [convert(r, prompt) for r in records]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    else:
        path.write_text(json.dumps(rows, ensure_ascii=False, indent=1), encoding="utf-8")
    return path
