"""The intentkit command: data subcommands end to end, and one-line errors for user mistakes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("typer")
from typer.testing import CliRunner

from intentkit.cli import app
from trainers.data import load_records

runner = CliRunner()
DEMO = Path(__file__).parent.parent / "examples" / "demo"


def test_data_validate_reports_counts():
    result = runner.invoke(app, ["data", "validate", str(DEMO / "train.jsonl"), "--dev", str(DEMO / "dev.jsonl")])
    assert result.exit_code == 0, result.output
    assert "weather_search" in result.output


def test_data_validate_lists_every_row_that_does_not_load(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    lines = [
        '{"instruction": "放首歌", "output": "play_music()"}',
        '{"instruction": "x", "output": "play_music(',
        '{"instruction": "调小声", "output": "volume_down(level=)"}',
        '{"instruction": "天气"}',
        '["not", "an", "object"]',
    ]
    (tmp_path / "bad.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = runner.invoke(app, ["data", "validate", "bad.jsonl"])
    assert result.exit_code == 1, result.output
    assert "1 records, 1 intents" in result.output
    for where, message in [
        (2, "invalid JSON"),
        (3, "'output' does not parse: missing value at position 18"),
        (4, "missing 'output'"),
        (5, "expected an object"),
    ]:
        assert f"error: bad.jsonl:{where}: {message}" in result.output


def test_data_convert_round_trip(tmp_path):
    alpaca = tmp_path / "a.json"
    result = runner.invoke(app, ["data", "convert", str(DEMO / "dev.jsonl"), str(alpaca), "--to", "alpaca"])
    assert result.exit_code == 0, result.output
    back = tmp_path / "b.jsonl"
    result = runner.invoke(app, ["data", "convert", str(alpaca), str(back), "--from", "alpaca"])
    assert result.exit_code == 0, result.output
    original = [json.loads(line)["output"] for line in (DEMO / "dev.jsonl").read_text(encoding="utf-8").splitlines()]
    converted = [json.loads(line)["output"] for line in back.read_text(encoding="utf-8").splitlines()]
    assert converted == original


def test_data_augment(tmp_path):
    result = runner.invoke(
        app,
        [
            "data",
            "augment",
            str(DEMO / "templates.json"),
            "--train",
            str(tmp_path / "t.jsonl"),
            "--dev",
            str(tmp_path / "d.jsonl"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "t.jsonl").read_bytes() == (DEMO / "train.jsonl").read_bytes()


def test_data_swap(tmp_path):
    result = runner.invoke(app, ["data", "swap", str(DEMO / "train.jsonl"), "--out", str(tmp_path / "s.jsonl")])
    assert result.exit_code == 0, result.output
    original = load_records(DEMO / "train.jsonl")
    written = load_records(tmp_path / "s.jsonl")
    assert [r.output for r in written[: len(original)]] == [r.output for r in original]
    copies = written[len(original) :]
    assert copies and f"{len(copies)} recombined copies" in result.output
    assert not {r.instruction for r in copies} & {r.instruction for r in original}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["data", "validate", "nope.jsonl"], "nope.jsonl: no such file"),
        (["train", "{bad}", "--out", "m"], "bad.jsonl:2: invalid JSON"),
        (["data", "convert", "{bad}", "out.json", "--from", "csv"], "unknown format 'csv'"),
        (["route", "hi", "--backend", "nope", "--intents-from", "{good}"], "unknown backend 'nope'"),
        (["route", "hi", "--lora", "missing.gguf"], "not found: missing.gguf"),
        (["eval", "empty.jsonl", "--intents-from", "{good}"], "empty.jsonl: holds no records (an empty file)"),
        (["bench", "empty.jsonl", "--intents-from", "{good}"], "empty.jsonl: holds no records"),
        (["train", "empty.jsonl", "--out", "m"], "empty.jsonl: holds no records"),
    ],
)
def test_user_mistakes_are_one_line(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.jsonl").write_text('{"instruction": "a", "output": "f()"}\n{oops\n', encoding="utf-8")
    (tmp_path / "good.jsonl").write_text('{"instruction": "a", "output": "f()"}\n', encoding="utf-8")
    (tmp_path / "empty.jsonl").write_text("\n", encoding="utf-8")
    args = [a.replace("{bad}", "bad.jsonl").replace("{good}", "good.jsonl") for a in args]
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output
    assert "hint:" in result.output


def test_data_dialogues_writes_a_training_file(tmp_path: Path) -> None:
    out = tmp_path / "multi.jsonl"
    result = runner.invoke(app, ["data", "dialogues", str(DEMO / "train.jsonl"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "408 dialogues" in result.output and "call_contact" in result.output
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert sum(isinstance(r["instruction"], list) for r in rows) == 408
    assert out.read_text(encoding="utf-8") == (DEMO / "train-dialogues.jsonl").read_text(encoding="utf-8")  # as bundled


def test_a_model_answering_other_intents_routes_with_its_own(tmp_path: Path) -> None:
    """``--model DIR`` alone: the demo's handlers for a model trained on the demo's intents, the
    intents of the training rows the directory keeps for any other, an error where it keeps none."""
    from intentkit.cli import _registry_of_model
    from intentkit.errors import ConfigError
    from intentkit.model_dir import ModelInfo

    ModelInfo(intents=["no_intent", "play_music", "weather_search"]).save(tmp_path)
    assert _registry_of_model(tmp_path) is None
    ModelInfo(intents=["poetry_default", "tvchannel_play"]).save(tmp_path)
    with pytest.raises(
        ConfigError, match=r"answers 2 intents the demo's handlers do not register \(poetry_default, tvchannel_play\)"
    ):
        _registry_of_model(tmp_path)
    rows = [
        {"instruction": "念首诗", "output": "poetry_default()"},
        {"instruction": "播放湖南卫视", "output": 'tvchannel_play(name="湖南卫视")'},
    ]
    (tmp_path / "drafts.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    registry = _registry_of_model(tmp_path / "model.gguf")  # a file in the directory: the same record
    assert sorted(registry.names) == ["poetry_default", "tvchannel_play"]
