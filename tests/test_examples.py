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


def _run(name: str, capsys: pytest.CaptureFixture[str]) -> str:
    pytest.importorskip("llama_cpp")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("sys.argv", [name])  # as if run from the shell, without pytest's arguments
        runpy.run_path(str(EXAMPLES / name), run_name="__main__")
    return capsys.readouterr().out


def test_edge_demo_main_job(capsys: pytest.CaptureFixture[str]) -> None:
    out = _run("edge_demo.py", capsys)
    for call in ("play_music()", "volume_down()", "music_exit()", 'weather_search(city="杭州")', "no_intent()"):
        assert call in out
    assert "model loaded in" in out and " ms " in out


def test_smart_home_example(capsys: pytest.CaptureFixture[str]) -> None:
    out = _run("smart_home.py", capsys)
    assert "家里没有阳台" in out
    assert "'客厅': True" in out and "AC on" in out
    assert '把客厅的灯打开               → light_on(room="客厅")  ' in out  # columns line up


def test_voice_assistant_example(capsys: pytest.CaptureFixture[str]) -> None:
    out = _run("voice_assistant.py", capsys)
    assert "这个我还不会" in out  # the fallback answered the chit-chat
    assert "模型输入: 你好呀。太吵了，把声音开小一点。" in out  # joined with the turn that did not resolve
    assert "模型输入: 帮我定个闹钟\n" in out  # not with the request that ran before it
    assert "(needs_input)  助手: 闹钟定在几点？" in out  # asked for the missing value
    assert 'set_alarm(time="明天早上七点") (ok)' in out  # and the reply filled it
    assert "(needs_confirmation)  助手: 确定要打电话（妈妈）吗？" in out
    assert 'call_contact(contact="妈妈") (ok)' in out
    assert "(cancelled)  助手: 好的，不做了。" in out


def test_fastapi_app_example(live_server) -> None:
    pytest.importorskip("llama_cpp")
    pytest.importorskip("fastapi")
    import httpx

    namespace = runpy.run_path(str(EXAMPLES / "fastapi_app.py"), run_name="fastapi_app")
    with live_server(namespace["app"]) as url:
        assert httpx.get(f"{url}/status").json() == {"hub": "up"}
        body = httpx.post(f"{url}/voice", json={"text": "我想听音乐"}, timeout=30).json()
        assert body["intent"] == "play_music"
        routed = httpx.post(f"{url}/intent/v1/route", json={"text": "太吵了，把声音开小一点"}, timeout=30).json()
        assert routed["call_text"] == "volume_down()"
    namespace["router"].close()


@pytest.mark.parametrize(
    ("text", "width", "expected"),
    [
        ("abc", 6, "abc   "),
        ("杭州", 6, "杭州  "),  # two wide characters fill four columns
        ('city="杭州"', 12, 'city="杭州" '),  # 7 narrow + 2 wide = 11 columns
        ("ＡＢ", 4, "ＡＢ"),  # full-width letters are wide too
        ("天气预报很长", 4, "天气预报很长"),  # never cut, only padded
    ],
)
def test_pad_counts_wide_characters_as_two_columns(text: str, width: int, expected: str) -> None:
    from intentkit.demo import pad

    assert pad(text, width) == expected
