"""OpenAIBackend against a fake OpenAI-compatible server on loopback and against intentkit's own service."""

from __future__ import annotations

import asyncio
import math
from typing import Any, Literal

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from intentkit import BackendError, Router
from intentkit.backends.openai import OpenAIBackend, call_gbnf, call_regex, intent_probability
from intentkit.server import create_app
from intentkit.testing import FakeBackend


class FakeServer:
    """Answers with ``answer``; the first ``failures`` requests get ``status``."""

    def __init__(self) -> None:
        self.failures, self.status, self.answer = 0, 503, "play_music()"
        self.payloads: list[dict] = []
        self.app = FastAPI()

        @self.app.post("/v1/chat/completions")
        async def chat(request: Request) -> JSONResponse:
            self.payloads.append(await request.json())
            if self.failures:
                self.failures -= 1
                return JSONResponse({"error": "busy"}, status_code=self.status)
            return JSONResponse({"choices": [{"message": {"role": "assistant", "content": self.answer}}]})

        @self.app.post("/v1/completions")
        async def completions(request: Request) -> JSONResponse:
            payload = await request.json()
            self.payloads.append(payload)
            # like llama.cpp's server: token logprobs, and the answer cut at the stop text
            tokens = ["play", "_music", "()"]
            logprobs = {"tokens": tokens, "token_logprobs": [-0.1, -0.2, -0.01], "top_logprobs": None}
            return JSONResponse({"choices": [{"text": self.answer.split(payload["stop"][0])[0], "logprobs": logprobs}]})


@pytest.fixture(scope="module")
def fake(live_server):
    server = FakeServer()
    with live_server(server.app) as url:
        server.url = f"{url}/v1"
        yield server


@pytest.fixture(autouse=True)
def reset(fake):
    fake.failures, fake.status, fake.answer = 0, 503, "play_music()"
    fake.payloads.clear()


OPEN: list[Router] = []


@pytest.fixture(autouse=True)
def close_routers():
    yield
    while OPEN:
        OPEN.pop().close()


def router_for(backend) -> Router:
    router = Router(backend, fast_path=False)
    OPEN.append(router)

    @router.intent(description="播放音乐")
    def play_music() -> str:
        return "playing"

    @router.intent(description="查询天气")
    def weather_search(city: str, date: str | None = None) -> str:
        return city

    return router


def test_routes_through_the_server(fake):
    router = router_for(OpenAIBackend(fake.url, model="m", retries=0))
    assert router.handle("我想听音乐").results == ["playing"]
    payload = fake.payloads[-1]
    assert payload["model"] == "m" and payload["temperature"] == 0
    assert payload["messages"][-1] == {"role": "user", "content": "我想听音乐"}


def test_retries_on_429_and_5xx(fake):
    fake.failures, fake.status = 2, 429
    router = router_for(OpenAIBackend(fake.url, model="m", retries=3))
    assert router.handle("我想听音乐").ok
    assert len(fake.payloads) == 3


def test_gives_up_with_a_backend_error(fake):
    fake.failures = 10
    result = router_for(OpenAIBackend(fake.url, model="m", retries=1)).handle("我想听音乐")
    assert result.status.value == "backend_error"
    assert "503" in str(result.error)


def test_client_errors_are_not_retried(fake):
    fake.failures, fake.status = 1, 400
    result = router_for(OpenAIBackend(fake.url, model="m", retries=3)).handle("我想听音乐")
    assert result.status.value == "backend_error" and len(fake.payloads) == 1
    error = result.error
    assert isinstance(error, BackendError) and (error.status_code, error.attempts) == (400, 1)


@pytest.mark.parametrize("asynchronous", [False, True])
def test_what_failed_is_on_the_error(fake, asynchronous):
    fake.failures = 10
    router = router_for(OpenAIBackend(fake.url, model="m", retries=2))

    async def route() -> Any:
        async with router:
            return await router.ahandle("我想听音乐")

    result = asyncio.run(route()) if asynchronous else router.handle("我想听音乐")
    error = result.error
    assert isinstance(error, BackendError)
    assert (error.url, error.status_code, error.attempts) == (f"{fake.url}/chat/completions", 503, 3)
    assert len(fake.payloads) == 3
    unreachable = router_for(OpenAIBackend("http://127.0.0.1:9/v1", model="m", retries=1, timeout=1)).handle("x").error
    assert isinstance(unreachable, BackendError) and unreachable.status_code is None and unreachable.attempts == 2


def test_a_closed_backend_refuses_requests_and_closes_both_pools(fake):
    backend = OpenAIBackend(fake.url, model="m")
    router = router_for(backend)
    assert router.handle("我想听音乐").ok
    router.close()
    assert backend._client.is_closed and backend._aclient.is_closed
    result = router.handle("我想听音乐")
    assert result.status.value == "backend_error" and "closed" in str(result.error)
    other = OpenAIBackend(fake.url, model="m")

    async def use() -> None:
        async with router_for(other) as async_router:
            assert (await async_router.ahandle("我想听音乐")).ok

    asyncio.run(use())
    assert other._client.is_closed and other._aclient.is_closed


def test_circuit_breaker_fails_fast_then_recovers(fake):
    backend = OpenAIBackend(fake.url, model="m", retries=0, breaker_failures=2, breaker_reset_s=0.3)
    router = router_for(backend)
    fake.failures = 2
    assert not router.handle("a").ok and not router.handle("b").ok
    sent = len(fake.payloads)
    result = router.handle("c")
    assert "circuit open" in str(result.error) and len(fake.payloads) == sent  # nothing was sent
    import time

    time.sleep(0.35)
    assert router.handle("我想听音乐").ok  # half-open trial succeeds, circuit closes


def test_unreachable_server_is_a_backend_error():
    backend = OpenAIBackend("http://127.0.0.1:9/v1", model="m", retries=0, timeout=1)
    assert router_for(backend).handle("我想听音乐").status.value == "backend_error"


def test_zero_shot_lists_the_intents_and_structured_hint(fake):
    backend = OpenAIBackend(fake.url, model="m", zero_shot=True, structured="guided_regex")
    router = router_for(backend)
    router.handle("我想听音乐")
    system = fake.payloads[-1]["messages"][0]["content"]
    assert "- play_music()：播放音乐" in system
    assert "- weather_search(city: str, date: str = null)：查询天气" in system
    assert fake.payloads[-1]["guided_regex"] == call_regex(router.registry.catalog)


def test_call_regex_matches_valid_calls_only():
    import regex

    router = router_for(FakeBackend("x"))
    pattern = regex.compile(call_regex(router.registry.catalog))
    for text in ["play_music()", 'weather_search(city="杭州")', 'weather_search(city="杭州", date="明天")', "no_intent()"]:
        assert pattern.fullmatch(text), text
    for text in ["shutdown()", 'weather_search(town="杭州")', "play_music(); rm"]:
        assert not pattern.fullmatch(text), text


def test_async_path(fake):
    router = router_for(OpenAIBackend(fake.url, model="m"))
    fake.answer = 'weather_search(city="杭州")'

    async def run():
        try:
            return await router.ahandle("杭州天气")
        finally:
            await router.backend.aclose()

    assert asyncio.run(run()).results == ["杭州"]


def test_against_intentkit_serve(live_server):
    inner = router_for(FakeBackend({"我想听音乐": "play_music()"}))
    with live_server(create_app(inner, token="t", model_name="router")) as url:
        outer = router_for(OpenAIBackend(f"{url}/v1", model="router", api_key="t"))
        result = outer.handle("我想听音乐")
        assert result.ok and result.results == ["playing"]
        wrong = router_for(OpenAIBackend(f"{url}/v1", model="router", api_key="bad", retries=0)).handle("我想听音乐")
        assert wrong.status.value == "backend_error" and "401" in str(wrong.error)


def test_completions_mode_sends_the_rendered_prompt_and_reads_the_intent_probability(fake) -> None:
    fake.answer = "play_music()<end_of_turn>\nmore text"
    backend = OpenAIBackend(fake.url, model="m", mode="completions", structured="grammar")
    router = router_for(backend)
    result = router.handle("放首歌")
    assert result.status == "ok" and result.raw_output == "play_music()"
    payload = fake.payloads[-1]
    assert payload["prompt"] == router.prompt.render("放首歌") and payload["stop"] == ["<end_of_turn>"]
    assert payload["logprobs"] == 1 and "root ::=" in payload["grammar"] and "messages" not in payload
    assert result.confidence == pytest.approx(math.exp(-0.31))  # the tokens up to the one with "(" name the intent


def test_chat_logprobs_give_a_confidence_and_their_absence_none(fake) -> None:
    assert intent_probability([("weather", -0.5), ("_search", -0.1), ("(", 0.0), ("city", -3.0)]) == pytest.approx(math.exp(-0.6))
    assert intent_probability(None) is None and intent_probability([]) is None
    router = router_for(OpenAIBackend(fake.url, model="m", logprobs=False))
    result = router.handle("放首歌")
    assert result.ok and result.confidence is None and "logprobs" not in fake.payloads[-1]
    router_for(OpenAIBackend(fake.url, model="m")).handle("放首歌")
    assert fake.payloads[-1]["logprobs"] is True


def test_the_grammar_takes_each_value_as_its_parameter_does() -> None:
    router = Router()

    @router.intent
    def ac_set_mode(mode: Literal["制冷", "制热"], temperature: int | None = None) -> None: ...

    grammar = call_gbnf(router.registry.catalog)
    assert '"ac_set_mode(" (a0 (", " a0)*)? ")"' in grammar
    assert 'v0x0 ::= "\\"制冷\\"" | "\\"制热\\""' in grammar and "v0x1 ::= number | text" in grammar
    llama_cpp = pytest.importorskip("llama_cpp")
    assert llama_cpp.LlamaGrammar.from_string(grammar, verbose=False) is not None  # llama.cpp parses it


def test_bad_modes_are_refused() -> None:
    with pytest.raises(ValueError, match="mode"):
        OpenAIBackend("http://127.0.0.1:9/v1", model="m", mode="stream")  # type: ignore[arg-type]
