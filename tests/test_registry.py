"""Handler signatures become typed argument models; values are normalised; bad specs fail early."""

from __future__ import annotations

import enum
from typing import Annotated, Literal

import pydantic
import pytest

from intentkit import (
    ArgumentError,
    Call,
    DuplicateIntentError,
    ExampleError,
    Param,
    Registry,
    UnknownIntentError,
    UnsupportedSignatureError,
    parse_calls,
)


class Mode(enum.Enum):
    COOL = "制冷"
    HEAT = "制热"


def weather_search(city: Annotated[str, Param(choices=["杭州", "上海", "北京"], aliases=["城市"])], date: str = "今天") -> dict:
    return {"city": city, "date": date}


def set_ac(
    mode: Mode,
    temperature: int = 26,
    swing: bool = False,
    fan: Literal["low", "high"] = "low",
    rooms: list[str] | None = None,
    ratio: float = 1.0,
) -> str:
    return f"{mode} {temperature}"


@pytest.fixture
def registry() -> Registry:
    reg = Registry()
    reg.register(weather_search, description="查询天气")
    reg.register(set_ac, aliases=["空调"])
    return reg


def bind(registry: Registry, text: str) -> dict:
    (call,) = parse_calls(text)
    return registry.bind(call).arguments


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("weather_search(杭州)", {"city": "杭州", "date": "今天"}),
        ("weather_search(杭州, 明天)", {"city": "杭州", "date": "明天"}),
        ('weather_search(城市="上海")', {"city": "上海", "date": "今天"}),
        ("weather_search(city=杭洲)", {"city": "杭州", "date": "今天"}),  # homophone from ASR
        ("weather_search(city=「北京」)", {"city": "北京", "date": "今天"}),
        ("weather_search(city=杭州, date=null)", {"city": "杭州", "date": "今天"}),
        ("weather_search(city=[杭州])", {"city": "杭州", "date": "今天"}),
    ],
)
def test_weather_binding(registry: Registry, text: str, expected: dict) -> None:
    assert bind(registry, text) == expected


@pytest.mark.parametrize(
    ("text", "key", "expected"),
    [
        ("set_ac(制冷)", "mode", Mode.COOL),
        ("set_ac(HEAT)", "mode", Mode.HEAT),
        ("set_ac(mode=制冷, temperature=二十)", "temperature", 20),
        ("set_ac(mode=制冷, temperature=二十五)", "temperature", 25),
        ('set_ac(mode=制冷, temperature="２４")', "temperature", 24),
        ("set_ac(mode=制冷, temperature=23.0)", "temperature", 23),
        ("set_ac(mode=制冷, swing=是)", "swing", True),
        ("set_ac(mode=制冷, swing=false)", "swing", False),
        ("set_ac(mode=制冷, fan=HIGH)", "fan", "high"),
        ("set_ac(mode=制冷, rooms=客厅)", "rooms", ["客厅"]),
        ("set_ac(mode=制冷, rooms=[客厅, 卧室])", "rooms", ["客厅", "卧室"]),
        ("set_ac(mode=制冷, ratio=三点五)", "ratio", 3.5),
        ("空调(制热)", "mode", Mode.HEAT),
    ],
)
def test_types_are_normalised(registry: Registry, text: str, key: str, expected: object) -> None:
    assert bind(registry, text)[key] == expected


@pytest.mark.parametrize(
    ("text", "param", "message"),
    [
        ("weather_search()", "city", "required argument missing"),
        ("weather_search(city=广州)", "city", "not one of 杭州, 上海, 北京"),  # near in sound, still not a choice
        ("weather_search(city=深圳)", "city", "not one of"),
        ("weather_search(杭州, 明天, 后天)", None, "takes 2 arguments"),
        ("weather_search(town=杭州)", "town", "has no parameter 'town'; parameters: city, date"),
        ("weather_search(杭州, city=上海)", "city", "given twice"),
        ("set_ac(mode=制冷, temperature=很热)", "temperature", "whole number"),
        ("set_ac(mode=制冷, temperature=23.5)", "temperature", "whole number"),
        ("set_ac(mode=制冷, swing=也许)", "swing", "true or false"),
        ("set_ac(mode=除湿)", "mode", "not one of"),
        ("set_ac(mode=[制冷, 制热])", "mode", "got a list of 2"),
        ("set_ac(mode=制冷, rooms=[[a, b]])", "rooms", "got a list of 2"),
    ],
)
def test_invalid_arguments_name_the_problem(registry: Registry, text: str, param: str | None, message: str) -> None:
    with pytest.raises(ArgumentError) as info:
        bind(registry, text)
    problem = info.value.problems[0]
    assert problem.param == param
    assert message in problem.message
    assert info.value.intent in ("weather_search", "set_ac")


def test_pydantic_constraints_from_annotated_still_apply() -> None:
    reg = Registry()

    def volume(level: Annotated[int, pydantic.Field(ge=0, le=100)]) -> None: ...

    reg.register(volume)
    assert reg.bind(Call("volume", (50,))).arguments == {"level": 50}
    with pytest.raises(ArgumentError, match="less than or equal to 100"):
        reg.bind(Call("volume", (150,)))


def test_unknown_intent_lists_valid_names(registry: Registry) -> None:
    with pytest.raises(UnknownIntentError) as info:
        registry.get("play_music")
    assert info.value.valid == ["weather_search", "set_ac"]
    assert "weather_search, set_ac" in str(info.value)


@pytest.mark.parametrize("name", ["weather_search", "空调"])
def test_duplicates_are_rejected(registry: Registry, name: str) -> None:
    with pytest.raises(DuplicateIntentError, match="already registered"):
        registry.register(lambda: None, name=name)


def test_reserved_and_bad_names() -> None:
    reg = Registry()
    with pytest.raises(DuplicateIntentError, match="reserved"):
        reg.register(lambda: None, name="no_intent")
    with pytest.raises(UnsupportedSignatureError, match="not an identifier"):
        reg.register(lambda: None, name="play music")


def _varargs(*cities: str) -> None: ...
def _kwargs(**slots: str) -> None: ...
def _set_param(slots: set[str]) -> None: ...
def _int_keys(slots: dict[int, str]) -> None: ...
def _union(x: int | str) -> None: ...
def _private(_x: str) -> None: ...
def _nested(x: list[list[str]]) -> None: ...
def _int_choices(x: Annotated[int, Param(choices=["1"])]) -> None: ...


@pytest.mark.parametrize(
    ("handler", "message"),
    [
        (_varargs, "cannot be filled"),
        (_kwargs, "cannot be filled"),
        (_set_param, "is not supported; use one of str, int"),
        (_int_keys, "dict keys must be str"),
        (_union, "union"),
        (_private, "private"),
        (_nested, "nested lists"),
        (_int_choices, "needs a str parameter"),
        ("not callable", "not callable"),
    ],
)
def test_unsupported_signatures_fail_at_registration(handler: object, message: str) -> None:
    with pytest.raises(UnsupportedSignatureError, match=message):
        Registry().register(handler, name="x")  # type: ignore[arg-type]


def test_parameter_names_that_clash_with_pydantic_work() -> None:
    reg = Registry()

    def search(json: str, model_name: str = "a", copy: int = 1) -> tuple:
        return json, model_name, copy

    spec = reg.register(search)
    bound = reg.bind(Call("search", ("x",), {"model_name": "b"}))
    assert bound.arguments == {"json": "x", "model_name": "b", "copy": 1}
    assert spec.invoke(bound.arguments) == ("x", "b", 1)


def test_positional_only_parameters_are_passed_positionally() -> None:
    reg = Registry()

    def f(a: int, /, b: int = 2) -> tuple:
        return a, b

    spec = reg.register(f)
    assert spec.invoke(reg.bind(Call("f", (1,), {"b": 3})).arguments) == (1, 3)


def test_unannotated_parameters_are_text() -> None:
    reg = Registry()

    def f(x, y=3):  # type: ignore[no-untyped-def]
        return x

    reg.register(f)
    assert reg.bind(Call("f", (12,))).arguments["x"] == "12"


def test_examples_are_checked_against_the_signature(registry: Registry) -> None:
    with pytest.raises(ExampleError, match="required argument missing"):
        registry.add_example("weather_search", "天气怎么样")
    example = registry.add_example("weather_search", ("杭州天气怎么样", {"city": "杭州"}))
    assert example.arguments == {"city": "杭州"}
    with pytest.raises(ExampleError, match="must be a string"):
        registry.add_example("weather_search", 42)  # type: ignore[arg-type]


def test_openai_tools_export(registry: Registry) -> None:
    tools = registry.to_openai_tools()
    weather = tools[0]["function"]
    assert tools[0]["type"] == "function"
    assert weather["name"] == "weather_search" and weather["description"] == "查询天气"
    assert weather["parameters"]["required"] == ["city"]
    assert weather["parameters"]["properties"]["city"] == {"enum": ["杭州", "上海", "北京"]}
    assert weather["parameters"]["properties"]["date"] == {"type": "string", "default": "今天"}
    ac = tools[1]["function"]["parameters"]["properties"]
    assert ac["mode"] == {"enum": ["制冷", "制热"]}
    assert ac["rooms"] == {"type": "array", "items": {"type": "string"}}
    assert ac["temperature"] == {"type": "integer", "default": 26}


def test_catalog_fingerprint_tracks_signatures(registry: Registry) -> None:
    before = registry.catalog
    assert registry.catalog is before
    registry.register(lambda: None, name="music_exit")
    assert registry.catalog.fingerprint != before.fingerprint
    assert registry.catalog.names == ["weather_search", "set_ac", "music_exit"]


def test_bound_call_renders_canonically(registry: Registry) -> None:
    bound = registry.bind(Call("set_ac", ("制冷",)))
    assert bound.render() == 'set_ac(mode="制冷", temperature=26, swing=false, fan="low", ratio=1.0)'


def test_the_numeral_reader_loads_when_a_numeric_parameter_registers_not_on_a_request() -> None:
    """cn2an takes 0.1–0.2 s to import; it is loaded at start-up by the apps that can need it."""
    import subprocess
    import sys

    script = (
        "import sys\n"
        "from intentkit import Registry\n"
        "r = Registry()\n"
        "def play(song: str): ...\n"
        "def volume(levels: list[int]): ...\n"
        "r.register(play)\n"
        "print('cn2an' in sys.modules)\n"
        "r.register(volume)\n"
        "print('cn2an' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "True"]
