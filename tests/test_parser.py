"""The call grammar, table-driven: every form fine-tuned models emit, and every way to break it."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from intentkit import ParseError, parse_calls, parse_calls_lenient


def calls(text: str) -> list[tuple[str, tuple, dict]]:
    return [(c.name, c.args, dict(c.kwargs)) for c in parse_calls(text)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # the seed recipe's outputs
        ("play_music()", [("play_music", (), {})]),
        ("volume_down()", [("volume_down", (), {})]),
        ("weather_search(杭州)", [("weather_search", ("杭州",), {})]),
        ("music_query_player(七里香)", [("music_query_player", ("七里香",), {})]),
        ("play_music(周杰伦)", [("play_music", ("周杰伦",), {})]),
        # keyword arguments, quoted and bare
        ('weather_search(city="杭州", date=明天)', [("weather_search", (), {"city": "杭州", "date": "明天"})]),
        ("weather_search(city='杭州')", [("weather_search", (), {"city": "杭州"})]),
        ("weather_search(city = 杭州 , date = 明天 )", [("weather_search", (), {"city": "杭州", "date": "明天"})]),
        # Chinese quotes
        ("f(city=“杭州”)", [("f", (), {"city": "杭州"})]),
        ("f(city=‘杭州’)", [("f", (), {"city": "杭州"})]),
        ("f(city=「杭州」)", [("f", (), {"city": "杭州"})]),
        ("f(city=『杭州』)", [("f", (), {"city": "杭州"})]),
        # full-width punctuation outside strings; kept inside them
        ("weather_search（city=杭州，date=明天）", [("weather_search", (), {"city": "杭州", "date": "明天"})]),
        ("f(杭州、上海)", [("f", ("杭州", "上海"), {})]),
        ('f(text="你好，世界；再见")', [("f", (), {"text": "你好，世界；再见"})]),
        ("f(a＝1)", [("f", (), {"a": 1})]),
        # numbers, booleans, null
        ("set_volume(30)", [("set_volume", (30,), {})]),
        ("f(-3, +4, 2.5, 1e3, .5)", [("f", (-3, 4, 2.5, 1000.0, 0.5), {})]),
        ("f(true, False, null, None, none)", [("f", (True, False, None, None, None), {})]),
        ('f("true", "30")', [("f", ("true", "30"), {})]),
        # lists
        ('match_query(name=["恒大", "山东鲁能"])', [("match_query", (), {"name": ["恒大", "山东鲁能"]})]),
        ("f(x=[1, [2, 3], []])", [("f", (), {"x": [1, [2, 3], []]})]),
        ("f(x=［a，b］)", [("f", (), {"x": ["a", "b"]})]),
        ("f(x=[1, 2,])", [("f", (), {"x": [1, 2]})]),
        # Unicode identifiers
        (
            'home_turn_on_light(位置="客厅", 灯种="日光灯")',
            [("home_turn_on_light", (), {"位置": "客厅", "灯种": "日光灯"})],
        ),
        ("打开灯(房间=卧室)", [("打开灯", (), {"房间": "卧室"})]),
        # escapes
        (r'f("a\"b", "c\\d", "\u4f60\n")', [("f", ('a"b', "c\\d", "你\n"), {})]),
        (r"f('it\'s')", [("f", ("it's",), {})]),
        ("f(It's fine)", [("f", ("It's fine",), {})]),
        # trailing commas and spaces inside barewords
        ("f(New York, )", [("f", ("New York",), {})]),
        # several calls
        ("play_music();volume_down()", [("play_music", (), {}), ("volume_down", (), {})]),
        ("play_music()；volume_down()", [("play_music", (), {}), ("volume_down", (), {})]),
        ("play_music()\nvolume_down()\n", [("play_music", (), {}), ("volume_down", (), {})]),
        ("play_music() volume_down()", [("play_music", (), {}), ("volume_down", (), {})]),
        # noise around the call
        ("assistant: play_music()", [("play_music", (), {})]),
        ("输出：weather_search(杭州)", [("weather_search", ("杭州",), {})]),
        ("```python\nplay_music()\n```", [("play_music", (), {})]),
        ("play_music() 好的，马上为您播放。", [("play_music", (), {})]),
        ("<start_of_turn>model\nvolume_down()<end_of_turn>", [("volume_down", (), {})]),
        ("play_music().", [("play_music", (), {})]),
        # the reserved no-intent answer is an ordinary call to the parser
        ("no_intent()", [("no_intent", (), {})]),
        # empty output is no calls, not an error
        ("", []),
        ("  \n ", []),
    ],
)
def test_accepts(text: str, expected: list) -> None:
    assert calls(text) == expected


@pytest.mark.parametrize(
    ("text", "message", "position"),
    [
        ("hello there", "no function call found", 0),
        ("f(a=1", "missing ')'", 5),
        ("f(a=1\ng(2)", "before the line ends", 5),
        ('f("abc)', "unterminated string", 2),
        ("f(“abc)", "unterminated string", 2),
        ("f(a=1, 2)", "positional argument follows keyword", 7),
        ("f(a=1, a=2)", "repeated", 7),
        ("f(a=)", "missing value", 4),
        ("f(,)", "missing value", 2),
        ("f(x=[1, 2)", "expected ',' or ']'", 9),
        ("f(x=[1, 2", "missing ']'", 4),
        ('f("a" b)', "expected ',' or ')'", 6),
        ("f(g(x))", "call cannot be used as a value", 3),
        ("os.system('id')", "dotted name", 0),
        ('__import__("os").system("id")', "chained calls", 16),
        ("f()()", "chained calls", 3),
        ("f(" + "9" * 100 + ")", "number literal too long", 2),
        ("f(" + "[" * 1000 + "]" * 1000 + ")", "nested deeper", 18),
    ],
)
def test_rejects_with_position(text: str, message: str, position: int) -> None:
    with pytest.raises(ParseError) as info:
        parse_calls(text)
    assert message in info.value.message
    assert info.value.position == position
    assert info.value.text == text
    assert "^" in str(info.value)


def test_rejects_overlong_output_before_parsing() -> None:
    text = 'f(x="' + "a" * 1_000_000 + '")'
    start = time.perf_counter()
    with pytest.raises(ParseError, match="over the 8192 limit"):
        parse_calls(text)
    assert time.perf_counter() - start < 1.0


def test_longer_limit_is_configurable() -> None:
    text = 'f(x="' + "a" * 10_000 + '")'
    assert parse_calls(text, max_length=20_000)[0].kwargs["x"] == "a" * 10_000


def test_lenient_keeps_good_calls_and_reports_bad_ones() -> None:
    outcome = parse_calls_lenient("play_music()\nf(a=1\nvolume_down()")
    assert [c.name for c in outcome.calls] == ["play_music", "volume_down"]
    assert len(outcome.errors) == 1 and outcome.errors[0].position == 18
    assert not outcome.ok


def test_span_points_into_raw_text() -> None:
    text = "assistant: weather_search(杭州) ok"
    (call,) = parse_calls(text)
    assert text[call.span[0] : call.span[1]] == "weather_search(杭州)"


@pytest.mark.parametrize(
    "text",
    [
        'weather_search(city="杭州", date="明天")',
        'match_query(name=["恒大", "山东鲁能"])',
        "play_music()",
        'f(1, 2.5, true, null, "a\\"b")',
    ],
)
def test_render_round_trips(text: str) -> None:
    (call,) = parse_calls(text)
    (again,) = parse_calls(call.render())
    assert (again.name, again.args, dict(again.kwargs)) == (call.name, call.args, dict(call.kwargs))


def test_pickled_error_keeps_context() -> None:
    import pickle

    with pytest.raises(ParseError) as info:
        parse_calls("f(a=1")
    copy = pickle.loads(pickle.dumps(info.value))
    assert (copy.position, copy.text) == (5, "f(a=1")


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=300))
def test_arbitrary_text_only_ever_raises_parse_error(text: str) -> None:
    try:
        result = parse_calls(text)
    except ParseError as exc:
        assert 0 <= exc.position <= len(text)
    else:
        assert all(c.name.isidentifier() for c in result)


_pieces = st.sampled_from([*list("f(g)=,，、[]［］;；\n\"'“”「」 1a杭.\\（）"), "true", "null", "os.system", "__import__"])


@settings(max_examples=400, deadline=None)
@given(st.lists(_pieces, max_size=60).map("".join))
def test_call_like_text_only_ever_raises_parse_error(text: str) -> None:
    try:
        parse_calls_lenient(text)
        parse_calls(text)
    except ParseError:
        pass


@pytest.mark.parametrize(
    "text",
    ["f(" + "[" * 100_000, "f(" * 100_000, '"' * 8000, "f(" + "a=1," * 2000, "(" * 4000 + ")" * 4000],
    ids=["deep-list", "deep-call", "quotes", "many-kwargs", "parens"],
)
def test_pathological_input_is_bounded(text: str) -> None:
    start = time.perf_counter()
    with pytest.raises(ParseError):
        parse_calls(text)
    assert time.perf_counter() - start < 2.0
