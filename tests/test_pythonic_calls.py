"""The pythonic tool-call cases of vLLM's parser tests (tests/tool_parsers/test_pythonic_tool_parser.py),
through intentkit's parser: the same outputs give the same names and arguments, nothing evaluated."""

from __future__ import annotations

import json

import pydantic
import pytest

from intentkit import ParseError, Registry, parse_calls, parse_calls_lenient

SIMPLE = "get_weather(city='San Francisco', metric='celsius')"
SIMPLE_ARGS = {"city": "San Francisco", "metric": "celsius"}
MORE_TYPES = (
    "register_user(name='John Doe', age=37, address={'city': 'San Francisco', 'state': 'CA'}, "
    "role=None, passed_test=True, aliases=['John', 'Johnny'])"
)
MORE_TYPES_JSON_LITERALS = MORE_TYPES.replace("None", "null").replace("True", "true")
MORE_TYPES_ARGS = {
    "name": "John Doe",
    "age": 37,
    "address": {"city": "San Francisco", "state": "CA"},
    "role": None,
    "passed_test": True,
    "aliases": ["John", "Johnny"],
}
ESCAPED = r"""get_weather(city='Martha\'s Vineyard', metric='\"cool units\"')"""


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        (f"[{SIMPLE}]", [("get_weather", SIMPLE_ARGS)]),
        (f"[{MORE_TYPES}]", [("register_user", MORE_TYPES_ARGS)]),
        (f"[{MORE_TYPES_JSON_LITERALS}]", [("register_user", MORE_TYPES_ARGS)]),
        ("[get_weather()]", [("get_weather", {})]),
        ("[do_something_cool(additional_data={})]", [("do_something_cool", {"additional_data": {}})]),
        ("[do_something_cool(steps=[])]", [("do_something_cool", {"steps": []})]),
        (f"[{ESCAPED}]", [("get_weather", {"city": "Martha's Vineyard", "metric": '"cool units"'})]),
        (f"[{SIMPLE}, {MORE_TYPES}]", [("get_weather", SIMPLE_ARGS), ("register_user", MORE_TYPES_ARGS)]),
        (
            "[get_weather(city='San Francisco', metric='celsius'), get_weather(), do_something_cool(steps=[])]",
            [("get_weather", SIMPLE_ARGS), ("get_weather", {}), ("do_something_cool", {"steps": []})],
        ),
    ],
    ids=["simple", "more_types", "json_literals", "parameterless", "empty_dict", "empty_list", "escaped", "parallel", "three"],
)
def test_vllm_pythonic_cases(output: str, expected: list[tuple[str, dict]]) -> None:
    calls = parse_calls(output)
    assert [(c.name, dict(c.kwargs)) for c in calls] == expected
    for call in calls:  # the arguments are JSON, as vLLM's FunctionCall.arguments are
        assert json.loads(json.dumps(dict(call.kwargs))) == dict(call.kwargs)


def test_no_tool_call_is_not_a_call() -> None:
    outcome = parse_calls_lenient("How can I help you today?")
    assert outcome.calls == [] and "no function call" in str(outcome.errors[0])


def test_a_non_finite_number_is_rejected_and_its_sibling_kept() -> None:
    outcome = parse_calls_lenient(f"[calc(x=1e999)\n{SIMPLE}]")
    assert [c.name for c in outcome.calls] == ["get_weather"]
    assert "out of range" in str(outcome.errors[0])


def test_a_good_call_survives_an_unparsable_sibling() -> None:
    outcome = parse_calls_lenient(f"[{SIMPLE}, f(a='x 'y', b='z')]")
    assert [(c.name, dict(c.kwargs)) for c in outcome.calls] == [("get_weather", SIMPLE_ARGS)]
    assert len(outcome.errors) == 1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("f(a={'x' 1})", "expected ':'"),
        ("f(a={1: 2})", "expected a key"),
        ("f(a={'x': 1, 'x': 2})", "key 'x' repeated"),
        ("f(a={'x': 1", "unterminated dict"),
        ("f(a={'x': os.system('rm')})", "call cannot be used as a value"),
    ],
)
def test_malformed_dicts_are_parse_errors(text: str, message: str) -> None:
    with pytest.raises(ParseError, match=message):
        parse_calls(text)


class Address(pydantic.BaseModel):
    city: str
    state: str


def test_dict_values_bind_to_typed_handlers() -> None:
    registry = Registry()

    def register_user(
        name: str,
        age: int,
        address: Address,
        role: str | None = None,
        passed_test: bool = False,
        aliases: list[str] | None = None,
    ) -> None: ...

    def do_something_cool(additional_data: dict[str, int] | None = None) -> None: ...

    registry.register(register_user)
    registry.register(do_something_cool)
    bound = registry.bind(parse_calls(MORE_TYPES)[0])
    assert bound.arguments["address"] == Address(city="San Francisco", state="CA") and bound.arguments["age"] == 37
    assert parse_calls(bound.render())[0].kwargs["address"] == {"city": "San Francisco", "state": "CA"}
    assert registry.bind(parse_calls("do_something_cool(additional_data={})")[0]).arguments == {"additional_data": {}}
    assert registry.bind(parse_calls('do_something_cool(additional_data={"n": "3"})')[0]).arguments["additional_data"] == {"n": 3}
    schema = registry.get("register_user").openai_tool()["function"]["parameters"]["properties"]["address"]
    assert schema["type"] == "object" and set(schema["properties"]) == {"city", "state"}
