"""Quickstart: register handlers, route utterances, read the typed results.

The backend here is intentkit's scripted FakeBackend, standing in for a fine-tuned model's
answers, so this runs anywhere in a second. ``python examples/quickstart.py``
"""

from __future__ import annotations

from intentkit import Router
from intentkit.testing import FakeBackend

# What a fine-tuned model answers for these utterances (see trainers/ to train one).
MODEL_ANSWERS = {
    "我想去杭州玩，帮我查下天气预报": "weather_search(杭州)",
    "太吵了，把声音开小一点": "volume_down()",
    "我不想听了，把歌关了吧": "music_exit()",
    "放一首周杰伦的七里香": 'play_music(song="七里香", singer="周杰伦")',
    "明天北京会下雨吗": 'weather_search(city="北京", date="明天")',
    "这首歌叫什么名字": "music_query_player()",
    "今天晚上吃什么好呢": "no_intent()",
    "帮我订一张去上海的机票": "book_flight(上海)",  # a model naming an intent the app never registered
}

router = Router(backend=FakeBackend(MODEL_ANSWERS))
volume = {"level": 50}


@router.intent(description="播放音乐", examples=["我想听音乐", "放首歌"])
def play_music(song: str | None = None, singer: str | None = None) -> str:
    return "正在播放" + (f" {singer}" if singer else "") + (f"《{song}》" if song else "音乐")


@router.intent(description="调小音量", examples=["小声一点"])
def volume_down() -> str:
    volume["level"] = max(0, volume["level"] - 10)
    return f"音量 {volume['level']}"


@router.intent(description="停止播放音乐")
def music_exit() -> str:
    return "已停止播放"


@router.intent(description="查询当前播放的歌曲")
def music_query_player(song: str | None = None) -> str:
    return "正在播放《七里香》"


@router.intent(description="查询天气")
def weather_search(city: str, date: str = "今天") -> str:
    return f"{city}{date}晴，18~25°C"


@router.fallback
def chitchat(text: str) -> str:
    return "这个我还不会，可以让我放歌、调音量或查天气"


def main() -> None:
    for text in ["我想听音乐", *MODEL_ANSWERS]:
        result = router.handle(text)
        calls = "; ".join(call.render() for call in result.calls) or "-"
        outcome = result.results[0] if result.results else (result.error or "")
        print(
            f"{text}\n  -> {result.status.value:<10} {calls}  [{result.path.value}, "
            f"{result.timings.total_ms:.2f} ms]\n  => {outcome}"
        )


if __name__ == "__main__":
    main()
