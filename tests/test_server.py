"""The service on a real uvicorn server on 127.0.0.1, called with httpx and the official openai client."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")
openai = pytest.importorskip("openai")


from intentkit import Router  # noqa: E402
from intentkit.server import create_app  # noqa: E402
from intentkit.testing import FakeBackend  # noqa: E402

TOKEN = "s3cret"
SCRIPT = {
    "我想听音乐": "play_music()",
    "查下杭州天气": 'weather_search(city="杭州")',
    "坏掉的处理器": "explode()",
    "讲个笑话": "no_intent()",
    "乱说": "rm -rf /",
    "查天气": "weather_search()",
}


def make_router() -> Router:
    router = Router(FakeBackend(lambda request: SCRIPT.get(request.text, "no_intent()"), confidence=0.9), fast_path=False)

    @router.intent
    def play_music() -> dict[str, str]:
        return {"playing": "random"}

    @router.intent
    def weather_search(city: str) -> str:
        return f"{city}: 晴"

    @router.intent
    def explode() -> None:
        raise RuntimeError("speaker unplugged")

    return router


@pytest.fixture(scope="module")
def server(live_server) -> Iterator[str]:
    with live_server(create_app(make_router(), token=TOKEN)) as url:
        yield url


@pytest.fixture
def client(server: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10) as c:
        yield c


def test_route_returns_the_result(client):
    body = client.post("/v1/route", json={"text": "查下杭州天气"}).json()
    assert body["status"] == "ok"
    assert body["calls"] == [{"name": "weather_search", "arguments": {"city": "杭州"}}]
    assert body["results"] == ["杭州: 晴"]
    assert body["confidence"] == 0.9
    assert body["timings"]["total_ms"] >= 0


def test_handler_error_is_a_structured_response(client):
    response = client.post("/v1/route", json={"text": "坏掉的处理器"})
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "handler_error"
    assert body["errors"][0]["type"] == "HandlerError" and "speaker unplugged" in body["errors"][0]["message"]


def test_model_text_is_never_executed(client):
    body = client.post("/v1/route", json={"text": "乱说"}).json()
    assert body["status"] == "invalid" and body["results"] == []


def test_a_dialogue_is_kept_server_side_by_session_id(client):
    first = client.post("/v1/route", json={"text": "查天气", "session_id": "d1"}).json()
    assert first["status"] == "needs_input" and first["missing"] == ["city"] and first["prompt"] == "请告诉我city。"
    other = client.post("/v1/route", json={"text": "杭州"}).json()  # no session: nothing pending
    assert other["status"] == "no_intent"
    done = client.post("/v1/route", json={"text": "就杭州吧", "session_id": "d1"}).json()
    assert done["status"] == "ok" and done["results"] == ["杭州: 晴"] and done["path"] == "dialogue"
    client.post("/v1/route", json={"text": "查天气", "session_id": "d2"})
    assert client.post("/v1/route", json={"text": "算了", "session_id": "d2"}).json()["status"] == "cancelled"


def test_sessions_are_bounded_least_recently_used_first(live_server):
    with live_server(create_app(make_router(), max_sessions=2)) as url, httpx.Client(base_url=url, timeout=10) as c:
        c.post("/v1/route", json={"text": "查天气", "session_id": "a"})
        c.post("/v1/route", json={"text": "查天气", "session_id": "b"})
        c.post("/v1/route", json={"text": "查天气", "session_id": "a"})  # a is used again: b is now the oldest
        c.post("/v1/route", json={"text": "查天气", "session_id": "c"})  # evicts b
        assert c.post("/v1/route", json={"text": "北京", "session_id": "a"}).json()["status"] == "ok"
        assert c.post("/v1/route", json={"text": "北京", "session_id": "b"}).json()["status"] == "no_intent"


def test_sessions_expire_after_their_ttl(live_server):
    import time

    with live_server(create_app(make_router(), session_ttl_s=0.2)) as url, httpx.Client(base_url=url, timeout=10) as c:
        c.post("/v1/route", json={"text": "查天气", "session_id": "t"})
        time.sleep(0.4)
        assert c.post("/v1/route", json={"text": "北京", "session_id": "t"}).json()["status"] == "no_intent"


def test_sessions_join_turns(client):
    client.post("/v1/route", json={"text": "讲个笑话", "session_id": "a"})  # no_intent: still context
    body = client.post("/v1/route", json={"text": "查下杭州天气", "session_id": "a"}).json()
    assert body["model_input"] == "讲个笑话。查下杭州天气。"


@pytest.mark.parametrize(
    ("kwargs", "status", "message"),
    [
        ({"content": b"{not json"}, 422, "JSON"),
        ({"json": {"text": 5}}, 422, "text"),
        ({"json": {"words": "hi"}}, 422, "text"),
        ({"content": b'{"text": "' + b"a" * (10 * 1024 * 1024) + b'"}'}, 413, "over"),
        ({"content": b'{"text": "\\ud800"}'}, 422, "text: Value error, not valid Unicode text: surrogates not allowed"),
        ({"content": b'{"text": "hi", "session_id": "\\udfff"}'}, 422, "body.session_id: "),
    ],
)
def test_bad_requests_get_clear_4xx(client, kwargs, status, message):
    response = client.post("/v1/route", headers={"content-type": "application/json"}, **kwargs)
    assert response.status_code == status
    assert message in response.json()["error"]["message"]


def test_a_form_encoded_body_gets_a_hint(client):
    response = client.post("/v1/route", content=b'{"text": "hi"}', headers={"content-type": "application/x-www-form-urlencoded"})
    assert response.status_code == 422
    assert "Content-Type: application/json" in response.json()["error"]["message"]


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic s3cret"}])
def test_auth_is_required(server, headers):
    response = httpx.post(f"{server}/v1/route", json={"text": "我想听音乐"}, headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


def test_health_and_metrics_need_no_token(server, client):
    client.post("/v1/route", json={"text": "我想听音乐"})
    assert httpx.get(f"{server}/healthz").json()["status"] == "ok"
    metrics = httpx.get(f"{server}/metrics").text
    assert 'intentkit_requests_total{endpoint="/v1/route",path="model",status="ok"}' in metrics
    assert 'intentkit_intent_total{intent="play_music"}' in metrics
    assert "intentkit_stage_seconds_bucket" in metrics


def test_openai_client_unchanged(server):
    client = openai.OpenAI(base_url=f"{server}/v1", api_key=TOKEN)
    assert [m.id for m in client.models.list()] == ["intentkit"]
    completion = client.chat.completions.create(
        model="intentkit",
        messages=[{"role": "system", "content": "你是一个意图识别专家"}, {"role": "user", "content": "我想听音乐"}],
        temperature=0,
    )
    assert completion.choices[0].message.content == "play_music()"
    stream = client.chat.completions.create(
        model="intentkit", messages=[{"role": "user", "content": "查下杭州天气"}], stream=True
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text == 'weather_search(city="杭州")'


def test_a_lone_surrogate_in_a_chat_message_is_a_422_not_a_backend_error(client):
    body = b'{"model": "intentkit", "messages": [{"role": "user", "content": "\\ud800"}]}'
    response = client.post("/v1/chat/completions", headers={"content-type": "application/json"}, content=body)
    assert response.status_code == 422 and "messages.0.content" in response.json()["error"]["message"]
    metrics = client.get("/metrics").text
    assert 'intentkit_errors_total{type="http_422"}' in metrics and 'status="backend_error"' not in metrics


def test_chat_usage_counts_the_models_tokens(live_server):
    from intentkit.backends import Generation

    router = Router(FakeBackend(lambda r: Generation("play_music()", prompt_tokens=57, completion_tokens=5)), fast_path=False)
    router.intent(lambda: "ok", name="play_music")
    with live_server(create_app(router)) as url:
        completion = openai.OpenAI(base_url=f"{url}/v1", api_key="x").chat.completions.create(
            model="intentkit", messages=[{"role": "user", "content": "放歌"}]
        )
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens, completion.usage.total_tokens) == (57, 5, 62)


def test_openai_errors(server):
    client = openai.OpenAI(base_url=f"{server}/v1", api_key=TOKEN, max_retries=0)
    with pytest.raises(openai.NotFoundError, match="unknown model 'gpt-4'"):
        client.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{server}/v1", api_key="nope", max_retries=0).models.list()


def test_chat_does_not_run_handlers(client):
    body = client.post(
        "/v1/chat/completions", json={"model": "intentkit", "messages": [{"role": "user", "content": "坏掉的处理器"}]}
    )
    assert body.status_code == 200
    assert body.json()["choices"][0]["message"]["content"] == "explode()"


def test_concurrent_requests_all_answered(server):
    def one(i: int) -> int:
        text = "我想听音乐" if i % 2 else "查下杭州天气"
        r = httpx.post(f"{server}/v1/route", json={"text": text}, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
        return r.status_code if r.json()["status"] == "ok" else -1

    with ThreadPoolExecutor(16) as pool:
        codes = list(pool.map(one, range(200)))
    assert codes == [200] * 200


def test_result_json_round_trips(client):
    body = client.post("/v1/route", json={"text": "我想听音乐"}).json()
    assert json.loads(json.dumps(body)) == body
    assert body["results"] == [{"playing": "random"}]
