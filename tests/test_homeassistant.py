"""Home Assistant's intents as a registry, the home file, training data from the templates, and
the Wyoming service over loopback (the real ``wyoming`` client and raw JSON-lines events)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("hassil")
pytest.importorskip("home_assistant_intents")

from intentkit import ArgumentError, DataError, Router, parse_calls
from intentkit.backends import FakeBackend
from intentkit.homeassistant import Home, language_intents, registry_for, slot_values

HOME = Home(
    language="zh-CN",
    areas=["客厅", "卧室", {"name": "厨房", "aliases": ["灶间"]}],
    floors=["一楼"],
    entities=[
        {"name": "床头灯", "domain": "light", "area": "卧室", "aliases": ["台灯"]},
        {"name": "客厅空调", "domain": "climate", "area": "客厅"},
        {"name": "窗帘", "domain": "cover", "area": "卧室", "device_class": "curtain"},
    ],
)


@pytest.fixture(scope="module")
def registry():
    return registry_for(HOME)


def bind(registry, text: str) -> dict[str, Any]:
    bound = registry.bind(parse_calls(text)[0])
    return slot_values(registry.get(bound.name), bound.arguments)


def test_the_languages_intents_become_typed_intents(registry) -> None:
    assert len(registry) == len(language_intents("zh-CN")) == 40
    turn_on = {p.name: p for p in registry.get("HassTurnOn").params}
    assert {"name", "area", "floor", "domain", "device_class"} <= set(turn_on)
    assert "light" in turn_on["domain"].choices and "curtain" in turn_on["device_class"].choices
    assert not any(p.required for p in turn_on.values())
    temperature = {p.name: p for p in registry.get("HassClimateSetTemperature").params}["temperature"]
    assert temperature.required and temperature.kind == "float"
    assert {p.name: p for p in registry.get("HassBroadcast").params}["message"].from_utterance
    assert {p.name: p.kind for p in registry.get("HassStartTimer").params}["name"] == "str"  # a timer's name is free text


@pytest.mark.parametrize(
    ("call", "slots"),
    [
        ('HassTurnOn(area="客厅", domain="light")', {"area": "客厅", "domain": "light"}),
        ('HassTurnOn(name="台灯")', {"name": "床头灯"}),  # an alias binds as its name
        ('HassTurnOn(name="床头等")', {"name": "床头灯"}),  # a speech-recognition homophone
        ('HassTurnOn(area="客廳")', {"area": "客厅"}),  # traditional characters
        ('HassTurnOff(area="灶间", domain="light")', {"area": "厨房", "domain": "light"}),
        ("HassClimateSetTemperature(temperature=24)", {"temperature": 24}),
        ('HassClimateSetTemperature(temperature="二十四点五")', {"temperature": 24.5}),
        ('HassSetVolumeRelative(volume_step="up")', {"volume_step": "up"}),
        ('HassSetVolumeRelative(volume_step="-10")', {"volume_step": -10}),
        ('HassLightSet(name="床头灯", brightness=50)', {"name": "床头灯", "brightness": 50}),
    ],
)
def test_values_are_what_home_assistant_executes(registry, call: str, slots: dict) -> None:
    assert bind(registry, call) == slots


@pytest.mark.parametrize(
    ("call", "message"),
    [
        ('HassTurnOn(name="吊灯")', "not one of"),  # a name the home does not have is never invented
        ('HassTurnOn(domain="toaster")', "not one of"),
        ("HassClimateSetTemperature(temperature=200)", "less than or equal to 100"),
        ("HassClimateSetTemperature()", "required argument missing"),
    ],
)
def test_values_outside_the_home_or_the_range_are_rejected(registry, call: str, message: str) -> None:
    with pytest.raises(ArgumentError, match=message):
        registry.bind(parse_calls(call)[0])


def test_a_home_file_round_trips_and_bad_ones_name_the_file(tmp_path: Path) -> None:
    pytest.importorskip("yaml")
    assert Home.load(HOME.save(tmp_path / "home.yaml")) == HOME
    assert Home.load(HOME.save(tmp_path / "home.json")) == HOME
    (tmp_path / "bad.yaml").write_text("areas: [客厅\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad\.yaml: invalid YAML"):
        Home.load(tmp_path / "bad.yaml")
    (tmp_path / "stray.json").write_text(json.dumps({"entities": [{"name": "灯", "domain": "light", "area": "阁楼"}]}))
    with pytest.raises(DataError, match=r"stray\.json: .*area '阁楼', which the home does not list"):
        Home.load(tmp_path / "stray.json")
    with pytest.raises(DataError, match="no such file"):
        Home.load(tmp_path / "none.yaml")


def test_training_rows_are_balanced_and_their_calls_are_home_assistants() -> None:
    from trainers.homeassistant import ha_rows

    rows = ha_rows(per_intent=12, seed=3)
    intents = language_intents("zh-CN")
    counts: dict[str | None, int] = {}
    for row in rows:
        counts[row.intent] = counts.get(row.intent, 0) + 1
        assert "的的" not in row.text and not any(c in row.text for c in "壹贰叁肆伍陆柒捌玖拾")
        if row.intent is not None:
            assert set(row.slots) <= set(intents[row.intent].slots), row
            call = parse_calls(row.to_json()["output"])[0]
            assert call.name == row.intent and dict(call.kwargs) == dict(row.slots)
    assert counts[None] >= 0.05 * len(rows)
    assert max(v for k, v in counts.items() if k) == 12 and len([k for k in counts if k]) == 40
    assert not any(f + c in r.text for r in rows for f in ("二楼", "一层") for c in "楼层")  # no 二楼层
    more = ha_rows(per_intent=12, per_sentence=1.0, seed=3)  # intents with more templates get more rows
    per = {k: sum(1 for r in more if r.intent == k) for k in ("HassGetState", "HassGetCurrentDate")}
    assert per["HassGetState"] == 48 and per["HassGetCurrentDate"] == 12 + 5
    assert len({r.slots.get("name") for r in rows if r.slots.get("name")}) > 50  # names vary: copied, not memorised
    assert ha_rows(per_intent=12, seed=3) == rows  # seeded


GROUNDED = Home(
    language="zh-CN",
    areas=["客厅", "厨房", "卧室"],
    entities=[
        {"name": "吊扇", "domain": "fan", "area": "客厅"},
        {"name": "左侧窗帘", "domain": "cover", "area": "客厅", "device_class": "curtain"},
        {"name": "主阀门", "domain": "valve"},
        {"name": "前门", "domain": "lock"},
        {"name": "天窗", "domain": "binary_sensor", "device_class": "window", "area": "卧室"},
        {"name": "床头灯", "domain": "light", "area": "卧室"},
        {"name": "窗户", "domain": "cover", "device_class": "window"},
        {"name": "厨房灯", "domain": "light", "area": "厨房"},
        {"name": "待办清单", "domain": "todo"},
    ],
)


@pytest.mark.parametrize(
    ("text", "answer", "grounded"),
    [
        ("打开吊扇", 'HassTurnOn(domain="fan")', {"name": "吊扇"}),  # the home's fan is called 吊扇
        ("关闭客厅吊扇", 'HassTurnOff(area="客厅", domain="fan")', {"area": "客厅", "name": "吊扇"}),
        ("关闭主阀门", 'HassTurnOff(name="左侧窗帘")', {"name": "主阀门"}),  # the name the utterance says
        ("把前门锁上", 'HassTurnOn(domain="cover", device_class="gate")', {"name": "前门"}),
        # no curtain of the kitchen is called 厨房窗帘: the area and the kind of device, as hassil reads it
        ("打开厨房窗帘", 'HassTurnOn(name="左侧窗帘")', {"area": "厨房", "domain": "cover", "device_class": "curtain"}),
        ("打开床头等", 'HassTurnOn(name="床头灯")', {"name": "床头灯"}),  # a homophone is the name said
        ("打开所有厨房的风扇", 'HassTurnOn(area="厨房", domain="fan")', {"area": "厨房", "domain": "fan"}),
        ("所有窗户都是关着的吗", 'HassGetState(domain="cover", device_class="window", state="closing")', None),
        ("天窗是打开的吗", 'HassGetState(name="天窗", state="open")', {"name": "天窗", "state": "on"}),  # a sensor
        ("所有门都锁着吗", 'HassGetState(domain="lock", state="closed")', {"domain": "lock", "state": "locked"}),
        ("有灯开着吗", 'HassGetState(domain="light", state="on")', {"domain": "light", "state": "on"}),
        # "are there any": a kind and an area, even where a device is called 厨房灯
        (
            "厨房灯有没有开着的",
            'HassGetState(area="厨房", domain="light", state="on")',
            {"area": "厨房", "domain": "light", "state": "on"},
        ),
        # a required name the model left out, which the utterance says: filled, not asked for
        ("把苹果加到待办清单", 'HassListAddItem(item="苹果")', {"item": "苹果", "name": "待办清单"}),
    ],
)
def test_calls_are_grounded_in_the_home(text: str, answer: str, grounded: dict | None) -> None:
    router = Router(FakeBackend(answer), registry=registry_for(GROUNDED), fast_path=False)
    result = router.handle(text, dispatch=False)
    assert result.ok, result.errors
    slots = slot_values(router.registry.get(result.intent), result.calls[0].arguments)
    expected = grounded or {"domain": "cover", "device_class": "window", "state": "closed"}
    assert slots == expected


# --------------------------------------------------------------------------- the Wyoming service
SCRIPT = {
    "把客厅的灯打开": 'HassTurnOn(area="客厅", domain="light")',
    "空调调到二十四度": "HassClimateSetTemperature(temperature=24)",
    "给我讲个笑话": "no_intent()",
}


@pytest.fixture(scope="module")
def service(registry) -> Iterator[tuple[str, int, Router]]:
    from intentkit.homeassistant.wyoming import serve_wyoming

    router = Router(FakeBackend(lambda r: SCRIPT.get(r.text, "no_intent()")), registry=registry, fast_path=False)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    loop = asyncio.new_event_loop()
    started = asyncio.Event()
    task = loop.create_task(serve_wyoming(router, f"tcp://127.0.0.1:{port}", language="zh-CN", started=started))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(started.wait(), loop).result(10)
    yield "127.0.0.1", port, router

    async def shutdown() -> None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run_coroutine_threadsafe(shutdown(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()


async def _exchange(host: str, port: int, *events: Any) -> list[Any]:
    from wyoming.client import AsyncTcpClient

    answers = []
    async with AsyncTcpClient(host, port) as client:
        for event in events:
            await client.write_event(event.event())
            answers.append(await asyncio.wait_for(client.read_event(), 10))
    return answers


def test_describe_names_an_installed_intent_program(service) -> None:
    from wyoming.info import Describe, Info

    (answer,) = asyncio.run(_exchange(service[0], service[1], Describe()))
    info = Info.from_event(answer)
    program = info.intent[0]
    assert program.installed and set(program.models[0].languages) == {"zh-CN", "zh-Hans"}


def test_transcripts_get_intents_or_not_recognized(service) -> None:
    from wyoming.asr import Transcript
    from wyoming.intent import Intent, NotRecognized

    on, warm, joke = asyncio.run(
        _exchange(
            service[0], service[1], Transcript("把客厅的灯打开"), Transcript("空调调到二十四度"), Transcript("给我讲个笑话")
        )
    )
    intent = Intent.from_event(on)
    assert intent.name == "HassTurnOn" and {e.name: e.value for e in intent.entities} == {"area": "客厅", "domain": "light"}
    assert intent.text  # the language's response, for Home Assistant to speak
    assert {e.name: e.value for e in Intent.from_event(warm).entities} == {"temperature": 24}
    assert NotRecognized.is_type(joke.type) and NotRecognized.from_event(joke).text == "no_intent"


def test_raw_events_malformed_ones_included_never_stop_the_service(service) -> None:
    host, port, _ = service

    def raw(lines: list[bytes]) -> list[dict]:
        with socket.create_connection((host, port), timeout=10) as sock:
            for line in lines:
                sock.sendall(line)
            sock.shutdown(socket.SHUT_WR)
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        answers, rest = [], data
        while rest:
            header, _, rest = rest.partition(b"\n")
            event = json.loads(header)
            if event.get("data_length"):
                event["data"] = json.loads(rest[: event["data_length"]])
                rest = rest[event["data_length"] :]
            answers.append(event)
        return answers

    body = json.dumps({"text": "把客厅的灯打开"}).encode()
    good = raw([json.dumps({"type": "transcript", "data_length": len(body)}).encode() + b"\n" + body])
    assert good[0]["type"] == "intent" and good[0]["data"]["name"] == "HassTurnOn"
    inline = raw([json.dumps({"type": "transcript", "data": {"text": "空调调到二十四度"}}).encode() + b"\n"])
    assert inline[0]["data"]["name"] == "HassClimateSetTemperature"
    missing = raw([json.dumps({"type": "transcript", "data": {"txt": "?"}}).encode() + b"\n"])
    assert missing[0]["type"] == "error" and "intentkit-bad-event" in json.dumps(missing[0])
    raw([b"this is not json\n"])  # the connection is dropped ...
    raw([b'{"type": "transcript", "data_length": 99}\n{"te'])  # ... and so is a disconnect mid-event
    assert (
        raw(
            [
                json.dumps({"type": "ping"}).encode()
                + b"\n"
                + json.dumps({"type": "transcript", "data": {"text": "把客厅的灯打开"}}).encode()
                + b"\n"
            ]
        )[0]["type"]
        == "intent"
    )


def test_handle_mode_runs_the_apps_handlers(registry) -> None:
    from wyoming.asr import Transcript
    from wyoming.handle import Handled, NotHandled

    from intentkit.homeassistant.wyoming import serve_wyoming

    done: list[tuple[str, dict]] = []
    handled = registry_for(HOME, handler=lambda name, slots: done.append((name, slots)) or "好的，已打开客厅的灯")
    router = Router(FakeBackend(lambda r: SCRIPT.get(r.text, "no_intent()")), registry=handled, fast_path=False)

    async def run() -> list[Any]:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        started = asyncio.Event()
        task = asyncio.create_task(
            serve_wyoming(router, f"tcp://127.0.0.1:{port}", language="zh-CN", mode="handle", started=started)
        )
        await started.wait()
        try:
            return await _exchange("127.0.0.1", port, Transcript("把客厅的灯打开"), Transcript("给我讲个笑话"))
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    ok, joke = asyncio.run(run())
    assert Handled.from_event(ok).text == "好的，已打开客厅的灯" and done == [("HassTurnOn", {"area": "客厅", "domain": "light"})]
    assert NotHandled.is_type(joke.type)


def test_taiwan_rows_name_things_in_traditional_characters() -> None:
    pytest.importorskip("opencc")
    from trainers.homeassistant import ha_rows

    rows = [r for r in ha_rows("zh-TW", per_intent=6, seed=2) if r.intent and r.slots.get("area")]
    assert rows and all(r.slots["area"] in r.text for r in rows)
    simplified_only = set("厅卧灯帘书阳厨台")  # characters that differ in traditional writing
    assert not any(set(r.slots["area"]) & simplified_only for r in rows)
    registry = registry_for(HOME, language="zh-TW")
    assert len(registry) == len(language_intents("zh-TW")) == 41


def test_the_bundled_model_routes_a_home_from_the_command_line() -> None:
    """`intentkit route --home`: Home Assistant's intents over the home's names, with the bundled
    Home Assistant model (the one `intentkit wyoming` serves)."""
    pytest.importorskip("llama_cpp")
    from typer.testing import CliRunner

    from intentkit.cli import app

    home = Path(__file__).resolve().parent.parent / "examples" / "homeassistant" / "home.yaml"
    done = CliRunner().invoke(app, ["route", "把客厅的灯打开", "给我讲个笑话", "--home", str(home), "--json"])
    assert done.exit_code == 0, done.output
    on, joke = (json.loads(line) for line in done.output.splitlines() if line.startswith("{"))
    assert on["calls"] == [
        {
            "name": "HassTurnOn",
            "arguments": {"name": None, "area": "客厅", "floor": None, "domain": "light", "device_class": None},
        }
    ]
    assert joke["status"] == "no_intent"


def test_english_rows_come_from_the_english_templates_with_english_names() -> None:
    from trainers.homeassistant import ha_rows

    rows = ha_rows("en", per_intent=4, seed=5)
    intents = language_intents("en")
    named = [r for r in rows if r.intent is not None]
    assert {r.intent for r in named} == set(intents)
    for row in named:
        assert set(row.slots) <= set(intents[row.intent].slots), row
        assert not any("\u4e00" <= c <= "\u9fff" for c in row.text), row  # no Chinese names in English rows
        assert "  " not in row.text
    assert any(r.intent is None for r in rows)
    with pytest.raises(Exception, match="built in: zh-CN, zh-TW, zh-HK and en"):
        ha_rows("de", per_intent=1)


def test_names_match_in_either_script() -> None:
    home = Home(areas=["客厅"], entities=[{"name": "床头灯", "domain": "light", "area": "客厅"}])
    assert home.area_names["客廳"] == "客厅" and home.entity_names["床頭燈"] == "床头灯"
    assert home.area_names["客厅"] == "客厅"  # the names themselves stay first


@pytest.mark.parametrize(
    ("text", "intent", "items"),
    [
        ("把客厅的灯打开", "HassTurnOn", (("area", "客厅"), ("domain", "light"))),
        ("打开台灯", "HassTurnOn", (("name", "床头灯"),)),  # an alias drafts the entity's name
        ("关闭卧室的窗帘", "HassTurnOff", (("area", "卧室"), ("domain", "cover"), ("device_class", "curtain"))),
    ],
)
def test_templates_draft_the_call_in_the_registrys_parameter_order(registry, text, intent, items) -> None:
    from intentkit.drafts import Draft

    draft = registry.drafter(text)
    assert draft == Draft(intent, items)
    order = [p.name for p in registry.get(intent).params]
    assert [order.index(name) for name, _ in draft.items] == sorted(order.index(name) for name, _ in draft.items)


def test_no_template_no_draft(registry) -> None:
    assert registry.drafter("给我讲个笑话") is None
    assert registry.drafter("客厅好暗啊，帮我把灯开一下") is None  # hassil misses it; the nearest row drafts


def test_the_router_offers_the_template_draft_and_survives_a_failing_drafter(caplog) -> None:
    registry = registry_for(HOME, templates="draft")
    backend = FakeBackend('HassTurnOn(area="客厅", domain="light")')
    router = Router(backend, registry=registry, fast_path=False)
    assert router.handle("把客厅的灯打开", dispatch=False).ok
    assert backend.requests[-1].draft is not None and backend.requests[-1].draft.intent == "HassTurnOn"

    def broken(text: str):
        raise RuntimeError("drafter down")

    registry.drafter = broken
    result = router.handle("把客厅的灯打开", dispatch=False)
    assert result.ok and backend.requests[-1].draft is None
    assert "drafter failed" in caplog.text


def test_template_drafts_answer_as_without_them_with_fewer_evaluations() -> None:
    """The bundled Home Assistant model: the template draft changes no answer, only how many
    evaluations the decoder needs."""
    pytest.importorskip("llama_cpp")
    from intentkit.backends.base import GenerateRequest
    from intentkit.backends.llamacpp import LlamaCppBackend

    model = Path(__file__).resolve().parent.parent / "models" / "home-assistant"
    registry = registry_for(HOME, templates="draft")
    texts = ["把客厅的灯打开", "关闭卧室的窗帘", "打开台灯", "把床头灯亮度调到百分之五十", "客厅的温度是多少", "把厨房的灯关掉"]
    with LlamaCppBackend.from_model_dir(model) as backend:
        router = Router(backend, registry=registry, fast_path=False)

        def run(drafted: bool) -> list:
            return [
                backend.generate(
                    GenerateRequest(t, registry.catalog, router.prompt, draft=registry.drafter(t) if drafted else None)
                )
                for t in texts
            ]

        with_templates, without = run(True), run(False)
    assert [g.text for g in with_templates] == [g.text for g in without]
    assert sum(g.info["evaluations"] for g in with_templates) < sum(g.info["evaluations"] for g in without)


def test_out_of_scope_rows_are_sentences_no_template_matches() -> None:
    from trainers.homeassistant import _ZH, _unclaimed

    assert _unclaimed(["你好", "给我讲个笑话"], "zh-CN", _ZH, lambda text: text) == ["给我讲个笑话"]  # 你好: HassRespond


def test_answer_mode_takes_a_template_match_without_the_model() -> None:
    backend = FakeBackend({"广播一下，开饭了": 'HassBroadcast(message="开饭了")'})  # any other request would raise
    router = Router(backend, registry=registry_for(HOME), fast_path=False)  # templates="answer", the default
    on = router.handle("把客厅的灯打开", dispatch=False)
    assert on.ok and on.path == "template" and on.call_text == 'HassTurnOn(area="客厅", domain="light")'
    assert router.handle("关掉台灯", dispatch=False).calls[0].arguments["name"] == "床头灯"  # validated: the alias's name
    assert backend.requests == []
    # A wildcard takes whatever stands in its place (the comma too): the model answers, with the draft.
    broadcast = router.handle("广播一下，开饭了", dispatch=False)
    assert broadcast.path == "model" and broadcast.calls[0].arguments["message"] == "开饭了"
    assert backend.requests[-1].draft is not None


def test_templates_mode_is_checked() -> None:
    from intentkit import ConfigError

    with pytest.raises(ConfigError, match="answer"):
        registry_for(HOME, templates="always")
    assert registry_for(HOME, templates="off").drafter is None


def test_an_english_home_gets_the_bundled_english_model() -> None:
    pytest.importorskip("llama_cpp")
    from typer.testing import CliRunner

    from intentkit.cli import app

    home = Path(__file__).resolve().parent.parent / "examples" / "homeassistant" / "home-en.yaml"
    done = CliRunner().invoke(app, ["route", "turn on the kitchen lights", "tell me a joke", "--home", str(home), "--json"])
    assert done.exit_code == 0, done.output
    on, joke = (json.loads(line) for line in done.output.splitlines() if line.startswith("{"))
    assert on["calls"][0]["name"] == "HassTurnOn"
    assert {k: v for k, v in on["calls"][0]["arguments"].items() if v is not None} == {"area": "Kitchen", "domain": "light"}
    assert joke["status"] == "no_intent"
