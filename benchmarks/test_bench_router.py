"""Router overhead, model excluded (FakeBackend answers instantly).

Run: ``pytest benchmarks/test_bench_router.py --benchmark-only``.
Targets on the 2-core reference machine: parse + validate + dispatch of
``weather_search(city="杭州")`` ≤ 50 µs median; a fast-path hit ≤ 100 µs median.
"""

from __future__ import annotations

import pytest

from intentkit import Router, parse_calls
from intentkit.testing import FakeBackend

EXAMPLES = [
    "我想听音乐",
    "放首歌",
    "来点音乐",
    "把声音调小一点",
    "太吵了",
    "音量大一点",
    "暂停播放",
    "下一首",
    "关掉音乐",
    "打开客厅的灯",
    "关灯",
    "打开空调",
    "空调调到二十六度",
    "今天天气怎么样",
    "明天会下雨吗",
    "现在几点了",
    "设个七点的闹钟",
    "讲个笑话",
    "打开窗帘",
    "关上窗帘",
] * 5  # 100 example utterances, like a small app


def build(output: str) -> Router:
    router = Router(backend=FakeBackend(output))

    @router.intent(description="查询天气")
    def weather_search(city: str, date: str = "今天") -> dict:
        return {"city": city, "date": date}

    @router.intent(description="播放音乐")
    def play_music(song: str | None = None, singer: str | None = None) -> str:
        return "ok"

    for i, text in enumerate(EXAMPLES):
        router.add_example("play_music", f"{text}{i}")
    router.add_example("play_music", "我想听周杰伦的歌")
    router.handle("warm up the fast-path index")
    return router


@pytest.mark.benchmark(group="router")
def test_model_path_parse_validate_dispatch(benchmark) -> None:
    router = build('weather_search(city="杭州")')
    result = benchmark(router.handle, "我想去杭州玩，帮我查下天气预报")
    assert result.ok and result.calls[0].arguments == {"city": "杭州", "date": "今天"}


@pytest.mark.benchmark(group="router")
def test_fast_path_hit(benchmark) -> None:
    router = build("no_intent()")
    result = benchmark(router.handle, "我想听周杰伦的歌")
    assert result.ok and result.path == "fast_exact"


@pytest.mark.benchmark(group="router")
def test_fast_path_fuzzy_hit(benchmark) -> None:
    router = build("no_intent()")
    result = benchmark(router.handle, "我想听周杰伦的歌吧")
    assert result.ok and result.path == "fast_fuzzy"


@pytest.mark.benchmark(group="parser")
def test_parse_only(benchmark) -> None:
    calls = benchmark(parse_calls, 'home_turn_on_light(位置="客厅", 灯种="日光灯")')
    assert calls[0].kwargs == {"位置": "客厅", "灯种": "日光灯"}
