"""Drafted answers: the nearest training utterance's call, its values carried over."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from intentkit.drafts import DRAFTS_FILE, Draft, DraftIndex, carry, resolve_drafts
from intentkit.errors import ModelDirError


@pytest.mark.parametrize(
    ("value", "source", "target", "expected"),
    [
        ("卧室", "把卧室的灯打开", "把客厅的灯打开", "客厅"),
        ("卧室", "把卧室的灯打开", "把主卧的灯打开", "主卧"),  # shares a character with the old value
        ("杭州", "杭州明天天气", "杭州后天天气", "杭州"),  # said in both: kept
        ("稻香", "我想听稻香", "我想听海阔天空", "海阔天空"),
        ("明天", "明天杭州冷不冷", "后天上海冷不冷", "后天"),
        ("七点", "七点叫我", "帮我订个闹钟", None),  # nowhere to put it
        ("北京", "杭州天气", "上海天气", None),  # not in the source
        ("0003", "代码0003的涨幅", "代码000800的股票", "000800"),  # whole numbers, as decoding copies them
        ("Jay", "播放Jay的歌", "播放Jayden的歌", "Jayden"),
    ],
)
def test_carry_maps_a_value_through_the_alignment(value, source, target, expected):
    assert carry(value, source, target) == expected


@pytest.fixture
def index():
    return DraftIndex.from_outputs(
        [
            ("把卧室的灯打开", 'light_on(room="卧室")'),
            ("我想听音乐", "play_music()"),
            ("查一下杭州明天的天气", 'weather_search(city="杭州", date="明天")'),
            ("音量调到30", "volume(level=30)"),
            ("讲个笑话", None),
            ("先开灯再放歌", "light_on() play_music()"),  # two calls: not a draft
        ]
    )


def test_draft_is_the_nearest_call_with_carried_values(index):
    assert len(index) == 5
    assert index.draft("把客厅的灯打开") == Draft("light_on", (("room", "客厅"),))
    assert index.draft("我想听音乐吧") == Draft("play_music")
    assert index.draft("查一下北京后天的天气") == Draft("weather_search", (("city", "北京"), ("date", "后天")))
    assert index.draft("音量调到50") == Draft("volume", (("level", 30),))  # numbers are drafted as trained
    assert index.draft("讲个故事") == Draft("no_intent")
    assert index.draft("zzzzzzzzzzzzzzzzzzzz") is None  # nothing near


def test_a_value_that_cannot_be_placed_ends_the_draft():
    index = DraftIndex.from_outputs([("查一下杭州明天的天气", 'weather_search(city="杭州", date="明天")')])
    assert index.draft("查一下天气怎么样") == Draft("weather_search", (("city", None),))


def test_save_and_load_round_trip(index, tmp_path):
    path = index.save(tmp_path / DRAFTS_FILE)
    again = DraftIndex.load(path)
    assert again.utterances == index.utterances
    assert [c.render() for c in again.calls] == [c.render() for c in index.calls]
    assert resolve_drafts("auto", tmp_path).utterances == index.utterances
    assert resolve_drafts("auto", tmp_path / "elsewhere") is None
    assert resolve_drafts(None, tmp_path) is None


@pytest.mark.parametrize(
    "line",
    [
        "not json",
        json.dumps({"output": "f()"}),
        json.dumps({"instruction": 3, "output": "f()"}),
        json.dumps({"instruction": "x", "output": "f("}),
    ],
)
def test_a_bad_row_names_the_file_and_line(tmp_path, line):
    path = tmp_path / DRAFTS_FILE
    path.write_text(json.dumps({"instruction": "我想听音乐", "output": "play_music()"}) + "\n" + line + "\n", encoding="utf-8")
    with pytest.raises(ModelDirError, match=r"drafts\.jsonl.*line 2"):
        DraftIndex.load(path)


def test_nearest_within_the_intents_the_model_chose(index):
    # Nearest overall is the lights row; once the model has chosen weather_search, its row is drafted.
    assert index.draft("把客厅的灯打开") == Draft("light_on", (("room", "客厅"),))
    assert index.draft("把客厅的灯打开", intents=["weather_search"]) == Draft("weather_search", (("city", None),))
    # Within chosen intents there is no cutoff: any of their rows shows the call's shape.
    assert index.draft("zzzzzzzzzzzzzzzzzzzz") is None
    assert index.nearest("z音量z", intents=["volume"]) == ("音量调到30", index.calls[3])
    # ``fits`` keeps only calls that go along what the model has chosen so far.
    assert index.draft("查一下天气", intents=["weather_search"], fits=lambda call: "date" in call.kwargs) is not None
    assert index.draft("查一下天气", intents=["weather_search"], fits=lambda call: "room" in call.kwargs) is None
    assert index.draft("查一下天气", intents=["not_indexed"]) is None


def test_rows_that_agree_outvote_the_nearest_one():
    index = DraftIndex.from_outputs(
        [
            ("查查明天的天气", 'weather_search(date="明天")'),
            ("查查上海明天的天气吧", 'weather_search(city="上海", date="明天")'),
            ("查查北京明天的天气呀", 'weather_search(city="北京", date="明天")'),
            ("播放音乐", "play_music()"),
        ]
    )
    # The nearest row has no city; the next two, less near but together weightier, place one.
    assert index.nearest("查查香港明天的天气")[0] == "查查明天的天气"
    assert index.draft("查查香港明天的天气") == Draft("weather_search", (("city", "香港"), ("date", "明天")))


def test_the_intent_is_drafted_from_all_of_its_rows():
    # The bundled model's rows. On its dev set the nearest row alone drafted the intent the model
    # answered for 67 % of requests; naive Bayes over every row of each intent for 70 %.
    index = DraftIndex.load(Path(__file__).parent.parent / "models" / "smart-home" / DRAFTS_FILE)
    # The most similar row of the two volume intents is a volume_down one.
    utterance, call = index.nearest("请音量加大", intents=["volume_down", "volume_up"])
    assert (utterance, call.name) == ("请音量调低", "volume_down")
    assert index.intent("请音量加大") == "volume_up"
    assert index.draft("请音量加大") == Draft("volume_up")
    assert index.draft("stop the music") == Draft("music_exit")
    assert index.draft("想听十年这首歌，谢谢") == Draft("music_query_player", (("song", "十年"),))
    assert index.intent("zzzz") is None  # no feature indexed


def test_a_carried_value_is_trimmed_of_what_the_rows_only_say_around_values():
    index = DraftIndex.from_outputs(
        [
            ("永高股份的股票", 'stock_query(name="永高股份")'),
            ("帮我查下中集集团行情", 'stock_query(name="中集集团")'),
            ("查下同方股份走势", 'stock_query(name="同方股份")'),
        ]
    )
    # Aligned with the nearest row, whose value opens it, the value would take in 查下: the other
    # rows say 查 and 下 before their values and never inside one.
    assert index.nearest("查下北京首创的股票", intents=["stock_query"])[0] == "永高股份的股票"
    assert carry("永高股份", "永高股份的股票", "查下北京首创的股票") == "查下北京首创"
    assert index.draft("查下北京首创的股票", intents=["stock_query"]) == Draft("stock_query", (("name", "北京首创"),))


def test_a_value_no_alignment_places_is_one_the_rows_said_that_the_utterance_says(monkeypatch):
    import intentkit.drafts

    monkeypatch.setattr(intentkit.drafts, "_VOTERS", 1)  # the nearest row alone
    index = DraftIndex.from_outputs([("七点叫我起床", 'set_alarm(time="七点")'), ("下午三点的会", 'set_alarm(time="下午三点")')])
    assert index.nearest("叫我起床，下午三点", intents=["set_alarm"])[0] == "七点叫我起床"
    assert carry("七点", "七点叫我起床", "叫我起床，下午三点") is None  # the value's place was deleted
    assert index.draft("叫我起床，下午三点", intents=["set_alarm"]) == Draft("set_alarm", (("time", "下午三点"),))
    assert index.draft("叫我起床，马上", intents=["set_alarm"]) == Draft("set_alarm", (("time", None),))  # nothing said
