"""Evaluation metrics on hand-checked predictions."""

from __future__ import annotations

import contextlib
import importlib.util
import json
from pathlib import Path

import pytest

from intentkit import Generation
from trainers.data import records_from_rows
from trainers.evaluate import evaluate

ROWS = [
    {"instruction": "u1", "output": 'weather_search(city="杭州", date="明天")'},
    {"instruction": "u2", "output": 'weather_search(city="上海")'},
    {"instruction": "u3", "output": "play_music()"},
    {"instruction": "u4", "output": 'play_music(singer="周杰伦")'},
    {"instruction": "u5", "output": None},
    {"instruction": "u6", "output": None},
]
RECORDS = records_from_rows((f"dev.jsonl:{i + 1}", row) for i, row in enumerate(ROWS))
ANSWERS = {
    "u1": Generation("weather_search(杭州, 明天)", confidence=0.9),  # positional: values equal, names differ
    "u2": Generation('weather_search(city="北京")', confidence=0.8),  # right intent, wrong slot
    "u3": Generation("play_music()", confidence=0.95),
    "u4": Generation("play_music(周杰伦", confidence=0.3),  # does not parse
    "u5": Generation("no_intent()", confidence=0.7),
    "u6": Generation("play_music()", confidence=0.6),  # out of scope missed
}


@pytest.fixture(scope="module")
def report():
    return evaluate(RECORDS, lambda text: ANSWERS[text])


def test_seed_metrics(report) -> None:
    assert report.n == 6
    assert report.intent_accuracy == pytest.approx(4 / 6)  # u1 u2 u3 u5
    assert report.in_scope_intent_accuracy == pytest.approx(3 / 4)
    assert report.argument_accuracy == pytest.approx(2 / 4)  # u1 (same value set) and u3
    assert report.exact_call_accuracy == pytest.approx(2 / 6)  # u3 and u5
    assert report.parse_failure_rate == pytest.approx(1 / 6)


def test_slot_scores(report) -> None:
    # gold pairs: (city,杭州) (date,明天) (city,上海) (singer,周杰伦); predicted: (arg0,杭州) (arg1,明天) (city,北京)
    assert report.slot_precision == 0.0 and report.slot_recall == 0.0 and report.slot_f1 == 0.0


def test_out_of_scope_and_per_intent(report) -> None:
    assert report.out_of_scope == {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3), "support": 2.0}
    assert report.per_intent["play_music"]["precision"] == pytest.approx(1 / 2)
    assert report.per_intent["play_music"]["recall"] == pytest.approx(1 / 2)
    assert report.confusion["no_intent"] == {"no_intent": 1, "play_music": 1}
    assert report.confusion["play_music"] == {"play_music": 1, "<unparsed>": 1}


def test_calibration(report) -> None:
    # bins: 0.9 ok, 0.8 ok, 0.95 ok, 0.3 wrong, 0.7 ok, 0.6 wrong -> |conf - acc| weighted
    expected = (abs(0.9 - 1) + abs(0.8 - 1) + abs(0.95 - 1) + abs(0.3 - 0) + abs(0.7 - 1) + abs(0.6 - 0)) / 6
    assert report.ece == pytest.approx(expected)


def test_errors_point_at_source_lines(report) -> None:
    assert [e["source"] for e in report.errors] == ["dev.jsonl:1", "dev.jsonl:2", "dev.jsonl:4", "dev.jsonl:6"]


def test_reports_are_written(report, tmp_path: Path) -> None:
    """The confusion matrix needs matplotlib (the train extra): without it, the report says so."""
    plotting = importlib.util.find_spec("matplotlib") is not None
    with contextlib.nullcontext() if plotting else pytest.warns(UserWarning, match="confusion.png not written: matplotlib"):
        written = report.save(tmp_path)
    assert {p.name for p in written} == {"report.json", "report.md"} | ({"confusion.png"} if plotting else set())
    data = json.loads((tmp_path / "report.json").read_text(encoding="utf-8"))
    assert data["exact_call_accuracy"] == pytest.approx(1 / 3)
    markdown = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "| intent accuracy | 66.67%" in markdown and "| dev.jsonl:4 | u4 |" in markdown
    assert (tmp_path / "confusion.png").read_bytes()[:4] == b"\x89PNG"
    assert "out of scope P / R / F1 100.00% / 50.00% / 0.667" in report.summary()


def test_plain_text_predictors_and_perfect_scores() -> None:
    gold = {r.instruction: r.target for r in RECORDS}
    report = evaluate(RECORDS, gold.__getitem__)
    assert report.intent_accuracy == report.exact_call_accuracy == report.slot_f1 == 1.0
    assert report.ece is None and report.errors == []


def test_figures_with_nothing_to_measure_are_none_not_zero(tmp_path: Path) -> None:
    # A file of out-of-scope rows only (as dev_oos.jsonl): no in-scope accuracy, no argument
    # accuracy, no slots to score. Printing 0.00 % for these would read as a failure.
    oos = records_from_rows([("oos.jsonl:1", {"instruction": "讲个笑话", "output": None})])
    report = evaluate(oos, lambda text: "no_intent()")
    assert report.intent_accuracy == report.exact_call_accuracy == 1.0
    assert report.in_scope_intent_accuracy is None and report.argument_accuracy is None
    assert report.slot_precision is None and report.slot_recall is None and report.slot_f1 is None
    summary = report.summary()
    assert "(in scope n/a)" in summary
    assert "argument accuracy       n/a (no in-scope rows)" in summary
    assert "slot P / R / F1         n/a (no arguments in the gold or the predicted calls)" in summary
    report.save(tmp_path)
    assert json.loads((tmp_path / "report.json").read_text(encoding="utf-8"))["slot_f1"] is None
    assert "| argument accuracy | n/a (no in-scope rows) |" in (tmp_path / "report.md").read_text(encoding="utf-8")


def test_slots_on_one_side_only_score_zero() -> None:
    rows = [("dev.jsonl:1", {"instruction": "放歌", "output": "play_music()"})]
    report = evaluate(records_from_rows(rows), lambda text: 'play_music(singer="周杰伦")')
    assert (report.slot_precision, report.slot_recall, report.slot_f1) == (0.0, 0.0, 0.0)
    assert report.argument_accuracy == 0.0
    no_slots = evaluate(records_from_rows(rows), lambda text: "play_music()")
    assert no_slots.slot_f1 is None and no_slots.argument_accuracy == 1.0
