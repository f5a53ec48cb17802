"""Smart home: the embedded model drives a simulated home — lights, air conditioner, music, volume.

Shows how an app adds its own handlers next to (or instead of) the demo ones: here the
``light_on`` handler is replaced by one that refuses rooms the house does not have, and every
change is logged. ``python examples/smart_home.py``
"""

from __future__ import annotations

from typing import Annotated

from intentkit import Param, Router
from intentkit.demo import SmartHome, pad

ROOMS = {"客厅", "卧室", "厨房", "书房"}
COMMANDS = [
    "把客厅的灯打开",
    "卧室开灯",
    "阳台的灯打开",  # the house has no balcony: the handler says so
    "好热啊，开下空调",
    "空调调到二十四度",
    "空调开除湿",
    "我想听音乐",
    "大声点",
    "关掉厨房的灯",
]


def build(home: SmartHome) -> Router:
    router = Router.default(home=home, fast_path=False)

    @router.intent(replace=True, description="开灯")
    def light_on(room: Annotated[str | None, Param(description="房间")] = None) -> str:
        if room is not None and room not in ROOMS:
            return f"家里没有{room}"
        for name in [room] if room else sorted(ROOMS):
            home.lights[name] = True
        return f"💡 {room or '全屋'}的灯已打开"

    return router


def main() -> None:
    home = SmartHome()
    with build(home) as router:
        for text in COMMANDS:
            result = router.handle(text)
            print(f"{pad(text, 28)} → {pad(result.call_text, 40)} {result.results[0] if result.results else result.status.value}")
    print(
        f"\nlights {home.lights}\nAC {'on' if home.ac_on else 'off'}, {home.ac_mode}, {home.ac_temperature}℃; "
        f"music {home.playing!r}, volume {home.volume}"
    )


if __name__ == "__main__":
    main()
