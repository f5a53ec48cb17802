"""Teacher labelling: a larger model behind any OpenAI-compatible server labels raw utterances.

The teacher is asked zero-shot (the registry's intents and signatures in its system prompt:
:class:`~intentkit.backends.OpenAIBackend` with ``zero_shot=True``), through a router, so its
answer is parsed and validated like any model's and nothing it says is executed. Each labelled
row keeps the teacher's confidence (from the server's logprobs, where offered) and, when the
current model is given, that model's answer and whether the two agree. Rows where they disagree
can go to the review queue of a request log, with the teacher's call as the suggestion.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from intentkit import Router
from intentkit.errors import DataError
from intentkit.feedback import LoggedRequest, RequestLog, dataset_row, from_result

__all__ = ["Labelled", "label_utterances", "read_utterances"]


@dataclass(slots=True)
class Labelled:
    """One utterance: the teacher's validated call (``None``: it answered nothing valid) and
    confidence, and the current model's answer where one was asked."""

    utterance: str
    teacher: str | None
    teacher_status: str
    teacher_confidence: float | None
    model: str | None = None
    model_confidence: float | None = None
    teacher_error: str | None = None
    request: LoggedRequest | None = None

    @property
    def agree(self) -> bool | None:
        return None if self.model is None or self.teacher is None else self.model == self.teacher

    def to_row(self) -> dict[str, Any]:
        """The datasets-format row (``output`` null for out of scope) with the labelling kept."""
        assert self.teacher is not None
        return {
            **dataset_row(self.utterance, self.teacher),
            "teacher_confidence": self.teacher_confidence,
            "model_output": self.model,
            "model_confidence": self.model_confidence,
            "agree": self.agree,
        }


def read_utterances(path: str | Path) -> list[str]:
    """One utterance per line (blank lines and ``#`` comments skipped); a JSON Lines file of
    records is read for its ``instruction`` fields."""
    from .data import read_objects, read_text

    path = Path(path)
    text = read_text(path)
    if text.lstrip().startswith(("{", "[")):
        out = []
        for source, row in read_objects(path):
            if not isinstance(row, dict) or not isinstance(row.get("instruction"), str):
                raise DataError(source, "expected an object with an 'instruction' (or give one utterance per line)")
            out.append(row["instruction"])
        return out
    lines = [line.strip() for line in text.splitlines()]
    utterances = [line for line in lines if line and not line.startswith("#")]
    if not utterances:
        raise DataError(str(path), "holds no utterances")
    return utterances


def label_utterances(
    utterances: Iterable[str],
    teacher: Router,
    *,
    current: Router | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[Labelled]:
    """Ask ``teacher`` (a router over the teacher's backend) for each utterance, and ``current``
    too where given; a disagreement carries the log row (:attr:`Labelled.request`) that puts it
    in the review queue, with the teacher's call as its suggestion."""
    out = []
    for index, utterance in enumerate(utterances):
        answer = teacher.handle(utterance, dispatch=False)
        valid = answer.status.value in ("ok", "no_intent", "low_confidence", "needs_input", "needs_confirmation")
        item = Labelled(
            utterance,
            answer.call_text if valid else None,
            answer.status.value,
            answer.confidence,
            teacher_error=None if valid else f"{answer.status.value}: {answer.error} (raw: {answer.raw_output!r})",
        )
        if current is not None:
            mine = current.handle(utterance, dispatch=False)
            item.model, item.model_confidence = mine.call_text, mine.confidence
            if item.teacher is not None and item.model != item.teacher:
                request = from_result(mine, RequestLog.new_id(), endpoint="teacher", created_at=time.time())
                request.source = "teacher"
                request.suggestion, request.suggestion_confidence = item.teacher, item.teacher_confidence
                item.request = request
        out.append(item)
        if progress is not None:
            progress(index + 1)
    return out
