"""What a conversation needs beyond one utterance: questions, yes / no / cancel, replies as values.

The router (:mod:`intentkit.router`) keeps a session's pending call and asks for what is missing
(``needs_input``) or for a yes (``needs_confirmation``); this module holds the language side:

- :func:`question` — the question for a missing parameter: its ``Param(ask=...)``, else one made
  from its description, in Chinese or English after the intent's language;
- :func:`confirmation` — the question before a ``confirm=`` intent runs;
- :func:`reply_kind` — whether a reply says yes, no, or cancel (是 / 好的 / 确认 / yes …,
  不 / 不要 …, 算了 / 取消 / never mind …), simplified or traditional;
- :func:`value_candidates` — a reply read as the value itself (``就杭州吧`` → ``杭州``,
  ``查一下北京的`` → ``北京``), most trimmed first, for the registry to bind.
"""

from __future__ import annotations

import time
import unicodedata
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import regex

if TYPE_CHECKING:
    from .registry import BoundCall, IntentSpec, ParamSpec

__all__ = ["Pending", "ReplyKind", "confirmation", "question", "reply_kind", "value_candidates"]

_CJK = regex.compile(r"\p{Han}")
_EDGE_PUNCTUATION = regex.compile(r"^[\p{P}\p{Z}\s]+|[\p{P}\p{Z}\s]+$")


class ReplyKind(StrEnum):
    YES = "yes"
    NO = "no"
    CANCEL = "cancel"


# Normalised (lower case, simplified, punctuation and closing particles gone) whole replies.
_YES = frozenset(
    [
        *"是 是的 是啊 好 好的 好啊 好呀 行 行的 可以 确认 确定 对 对的 没错 嗯 嗯嗯 要 当然 没问题 确认执行 执行".split(),
        *"yes y yeah yep yup ok okay sure confirm confirmed right correct".split(),
        "do it",
        "go ahead",
        "of course",
    ]
)
_NO = frozenset([*"不 不要 不是 不对 别 否 不行 不好 不可以 no n nope nah".split(), "don't", "do not"])
_CANCEL = frozenset(
    [
        *"算了 取消 不用了 不用 不要了 别了 不需要 不需要了 不查了 不弄了 不打了 不听了 先不要 先不用".split(),
        *"cancel stop quit abort nevermind".split(),
        "never mind",
        "forget it",
        "no thanks",
        "no thank you",
    ]
)
_TRADITIONAL = str.maketrans(
    "確認對沒問題執別須個這嗎說聽開關燈為幫邊裡裏們謝", "确认对没问题执别须个这吗说听开关灯为帮边里里们谢"
)
_CLOSING = ("吧", "啦", "了吧", "呀", "啊", "哦", "喔", "呢", "谢谢", "谢了", "please", "thanks", "thank you")

# Words around a value in a reply: "就杭州吧", "查一下北京的", "改成八点", "it's Paris".
_LEADING = tuple(
    sorted(
        "那就 就是 就 嗯 呃 那 是 我要 我想 要 查一下 查查 查 帮我查 帮我 给我 打给 打电话给 放 播放 来一首 "
        "听 设成 设为 设置为 改成 改为 调到 调成 在 用 换成 到 大概 "
        "it's it is in for to the make set call play".split(),
        key=len,
        reverse=True,
    )
)
_TRAILING = tuple(
    sorted(
        "吧 的 啊 呀 呢 了 度 就行 就好 就可以 可以 行 的天气 天气 这首歌 这首 的歌 吧谢谢 谢谢 please".split(),
        key=len,
        reverse=True,
    )
)


@dataclass
class Pending:
    """A call waiting for the user: its missing parameters (``needs_input``) or a yes
    (``needs_confirmation``, ``call`` set). ``arguments`` are the values given so far as the
    model wrote them; ``turns`` the user's turns since the request began; ``asks`` how many
    times the router has asked."""

    intent: str
    arguments: dict[str, Any] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    call: BoundCall | None = None
    turns: list[str] = field(default_factory=list)
    asks: int = 1
    prompt: str = ""
    since: float = field(default_factory=time.monotonic)


def _normalised(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower().translate(_TRADITIONAL)
    text = _EDGE_PUNCTUATION.sub("", text)
    changed = True
    while changed and text:
        changed = False
        for tail in _CLOSING:
            if text.endswith(tail) and len(text) > len(tail):
                text, changed = _EDGE_PUNCTUATION.sub("", text[: -len(tail)]), True
    return text


def reply_kind(text: str) -> ReplyKind | None:
    """Whether ``text`` says yes, no or cancel as a whole reply; ``None`` for anything else
    (a value, a new request)."""
    said = _normalised(text)
    if not said:
        return None
    if said in _CANCEL or said.startswith(("算了", "never mind", "forget it")):
        return ReplyKind.CANCEL
    if said in _YES or said.replace(" ", "") in _YES:
        return ReplyKind.YES
    if said in _NO:
        return ReplyKind.NO
    return None


def value_candidates(text: str) -> list[str]:
    """``text`` read as a value: the reply with the words around a value taken off, most trimmed
    first, then less (``查一下北京的`` → ``北京``, ``北京的``, ``查一下北京的``). Fillers alone
    (``嗯``, ``好的``) give none."""
    whole = _EDGE_PUNCTUATION.sub("", unicodedata.normalize("NFKC", text))
    steps = [whole]
    current = whole
    while True:
        trimmed = _trim_once(current)
        if trimmed == current or not trimmed:
            break
        steps.append(trimmed)
        current = trimmed
    seen: list[str] = []
    for step in reversed(steps):
        if step and step not in seen and reply_kind(step) is None and _normalised(step) not in _FILLERS:
            seen.append(step)
    return seen


_FILLERS = frozenset("嗯 呃 啊 哦 那 就 是 好 um uh hmm".split())


def _trim_once(text: str) -> str:
    lowered = text.lower()
    for word in _LEADING:
        if lowered.startswith(word) and len(text) > len(word):
            rest = text[len(word) :]
            if word.isascii() and not rest[:1].isspace():
                continue  # "in" of "india"
            return _EDGE_PUNCTUATION.sub("", rest)
    for word in _TRAILING:
        if lowered.endswith(word) and len(text) > len(word):
            rest = text[: -len(word)]
            if word.isascii() and not rest[-1:].isspace():
                continue
            return _EDGE_PUNCTUATION.sub("", rest)
    return text


def _chinese(*texts: str) -> bool:
    return any(_CJK.search(t or "") for t in texts)


def question(spec: IntentSpec, param: ParamSpec, utterance: str = "") -> str:
    """The question for ``param``: its ``ask``, else one made from its description (or name) in
    the intent's language (Chinese where the intent, the parameter or the utterance is)."""
    if param.ask:
        return param.ask
    what = param.description or param.name
    if _chinese(spec.description, param.description, utterance, *(e.text for e in spec.examples[:3])):
        if param.kind == "choice" and param.choices:
            return f"请问{what}是哪一个？（{'、'.join(param.choices[:6])}）"
        return f"请告诉我{what}。"
    if param.kind == "choice" and param.choices:
        return f"Which {what}? ({', '.join(param.choices[:6])})"
    return f"What {what} would you like?"


def confirmation(spec: IntentSpec, call: BoundCall, utterance: str = "") -> str:
    """The question before ``spec`` runs: its ``confirm`` text, else one made from its description."""
    if isinstance(spec.confirm, str) and spec.confirm:
        return spec.confirm
    what = spec.description or spec.name
    shown = "，".join(str(getattr(v, "value", v)) for v in call.arguments.values() if v is not None)
    if _chinese(spec.description, utterance):
        return f"确定要{what}{f'（{shown}）' if shown else ''}吗？"
    shown = ", ".join(str(getattr(v, "value", v)) for v in call.arguments.values() if v is not None)
    return f"Do you want to {what}{f' ({shown})' if shown else ''}?"
