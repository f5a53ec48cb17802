"""Voice assistant: multi-turn routing with a session, a confidence threshold and a fallback.

A session joins the user's last turns the way the training data joins multi-turn records, so a
follow-up like "稻香" after "我想听歌" reaches the model with its context. Answers below the
confidence threshold are not executed (``low_confidence``): the assistant asks again instead
of guessing. Out-of-scope turns go to the fallback handler. ``python examples/voice_assistant.py``
"""

from __future__ import annotations

from intentkit import Router, Status

DIALOGUE = [
    "你好呀",
    "太吵了，把声音开小一点",
    "我想听歌",
    "那放稻香吧",
    "暂停一下",
    "继续",
    "帮我查下明天上海的天气",
    "今天心情不好",
]


def main() -> None:
    with Router.default(confidence_threshold=0.5, fast_path=False) as router:

        @router.fallback
        def chit_chat(text: str) -> str:
            return "这个我还不会，可以让我放音乐、开灯或者查天气。"

        session = router.session(max_turns=2, ttl_s=60)
        for turn in DIALOGUE:
            result = router.handle(turn, session=session)
            if result.status is Status.LOW_CONFIDENCE:
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
