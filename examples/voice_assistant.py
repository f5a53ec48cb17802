"""Voice assistant: a dialogue that asks for what is missing, confirms, and lets the user cancel.

A session holds the conversation. A request missing a value (``帮我定个闹钟``) is not run: the
router answers ``needs_input`` with the question to say (``闹钟定在几点？``), and the next turn
fills it. Calling someone waits for a yes (``needs_confirmation``). "算了" calls off what is
pending. Answers below the confidence threshold are not executed (``low_confidence``: ask again
rather than guess), and out-of-scope turns go to the fallback handler. A turn that did not
resolve is joined with the next one (the seed recipe's multi-turn format); a request that ran is
no context for the next. ``python examples/voice_assistant.py``
"""

from __future__ import annotations

from intentkit import Router, Status

DIALOGUE = [
    "你好呀",
    "太吵了，把声音开小一点",
    "我想听歌",
    "那放稻香吧",
    "帮我定个闹钟",
    "明天早上七点",
    "给妈妈打个电话",
    "好的",
    "把空调温度调一下",
    "算了",
    "今天心情不好",
]


def main() -> None:
    with Router.default(confidence_threshold=0.5, fast_path=False) as router:
        router.require_confirmation("call_contact")  # ask before calling anyone

        @router.fallback
        def chit_chat(text: str) -> str:
            return "这个我还不会，可以让我放音乐、开灯或者查天气。"

        session = router.session(max_turns=2, ttl_s=60)
        for turn in DIALOGUE:
            result = router.handle(turn, session=session)
            if result.prompt:  # needs_input / needs_confirmation: the question to say
                reply = result.prompt
            elif result.status is Status.CANCELLED:
                reply = "好的，不做了。"
            elif result.status is Status.LOW_CONFIDENCE:
                reply = f"没听清，你是想 {result.call_text} 吗？"
            elif result.results:
                reply = str(result.results[0])
            else:
                reply = result.status.value
            print(
                f"用户: {turn}\n  模型输入: {result.model_input}\n  → {result.call_text} ({result.status.value})  助手: {reply}"
            )


if __name__ == "__main__":
    main()
