"""The Home Assistant client against a small stand-in for Home Assistant's REST and websocket APIs
(the real one is driven by tests/e2e); and the `intentkit ha` commands."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("hassil")
pytest.importorskip("websockets")
fastapi = pytest.importorskip("fastapi")

from fastapi import FastAPI, Request, WebSocket  # noqa: E402
from fastapi.responses import JSONResponse  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from intentkit import BackendError, Router  # noqa: E402
from intentkit.backends import FakeBackend  # noqa: E402
from intentkit.cli import app as cli  # noqa: E402
from intentkit.homeassistant import Home, registry_for  # noqa: E402
from intentkit.homeassistant.client import HomeAssistant  # noqa: E402

TOKEN = "llat-e2e"
REGISTRIES = {
    "config/area_registry/list": [{"area_id": "living", "name": "客厅", "aliases": ["起居室"], "floor_id": "f1"}],
    "config/floor_registry/list": [{"floor_id": "f1", "name": "一楼", "aliases": []}],
    "config/entity_registry/list": [
        {"entity_id": "light.living", "name": None, "original_name": "客厅灯", "area_id": "living", "aliases": ["大灯"]},
        {"entity_id": "sensor.hidden", "name": "隐藏", "hidden_by": "user"},
        {"entity_id": "automation.x", "name": "自动化"},
    ],
    "get_states": [
        {"entity_id": "light.living", "attributes": {"friendly_name": "客厅灯"}},
        {"entity_id": "cover.curtain", "attributes": {"friendly_name": "窗帘", "device_class": "curtain"}},
    ],
}


def fake_home_assistant(calls: list[dict]) -> FastAPI:
    app = FastAPI()

    @app.post("/api/intent/handle")
    async def handle(request: Request) -> JSONResponse:
        if request.headers.get("authorization") != f"Bearer {TOKEN}":
            return JSONResponse({"message": "Unauthorized"}, status_code=401)
        body = await request.json()
        calls.append(body)
        return JSONResponse({"speech": {"plain": {"speech": "已打开客厅灯"}}, "response_type": "action_done"})

    @app.websocket("/api/websocket")
    async def websocket(ws: WebSocket) -> None:
        await ws.accept()
        await ws.send_json({"type": "auth_required"})
        auth = await ws.receive_json()
        if auth.get("access_token") != TOKEN:
            await ws.send_json({"type": "auth_invalid", "message": "Invalid access token"})
            await ws.close()
            return
        await ws.send_json({"type": "auth_ok"})
        while True:
            message = await ws.receive_json()
            await ws.send_json({"id": message["id"], "type": "result", "success": True, "result": REGISTRIES[message["type"]]})

    return app


def test_fetch_home_reads_the_registries(live_server) -> None:
    with live_server(fake_home_assistant([])) as url, HomeAssistant(url, TOKEN) as ha:
        home = ha.fetch_home()
    assert [a.name for a in home.areas] == ["客厅"] and home.areas[0].aliases == ("起居室",) and home.areas[0].floor == "一楼"
    entities = {e.name: e for e in home.entities}
    assert set(entities) == {"客厅灯", "窗帘"}  # hidden entities and automations are not named in intents
    assert entities["客厅灯"].area == "客厅" and entities["客厅灯"].aliases == ("大灯",)
    assert entities["窗帘"].device_class == "curtain" and entities["窗帘"].entity_id == "cover.curtain"


def test_a_routed_intent_runs_in_home_assistant(live_server) -> None:
    calls: list[dict] = []
    with live_server(fake_home_assistant(calls)) as url, HomeAssistant(url, TOKEN) as ha:
        home = ha.fetch_home()
        router = Router(FakeBackend('HassTurnOn(name="大灯")'), registry=registry_for(home, handler=ha.handle_intent))
        result = router.handle("把大灯打开")
        assert result.ok and str(result.results[0]) == "已打开客厅灯"
        assert calls == [{"name": "HassTurnOn", "data": {"name": "客厅灯"}}]  # the alias runs as the entity's name
        with HomeAssistant(url, "wrong") as stranger:
            with pytest.raises(BackendError, match="401") as caught:
                stranger.handle_intent("HassTurnOn", {"name": "客厅灯"})
            assert caught.value.status_code == 401 and caught.value.url == f"{url}/api/intent/handle"
            with pytest.raises(BackendError, match="authentication failed"):
                stranger.fetch_home()


def test_an_unreachable_home_assistant_is_a_backend_error() -> None:
    with HomeAssistant("http://127.0.0.1:9", TOKEN, timeout=1) as ha:
        with pytest.raises(BackendError, match=r"127\.0\.0\.1:9"):
            ha.handle_intent("HassTurnOn", {})
        with pytest.raises(BackendError, match="api/websocket"):
            ha.fetch_home()


def test_cli_ha_home_and_data(live_server, tmp_path: Path) -> None:
    pytest.importorskip("yaml")
    runner = CliRunner()
    with live_server(fake_home_assistant([])) as url:
        done = runner.invoke(cli, ["ha", "home", "--url", url, "--token", TOKEN, "--out", str(tmp_path / "home.yaml")])
    assert done.exit_code == 0, done.output
    assert "1 areas, 1 floors, 2 entities" in done.output and Home.load(tmp_path / "home.yaml").entities[0].name == "客厅灯"
    args = ["ha", "data", "--out", str(tmp_path / "train.jsonl"), "--per-intent", "3", "--dev", str(tmp_path / "dev.jsonl")]
    done = runner.invoke(cli, args)
    assert done.exit_code == 0, done.output
    rows = [json.loads(line) for line in (tmp_path / "train.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len({r.get("name") for r in rows}) == 41 and all("instruction" in r for r in rows)
    done = runner.invoke(cli, ["ha", "data", "--out", str(tmp_path / "x.jsonl"), "--language", "de"])
    assert done.exit_code == 2 and "name pools" in done.output  # English and Chinese are built in
