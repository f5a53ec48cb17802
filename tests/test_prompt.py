"""The prompt module is the single source of the prompt format."""

from __future__ import annotations

import pytest

from intentkit import DEFAULT_SYSTEM_PROMPT, PromptFormat, Registry


def test_default_prompt_is_the_seed_prompt() -> None:
    messages = PromptFormat().messages("我想听音乐")
    assert messages == [
        {
            "role": "system",
            "content": "你是一个意图识别专家，可以根据用户的问题识别出意图，并返回对应的函数调用和参数。",
        },
        {"role": "user", "content": "我想听音乐"},
    ]
    assert DEFAULT_SYSTEM_PROMPT == messages[0]["content"]


def test_fingerprint_is_stable_and_changes_with_the_format() -> None:
    assert PromptFormat().fingerprint == PromptFormat().fingerprint
    assert len(PromptFormat().fingerprint) == 16
    assert PromptFormat(system_prompt="x").fingerprint != PromptFormat().fingerprint
    assert PromptFormat(list_intents=True).fingerprint != PromptFormat().fingerprint


def test_json_round_trip() -> None:
    fmt = PromptFormat(system_prompt="路由", list_intents=True)
    data = fmt.to_dict()
    assert data["fingerprint"] == fmt.fingerprint and data["version"] == 1
    assert PromptFormat.from_dict(data) == fmt


@pytest.mark.parametrize(
    ("turns", "joined"),
    [
        (["我想听音乐"], "我想听音乐"),
        (["我想听音乐", "给我放个周杰伦的音乐吧"], "我想听音乐。给我放个周杰伦的音乐吧。"),
        (["打开空调！", "调到二十六度"], "打开空调！调到二十六度。"),
        (["", "  关灯 "], "关灯"),
        ([], ""),
    ],
)
def test_join_turns(turns: list[str], joined: str) -> None:
    assert PromptFormat().join_turns(turns) == joined


def test_listing_intents_for_zero_shot_models() -> None:
    registry = Registry()

    def weather_search(city: str, date: str = "今天") -> None:
        """查询天气"""

    registry.register(weather_search)
    system = PromptFormat(list_intents=True).system(registry.catalog)
    assert '- weather_search(city: str, date: str = "今天")：查询天气' in system
    assert "no_intent()" in system
    assert PromptFormat().system(registry.catalog) == DEFAULT_SYSTEM_PROMPT
