"""Training data: both file formats, multi-turn rows, and errors that name file and line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import pytest

from intentkit import Param, Registry
from trainers.data import DataError, build_registry, in_utterance_order, load_records, validate_records


def write(tmp_path: Path, name: str, content: str) -> Path:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    return path


def jsonl(*rows: object) -> str:
    return "\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n"


def test_seed_format_json_array(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "seed.json",
        json.dumps(
            [
                {"instruction": "我想聽音樂", "output": "play_music()"},
                {"instruction": "我想去杭州玩，帮我查下天气预报", "output": "weather_search(杭州)"},
            ],
            ensure_ascii=False,
        ),
    )
    records = load_records(path)
    assert [r.intent for r in records] == ["play_music", "weather_search"]
    assert records[1].calls[0].args == ("杭州",)
    assert records[0].source == f"{path}[0]"


def test_datasets_format_with_out_of_scope_and_lists(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "dev.jsonl",
        jsonl(
            {
                "instruction": "打开客厅的两个日光灯",
                "output": 'home_turn_on_light(位置="客厅", 灯种="日光灯")',
                "name": "home_turn_on_light",
                "args": {"位置": "客厅", "灯种": "日光灯"},
            },
            {"instruction": "恒大对鲁能", "output": 'match_query(name=["恒大", "山东鲁能"])'},
            {"instruction": "今天吃什么", "output": None, "name": None},
            {"instruction": "随便聊聊", "output": "no_intent()"},
        ),
    )
    records = load_records(path)
    assert [r.intent for r in records] == ["home_turn_on_light", "match_query", "no_intent", "no_intent"]
    assert [r.in_scope for r in records] == [True, True, False, False]
    assert records[2].target == "no_intent()" and records[3].output is None
    assert records[0].source == f"{path}:1"


def test_multi_turn_rows_are_joined_like_sessions(tmp_path: Path) -> None:
    path = write(
        tmp_path, "mt.jsonl", jsonl({"instruction": ["我想听音乐", "给我放个周杰伦的音乐吧"], "output": "play_music(周杰伦)"})
    )
    assert load_records(path)[0].instruction == "我想听音乐。给我放个周杰伦的音乐吧。"


@pytest.mark.parametrize(
    ("content", "where", "message"),
    [
        ('{"instruction": "a", "output": "f()"}\n{"instruction": "b", "output": \n', ":2", "invalid JSON"),
        ('[{"instruction": "a", "output": "f()"},\n {"instruction": }]', ":2", "invalid JSON"),
        ('{"output": "f()"}\n', ":1", "missing 'instruction'"),
        ('{"instruction": "", "output": "f()"}\n', ":1", "non-empty"),
        ('{"instruction": "a", "output": 3}\n', ":1", "must be a call as text"),
        ('{"instruction": "a", "outputs": "f()"}\n', ":1", "missing 'output'"),
        ('\n\n{"instruction": "a", "output": "f(x=1"}\n', ":3", "does not parse: unterminated call"),
        ('["a"]', "[0]", "expected an object"),
    ],
)
def test_errors_name_file_and_line(tmp_path: Path, content: str, where: str, message: str) -> None:
    path = write(tmp_path, "bad.jsonl", content)
    with pytest.raises(DataError) as info:
        load_records(path)
    assert info.value.source == f"{path}{where}"
    assert message in str(info.value)


def test_problems_are_collected_when_asked(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "bad.jsonl",
        '{"instruction": "a", "output": "f()"}\n{oops\n'
        '{"instruction": "b", "output": "f(x=1"}\n{"instruction": "c", "output": null}\n',
    )
    problems: list[DataError] = []
    records = load_records(path, problems=problems)
    assert [r.instruction for r in records] == ["a", "c"]
    assert [p.source for p in problems] == [f"{path}:2", f"{path}:3"]
    report = validate_records(records, unreadable=problems)
    assert [str(i) for i in report.errors] == [str(p).join(["error: ", ""]) for p in problems]


def test_missing_and_binary_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        load_records(tmp_path / "nope.jsonl")
    path = tmp_path / "bin.jsonl"
    path.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(DataError, match="not UTF-8"):
        load_records(path)


@pytest.mark.parametrize(
    ("content", "message"), [("", "an empty file"), ("\n  \n", "an empty file"), ("[]", "an empty JSON array")]
)
def test_a_file_without_records_is_an_error(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=f"holds no records \\({message}\\)") as caught:
        load_records(path)
    assert caught.value.source == str(path)
    problems: list[DataError] = []
    assert load_records(path, problems=problems) == [] and [p.source for p in problems] == [str(path)]


def test_validation_report(tmp_path: Path) -> None:
    train = load_records(
        write(
            tmp_path,
            "train.jsonl",
            jsonl(
                *[{"instruction": f"放第{i}首歌", "output": "play_music()"} for i in range(60)],
                {"instruction": "关掉音乐", "output": "music_exit()"},
                {"instruction": "关掉音乐！", "output": "music_exit()"},
                {"instruction": "关掉 音乐", "output": "volume_down()"},
                {"instruction": "查天气", "output": "weather_search(town=杭州)"},
            ),
        )
    )
    dev = load_records(write(tmp_path, "dev.jsonl", jsonl({"instruction": "放第3首歌", "output": "play_music()"})))
    registry = Registry()
    registry.register(lambda song=None: None, name="play_music")
    registry.register(lambda: None, name="music_exit")
    registry.register(lambda: None, name="volume_down")
    registry.register(lambda city: None, name="weather_search")
    report = validate_records(train, registry=registry, dev=dev)
    text = report.summary()
    assert report.per_intent["play_music"] == 60 and report.imbalance == 60.0
    assert "intent music_exit has 2 examples (fewer than 50)" in text
    assert f"{tmp_path}/train.jsonl:62: duplicate of {tmp_path}/train.jsonl:61" in text
    assert "train.jsonl:63: same utterance as" in text and "another answer" in text
    assert "dev.jsonl:1: dev utterance also in training data at" in text
    assert "train.jsonl:64: invalid arguments for weather_search" in text
    assert len(report.errors) == 3
    assert f"warning: {tmp_path}/train.jsonl: no out-of-scope rows" in text  # the model could never say no
    with_oos = [*train, *load_records(write(tmp_path, "oos.jsonl", jsonl({"instruction": "你好", "output": None})))]
    assert "no out-of-scope rows" not in validate_records(with_oos).summary()


def test_values_decoding_cannot_copy_are_reported(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "t.jsonl",
        jsonl(
            {"instruction": "play breathtaking music", "output": 'play_music(playlist="breath")'},  # inside a word
            {"instruction": "唱Ofaded", "output": 'play_music(song="faded")'},  # inside a word after a stray "O"
            {"instruction": "放晴天", "output": 'play_music(song="晴天")'},  # Chinese: any character boundary
            {"instruction": "play Nothing Fancy", "output": 'play_music(song="Nothing Fancy")'},
            {"instruction": "明儿天气", "output": 'weather_search(date="明天")'},  # normalised: not in the text
        ),
    )
    records = load_records(path)
    text = validate_records(records).summary()
    assert f'{path}:1: playlist="breath": not in the utterance as whole words' in text
    assert f'{path}:2: song="faded"' in text and f'{path}:5: date="明天"' in text
    assert text.count("whole words") == 3  # not rows 3 and 4
    registry = Registry()
    registry.register(lambda song=None, playlist=None: None, name="play_music")

    def weather_search(date: Annotated[str, Param(from_utterance=False)]) -> None: ...

    registry.register(weather_search)
    checked = validate_records(records, registry=registry).summary()
    assert checked.count("whole words") == 2 and 'date="明天"' not in checked  # the app normalises dates


def test_registry_from_data_binds_every_record(tmp_path: Path) -> None:
    records = load_records(
        write(
            tmp_path,
            "d.jsonl",
            jsonl(
                {"instruction": "a", "output": 'match_query(name=["恒大", "鲁能"], date="今天")'},
                {"instruction": "b", "output": 'match_query(name="恒大")'},
                {"instruction": "c", "output": "weather_search(杭州)"},
                {"instruction": "d", "output": None},
            ),
        )
    )
    registry = build_registry(records)
    assert registry.names == ["match_query", "weather_search"]
    for record in records:
        for call in record.calls:
            registry.bind(call)
    assert registry.bind(records[1].calls[0]).arguments["name"] == ["恒大"]


@pytest.mark.parametrize(
    ("instruction", "output", "expected"),
    [
        # written out of order by the annotation: reordered by where each value occurs
        (
            "辽宁大连在哪里",
            'map_position(location_city="大连", location_province="辽宁")',
            'map_position(location_province="辽宁", location_city="大连")',
        ),
        # a list is placed by its first item found; a value not in the utterance goes last, in its order
        (
            "恒大对鲁能，今天的比分",
            'match_query(date="今天", kind="比分", league="中超", name=["鲁能", "恒大"])',
            'match_query(name=["鲁能", "恒大"], date="今天", kind="比分", league="中超")',
        ),
        # positional values stay first; text around the calls and a second call are kept
        (
            "把空调调到26度然后播放晴天",
            'ac_set(26, mode="制冷"); play(song="晴天", singer="周杰伦")',
            'ac_set(26, mode="制冷"); play(song="晴天", singer="周杰伦")',
        ),
        (
            "周杰伦的晴天，再把空调调到26度",
            'play(song="晴天", singer="周杰伦"); ac_set(temp=26, room="客厅")',
            'play(singer="周杰伦", song="晴天"); ac_set(temp=26, room="客厅")',
        ),
    ],
)
def test_arguments_in_utterance_order(tmp_path: Path, instruction: str, output: str, expected: str) -> None:
    record = load_records(write(tmp_path, "d.jsonl", jsonl({"instruction": instruction, "output": output})))[0]
    reordered = in_utterance_order(record)
    assert reordered.output == expected
    assert [(c.name, c.args, dict(c.kwargs)) for c in reordered.calls] == [(c.name, c.args, dict(c.kwargs)) for c in record.calls]
    assert (reordered is record) == (expected == output)


def test_out_of_scope_and_single_argument_records_are_left_alone(tmp_path: Path) -> None:
    records = load_records(
        write(
            tmp_path,
            "d.jsonl",
            jsonl({"instruction": "讲个笑话", "output": None}, {"instruction": "杭州天气", "output": 'w(city="杭州")'}),
        )
    )
    assert [in_utterance_order(r) for r in records] == records


def test_dialogue_rows_leave_out_a_needed_value_and_give_it_in_a_reply(tmp_path: Path) -> None:
    from trainers.dialogues import dialogue_rows, remove_value

    assert remove_value("打电话给张三", "张三") == "打电话"  # the dangling 给 goes with it
    assert remove_value("把空调调成制冷模式吧", "制冷") == "把空调调吧"
    assert remove_value("wake me up at 7am", "7am") == "wake me up"
    assert remove_value("张三", "张三") is None  # nothing left to be a request
    rows = [
        {"instruction": f"打电话给{name}", "output": f'call_contact(contact="{name}")'}
        for name in ("张三", "李四", "王五", "赵六")
    ] + [
        {"instruction": "打开客厅的灯", "output": 'light_on(room="客厅")'},
        {"instruction": "开灯", "output": "light_on()"},  # room is not always given: not asked for
        {"instruction": "给我讲个笑话", "output": None},
    ]
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows), encoding="utf-8")
    records = load_records(path)
    derived = dialogue_rows(records, share=0.5, incomplete=1.0, seed=1)
    assert len(derived.dialogues) == round(0.5 * len(records))
    for row in derived.dialogues:
        first, reply = row["instruction"]
        assert first == "打电话" and row["output"].startswith("call_contact(contact=")
        value = row["output"].split('"')[1]
        assert value in reply
    assert derived.incomplete == [{"instruction": "打电话", "output": "call_contact()"}]  # once, not per dialogue
    out = tmp_path / "multi.jsonl"
    from trainers.dialogues import write_dialogue_rows

    write_dialogue_rows(records, derived, out)
    again = load_records(out)
    assert len(again) == len(records) + len(derived.rows)
    assert any(r.instruction.startswith("打电话。") for r in again)  # joined as a session's turns
