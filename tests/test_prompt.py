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


@pytest.mark.parametrize("template", ["gemma", "chatml"])
@pytest.mark.parametrize(
    "turns", [["我想听音乐"], ["我想听音乐", "给我放个周杰伦的音乐吧"], ["今天天气怎么样？", "杭州"], ["  开灯 ", "", "客厅"]]
)
def test_the_chat_template_renders_the_prompt_byte_for_byte(template: str, turns: list[str]) -> None:
    pytest.importorskip("jinja2")
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    fmt = PromptFormat(template=template)
    expected = fmt.render(fmt.join_turns(turns))
    users = [{"role": "user", "content": t} for t in turns]
    for environment in (ImmutableSandboxedEnvironment(), ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)):
        rendered = environment.from_string(fmt.chat_template())
        with_system = rendered.render(messages=[{"role": "system", "content": fmt.system()}, *users], add_generation_prompt=True)
        assert with_system == expected
        assert rendered.render(messages=users, add_generation_prompt=True) == expected  # the trained system prompt
        assistant = [*users[:1], {"role": "assistant", "content": "play_music()"}, *users[1:]]
        assert rendered.render(messages=assistant, add_generation_prompt=True) == expected  # the model sees user turns
        without = rendered.render(messages=users, add_generation_prompt=False)
        assert without == expected[: expected.rindex(fmt.answer_end)] + fmt.answer_end
        # the renderer's BOS text first, as HF templates write it (the trainer's tokenizer adds the token)
        assert rendered.render(messages=users, add_generation_prompt=True, bos_token="<bos>") == "<bos>" + expected
