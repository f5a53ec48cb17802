"""Router.handle / ahandle through the public FakeBackend: every status, sync and async."""

from __future__ import annotations

import asyncio
import threading

import pytest

from intentkit import (
    ArgumentError,
    BackendError,
    Generation,
    HandlerError,
    InputError,
    ParseError,
    Router,
    Status,
    UnknownIntentError,
)
from intentkit.testing import FakeBackend


def make_router(script, **settings) -> tuple[Router, list]:
    router = Router(backend=FakeBackend(script), **settings)
    log: list = []

    @router.intent(description="播放音乐", examples=["我想听音乐"])
    def play_music(song: str | None = None, singer: str | None = None) -> str:
        log.append(("play_music", song, singer))
        return f"正在播放 {singer or ''}{song or ''}".strip()

    @router.intent(description="查询天气")
    def weather_search(city: str, date: str = "今天") -> dict:
        log.append(("weather_search", city, date))
        return {"city": city, "date": date, "weather": "晴"}

    @router.intent(description="调小音量", examples=["声音小一点"])
    def volume_down() -> str:
        log.append(("volume_down",))
        return "音量已调小"

    @router.intent(description="会出错的意图")
    def broken() -> None:
        raise RuntimeError("device offline")

    return router, log


def test_the_readme_example() -> None:
    router, _ = make_router("weather_search(杭州)")
    result = router.handle("我想去杭州玩，帮我查下天气预报")
    assert result.status == "ok" and result.ok
    assert result.calls[0].name == "weather_search"
    assert result.calls[0].arguments == {"city": "杭州", "date": "今天"}
    assert result.results[0] == {"city": "杭州", "date": "今天", "weather": "晴"}
    assert result.raw_output == "weather_search(杭州)"
    assert result.path == "model"
    assert result.timings.total_ms >= result.timings.model_ms >= 0


@pytest.mark.parametrize(
    ("output", "status", "error_type"),
    [
        ("play_music(singer=周杰伦)", Status.OK, None),
        ("no_intent()", Status.NO_INTENT, None),
        ("", Status.NO_INTENT, None),
        ("我不太明白", Status.INVALID, ParseError),
        ("play_music(singer=周杰伦", Status.INVALID, ParseError),
        ("order_pizza()", Status.INVALID, UnknownIntentError),
        ('__import__("os").system("id")', Status.INVALID, ParseError),
        ('os.system("rm -rf /")', Status.INVALID, ParseError),
        ("exec(print(1))", Status.INVALID, ParseError),
        ("eval(1)", Status.INVALID, UnknownIntentError),
        ("weather_search()", Status.NEEDS_INPUT, None),
        ("weather_search(city=杭州, unit=C)", Status.INVALID, ArgumentError),
        ("play_music(); no_intent()", Status.INVALID, ParseError),
        ("broken()", Status.HANDLER_ERROR, HandlerError),
    ],
)
def test_every_status(output: str, status: Status, error_type: type | None) -> None:
    router, log = make_router(output)
    result = router.handle("一句话")
    assert result.status == status
    if error_type is None:
        assert result.errors == []
    else:
        assert isinstance(result.error, error_type)
    if status is not Status.OK:
        assert log == []  # nothing dispatched unless everything validated


def test_invalid_calls_dispatch_nothing_even_if_others_are_valid() -> None:
    router, log = make_router("play_music()\nweather_search()")
    result = router.handle("放歌然后查天气")
    assert result.status == "invalid" and log == []
    assert [c.name for c in result.calls] == ["play_music"]


def test_multi_intent_dispatches_every_call_in_order() -> None:
    router, log = make_router("volume_down()；play_music(song=七里香)\nweather_search(上海)")
    result = router.handle("小声点，放七里香，再查下上海天气")
    assert result.ok
    assert [c.name for c in result.calls] == ["volume_down", "play_music", "weather_search"]
    assert log == [("volume_down",), ("play_music", "七里香", None), ("weather_search", "上海", "今天")]
    assert len(result.results) == 3


def test_handler_error_is_captured_and_the_router_keeps_serving() -> None:
    router, _log = make_router(["broken()\nvolume_down()", "play_music()"])
    first = router.handle("a")
    assert first.status == "handler_error"
    assert first.results == [None, "音量已调小"]
    error = first.error
    assert isinstance(error, HandlerError) and isinstance(error.exception, RuntimeError)
    assert "device offline" in error.traceback and "Traceback" in error.traceback
    assert router.handle("b").ok


def test_backend_failure_is_a_status_not_a_crash() -> None:
    def explode(request):
        raise ConnectionError("server went away")

    router, _ = make_router(explode)
    result = router.handle("天气")
    assert result.status == "backend_error"
    assert isinstance(result.error, BackendError) and "ConnectionError" in str(result.error)
    assert isinstance(result.error.__cause__, ConnectionError)


def test_low_confidence_is_not_dispatched() -> None:
    router, log = make_router(lambda r: Generation("play_music()", confidence=0.3), confidence_threshold=0.5)
    result = router.handle("嗯")
    assert result.status == "low_confidence" and result.confidence == 0.3
    assert [c.name for c in result.calls] == ["play_music"] and log == []
    router, log = make_router(lambda r: Generation("play_music()", confidence=0.9), confidence_threshold=0.5)
    assert router.handle("嗯").ok and log


def test_fallback_answers_no_intent() -> None:
    router, _ = make_router("no_intent()")
    router.fallback(lambda text: f"抱歉，我不明白：{text}")
    result = router.handle("你好呀")
    assert result.status == "no_intent" and result.results == ["抱歉，我不明白：你好呀"]


def test_failing_fallback_is_a_handler_error() -> None:
    router, _ = make_router("no_intent()")

    @router.fallback
    def fallback(text: str) -> None:
        raise ValueError("no")

    assert router.handle("你好").status == "handler_error"


@pytest.mark.parametrize(
    ("text", "path", "confidence"),
    [("我想听音乐", "fast_exact", 1.0), ("我想听音乐！", "fast_exact", 1.0), ("  我想 听音乐。", "fast_exact", 1.0)],
)
def test_fast_path_answers_examples_without_the_model(text: str, path: str, confidence: float) -> None:
    router, log = make_router([])  # any model call would exhaust the script
    result = router.handle(text)
    assert result.ok and result.path == path and result.confidence == confidence
    assert log == [("play_music", None, None)]
    assert router.backend.requests == []  # type: ignore[union-attr]


def test_fast_path_fuzzy_match_and_added_examples() -> None:
    router, _ = make_router([])
    router.add_example("weather_search", ("帮我查一下杭州今天的天气", {"city": "杭州"}))
    result = router.handle("帮我查一下杭州今天的天气呀")
    assert result.ok and result.path == "fast_fuzzy" and 0.92 <= result.confidence < 1
    assert result.calls[0].arguments == {"city": "杭州", "date": "今天"}


def test_fast_path_refuses_when_two_intents_are_about_as_close() -> None:
    router = Router(backend=FakeBackend("no_intent()"))

    @router.intent(examples=["帮我把客厅的灯光调亮一点"])
    def brighter() -> None: ...

    @router.intent(examples=["帮我把客厅的灯光调暗一点"])
    def dimmer() -> None: ...

    assert router.handle("帮我把客厅的灯光调亮一点").calls[0].name == "brighter"
    result = router.handle("帮我把客厅的灯光调一点")
    assert result.path == "model"


def test_fast_path_can_be_turned_off() -> None:
    router, _ = make_router("volume_down()", fast_path=False)
    assert router.handle("我想听音乐").path == "model"


def test_session_joins_turns_like_the_seed_recipe() -> None:
    # the seed's multi-turn rows join a request that did not resolve with the answer that follows
    script = {"我想听": "no_intent()", "我想听。给我放个周杰伦的音乐吧。": "play_music(singer=周杰伦)"}
    router, _ = make_router(lambda r: script.get(r.text, "volume_down()"), fast_path=False)
    session = router.session(max_turns=2)
    router.handle("我想听", session=session)
    result = router.handle("给我放个周杰伦的音乐吧", session=session)
    assert result.model_input == "我想听。给我放个周杰伦的音乐吧。"
    assert result.calls[0].arguments["singer"] == "周杰伦"
    third = router.handle("声音小一点吧", session=session)
    assert third.model_input == "声音小一点吧"  # the request before it ran: no context any more
    assert len(session.history) == 2
    session.reset()
    assert router.handle("你好", session=session).model_input == "你好"


def test_session_forgets_old_turns() -> None:
    router, _ = make_router("play_music()", fast_path=False)
    session = router.session(max_turns=3, ttl_s=0)
    router.handle("我想听音乐", session=session)
    assert router.handle("放首歌", session=session).model_input == "放首歌"


@pytest.mark.parametrize(("text", "status"), [("", Status.NO_INTENT), ("   ", Status.NO_INTENT), ("啊" * 600, Status.INVALID)])
def test_input_checks(text: str, status: Status) -> None:
    router, _ = make_router([])
    result = router.handle(text)
    assert result.status == status
    if status is Status.INVALID:
        assert isinstance(result.error, InputError)


def test_non_text_input_is_a_type_error() -> None:
    router, _ = make_router([])
    with pytest.raises(TypeError, match="expects str"):
        router.handle(b"bytes")  # type: ignore[arg-type]


def test_router_without_backend_uses_only_the_fast_path() -> None:
    router = Router()

    @router.intent(examples=["关灯"])
    def lights_off() -> str:
        return "off"

    assert router.handle("关灯").results == ["off"]
    result = router.handle("开灯")
    assert result.status == "no_intent" and result.path == "none"


def test_messages_sent_to_the_backend_come_from_the_prompt_module() -> None:
    router, _ = make_router("volume_down()")
    router.handle("太吵了")
    (request,) = router.backend.requests  # type: ignore[union-attr]
    assert request.messages() == router.prompt.messages("太吵了")
    assert request.catalog.names == ["play_music", "weather_search", "volume_down", "broken"]


def test_unknown_settings_are_rejected() -> None:
    with pytest.raises(ValueError, match="confidence_treshold"):
        Router(confidence_treshold=0.5)


def test_backend_must_be_a_backend() -> None:
    with pytest.raises(TypeError, match="must be an intentkit Backend"):
        Router(backend="llama")  # type: ignore[arg-type]


def test_ahandle_awaits_async_handlers_and_threads_sync_ones() -> None:
    router = Router(backend=FakeBackend({"a": "fetch(杭州)", "b": "blocking()", "c": "fail()"}))
    threads: list[str] = []

    @router.intent
    async def fetch(city: str) -> str:
        await asyncio.sleep(0)
        return f"fetched {city}"

    @router.intent
    def blocking() -> str:
        threads.append(threading.current_thread().name)
        return "done"

    @router.intent
    async def fail() -> None:
        raise KeyError("x")

    async def main() -> list:
        return await asyncio.gather(router.ahandle("a"), router.ahandle("b"), router.ahandle("c"))

    a, b, c = asyncio.run(main())
    assert a.results == ["fetched 杭州"] and b.results == ["done"]
    assert threads and threads[0] != threading.main_thread().name
    assert c.status == "handler_error" and isinstance(c.error.exception, KeyError)


def test_sync_handle_runs_async_handlers() -> None:
    router = Router(backend=FakeBackend("fetch()"))

    @router.intent
    async def fetch() -> str:
        return "ok"

    assert router.handle("x").results == ["ok"]


def test_sync_handle_inside_an_event_loop_reports_the_async_handler() -> None:
    router = Router(backend=FakeBackend("fetch()"))

    @router.intent
    async def fetch() -> str:
        return "ok"

    async def main():
        return router.handle("x")

    result = asyncio.run(main())
    assert result.status == "handler_error" and "use ahandle" in str(result.error)


def test_ahandle_backend_failure_and_no_intent_fallback() -> None:
    router, _ = make_router(["no_intent()"])
    router.fallback(lambda text: "fallback")
    result = asyncio.run(router.ahandle("x"))
    assert result.results == ["fallback"]
    assert asyncio.run(router.ahandle("y")).status == "backend_error"


def test_concurrent_handles_are_independent() -> None:
    router, _ = make_router(lambda r: f"weather_search({r.text})", fast_path=False)
    from concurrent.futures import ThreadPoolExecutor

    cities = ["杭州", "上海", "北京", "广州"] * 25
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(router.handle, cities))
    assert [r.calls[0].arguments["city"] for r in results] == cities


def test_router_context_manager_closes_backend() -> None:
    backend = FakeBackend("play_music()")
    with Router(backend=backend) as router:
        router.intent(lambda: None, name="play_music")
    assert backend.closed
