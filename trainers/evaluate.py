"""Offline evaluation of a routing model on any file in the datasets format.

Definitions (the seed recipe's first two, kept exactly):

- **intent accuracy**: the predicted function name equals the gold one (out-of-scope rows are
  gold ``no_intent``; a prediction that does not parse counts as wrong);
- **argument accuracy**: the *set of argument values* equals the gold set (in-scope rows);
- **exact call**: name and every ``argument=value`` pair equal;
- **slot precision / recall / F1**: micro-averaged over ``(argument, value)`` pairs, in-scope rows;
- **out-of-scope precision / recall / F1**: "out of scope" as the positive class;
- **ECE**: expected calibration error of the confidence against intent correctness (10 bins).
"""

from __future__ import annotations

import json
import math
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from intentkit import NO_INTENT, Backend, Call, GenerateRequest, Generation, PromptFormat, Registry, parse_calls_lenient

from .data import Record

__all__ = [
    "EvalReport",
    "Prediction",
    "backend_predictor",
    "evaluate",
    "percent",
    "predict_records",
    "score",
]

Predictor = Callable[[str], "Generation | str"]


@dataclass(slots=True)
class Prediction:
    """The model's answer to one record."""

    record: Record
    output: str
    calls: list[Call]
    parse_failed: bool
    confidence: float | None
    latency_ms: float

    @property
    def intent(self) -> str:
        if self.parse_failed:
            return "<unparsed>"
        return self.calls[0].name if self.calls else NO_INTENT


def _pairs(calls: Iterable[Call]) -> Counter[tuple[str, str]]:
    pairs: Counter[tuple[str, str]] = Counter()
    for call in calls:
        items = [(f"arg{i}", v) for i, v in enumerate(call.args)] + list(call.kwargs.items())
        for key, value in items:
            for item in value if isinstance(value, list) else [value]:
                pairs[(key, _text(item))] += 1
    return pairs


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _values(calls: Iterable[Call]) -> set[str]:
    return {value for _, value in _pairs(calls)}


@dataclass(slots=True)
class EvalReport:
    """Every figure of one evaluation, plus the errors to look at. A figure with nothing to
    measure is None, not 0: the in-scope and argument accuracies of a file without in-scope rows,
    the slot scores where neither the gold nor the predicted calls hold an argument."""

    n: int
    intent_accuracy: float
    in_scope_intent_accuracy: float | None
    argument_accuracy: float | None
    exact_call_accuracy: float
    slot_precision: float | None
    slot_recall: float | None
    slot_f1: float | None
    parse_failure_rate: float
    out_of_scope: dict[str, float] | None
    ece: float | None
    latency_p50_ms: float
    latency_p95_ms: float
    per_intent: dict[str, dict[str, float]]
    confusion: dict[str, dict[str, int]]
    errors: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        lines = [
            f"records                 {self.n}",
            f"intent accuracy         {self.intent_accuracy:.2%}  (in scope {percent(self.in_scope_intent_accuracy)})",
            f"argument accuracy       {percent(self.argument_accuracy, 'no in-scope rows')}",
            f"exact call accuracy     {self.exact_call_accuracy:.2%}",
            "slot P / R / F1         "
            + (
                f"{percent(self.slot_precision)} / {percent(self.slot_recall)} / {percent(self.slot_f1)}"
                if self.slot_f1 is not None
                else "n/a (no arguments in the gold or the predicted calls)"
            ),
            f"parse failures          {self.parse_failure_rate:.2%}",
            f"latency p50 / p95       {self.latency_p50_ms:.1f} / {self.latency_p95_ms:.1f} ms",
        ]
        if self.out_of_scope:
            oos = self.out_of_scope
            lines.append(f"out of scope P / R / F1 {oos['precision']:.2%} / {oos['recall']:.2%} / {oos['f1']:.3f}")
        if self.ece is not None:
            lines.append(f"calibration error (ECE) {self.ece:.3f}")
        return "\n".join(lines)

    def to_markdown(self) -> str:
        rows = ["| metric | value |", "|---|---|"] + [
            f"| {name} | {value} |" for name, value in map(_md_row, self.summary().splitlines())
        ]
        intents = ["", "| intent | support | precision | recall | F1 |", "|---|---|---|---|---|"] + [
            f"| {name} | {int(m['support'])} | {m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} |"
            for name, m in sorted(self.per_intent.items())
        ]
        errors = ["", f"## Errors ({len(self.errors)})", "", "| source | utterance | gold | predicted |", "|---|---|---|---|"] + [
            f"| {e['source']} | {_md(e['instruction'])} | `{_md(e['gold'])}` | `{_md(e['predicted'])}` |"
            for e in self.errors[:200]
        ]
        return "\n".join(["# Evaluation", "", *rows, *intents, *errors]) + "\n"

    def save(self, directory: str | Path) -> list[Path]:
        """Write ``report.json``, ``report.md`` and ``confusion.png`` (when matplotlib is installed)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        written = [directory / "report.json", directory / "report.md"]
        written[0].write_text(json.dumps(self.to_dict(), ensure_ascii=False, indent=2), encoding="utf-8")
        written[1].write_text(self.to_markdown(), encoding="utf-8")
        png = _confusion_png(self.confusion, directory / "confusion.png")
        if png is not None:
            written.append(png)
        return written


def percent(value: float | None, why: str = "") -> str:
    """``value`` as a percentage; ``n/a`` (with ``why``) for a figure with nothing to measure."""
    if value is None:
        return f"n/a ({why})" if why else "n/a"
    return f"{value:.2%}"


def _md_row(line: str) -> tuple[str, str]:
    label = line[:24].strip()
    return label, line[24:].strip()


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def backend_predictor(
    backend: Backend, registry: Registry, prompt: PromptFormat | None = None, max_tokens: int = 64
) -> Predictor:
    """A predictor that asks ``backend`` exactly as the router would."""
    prompt = prompt or PromptFormat()
    catalog = registry.catalog

    def predict(text: str) -> Generation:
        return backend.generate(GenerateRequest(text, catalog, prompt, max_tokens))

    return predict


def predict_records(
    records: Sequence[Record], predict: Predictor, *, progress: Callable[[int, int], None] | None = None
) -> list[Prediction]:
    """Run ``predict`` on every record (timed); :func:`score` turns the result into a report."""
    predictions = []
    for index, record in enumerate(records):
        start = time.perf_counter()
        answer = predict(record.instruction)
        latency = (time.perf_counter() - start) * 1000
        generation = answer if isinstance(answer, Generation) else Generation(str(answer))
        parsed = parse_calls_lenient(generation.text)
        calls = [c for c in parsed.calls if c.name != NO_INTENT]
        predictions.append(Prediction(record, generation.text, calls, bool(parsed.errors), generation.confidence, latency))
        if progress is not None:
            progress(index + 1, len(records))
    return predictions


def evaluate(records: Sequence[Record], predict: Predictor, *, progress: Callable[[int, int], None] | None = None) -> EvalReport:
    """Run ``predict`` on every record and score the answers."""
    return score(predict_records(records, predict, progress=progress))


def score(predictions: Sequence[Prediction]) -> EvalReport:
    """Compute every metric from predictions (no model involved)."""
    n = len(predictions)
    in_scope = [p for p in predictions if p.record.in_scope]
    intent_ok = [p.intent == p.record.intent for p in predictions]
    exact_ok = [ok and _pairs(p.calls) == _pairs(p.record.calls) for ok, p in zip(intent_ok, predictions, strict=True)]
    args_ok = [_values(p.calls) == _values(p.record.calls) and not p.parse_failed for p in in_scope]
    tp = fp = fn = 0
    for p in in_scope:
        gold, pred = _pairs(p.record.calls), _pairs(p.calls)
        hit = sum((gold & pred).values())
        tp, fp, fn = tp + hit, fp + sum(pred.values()) - hit, fn + sum(gold.values()) - hit
    precision = recall = None  # no arguments on either side: nothing to score
    if tp + fp + fn:  # arguments on one side only score 0 on the other
        precision, recall = (tp / (tp + fp) if tp + fp else 0.0), (tp / (tp + fn) if tp + fn else 0.0)
    confusion: dict[str, dict[str, int]] = {}
    for p in predictions:
        row = confusion.setdefault(p.record.intent, {})
        row[p.intent] = row.get(p.intent, 0) + 1
    latencies = sorted(p.latency_ms for p in predictions)
    return EvalReport(
        n=n,
        intent_accuracy=_mean(intent_ok),
        in_scope_intent_accuracy=_mean([ok for ok, p in zip(intent_ok, predictions, strict=True) if p.record.in_scope])
        if in_scope
        else None,
        argument_accuracy=_mean(args_ok) if in_scope else None,
        exact_call_accuracy=_mean(exact_ok),
        slot_precision=precision,
        slot_recall=recall,
        slot_f1=_f1(precision, recall) if precision is not None and recall is not None else None,
        parse_failure_rate=_mean([p.parse_failed for p in predictions]),
        out_of_scope=_oos(predictions) if len(in_scope) < n else None,
        ece=_ece([(p.confidence, ok) for p, ok in zip(predictions, intent_ok, strict=True) if p.confidence is not None]),
        latency_p50_ms=_percentile(latencies, 50),
        latency_p95_ms=_percentile(latencies, 95),
        per_intent=_per_intent(predictions),
        confusion=confusion,
        errors=[
            {"source": p.record.source, "instruction": p.record.instruction, "gold": p.record.target, "predicted": p.output}
            for p, ok in zip(predictions, exact_ok, strict=True)
            if not ok
        ],
    )


def _mean(flags: Sequence[bool]) -> float:
    return sum(flags) / len(flags) if flags else 0.0


def _f1(precision: float, recall: float) -> float:
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def _percentile(sorted_values: Sequence[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    rank = (len(sorted_values) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (rank - low)


def _oos(predictions: Sequence[Prediction]) -> dict[str, float]:
    tp = sum(not p.record.in_scope and p.intent == NO_INTENT for p in predictions)
    fp = sum(p.record.in_scope and p.intent == NO_INTENT for p in predictions)
    fn = sum(not p.record.in_scope and p.intent != NO_INTENT for p in predictions)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return {"precision": precision, "recall": recall, "f1": _f1(precision, recall), "support": float(tp + fn)}


def _per_intent(predictions: Sequence[Prediction]) -> dict[str, dict[str, float]]:
    gold = Counter(p.record.intent for p in predictions)
    predicted = Counter(p.intent for p in predictions)
    correct = Counter(p.record.intent for p in predictions if p.intent == p.record.intent)
    result = {}
    for intent in gold:
        precision = correct[intent] / predicted[intent] if predicted[intent] else 0.0
        recall = correct[intent] / gold[intent]
        result[intent] = {"support": float(gold[intent]), "precision": precision, "recall": recall, "f1": _f1(precision, recall)}
    return result


def _ece(pairs: Sequence[tuple[float | None, bool]], bins: int = 10) -> float | None:
    if not pairs:
        return None
    total = 0.0
    for b in range(bins):
        low, high = b / bins, (b + 1) / bins
        members = [(c, ok) for c, ok in pairs if c is not None and (low < c <= high or (b == 0 and c == 0))]
        if members:
            confidence = sum(c for c, _ in members if c is not None) / len(members)
            accuracy = sum(ok for _, ok in members) / len(members)
            total += len(members) / len(pairs) * abs(confidence - accuracy)
    return total


def _confusion_png(confusion: dict[str, dict[str, int]], path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        warnings.warn(
            f"{path.name} not written: matplotlib is not installed (pip install 'intentkit-router[train]')", stacklevel=3
        )
        return None
    labels = sorted(set(confusion) | {p for row in confusion.values() for p in row})
    index = {label: i for i, label in enumerate(labels)}
    grid = [[0] * len(labels) for _ in labels]
    for gold, row in confusion.items():
        for predicted, count in row.items():
            grid[index[gold]][index[predicted]] = count
    size = max(4.0, 0.18 * len(labels))
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(grid, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=5)
    ax.set_yticks(range(len(labels)), labels, fontsize=5)
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return path


def compare_reports(a: EvalReport, b: EvalReport, name_a: str = "A", name_b: str = "B") -> str:
    """Two evaluations of the same records side by side, and the utterances whose exact-call
    outcome changed: fixed (wrong under A, right under B) and broken (the other way)."""

    def row(label: str, x: float | None, y: float | None, scale: float = 100, unit: str = "%") -> str:
        if x is None or y is None:
            return f"{label:<22} {'n/a':>10} {'n/a':>10}"
        return f"{label:<22} {x * scale:>9.2f}{unit} {y * scale:>9.2f}{unit}  {(y - x) * scale:+.2f}"

    width = max(10, len(name_a), len(name_b))
    lines = [
        f"{'':<22} {name_a[-width:]:>10} {name_b[-width:]:>10}",
        row("intent accuracy", a.intent_accuracy, b.intent_accuracy),
        row("in-scope intent", a.in_scope_intent_accuracy, b.in_scope_intent_accuracy),
        row("argument accuracy", a.argument_accuracy, b.argument_accuracy),
        row("exact call", a.exact_call_accuracy, b.exact_call_accuracy),
        row("slot F1", a.slot_f1, b.slot_f1),
        row("OOS F1", (a.out_of_scope or {}).get("f1"), (b.out_of_scope or {}).get("f1"), 1, ""),
        row("latency p50 (ms)", a.latency_p50_ms, b.latency_p50_ms, 1, ""),
    ]
    wrong_a = {(e["source"], e["instruction"]): e for e in a.errors}
    wrong_b = {(e["source"], e["instruction"]): e for e in b.errors}
    fixed = [wrong_a[k] for k in wrong_a if k not in wrong_b]
    broken = [wrong_b[k] for k in wrong_b if k not in wrong_a]
    lines.append(f"fixed: {len(fixed)}, broken: {len(broken)}, wrong under both: {len(set(wrong_a) & set(wrong_b))}")
    lines += [f"  fixed  {e['instruction']!r}: {e['gold']}" for e in fixed]
    lines += [f"  broken {e['instruction']!r}: {e['gold']} (now {e['predicted']})" for e in broken]
    return "\n".join(lines)
