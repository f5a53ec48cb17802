"""Teacher labelling against a real OpenAI-compatible server: llama-cpp-python's, on 127.0.0.1,
serving the bundled model as a stand-in teacher, asked zero-shot with the registry's intents in
its prompt; disagreements with the current model go to the review queue."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("llama_cpp.server.app", reason="needs llama-cpp-python[server] (the dev extra)")
pytest.importorskip("httpx")
pytest.importorskip("sqlalchemy")

from typer.testing import CliRunner

from intentkit import Router
from intentkit.backends.llamacpp.bundled import bundled_model_dir
from intentkit.backends.openai import OpenAIBackend
from intentkit.cli import app
from intentkit.demo import SmartHome
from intentkit.feedback import RequestLog
from intentkit.parser import parse_calls
from intentkit.testing import FakeBackend, llama_cpp_server
from trainers.label import label_utterances, read_utterances

pytestmark = pytest.mark.slow
UTTERANCES = ["我想听音乐", "帮我查一下杭州明天的天气", "把客厅的灯打开", "下一首"]
TRAIN = Path(__file__).resolve().parent.parent / "examples" / "demo" / "train.jsonl"


@pytest.fixture(scope="module")
def teacher_url():
    from intentkit.backends.llamacpp import LlamaCppBackend

    backend = LlamaCppBackend.default()
    try:
        with llama_cpp_server(backend.loaded_path) as url:
            yield url
    finally:
        backend.close()


def test_the_teacher_labels_validated_calls_and_disputes_go_to_review(teacher_url: str, tmp_path: Path) -> None:
    teacher = SmartHome().register(
        Router(OpenAIBackend(teacher_url, model="intentkit", zero_shot=True, mode="completions", timeout=60))
    )
    current = SmartHome().register(Router(FakeBackend(lambda r: "music_next()", confidence=0.8), fast_path=False))
    with teacher, current:
        labelled = label_utterances(UTTERANCES, teacher, current=current)
    assert [item.utterance for item in labelled] == UTTERANCES
    valid = [item for item in labelled if item.teacher is not None]
    assert len(valid) >= 3
    for item in valid:  # every label is a call the registry accepts (or no_intent())
        for call in parse_calls(item.teacher):
            if call.name != "no_intent":
                teacher.registry.bind(call)
        assert item.teacher_confidence is not None and 0 < item.teacher_confidence <= 1  # from the server's logprobs
    assert labelled[0].teacher == "play_music()"
    disputed = [item for item in labelled if item.request is not None]
    assert disputed and all(item.teacher != "music_next()" for item in disputed)
    with RequestLog(f"sqlite:///{tmp_path / 'log.db'}") as log:
        log.record_now([item.request for item in disputed])  # type: ignore[misc]
        queue = log.review_queue(threshold=0.0)
        assert {r.utterance for r in queue} == {item.utterance for item in disputed}
        assert all(r.source == "teacher" and r.suggestion and r.call_text == "music_next()" for r in queue)


def test_data_label_command(teacher_url: str, tmp_path: Path) -> None:
    utterances = tmp_path / "raw.txt"
    utterances.write_text("# raw requests from the log\n我想听音乐\n\n下一首\n", encoding="utf-8")
    out = tmp_path / "labelled.jsonl"
    result = CliRunner().invoke(
        app,
        [
            "data", "label", str(utterances), "--teacher-url", teacher_url, "--teacher-model", "intentkit",
            "--intents-from", str(TRAIN), "--out", str(out), "--model", str(bundled_model_dir("smart-home")),
            "--log", f"sqlite:///{tmp_path / 'log.db'}",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["instruction"] for r in rows] == ["我想听音乐", "下一首"] or len(rows) < 2
    assert all({"teacher_confidence", "model_output", "agree"} <= set(r) for r in rows)
    assert "labelled rows" in result.output and "disagree on" in result.output


def test_read_utterances(tmp_path: Path) -> None:
    jsonl = tmp_path / "rows.jsonl"
    jsonl.write_text('{"instruction": "你好", "output": null}\n', encoding="utf-8")
    assert read_utterances(jsonl) == ["你好"]
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n", encoding="utf-8")
    from intentkit.errors import DataError

    with pytest.raises(DataError, match="no utterances"):
        read_utterances(empty)
