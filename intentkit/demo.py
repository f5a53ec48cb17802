"""The demo smart-home / voice-assistant intents the bundled model was trained on.

:class:`SmartHome` keeps a simulated home (music, volume, lights, air conditioner, alarms) and
registers one handler per intent; :func:`intentkit.embedded.default_router` uses it.
An app swaps a handler with ``@router.intent(replace=True)`` (same name, same parameters the
model was trained on), or starts from ``Router(backend)`` and registers its own.
The training data is ``examples/demo/templates.json`` (expanded into train/dev JSONL).
"""

from __future__ import annotations

import datetime as _dt
import threading
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Protocol, TypeVar

import pydantic

from .registry import Param

__all__ = ["SmartHome", "pad"]

AcMode = Literal["制冷", "制热", "除湿", "送风", "自动"]


class Registrar(Protocol):
    """What :meth:`SmartHome.register` needs: a :class:`~intentkit.Router`'s ``intent`` decorator."""

    @property
    def intent(self) -> Callable[..., Any]: ...


R = TypeVar("R", bound=Registrar)


@dataclass
class SmartHome:
    """A simulated home whose state the demo handlers change; each handler returns a reply."""

    volume: int = 50
    playing: str | None = None
    paused: bool = False
    lights: dict[str, bool] = field(default_factory=dict)
    brightness: str = "100"
    ac_on: bool = False
    ac_mode: str = "自动"
    ac_temperature: int = 26
    alarms: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def register(self, router: R) -> R:
        """Register the demo handlers on ``router``; returns it."""
        home = self

        @router.intent(description="播放音乐（不指定歌曲）")
        def play_music() -> str:
            return home._set(playing="随机歌单", paused=False, reply="▶ 开始播放音乐")

        @router.intent(description="停止播放并退出音乐")
        def music_exit() -> str:
            return home._set(playing=None, paused=False, reply="⏹ 音乐已关闭")

        @router.intent(description="暂停播放")
        def music_pause() -> str:
            return home._set(paused=True, reply="⏸ 已暂停")

        @router.intent(description="继续播放")
        def music_resume() -> str:
            return home._set(paused=False, reply="▶ 继续播放")

        @router.intent(description="下一首")
        def music_next() -> str:
            return home._set(paused=False, reply="⏭ 下一首")

        @router.intent(description="播放指定歌曲")
        def music_query_player(song: Annotated[str, Param(description="歌名", ask="您想听哪首歌？")]) -> str:
            return home._set(playing=song, paused=False, reply=f"▶ 播放《{song}》")

        @router.intent(description="调大音量")
        def volume_up() -> str:
            return home._set(volume=min(100, home.volume + 10), reply=f"🔊 音量 {min(100, home.volume + 10)}")

        @router.intent(description="调小音量")
        def volume_down() -> str:
            return home._set(volume=max(0, home.volume - 10), reply=f"🔉 音量 {max(0, home.volume - 10)}")

        @router.intent(description="查询天气")
        def weather_search(
            city: Annotated[str | None, Param(description="城市")] = None,
            date: Annotated[str | None, Param(description="日期")] = None,
        ) -> str:
            return f"🌤 查询{city or '本地'}{date or '今天'}的天气"

        @router.intent(description="开灯")
        def light_on(room: Annotated[str | None, Param(description="房间")] = None) -> str:
            return home._lights(room, True)

        @router.intent(description="关灯")
        def light_off(room: Annotated[str | None, Param(description="房间")] = None) -> str:
            return home._lights(room, False)

        @router.intent(description="调节灯光亮度")
        def light_brightness(
            level: Annotated[str, Param(description="亮度，如 50、一半、最亮", ask="亮度调到多少？")],
        ) -> str:
            return home._set(brightness=level, reply=f"💡 亮度 {level}")

        @router.intent(description="打开空调")
        def ac_on() -> str:
            return home._set(ac_on=True, reply=f"❄ 空调已打开（{home.ac_mode}，{home.ac_temperature}℃）")

        @router.intent(description="关闭空调")
        def ac_off() -> str:
            return home._set(ac_on=False, reply="空调已关闭")

        @router.intent(description="设置空调温度")
        def ac_set_temperature(
            temperature: Annotated[int, pydantic.Field(ge=16, le=32), Param(description="温度", ask="空调调到多少度？")],
        ) -> str:
            return home._set(ac_on=True, ac_temperature=temperature, reply=f"🌡 空调 {temperature}℃")

        @router.intent(description="切换空调模式")
        def ac_set_mode(
            mode: Annotated[AcMode, Param(description="模式", ask="切换到哪个模式？制冷、制热、除湿、送风还是自动？")],
        ) -> str:
            return home._set(ac_on=True, ac_mode=mode, reply=f"空调切换到{mode}模式")

        @router.intent(description="设置闹钟")
        def set_alarm(time: Annotated[str, Param(description="时间", ask="闹钟定在几点？")]) -> str:
            with home._lock:
                home.alarms.append(time)
            return f"⏰ 闹钟：{time}"

        @router.intent(description="打电话")
        def call_contact(contact: Annotated[str, Param(description="联系人", ask="您要打给谁？")]) -> str:
            return f"📞 正在呼叫{contact}"

        @router.intent(description="报时")
        def query_time() -> str:
            return f"🕒 现在是 {_dt.datetime.now():%H:%M}"

        return router

    def _set(self, *, reply: str, **changes: object) -> str:
        with self._lock:
            for key, value in changes.items():
                setattr(self, key, value)
        return reply

    def _lights(self, room: str | None, on: bool) -> str:
        with self._lock:
            rooms = [room] if room else (list(self.lights) or ["全屋"])
            for name in rooms:
                self.lights[name] = on
        return f"💡 {'、'.join(rooms)}的灯已{'打开' if on else '关闭'}"


def pad(text: str, width: int) -> str:
    """``text`` left-justified to ``width`` terminal columns, counting East Asian wide and
    full-width characters as two (``str.ljust`` counts ``杭州`` as 2 columns; a terminal shows 4)."""
    columns = sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)
    return text + " " * max(0, width - columns)
