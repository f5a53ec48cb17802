"""Dialogue through the router (FakeBackend): ask for what is missing, confirm, cancel, switch."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Literal

import pytest

from intentkit import Param, Router, Status
from intentkit.dialogue import ReplyKind, reply_kind, value_candidates
from intentkit.testing import FakeBackend


def make_router(script: dict[str, str], **settings) -> tuple[Router, list]:
    """Answers keyed by the model's input (a pending dialogue's turns joined, as the router sends them)."""
    router = Router(backend=FakeBackend(lambda request: script.get(request.text, "no_intent()")), **settings)
    log: list = []

    @router.intent(description="查询天气")
    def weather_search(city: Annotated[str, Param(description="城市", ask="您想查哪个城市？")], date: str = "今天") -> str:
        log.append(("weather_search", city, date))
        return f"{city}{date}晴"

    @router.intent(description="设置空调")
    def ac_set(
        temperature: Annotated[int, Param(description="温度")],
        mode: Annotated[Literal["制冷", "制热", "自动"], Param(description="模式")],
    ) -> str:
        log.append(("ac_set", temperature, mode))
        return f"{mode} {temperature}"

    @router.intent(description="打开大门", confirm="确定要打开大门吗？")
    def open_door() -> str:
        log.append(("open_door",))
        return "门开了"

    @router.intent(description="打电话给联系人", confirm=True)
    def call_contact(contact: Annotated[str, Param(description="联系人")]) -> str:
        log.append(("call_contact", contact))
        return f"呼叫{contact}"

    @router.intent(description="播放音乐")
    def play_music() -> str:
        log.append(("play_music",))
        return "播放"

    return router, log


def test_a_missing_value_is_asked_for_and_the_model_completes_it() -> None:
    router, log = make_router({"查天气": "weather_search()", "查天气。杭州。": 'weather_search(city="杭州")'})
    session = router.session()
    first = router.handle("查天气", session=session)
    assert first.status == Status.NEEDS_INPUT == "needs_input"
    assert first.missing == ["city"] and first.prompt == "您想查哪个城市？" and log == []
    assert first.to_dict()["missing"] == ["city"] and first.to_dict()["prompt"] == "您想查哪个城市？"
    second = router.handle("杭州", session=session)
    assert second.status == "ok" and second.path == "model"
    assert log == [("weather_search", "杭州", "今天")]
    assert session.pending is None


@pytest.mark.parametrize("reply", ["杭州", "就杭州吧", "查一下杭州的", "嗯，杭州。"])
def test_where_the_model_does_not_complete_it_the_reply_is_read_as_the_value(reply: str) -> None:
    router, log = make_router({"查天气": "weather_search()"})  # the model answers no_intent() to every reply
    session = router.session()
    router.handle("查天气", session=session)
    result = router.handle(reply, session=session)
    assert result.status == "ok" and result.path == "dialogue"
    assert log == [("weather_search", "杭州", "今天")]


def test_the_request_said_again_is_not_read_as_the_value() -> None:
    router, log = make_router({"查天气": "weather_search()"})
    session = router.session()
    router.handle("查天气", session=session)
    again = router.handle("查天气", session=session)
    assert again.status == "needs_input" and log == []
    assert router.handle("北京", session=session).ok and log == [("weather_search", "北京", "今天")]


def test_a_reply_is_matched_against_the_choices_and_several_values_are_asked_one_at_a_time() -> None:
    router, log = make_router({"开空调": "ac_set()"})
    session = router.session()
    first = router.handle("开空调", session=session)
    assert first.status == "needs_input" and first.missing == ["temperature", "mode"]
    assert first.prompt == "请告诉我温度。"  # made from the description
    second = router.handle("二十六度", session=session)
    assert second.status == "needs_input" and second.missing == ["mode"]
    assert second.prompt == "请问模式是哪一个？（制冷、制热、自动）"
    third = router.handle("制冷吧", session=session)
    assert third.status == "ok" and log == [("ac_set", 26, "制冷")]


def test_a_reply_holding_every_missing_value_fills_them_together() -> None:
    router, log = make_router({"开空调": "ac_set()", "开空调。26度制冷。": 'ac_set(temperature=26, mode="制冷")'})
    session = router.session()
    router.handle("开空调", session=session)
    assert router.handle("26度制冷", session=session).status == "ok"
    assert log == [("ac_set", 26, "制冷")]


def test_values_given_before_are_kept_when_the_model_answers_the_rest() -> None:
    router, log = make_router({"开空调到26度": "ac_set(temperature=26)", "开空调到26度。制热。": 'ac_set(mode="制热")'})
    session = router.session()
    assert router.handle("开空调到26度", session=session).missing == ["mode"]
    assert router.handle("制热", session=session).status == "ok"
    assert log == [("ac_set", 26, "制热")]


@pytest.mark.parametrize("reply", ["是", "好的", "确认", "对", "可以", "yes", "OK", "確認"])
def test_a_confirmed_intent_runs_after_a_yes(reply: str) -> None:
    router, log = make_router({"开门": "open_door()"})
    session = router.session()
    first = router.handle("开门", session=session)
    assert first.status == Status.NEEDS_CONFIRMATION and first.prompt == "确定要打开大门吗？" and log == []
    result = router.handle(reply, session=session)
    assert result.status == "ok" and result.path == "dialogue" and result.results == ["门开了"]
    assert log == [("open_door",)] and session.pending is None


@pytest.mark.parametrize("reply", ["不", "不要", "不用了", "取消", "算了", "never mind", "no"])
def test_a_no_or_a_cancel_ends_a_confirmation(reply: str) -> None:
    router, log = make_router({"开门": "open_door()"})
    session = router.session()
    router.handle("开门", session=session)
    result = router.handle(reply, session=session)
    assert result.status == Status.CANCELLED == "cancelled" and log == [] and session.pending is None


def test_confirm_true_makes_the_question_from_the_description_and_the_call() -> None:
    router, log = make_router({"给妈妈打电话": 'call_contact(contact="妈妈")'})
    session = router.session()
    result = router.handle("给妈妈打电话", session=session)
    assert result.status == "needs_confirmation" and result.prompt == "确定要打电话给联系人（妈妈）吗？"
    assert router.handle("好", session=session).ok and log == [("call_contact", "妈妈")]


def test_a_filled_call_that_needs_confirmation_asks_before_it_runs() -> None:
    router, log = make_router({"打电话": "call_contact()"})
    session = router.session()
    assert router.handle("打电话", session=session).status == "needs_input"
    assert router.handle("张三", session=session).status == "needs_confirmation" and log == []
    assert router.handle("是的", session=session).ok and log == [("call_contact", "张三")]


@pytest.mark.parametrize("reply", ["算了", "取消", "不用了", "never mind", "算了吧，不查了"])
def test_cancel_while_a_value_is_pending(reply: str) -> None:
    router, log = make_router({"查天气": "weather_search()"})
    session = router.session()
    router.handle("查天气", session=session)
    result = router.handle(reply, session=session)
    assert result.status == "cancelled" and result.path == "dialogue" and log == []
    assert session.pending is None
    assert router.handle("杭州", session=session).status == "no_intent"  # nothing is pending any more


def test_a_new_complete_request_replaces_the_pending_one_and_runs() -> None:
    router, log = make_router({"查天气": "weather_search()", "查天气。放首歌。": "play_music()"})
    session = router.session()
    router.handle("查天气", session=session)
    result = router.handle("放首歌", session=session)
    assert result.status == "ok" and result.intent == "play_music" and log == [("play_music",)]
    assert session.pending is None


def test_a_new_request_the_model_only_sees_on_its_own_replaces_the_pending_one() -> None:
    # with the dialogue's turns the model still answers the pending intent; the reply alone is
    # another request, and it is not read as the missing value ("放首歌" is no city)
    script = {"查天气": "weather_search()", "查天气。放首歌。": "weather_search()", "放首歌": "play_music()"}
    router, log = make_router(script)
    session = router.session()
    router.handle("查天气", session=session)
    result = router.handle("放首歌", session=session)
    assert result.status == "ok" and result.intent == "play_music" and log == [("play_music",)]
    assert session.pending is None


def test_a_new_incomplete_request_replaces_the_pending_one() -> None:
    router, _ = make_router({"查天气": "weather_search()", "查天气。开空调。": "ac_set()"})
    session = router.session()
    router.handle("查天气", session=session)
    result = router.handle("开空调", session=session)
    assert result.status == "needs_input" and result.missing == ["temperature", "mode"]
    assert session.pending is not None and session.pending.intent == "ac_set"


def test_a_confirmation_is_replaced_by_a_new_request() -> None:
    router, log = make_router({"开门": "open_door()", "放首歌": "play_music()"})
    session = router.session()
    router.handle("开门", session=session)
    assert router.handle("放首歌", session=session).intent == "play_music"
    assert log == [("play_music",)] and session.pending is None


def test_after_max_asks_unanswered_questions_the_pending_call_is_dropped() -> None:
    router, log = make_router({"开空调": "ac_set()"}, max_asks=2)
    session = router.session()
    router.handle("开空调", session=session)
    again = router.handle("嗯", session=session)  # no value in it: asked again
    assert again.status == "needs_input" and again.prompt == "请告诉我温度。" and session.pending is not None
    assert session.pending.asks == 2
    dropped = router.handle("嗯", session=session)
    assert dropped.status == "no_intent" and session.pending is None and log == []


def test_an_unanswered_confirmation_is_asked_again_then_dropped() -> None:
    router, log = make_router({"开门": "open_door()"}, max_asks=2)
    session = router.session()
    router.handle("开门", session=session)
    assert router.handle("什么", session=session).status == "needs_confirmation"
    assert router.handle("什么", session=session).status == "no_intent" and session.pending is None
    assert router.handle("是", session=session).status == "no_intent" and log == []


def test_a_pending_call_expires_with_the_session_ttl() -> None:
    router, log = make_router({"查天气": "weather_search()"})
    session = router.session(ttl_s=0.05)
    router.handle("查天气", session=session)
    assert session.pending is not None
    time.sleep(0.1)
    assert session.pending is None
    assert router.handle("杭州", session=session).status == "no_intent" and log == []


def test_without_a_session_nothing_is_kept() -> None:
    router, log = make_router({"查天气": "weather_search()", "开门": "open_door()"})
    assert router.handle("查天气").status == "needs_input"
    assert router.handle("杭州").status == "no_intent"
    assert router.handle("开门").status == "needs_confirmation"
    assert router.handle("是").status == "no_intent" and log == []


def test_dispatch_false_predicts_the_completed_call_without_running_it() -> None:
    router, log = make_router({"查天气": "weather_search()"})
    session = router.session()
    router.handle("查天气", session=session, dispatch=False)
    result = router.handle("北京", session=session, dispatch=False)
    assert result.status == "ok" and result.calls[0].arguments["city"] == "北京" and log == []


def test_a_backend_failure_on_the_reply_reads_it_directly_or_keeps_the_question() -> None:
    answers = iter(["weather_search()"])

    def script(request):
        try:
            return next(answers)
        except StopIteration:
            raise RuntimeError("server down") from None

    router = Router(backend=FakeBackend(script))

    @router.intent
    def weather_search(city: str) -> str:
        return city

    session = router.session()
    router.handle("查天气", session=session)
    assert router.handle("嗯", session=session).status == "backend_error"
    assert session.pending is not None and session.pending.asks == 1  # the model failed, not the user
    result = router.handle("杭州", session=session)
    assert result.status == "ok" and result.path == "dialogue" and result.results == ["杭州"]


def test_ahandle_holds_the_same_dialogue() -> None:
    router, log = make_router({"开空调": "ac_set()", "开门": "open_door()"})

    async def talk() -> list[str]:
        session = router.session()  # a finished dialogue is no context for the next request
        statuses = []
        for text in ["开空调", "24", "自动", "开门", "好的"]:
            statuses.append((await router.ahandle(text, session=session)).status.value)
        return statuses

    assert asyncio.run(talk()) == ["needs_input", "needs_input", "ok", "needs_confirmation", "ok"]
    assert log == [("ac_set", 24, "自动"), ("open_door",)]


def test_english_questions_for_english_intents() -> None:
    router = Router(backend=FakeBackend(lambda request: "book_table()"))

    @router.intent(description="book a table")
    def book_table(people: Annotated[int, Param(description="number of people")]) -> str:
        return str(people)

    result = router.handle("book a table", session=router.session())
    assert result.prompt == "What number of people would you like?"


def test_reply_kinds_and_values() -> None:
    assert reply_kind("好的。") is ReplyKind.YES and reply_kind("Yes!") is ReplyKind.YES
    assert reply_kind("不要") is ReplyKind.NO and reply_kind("算了，不用了") is ReplyKind.CANCEL
    assert reply_kind("杭州") is None and reply_kind("") is None
    assert value_candidates("查一下北京的") == ["北京", "北京的", "查一下北京的"]
    assert value_candidates("就杭州吧")[0] == "杭州"
    assert value_candidates("嗯") == [] and value_candidates("好的") == []
    assert value_candidates("in Paris")[0] == "Paris"


def _answer(text: str, mode_confidence: float):
    from intentkit.backends.base import Generation

    return Generation(text, confidence=0.95, argument_confidence={"temperature": 1.0, "mode": mode_confidence})


def test_a_required_choice_the_model_only_guessed_is_asked_for() -> None:
    guessed = _answer('ac_set(temperature=26, mode="制热")', 0.53)
    router, log = make_router({"空调开到二十六度": guessed, "空调开到二十六度\n自动": "ac_set(temperature=26)"})
    session = router.session()
    first = router.handle("空调开到二十六度", session=session)
    assert first.status == "needs_input" and first.missing == ["mode"] and log == []
    assert router.handle("自动", session=session).status == "ok"
    assert log == [("ac_set", 26, "自动")]


@pytest.mark.parametrize(
    ("utterance", "confidence", "settings"),
    [
        ("空调二十六度制热", 0.53, {}),  # said: it stands however unsure
        ("空调二十六度，暖和点", 0.99, {}),  # chosen surely: it stands
        ("空调开到二十六度", 0.53, {"choice_confidence": None}),  # every guess kept
    ],
)
def test_a_choice_said_or_chosen_surely_stands(utterance, confidence, settings) -> None:
    router, log = make_router({utterance: _answer('ac_set(temperature=26, mode="制热")', confidence)}, **settings)
    assert router.handle(utterance).status == "ok"
    assert log == [("ac_set", 26, "制热")]
