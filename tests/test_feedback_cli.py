"""The loop's commands: feedback export, train --init-from checks, eval --compare's report."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

pytest.importorskip("sqlalchemy")

from typer.testing import CliRunner

from intentkit.cli import app
from intentkit.errors import ConfigError
from intentkit.feedback import LoggedRequest, RequestLog
from trainers.config import TrainConfig
from trainers.data import load_records, records_from_rows
from trainers.evaluate import Prediction, compare_reports, score
from trainers.train import check_init_from

ROOT = Path(__file__).resolve().parent.parent


def logged(request_id: str, text: str, call: str, *, at: float) -> LoggedRequest:
    return LoggedRequest(request_id, at, text, "ok", call, intent=call.split("(")[0], confidence=0.4)


def test_feedback_export_writes_valid_rows_and_honours_since(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'log.db'}"
    with RequestLog(url) as log:
        log.record_now(
            [
                logged("a", "放首歌", "music_next()", at=time.time()),
                logged("b", "我想听音乐", "play_music()", at=time.time()),
                logged("c", "讲个笑话", "play_music()", at=time.time()),
            ]
        )
        log.add_feedback("a", correct="play_music()")
        log.add_feedback("b", vote="up")
        log.add_feedback("c", correct="no_intent()")
    out = tmp_path / "corrections.jsonl"
    result = CliRunner().invoke(app, ["feedback", "export", "--log", url, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "wrote 3 rows" in result.output and "2 corrected" in result.output
    records = load_records(out)
    assert [(r.instruction, r.output) for r in records] == [
        ("放首歌", "play_music()"),
        ("我想听音乐", "play_music()"),
        ("讲个笑话", None),
    ]
    later = CliRunner().invoke(app, ["feedback", "export", "--log", url, "--out", str(out), "--since", "2999-01-01"])
    assert later.exit_code == 0 and "wrote 0 rows" in later.output
    bad = CliRunner().invoke(app, ["feedback", "export", "--log", url, "--out", str(out), "--since", "next tuesday"])
    assert bad.exit_code != 0 and "ISO date" in bad.output


def test_train_init_from_is_checked_before_anything_loads(tmp_path: Path) -> None:
    bundled = ROOT / "models" / "smart-home"
    check_init_from(TrainConfig(init_from=str(bundled)), tmp_path / "out")  # the bundled model continues fine
    with pytest.raises(ConfigError, match=r"no adapter_config\.json"):
        check_init_from(TrainConfig(init_from=str(tmp_path)), tmp_path / "out")
    with pytest.raises(ConfigError, match="full fine-tune"):
        check_init_from(TrainConfig(init_from=str(bundled), method="full"), tmp_path / "out")
    with pytest.raises(ConfigError, match="trained over base 'default'"):
        check_init_from(TrainConfig(init_from=str(bundled), base=str(tmp_path / "other.gguf")), tmp_path / "out")
    with pytest.raises(ConfigError, match="is the output directory"):
        check_init_from(TrainConfig(init_from=str(bundled)), bundled)


def test_train_command_takes_several_files(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        ["train", str(ROOT / "examples" / "demo" / "dev.jsonl"), str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "o")],
    )
    assert result.exit_code != 0 and "missing.jsonl" in result.output  # every file is read before training starts


def test_compare_reports_lists_what_changed() -> None:
    rows = [("我想听音乐", "play_music()"), ("下一首", "music_next()"), ("讲个笑话", None)]
    records = records_from_rows((f"d:{i}", {"instruction": t, "output": o}) for i, (t, o) in enumerate(rows))

    def report(answers: list[str]):  # type: ignore[no-untyped-def]
        from intentkit.parser import parse_calls

        return score(
            [
                Prediction(r, a, [c for c in parse_calls(a) if c.name != "no_intent"], False, 0.9, 10.0)
                for r, a in zip(records, answers, strict=True)
            ]
        )

    old = report(["play_music()", "play_music()", "no_intent()"])
    new = report(["play_music()", "music_next()", "play_music()"])
    text = compare_reports(old, new, "old", "new")
    assert "fixed: 1, broken: 1" in text
    assert "fixed  '下一首'" in text and "broken '讲个笑话'" in text
    assert json.dumps(text)  # plain text
