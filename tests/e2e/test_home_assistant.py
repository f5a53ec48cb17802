"""A real Home Assistant end to end: intentkit as its Wyoming intent engine.

Home Assistant 2025.4.4 runs from its own virtual environment (``make ha-venv`` builds it with
Python 3.13; this test is skipped without it, and fails instead where ``INTENTKIT_REQUIRE_HA=1``, as
in CI). The test starts it on 127.0.0.1 with ``tests/e2e/ha_config`` (two template lights),
onboards it over REST, puts the lights in areas over the websocket API, writes the home file with
``intentkit ha home``, starts ``intentkit wyoming`` with the bundled Home Assistant model, adds the
Wyoming integration through its config flow, and talks to the intentkit agent through
``POST /api/conversation/process``: "把客厅的灯打开" turns the living-room light on; an out-of-scope
sentence changes nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
HASS = ROOT / ".ha-venv" / "bin" / "hass"
INTENTKIT = Path(sys.executable).with_name("intentkit")

pytestmark = pytest.mark.ha_e2e

if not HASS.is_file():
    if os.environ.get("INTENTKIT_REQUIRE_HA") == "1":
        pytest.fail(f"{HASS} is missing: run `make ha-venv`", pytrace=False)
    pytest.skip("no Home Assistant venv (make ha-venv)", allow_module_level=True)

httpx = pytest.importorskip("httpx")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait(what: str, check: Any, timeout: float, process: subprocess.Popen | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what}: the process exited with {process.returncode}")
        try:
            value = check()
        except (httpx.HTTPError, OSError):
            value = None
        if value:
            return value
        time.sleep(0.5)
    raise TimeoutError(f"{what}: not ready after {timeout:.0f} s")


@pytest.fixture(scope="module")
def home_assistant(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    config = tmp_path_factory.mktemp("ha") / "config"
    shutil.copytree(Path(__file__).parent / "ha_config", config)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = (config / "hass.log").open("w")
    process = subprocess.Popen(
        [str(HASS), "-c", str(config), "--skip-pip"], env={**os.environ, "HA_PORT": str(port)}, stdout=log, stderr=log
    )
    try:
        _wait("Home Assistant", lambda: httpx.get(f"{url}/api/onboarding", timeout=2).status_code == 200, 300, process)
        client_id = f"{url}/"
        user = httpx.post(
            f"{url}/api/onboarding/users",
            json={"client_id": client_id, "name": "e2e", "username": "e2e", "password": "e2e-password-1", "language": "zh-Hans"},
            timeout=30,
        )
        user.raise_for_status()
        token = httpx.post(
            f"{url}/auth/token",
            data={"grant_type": "authorization_code", "code": user.json()["auth_code"], "client_id": client_id},
            timeout=30,
        )
        token.raise_for_status()
        access = token.json()["access_token"]
        _wait("the lights", lambda: _state(url, access, "light.living_room") is not None, 60, process)
        _place_lights(url, access)
        yield url, access
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()
        if sys.exc_info()[0] is not None:
            print((config / "hass.log").read_text(errors="replace")[-5000:])


def _state(url: str, token: str, entity_id: str) -> str | None:
    response = httpx.get(f"{url}/api/states/{entity_id}", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    return response.json()["state"] if response.status_code == 200 else None


def _place_lights(url: str, token: str) -> None:
    """The living-room light in 客厅, the bedside lamp in 卧室 (area registry over the websocket API)."""
    from websockets.sync.client import connect

    with connect(url.replace("http", "ws") + "/api/websocket") as ws:
        json.loads(ws.recv(10))
        ws.send(json.dumps({"type": "auth", "access_token": token}))
        assert json.loads(ws.recv(10))["type"] == "auth_ok"
        number = 0

        def call(message: dict[str, Any]) -> Any:
            nonlocal number
            number += 1
            ws.send(json.dumps({"id": number, **message}))
            while True:
                answer = json.loads(ws.recv(10))
                if answer.get("id") == number:
                    assert answer["success"], answer
                    return answer["result"]

        existing = {a["name"]: a["area_id"] for a in call({"type": "config/area_registry/list"})}  # onboarding makes some
        for area, entity in (("客厅", "light.living_room"), ("卧室", "light.bedroom_lamp")):
            area_id = existing.get(area) or call({"type": "config/area_registry/create", "name": area})["area_id"]
            call({"type": "config/entity_registry/update", "entity_id": entity, "area_id": area_id})


@pytest.fixture(scope="module")
def agent(home_assistant: tuple[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url, token = home_assistant
    home = tmp_path_factory.mktemp("home") / "home.yaml"
    written = subprocess.run(
        [str(INTENTKIT), "ha", "home", "--url", url, "--token", token, "--out", str(home)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert written.returncode == 0, written.stderr
    assert "客厅灯" in home.read_text(encoding="utf-8") and "客厅" in home.read_text(encoding="utf-8")
    port = _free_port()
    service = subprocess.Popen(
        # --templates draft: the model answers every sentence (verifying the templates' draft), so
        # that this test goes through it rather than through the template match alone.
        [str(INTENTKIT), "wyoming", "--home", str(home), "--uri", f"tcp://127.0.0.1:{port}", "--templates", "draft"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        _wait("intentkit wyoming", lambda: socket.create_connection(("127.0.0.1", port), timeout=1).close() or True, 180, service)
        headers = {"Authorization": f"Bearer {token}"}
        flow = httpx.post(f"{url}/api/config/config_entries/flow", json={"handler": "wyoming"}, headers=headers, timeout=60)
        flow.raise_for_status()
        entry = httpx.post(
            f"{url}/api/config/config_entries/flow/{flow.json()['flow_id']}",
            json={"host": "127.0.0.1", "port": port},
            headers=headers,
            timeout=60,
        )
        assert entry.status_code == 200 and entry.json()["type"] == "create_entry", entry.text

        def find_agent() -> str | None:
            states = httpx.get(f"{url}/api/states", headers=headers, timeout=10).json()
            agents = [
                s["entity_id"]
                for s in states
                if s["entity_id"].startswith("conversation.") and "home_assistant" not in s["entity_id"]
            ]
            return agents[0] if agents else None

        yield _wait("the intentkit conversation agent", find_agent, 60)
    finally:
        service.terminate()
        try:
            output, _ = service.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            service.kill()
            output, _ = service.communicate()
        print(output[-3000:])


def _say(url: str, token: str, agent: str, text: str) -> dict[str, Any]:
    response = httpx.post(
        f"{url}/api/conversation/process",
        json={"text": text, "language": "zh-Hans", "agent_id": agent},
        headers={"Authorization": f"Bearer {token}"},
        timeout=60,
    )
    response.raise_for_status()
    return response.json()


def test_turning_on_the_living_room_light_through_intentkit(home_assistant: tuple[str, str], agent: str) -> None:
    url, token = home_assistant
    assert _state(url, token, "light.living_room") == "off"
    answer = _say(url, token, agent, "把客厅的灯打开")
    assert _wait("the light", lambda: _state(url, token, "light.living_room") == "on", 10), answer
    assert _state(url, token, "light.bedroom_lamp") == "off"  # only the living room's


def test_an_out_of_scope_sentence_changes_nothing(home_assistant: tuple[str, str], agent: str) -> None:
    url, token = home_assistant
    before = {e: _state(url, token, e) for e in ("light.living_room", "light.bedroom_lamp")}
    answer = _say(url, token, agent, "给我讲个笑话")
    assert answer["response"]["response_type"] == "error", answer
    time.sleep(1)
    assert {e: _state(url, token, e) for e in before} == before
