"""The service with a request log: request ids, /v1/feedback, the review API and its export,
the new Prometheus series, and the log drained at shutdown."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("sqlalchemy")
httpx = pytest.importorskip("httpx")

from intentkit import Router  # noqa: E402
from intentkit.feedback import RequestLog  # noqa: E402
from intentkit.server import create_app  # noqa: E402
from intentkit.testing import FakeBackend  # noqa: E402

TOKEN = "s3cret"
SCRIPT = {
    "我想听音乐": ("play_music()", 0.95),
    "查下杭州天气": ('weather_search(city="杭州")', 0.9),
    "放点啥": ("play_music()", 0.35),
    "讲个笑话": ("no_intent()", 0.9),
    "乱说": ("rm -rf /", 0.9),
}


def make_router() -> Router:
    def answer(request):  # type: ignore[no-untyped-def]
        from intentkit.backends.base import Generation

        text, confidence = SCRIPT.get(request.text, ("no_intent()", 0.9))
        return Generation(text, confidence=confidence)

    router = Router(FakeBackend(answer), fast_path=False)

    @router.intent
    def play_music() -> str:
        return "playing"

    @router.intent
    def weather_search(city: str, unit: str = "c") -> str:
        return f"{city}: 晴"

    return router


@pytest.fixture
def service(live_server, tmp_path: Path) -> Iterator[tuple[httpx.Client, RequestLog]]:  # type: ignore[no-untyped-def]
    log = RequestLog(f"sqlite:///{tmp_path / 'log.db'}", flush_interval_s=0.02)
    with live_server(create_app(make_router(), token=TOKEN, log=log)) as url:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10) as client:
            yield client, log
    log.close()


def route(client: httpx.Client, text: str) -> dict:
    response = client.post("/v1/route", json={"text": text})
    assert response.status_code == 200, response.text
    return response.json()


def test_every_answer_carries_a_request_id_that_the_log_holds(service) -> None:  # type: ignore[no-untyped-def]
    client, log = service
    routed = route(client, "查下杭州天气")
    assert len(routed["request_id"]) == 32
    chat = client.post(
        "/v1/chat/completions", json={"model": "intentkit", "messages": [{"role": "user", "content": "我想听音乐"}]}
    )
    assert chat.headers["x-request-id"] == chat.json()["intentkit"]["request_id"]
    log.flush()
    first = log.get(routed["request_id"])
    assert first is not None and first.call_text == 'weather_search(city="杭州", unit="c")' and first.latency_ms is not None
    assert first.fingerprint and first.endpoint == "/v1/route"
    second = log.get(chat.headers["x-request-id"])
    assert second is not None and second.endpoint == "/v1/chat/completions" and second.call_text == "play_music()"


def test_feedback_validates_and_is_acknowledged_only_once_stored(service) -> None:  # type: ignore[no-untyped-def]
    client, log = service
    request_id = route(client, "放点啥")["request_id"]
    ok = client.post("/v1/feedback", json={"request_id": request_id, "vote": "down", "correct": "weather_search('北京')"})
    assert ok.status_code == 200, ok.text
    assert ok.json()["feedback"]["correct"] == 'weather_search(city="北京", unit="c")'
    stored = log.get(request_id)
    assert stored is not None and stored.correction == 'weather_search(city="北京", unit="c")'
    assert [f.vote for f in stored.feedback] == ["down"]


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"request_id": "0" * 32, "vote": "up"}, 404, "no such request"),
        ({"request_id": "RID", "vote": "sideways"}, 422, "vote"),
        ({"request_id": "RID", "correct": "weather_search(city="}, 422, "does not parse"),
        ({"request_id": "RID", "correct": "launch_rocket()"}, 422, "launch_rocket"),
        ({"request_id": "RID", "correct": "weather_search()"}, 422, "city"),
        ({"request_id": "RID"}, 422, "needs a vote"),
        ({"request_id": "RID", "vote": "up", "extra": 1}, 422, "extra"),
    ],
)
def test_bad_feedback_gets_a_4xx_naming_the_problem(service, body: dict, status: int, message: str) -> None:  # type: ignore[no-untyped-def]
    client, log = service
    request_id = route(client, "我想听音乐")["request_id"]
    body = {k: (request_id if v == "RID" else v) for k, v in body.items()}
    response = client.post("/v1/feedback", json=body)
    assert response.status_code == status, response.text
    assert message in response.json()["error"]["message"]
    assert log.get(request_id).feedback == []  # type: ignore[union-attr]


def test_review_queue_export_and_metrics(service) -> None:  # type: ignore[no-untyped-def]
    client, _ = service
    ids = {text: route(client, text)["request_id"] for text in ["我想听音乐", "放点啥", "讲个笑话", "乱说", "查下杭州天气"]}
    queue = client.get("/v1/review").json()
    assert [item["utterance"] for item in queue["items"]] == ["乱说", "讲个笑话", "放点啥"]
    low = next(item for item in queue["items"] if item["utterance"] == "放点啥")
    assert (low["confidence"] == pytest.approx(0.35) and low["status"] == "low_confidence") or low["confidence"] < 0.6
    client.post("/v1/feedback", json={"request_id": ids["讲个笑话"], "correct": "no_intent()"})
    client.post("/v1/feedback", json={"request_id": ids["放点啥"], "correct": "play_music()"})
    client.post("/v1/feedback", json={"request_id": ids["我想听音乐"], "vote": "up"})
    client.post("/v1/feedback", json={"request_id": ids["查下杭州天气"], "vote": "down"})
    queue = client.get("/v1/review").json()
    assert [item["utterance"] for item in queue["items"]] == ["查下杭州天气", "乱说"]
    exported = client.get("/v1/review/export")
    rows = [json.loads(line) for line in exported.text.splitlines()]
    assert {(r["instruction"], r["output"]) for r in rows} == {
        ("我想听音乐", "play_music()"),
        ("放点啥", "play_music()"),
        ("讲个笑话", None),
    }
    intents = client.get("/v1/review/intents").json()["intents"]
    weather = next(i for i in intents if i["name"] == "weather_search")
    assert [p["name"] for p in weather["params"]] == ["city", "unit"] and weather["params"][0]["required"]
    metrics = client.get("/metrics").text
    assert 'intentkit_feedback_total{corrected="yes",vote="none"} 2.0' in metrics
    assert 'intentkit_feedback_total{corrected="no",vote="down"} 1.0' in metrics
    assert "intentkit_out_of_scope_total 1.0" in metrics
    assert 'intentkit_confidence_count{intent="play_music"}' in metrics
    assert "intentkit_log_written" in metrics


def test_review_needs_the_token_and_a_link_with_it_sets_a_cookie(service) -> None:  # type: ignore[no-untyped-def]
    client, _ = service
    base = str(client.base_url)
    with httpx.Client(base_url=base, timeout=10, follow_redirects=True) as anonymous:
        assert anonymous.get("/review").status_code == 401
        assert anonymous.get("/v1/review").status_code == 401
        assert anonymous.get("/review?token=wrong").status_code == 401
        entered = anonymous.get(f"/review?token={TOKEN}")  # follows the redirect with the cookie set
        assert entered.status_code == 200 and "Review queue" in entered.text
        assert "token" not in str(entered.url)
        assert anonymous.get("/v1/review").status_code == 200


def test_without_a_log_feedback_says_how_to_turn_it_on(live_server) -> None:  # type: ignore[no-untyped-def]
    with live_server(create_app(make_router())) as url:
        with httpx.Client(base_url=url, timeout=10) as client:
            routed = client.post("/v1/route", json={"text": "我想听音乐"}).json()
            assert len(routed["request_id"]) == 32
            response = client.post("/v1/feedback", json={"request_id": routed["request_id"], "vote": "up"})
            assert response.status_code == 404 and "--log" in response.json()["error"]["message"]
            assert client.get("/review").status_code == 404


def test_a_log_given_as_url_is_drained_when_the_app_stops(live_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    url = f"sqlite:///{tmp_path / 'owned.db'}"
    app = create_app(make_router(), log=url)
    app.state.log.flush_interval_s = 30.0  # nothing would be written before shutdown but for the drain
    app.state.log.batch_size = 10_000
    with live_server(app) as base:
        with httpx.Client(base_url=base, timeout=10) as client:
            for _ in range(25):
                client.post("/v1/route", json={"text": "我想听音乐"})
    with RequestLog(url) as log:
        assert log.count() == 25


def test_the_grafana_dashboard_charts_only_series_the_service_exports(service) -> None:  # type: ignore[no-untyped-def]
    import re

    client, _ = service
    request_id = route(client, "我想听音乐")["request_id"]
    client.post("/v1/feedback", json={"request_id": request_id, "vote": "up"})
    client.post("/v1/feedback", json={"request_id": request_id, "vote": "sideways"})  # an error, counted
    exported = set(re.findall(r"^(intentkit_[a-z_]+)", client.get("/metrics").text, re.M))
    dashboard = json.loads((Path(__file__).resolve().parent.parent / "docs" / "grafana-dashboard.json").read_text())
    expressions = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    # intentkit_llama_*: the llama.cpp batch counts, which only a llama.cpp service exports
    # (checked against one in tests/test_llamacpp.py).
    used = {name for e in expressions for name in re.findall(r"intentkit_[a-z_]+", e) if not name.startswith("intentkit_llama_")}
    assert used and used <= exported, used - exported
    assert {"intentkit_confidence_bucket", "intentkit_out_of_scope_total", "intentkit_scope_far_total"} <= used
