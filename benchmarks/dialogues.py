"""Scripted dialogues over the demo intents, through the embedded model: task completion and turns.

    python benchmarks/dialogues.py [--model models/smart-home] [--out report.json] [--show-failures]

Each dialogue is a task: a first turn (a request missing a value, or one that needs a yes), the
user's replies, and what should have run at the end: the right call with the right arguments,
or nothing when the user calls it off. Kinds: a value asked for and given (bare, or with words
around it: ``就八点吧``), asked again after a reply without one, several turns of a call that
needs a yes, a cancel, a no, a new request instead of an answer. Values and phrasings are not
in the demo's training data. The router runs as ``Router.default()`` does (one new session per
dialogue; ``call_contact`` asks for a yes), and a task counts as complete when exactly the
expected calls ran. Reported: the completion rate per kind and overall, and turns per task.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


@dataclass(frozen=True)
class Dialogue:
    kind: str
    turns: tuple[str, ...]
    expected: tuple[str, ...]  # the calls that should have run, in canonical call text


_ASK = {  # intent -> (incomplete requests, values, how the value is written in the call)
    "set_alarm": (
        ("帮我定个闹钟", "我要设一个闹钟", "设闹钟", "定个闹钟提醒我起床"),
        ("早上八点半", "下午四点", "九点一刻", "明天早上六点", "晚上九点"),
        'set_alarm(time="{v}")',
    ),
    "call_contact": (
        ("帮我打个电话", "我要打电话", "打个电话", "给我拨个电话"),
        ("舅舅", "赵老师", "小李", "表哥", "孙阿姨"),
        'call_contact(contact="{v}")',
    ),
    "light_brightness": (
        ("调一下灯的亮度", "把亮度调一下", "灯光亮度改一下", "帮我调灯光亮度"),
        ("40", "70", "90", "一半", "最暗"),
        'light_brightness(level="{v}")',
    ),
    "ac_set_temperature": (
        ("调一下空调温度", "空调温度改一下", "帮我设置空调温度", "把空调温度调一调"),
        ("21", "19", "二十三", "二十七", "29"),
        "ac_set_temperature(temperature={n})",
    ),
    "ac_set_mode": (
        ("换个空调模式", "空调模式调一下", "切换空调模式", "帮我改一下空调模式"),
        ("制热", "除湿", "送风", "自动", "制冷"),
        'ac_set_mode(mode="{v}")',
    ),
}
_NUMBERS = {"二十三": 23, "二十七": 27}
_REPLIES = ("{v}", "{v}吧", "就{v}", "就{v}吧", "{v}就行", "嗯，{v}")
_SWITCHES = (
    ("把客厅的灯打开", 'light_on(room="客厅")'),
    ("下一首", "music_next()"),
    ("现在几点了", "query_time()"),
    ("查一下成都后天的天气", 'weather_search(city="成都", date="后天")'),
    ("声音大一点", "volume_up()"),
)
_CANCELS = ("算了", "取消", "不用了", "算了吧", "never mind")
_CONFIRM = ("给舅舅打个电话", "打电话给赵老师", "帮我呼叫小李", "给表哥打电话", "打给孙阿姨")
_CONFIRMED = ("舅舅", "赵老师", "小李", "表哥", "孙阿姨")
_YES = ("好的", "是的", "确认", "可以", "对")
_CONFIRMED_INTENTS = {"call_contact"}  # the benchmark's router asks before calling anyone
_NO = ("不用了", "不要", "取消")


def dialogues() -> list[Dialogue]:
    """The scripted dialogues (105), in a fixed order."""
    out: list[Dialogue] = []
    for intent, (requests, values, call) in _ASK.items():
        for i in range(12):  # asked and answered
            value = values[i % len(values)]
            reply = _REPLIES[(i + len(intent)) % len(_REPLIES)].format(v=value)
            expected = call.format(v=value, n=_NUMBERS.get(value, value))
            yes = (_YES[i % len(_YES)],) if intent in _CONFIRMED_INTENTS else ()  # it then asks for a yes
            out.append(Dialogue("ask+answer", (requests[i % len(requests)], reply, *yes), (expected,)))
        out.append(Dialogue("ask+cancel", (requests[1], _CANCELS[len(out) % len(_CANCELS)]), ()))
        out.append(Dialogue("ask+cancel", (requests[2], _CANCELS[(len(out) + 2) % len(_CANCELS)]), ()))
        for j in range(2):
            text, switched = _SWITCHES[(len(out) + j) % len(_SWITCHES)]
            out.append(Dialogue("ask+switch", (requests[3 - j], text), (switched,)))
        value = values[3]
        expected = call.format(v=value, n=_NUMBERS.get(value, value))
        yes = ("好的",) if intent in _CONFIRMED_INTENTS else ()
        out.append(Dialogue("ask+unclear+answer", (requests[0], "嗯", value, *yes), (expected,)))
    for i, (text, contact) in enumerate(zip(_CONFIRM, _CONFIRMED, strict=True)):
        out.append(Dialogue("confirm+yes", (text, _YES[i]), (f'call_contact(contact="{contact}")',)))
        out.append(Dialogue("confirm+yes", (text, _YES[(i + 2) % len(_YES)]), (f'call_contact(contact="{contact}")',)))
        out.append(Dialogue("confirm+no", (text, _NO[i % len(_NO)]), ()))
        out.append(
            Dialogue(
                "ask+answer+confirm",
                ("帮我打个电话", contact, _YES[(i + 1) % len(_YES)]),
                (f'call_contact(contact="{contact}")',),
            )
        )
    return out


def run(model: Path | None, items: list[Dialogue]) -> dict[str, Any]:
    from intentkit import Router, Status
    from intentkit.backends.llamacpp import LlamaCppBackend
    from intentkit.demo import SmartHome

    backend = LlamaCppBackend.from_model_dir(model) if model else LlamaCppBackend.default()
    router = SmartHome().register(Router(backend))
    router.require_confirmation("call_contact")
    per_kind: dict[str, list[bool]] = defaultdict(list)
    turns_used: list[int] = []
    failures: list[dict[str, Any]] = []
    latencies: list[float] = []
    with router:
        for dialogue in items:
            session = router.session()
            ran: list[str] = []
            trace: list[str] = []
            used = 0
            for text in dialogue.turns:
                started = time.perf_counter()
                result = router.handle(text, session=session, dispatch=False)
                latencies.append((time.perf_counter() - started) * 1000)
                used += 1
                trace.append(
                    f"{text} → {result.status.value} {result.call_text if result.calls else ''} {result.prompt or ''}".strip()
                )
                if result.status is Status.OK:
                    ran += [call.render() for call in result.calls]
                    break
                if result.status in (Status.CANCELLED,) or (
                    result.status is not Status.NEEDS_INPUT and result.status is not Status.NEEDS_CONFIRMATION
                ):
                    break
            complete = tuple(ran) == dialogue.expected
            per_kind[dialogue.kind].append(complete)
            turns_used.append(used)
            if not complete:
                failures.append(
                    {"kind": dialogue.kind, "turns": list(dialogue.turns), "expected": list(dialogue.expected), "trace": trace}
                )
    done = sum(sum(v) for v in per_kind.values())
    return {
        "dialogues": len(items),
        "completion": done / len(items),
        "per_kind": {k: {"dialogues": len(v), "completion": sum(v) / len(v)} for k, v in per_kind.items()},
        "turns_per_task": statistics.mean(turns_used),
        "p50_turn_ms": statistics.median(latencies),
        "failures": failures,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="a model directory (default: the bundled demo model)")
    parser.add_argument("--out", type=Path, help="write the report as JSON")
    parser.add_argument("--show-failures", action="store_true")
    args = parser.parse_args()
    report = run(args.model, dialogues())
    print(
        f"{report['dialogues']} dialogues: task completion {report['completion']:.2%}, "
        f"{report['turns_per_task']:.2f} turns per task, p50 {report['p50_turn_ms']:.1f} ms per turn"
    )
    for kind, figures in report["per_kind"].items():
        print(f"  {kind:22s} {figures['dialogues']:3d}  {figures['completion']:.2%}")
    if args.show_failures:
        for failure in report["failures"]:
            print(json.dumps(failure, ensure_ascii=False))
    if args.out:
        args.out.write_text(json.dumps(report, ensure_ascii=False, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
