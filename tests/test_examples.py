"""Every example is executed: examples that rot are worse than none."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_quickstart_routes_every_utterance(capsys: pytest.CaptureFixture[str]) -> None:
    runpy.run_path(str(EXAMPLES / "quickstart.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert 'weather_search(city="杭州", date="今天")' in out
    assert "音量 40" in out
    assert "no_intent" in out and "unknown intent 'book_flight'" in out
    assert out.count("-> ok") == 7
