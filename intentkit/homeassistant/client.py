"""A client for a running Home Assistant: run intents through its REST API, read its home.

    ha = HomeAssistant("http://homeassistant.local:8123", token)
    router = Router(backend, registry=registry_for(ha.fetch_home(), handler=ha.handle_intent))
    router.handle("把客厅的灯打开")          # Home Assistant turns the light on

:meth:`HomeAssistant.handle_intent` posts ``/api/intent/handle`` and returns what Home Assistant
answered (its speech, the entities it changed); :meth:`HomeAssistant.fetch_home` reads the area,
floor and entity registries over the websocket API (``intentkit ha home`` writes them to a file).
A long-lived access token (your profile page in Home Assistant) authorises both.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

from ..errors import BackendError, MissingDependencyError
from .home import Home

__all__ = ["HomeAssistant", "IntentResponse"]

#: Domains whose entities are named in intents (what Home Assistant's own matcher exposes).
_NAMED_DOMAINS = frozenset(
    "light switch fan cover climate media_player lock valve vacuum lawn_mower input_boolean scene script todo "
    "weather sensor binary_sensor humidifier water_heater button".split()
)


class IntentResponse(dict):  # type: ignore[type-arg]
    """Home Assistant's answer to an intent (its JSON); :attr:`speech` is the sentence to say."""

    @property
    def speech(self) -> str:
        return str(((self.get("speech") or {}).get("plain") or {}).get("speech") or "")

    def __str__(self) -> str:
        return self.speech or json.dumps(self, ensure_ascii=False)


class HomeAssistant:
    """``HomeAssistant(url, token)``: the REST and websocket APIs of one Home Assistant."""

    def __init__(self, url: str, token: str, *, timeout: float = 10.0) -> None:
        try:
            import httpx
        except ImportError:
            raise MissingDependencyError("httpx") from None
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self._client = httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {token}"}, timeout=timeout)

    def handle_intent(self, name: str, slots: dict[str, Any]) -> IntentResponse:
        """Run ``name`` with ``slots`` in Home Assistant (``POST /api/intent/handle``)."""
        import httpx

        url = f"{self.url}/api/intent/handle"
        try:
            response = self._client.post("/api/intent/handle", json={"name": name, "data": slots})
        except httpx.HTTPError as exc:
            raise BackendError(f"{url}: {type(exc).__name__}: {exc}", url=url, attempts=1) from exc
        if response.status_code >= 400:
            raise BackendError(
                f"{response.status_code} from {url}: {response.text[:300]}", url=url, status_code=response.status_code, attempts=1
            )
        try:
            return IntentResponse(response.json())
        except ValueError:
            raise BackendError(f"{url}: not JSON: {response.text[:300]}", url=url, status_code=response.status_code) from None

    def fetch_home(self, language: str = "zh-CN") -> Home:
        """The home's areas, floors and named entities, from the websocket API's registries."""
        answers = self._websocket(
            "config/area_registry/list", "config/floor_registry/list", "config/entity_registry/list", "get_states"
        )
        areas, floors, registry, states = answers
        floor_names = {f["floor_id"]: f["name"] for f in floors}
        area_names = {a["area_id"]: a["name"] for a in areas}
        friendly = {s["entity_id"]: (s.get("attributes") or {}).get("friendly_name") for s in states}
        device_class = {s["entity_id"]: (s.get("attributes") or {}).get("device_class") for s in states}
        entities = []
        for entry in registry:
            entity_id = entry["entity_id"]
            domain = entity_id.split(".", 1)[0]
            name = entry.get("name") or friendly.get(entity_id) or entry.get("original_name")
            hidden = entry.get("disabled_by") or entry.get("hidden_by") or entry.get("entity_category")  # diagnostics, settings
            if domain not in _NAMED_DOMAINS or not name or hidden:
                continue
            entities.append(
                {
                    "name": name,
                    "domain": domain,
                    "area": area_names.get(entry.get("area_id") or ""),
                    "device_class": entry.get("device_class")
                    or entry.get("original_device_class")
                    or device_class.get(entity_id),
                    "aliases": [a for a in entry.get("aliases") or [] if a and a != name],
                    "entity_id": entity_id,
                }
            )
        known = {e["entity_id"] for e in entities}
        for entity_id, name in friendly.items():  # entities without a registry entry (template lights, YAML)
            domain = entity_id.split(".", 1)[0]
            if entity_id not in known and name and domain in _NAMED_DOMAINS:
                entities.append(
                    {"name": name, "domain": domain, "device_class": device_class.get(entity_id), "entity_id": entity_id}
                )
        return Home.from_data(
            {
                "language": language,
                "areas": [
                    {
                        "name": a["name"],
                        "aliases": [x for x in a.get("aliases") or [] if x != a["name"]],
                        "floor": floor_names.get(a.get("floor_id") or ""),
                    }
                    for a in areas
                ],
                "floors": [{"name": f["name"], "aliases": [x for x in f.get("aliases") or [] if x != f["name"]]} for f in floors],
                "entities": entities,
            },
            source=f"{self.url} (registries)",
        )

    def _websocket(self, *commands: str) -> list[Any]:
        try:
            from websockets.sync.client import connect
        except ImportError:
            raise MissingDependencyError("websockets") from None
        url = self.url.replace("http://", "ws://", 1).replace("https://", "wss://", 1) + "/api/websocket"
        answers: list[Any] = []
        try:
            with connect(url, open_timeout=self.timeout, max_size=64 * 2**20) as ws:
                hello = json.loads(ws.recv(self.timeout))
                if hello.get("type") != "auth_required":
                    raise BackendError(f"{url}: expected auth_required, got {hello.get('type')!r}", url=url)
                ws.send(json.dumps({"type": "auth", "access_token": self.token}))
                auth = json.loads(ws.recv(self.timeout))
                if auth.get("type") != "auth_ok":
                    raise BackendError(f"{url}: authentication failed ({auth.get('message', auth.get('type'))})", url=url)
                for number, command in zip(itertools.count(1), commands):
                    ws.send(json.dumps({"id": number, "type": command}))
                    while True:
                        message = json.loads(ws.recv(self.timeout))
                        if message.get("id") == number and message.get("type") == "result":
                            break
                    if not message.get("success"):
                        raise BackendError(f"{url}: {command} failed: {message.get('error')}", url=url)
                    answers.append(message["result"])
        except (OSError, TimeoutError) as exc:
            raise BackendError(f"{url}: {type(exc).__name__}: {exc}", url=url) from exc
        return answers

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> HomeAssistant:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
