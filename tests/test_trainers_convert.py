"""Importers (iTAG, alpaca, sharegpt, dialogue) and exporters, with file:line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trainers.augment import augment, load_templates, parse_templates, swap_values
from trainers.convert import export_rows, import_rows
from trainers.data import DataError, load_records, records_from_rows


def itag_line(instruction: str, output: str) -> str:
    mark = json.dumps({"annotations": [{"labels": {"output": output}}]}, ensure_ascii=False)
    return json.dumps(
        {"data": {"instruction": instruction}, "label-1733": {"results": [{"MarkResult": mark}]}}, ensure_ascii=False
    )


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_itag_manifest(tmp_path):
    path = write(
        tmp_path,
        "m.manifest",
        itag_line("我想听音乐", "play_music()") + "\n" + itag_line("查下杭州天气", 'weather_search(city="杭州")'),
    )
    records = records_from_rows(import_rows(path, "itag"))
    assert [r.target for r in records] == ["play_music()", 'weather_search(city="杭州")']
    assert records[1].source == f"{path}:2"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"data": {"instruction": "x"}}', "no 'label-\\*' key"),
        ('{"data": {"instruction": "x"}, "label-1": {"results": []}}', "lacks results"),
        ('{"data": {"instruction": "x"}, "label-1": {"results": [{"MarkResult": "{oops"}]}}', "MarkResult is not JSON"),
    ],
)
def test_itag_errors_name_the_line(tmp_path, line, message):
    path = write(tmp_path, "m.manifest", itag_line("好", "play_music()") + "\n" + line)
    with pytest.raises(DataError, match=message) as info:
        import_rows(path, "itag")
    assert info.value.source == f"{path}:2"


def test_alpaca_and_sharegpt_round_trip(tmp_path):
    records = records_from_rows(
        [("a:1", {"instruction": "我想听音乐", "output": "play_music()"}), ("a:2", {"instruction": "你好", "output": None})]
    )
    for fmt in ("alpaca", "sharegpt"):
        path = export_rows(records, tmp_path / f"{fmt}.json", fmt)
        back = records_from_rows(import_rows(path, fmt))
        assert [(r.instruction, r.output) for r in back] == [("我想听音乐", "play_music()"), ("你好", None)]
        assert "意图识别" in path.read_text(encoding="utf-8")  # the system prompt travels with the data


def test_sharegpt_messages_and_multi_turn(tmp_path):
    row = {
        "messages": [
            {"role": "user", "content": "我想听音乐"},
            {"role": "user", "content": "周杰伦的"},
            {"role": "assistant", "content": "play_music()"},
        ]
    }
    path = write(tmp_path, "s.json", json.dumps([row], ensure_ascii=False))
    (record,) = records_from_rows(import_rows(path, "sharegpt"))
    assert record.instruction == "我想听音乐。周杰伦的。"


def test_dialogue_records(tmp_path):
    rows = [
        {"context": "把灯打开", "response": "好的", "intent": "light_on", "style": "casual"},
        {"context": "查下杭州天气", "response": "…", "intent": 'weather_search(city="杭州")', "style": "formal"},
        {"context": "你好", "response": "你好呀", "intent": "", "style": "casual"},
    ]
    path = write(tmp_path, "d.jsonl", "\n".join(json.dumps(r, ensure_ascii=False) for r in rows))
    records = records_from_rows(import_rows(path, "dialogue"))
    assert [r.target for r in records] == ["light_on()", 'weather_search(city="杭州")', "no_intent()"]


def test_unknown_format(tmp_path):
    with pytest.raises(DataError, match="unknown format 'csv'; formats: itag, alpaca, sharegpt, dialogue"):
        import_rows(tmp_path / "x", "csv")


TEMPLATES = {
    "slots": {"city": ["杭州", "北京"], "date": ["今天", "明天"]},
    "prefixes": ["", "请"],
    "intents": {
        "weather_search": {
            "params": {"city": "", "date": ""},
            "templates": ["帮我查{city}{date}的天气", "{city}[冷不冷|热不热]", "{date}下雨吗", "{city}天气", "{city}{date}温度"],
        },
        "play_music": {"templates": ["我想听音乐", "放首歌"]},
    },
    "out_of_scope": ["你好", "讲个笑话", "几岁了", "吃了吗", "晚安"],
}


def test_augment_expands_slots_and_holds_out_templates():
    out = augment(parse_templates(TEMPLATES), per_intent=10, dev_per_intent=3)
    weather = [r for r in out.train if r["name"] == "weather_search"]
    assert len(weather) == 10 and len({r["instruction"] for r in weather}) == 10
    for row in weather:
        for key, value in row["args"].items():
            assert value in row["instruction"] and f'{key}="{value}"' in row["output"]
    dev = [r for r in out.dev if r["name"] == "weather_search"]
    assert dev and all("温度" in r["instruction"] for r in dev)  # the 5th template is dev-only
    assert not any("温度" in r["instruction"] for r in weather)
    assert any(r["output"] is None for r in out.train) and any(r["output"] is None for r in out.dev)
    assert augment(parse_templates(TEMPLATES), per_intent=10) == augment(parse_templates(TEMPLATES), per_intent=10)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"intents": {"x": {"templates": ["{cty}"]}}}, r"intents\.x\.templates\[0\]: unknown slot \{cty\}"),
        ({"intents": {"x": {"templates": ["{city}"]}}}, "not a parameter of x"),
        ({"intents": {"x": {"templates": []}}}, "needs at least one template"),
        ({"intents": {"x": {"templates": ["[a|b"]}}}, "unbalanced brackets"),
    ],
)
def test_template_errors(change, message):
    with pytest.raises(DataError, match=message):
        parse_templates({**TEMPLATES, **change}, source="t.json")


def test_demo_data_is_what_the_templates_generate(tmp_path):
    root = Path(__file__).parent.parent / "examples" / "demo"
    out = augment(load_templates(root / "templates.json"))
    out.write(tmp_path / "train.jsonl", tmp_path / "dev.jsonl")
    assert (tmp_path / "train.jsonl").read_bytes() == (root / "train.jsonl").read_bytes()
    assert (tmp_path / "dev.jsonl").read_bytes() == (root / "dev.jsonl").read_bytes()
    records = load_records(root / "train.jsonl")
    assert len({r.intent for r in records}) >= 16


def test_swap_values_recombines_values_the_same_parameter_takes_elsewhere() -> None:
    rows = [
        {"instruction": "播放安徽卫视高清", "output": 'tvchannel_play(name="安徽卫视", resolution="高清")'},
        {"instruction": "我要看长沙经贸台", "output": 'tvchannel_play(name="长沙经贸台")'},
        {"instruction": "查下杭州天气", "output": 'weather_search(city="杭州")'},
        {"instruction": "北京天气", "output": 'weather_search(city="北京")'},
        {"instruction": "杭州到杭州东", "output": 'train_query(start="杭州", end="杭州东")'},  # overlapping values
        {"instruction": "你好", "output": None},
    ]
    records = records_from_rows((f"d.jsonl:{i + 1}", r) for i, r in enumerate(rows))
    new = swap_values(records, seed=1)
    by_source = {r.source: r for r in new}
    assert set(by_source) == {"d.jsonl:1+swap1", "d.jsonl:2+swap1", "d.jsonl:3+swap1", "d.jsonl:4+swap1"}
    assert by_source["d.jsonl:1+swap1"].instruction == "播放长沙经贸台高清"  # 高清 has no other value: kept
    assert by_source["d.jsonl:1+swap1"].output == 'tvchannel_play(name="长沙经贸台", resolution="高清")'
    assert by_source["d.jsonl:2+swap1"].instruction == "我要看安徽卫视"
    assert by_source["d.jsonl:3+swap1"].output == 'weather_search(city="北京")'
    # every copy's values still sit in its utterance, under the parameter they came from
    for record in new:
        assert all(v in record.instruction for v in record.calls[0].kwargs.values())
    more = [r.instruction for r in swap_values(records, copies=3)]
    assert len(more) == len(set(more)) and not set(more) & {r.instruction for r in records}


def test_swap_values_drops_copies_that_repeat_an_utterance() -> None:
    rows = [
        {"instruction": "查下杭州天气", "output": 'weather_search(city="杭州")'},
        {"instruction": "查下北京天气", "output": 'weather_search(city="北京")'},
    ]
    records = records_from_rows((f"d.jsonl:{i + 1}", r) for i, r in enumerate(rows))
    assert swap_values(records, copies=2) == []  # each copy would be the other row
