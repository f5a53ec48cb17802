"""Training data for Home Assistant's intents, from the templates Home Assistant itself matches.

    intentkit ha data --language zh-CN --out train.jsonl

Each row is one random walk through one template of ``home-assistant-intents`` (not the first N
expansions, which are near-duplicates): every optional part and alternative is chosen at random,
every slot list filled with a random value. Slot values are known from the walk itself, so the
answer is exactly the call Home Assistant executes (``HassTurnOn(area="客厅", domain="light")``).
What the plain sampler does not do:

- **names vary**: entity, area and floor names come from large pools, composed (``书房台灯``,
  ``易来吸顶灯``, ``左侧窗帘``), people's names for ``person`` and sensors' for ``sensor``, so
  that the model learns to copy a name rather than memorise a home; a template
  whose ``requires_context`` limits ``name`` to some domains gets a name of such a device;
- **context**: a slot the template takes from the satellite's context (``这里的灯``: the area) is
  left out of the answer: the Wyoming server fills it from the request's context;
- **numbers** are written as digits or as Chinese numerals (``二十四度``), never as financial
  numerals (壹/伍); malformed expansions (``的的``) are dropped;
- **how people talk**: fillers and politeness (帮我, 麻烦, 一下, 吧), the situation or reason said
  with the command (``好暗啊，帮我把灯开一下``, on any intent's rows, so that the model reads past
  it), and speech-recognition slips in names (床头等 for 床头灯), on a share of the rows;
- **out of scope**: chat, knowledge questions, other apps' requests and questions that sound like
  a home's but are not (``今天股市涨了吗``, ``空调多少钱一台``);
- **balance**: the same number of rows per intent, plus more for intents with many templates
  (``per_sentence``), plus out-of-scope rows (``output: null``).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from intentkit.calls import render_call
from intentkit.errors import ConfigError, MissingDependencyError
from intentkit.homeassistant.intents import language_data, language_intents, package_language

__all__ = ["HaRow", "ha_rows", "write_rows"]

_AREAS = (
    "客厅 卧室 主卧 次卧 厨房 书房 阳台 餐厅 卫生间 浴室 儿童房 车库 花园 走廊 玄关 客房 衣帽间 阁楼 地下室 "
    "楼梯间 洗衣房 影音室 健身房 茶室 储物间 露台 办公室 会客厅 老人房 婴儿房"
).split()
_FLOORS = "一楼 二楼 三楼 四楼 地下一层 顶楼 一层 二层 三层 负一楼 一 二 三 负一".split()
_DEVICES: dict[str, tuple[str, ...]] = {
    "light": (
        "灯",
        "吸顶灯",
        "台灯",
        "落地灯",
        "筒灯",
        "射灯",
        "灯带",
        "吊灯",
        "床头灯",
        "氛围灯",
        "夜灯",
        "壁灯",
        "主灯",
        "镜前灯",
    ),
    "switch": ("插座", "开关", "智能插座", "排插", "电源"),
    "fan": ("风扇", "吊扇", "落地扇", "塔扇", "排气扇"),
    "cover": ("窗帘", "纱帘", "卷帘", "百叶窗", "遮光帘", "车库门", "天窗"),
    "climate": ("空调", "暖气", "地暖", "新风机"),
    "media_player": ("电视", "音箱", "音响", "投影仪", "智能音箱", "播放器", "小爱音箱", "HomePod"),
    "lock": ("门锁", "智能锁", "大门锁", "后门锁"),
    "valve": ("水阀", "燃气阀", "进水阀"),
    "vacuum": ("扫地机器人", "扫地机", "拖地机器人"),
    "lawn_mower": ("割草机", "割草机器人"),
    "input_boolean": ("访客模式", "睡眠模式", "离家模式"),
    "scene": ("回家", "离家", "观影", "睡眠", "起床", "晚餐", "阅读", "派对"),
    "script": ("晚安", "早安", "关闭所有设备", "浇花"),
    "todo": ("购物清单", "待办事项", "采购清单", "待办清单"),
    "weather": ("家", "上海", "北京", "杭州", "深圳"),
    "person": (
        "张伟",
        "王芳",
        "李娜",
        "刘洋",
        "小明",
        "小红",
        "爸爸",
        "妈妈",
        "爷爷",
        "奶奶",
        "老婆",
        "老公",
        "儿子",
        "女儿",
        "陈静",
    ),
    "binary_sensor": ("运动传感器", "人体传感器", "门窗传感器", "门磁", "烟雾报警器", "漏水传感器", "人在传感器", "窗户传感器"),
    "sensor": ("室外温度", "室内温度", "室内湿度", "空气质量", "用电量", "温度传感器", "湿度计", "PM2.5", "二氧化碳浓度"),
}
# Devices people name by brand or position rather than by room.
_NAME_PREFIXES = ("左侧", "右侧", "主", "小", "米家", "易来", "飞利浦", "智能", "新", "大")
_WILDCARDS: dict[str, tuple[str, ...]] = {
    "message": ("吃饭了", "该睡觉了", "快递到了", "出门记得带伞", "客人来了", "开会了", "写完作业了吗", "下雨了收衣服"),
    "shopping_list_item": ("牛奶", "鸡蛋", "苹果", "面包", "洗衣液", "酸奶", "大米", "西红柿", "纸巾", "咖啡豆"),
    "todo_list_item": ("交电费", "给妈妈打电话", "取快递", "洗车", "买牛奶", "预约体检", "遛狗", "倒垃圾"),
    "timer_name": ("泡面", "煮鸡蛋", "披萨", "洗衣", "午睡", "烤箱", "面膜", "跑步"),
    "timer_command": ("关灯", "关闭电视", "打开空调", "关掉风扇", "提醒我喝水"),
    "zone": ("家", "公司", "学校", "健身房", "超市"),
    "search_query": ("周杰伦", "新闻", "轻音乐", "相声"),
}
_PREFIXES = ("帮我", "请", "麻烦", "麻烦你", "能不能", "可以帮我", "给我", "我想", "你帮我", "快", "嗯，", "那个，", "对了，")
_SUFFIXES = ("吧", "一下", "呗", "好吗", "谢谢", "啊", "可以吗")
# Speech recognisers swap characters that sound alike.
_SLIPS = {"灯": "等", "厅": "听", "帘": "连", "扇": "善", "卧": "握", "厨": "除", "阳": "羊", "台": "抬", "锁": "所", "视": "是"}
# What people say around a command: the situation or the reason (客厅好暗啊，帮我把灯开一下). Any
# intent's rows get any of them, so that the model learns to read past them.
_REMARKS = (
    "好暗啊",
    "太热了",
    "有点冷",
    "热死了",
    "我要睡了",
    "我回来了",
    "我要出门了",
    "透透气",
    "看不清了",
    "太吵了",
    "有点闷",
    "天黑了",
    "马上要吃饭了",
    "孩子睡着了",
    "等会儿有客人来",
    "快点",
    "我在看书",
    "我在做饭",
    "今天好累",
)
_OUT_OF_SCOPE = (
    "给我讲个笑话",
    "你叫什么名字",
    "今天股市怎么样",
    "帮我订一张去北京的机票",
    "推荐一部好看的电影",
    "一加一等于几",
    "我有点饿了",
    "你会唱歌吗",
    "明天要不要带伞",
    "附近有什么好吃的",
    "帮我翻译一下谢谢",
    "最近有什么新闻",
    "你喜欢什么颜色",
    "讲个故事给我听",
    "我今天心情不好",
    "帮我写一首诗",
    "地球有多大",
    "怎么做红烧肉",
    "周末去哪里玩",
    "世界上最高的山是哪座",
    "你是机器人吗",
    "帮我打个车",
    "查一下我的快递",
    "我想学英语",
    # Questions and requests that sound like a home's, about something else.
    "今天股市涨了吗",
    "昨天的比赛谁赢了",
    "比特币现在多少钱",
    "美元汇率是多少",
    "这个月工资发了没有",
    "北京到上海有多远",
    "高铁票还有吗",
    "我的航班准点吗",
    "电影几点开始",
    "健身房几点关门",
    "附近的药店开着吗",
    "超市还营业吗",
    "空调多少钱一台",
    "灯泡坏了怎么办",
    "扫地机器人哪个牌子好",
    "窗帘怎么洗",
    "电视剧更新了吗",
    "帮我发个微信给妈妈",
    "给老板打个电话",
    "帮我转账一百块",
    "点一份外卖",
    "帮我挂个号",
    "设置一下手机的壁纸",
    "帮我拍张照片",
    "我今天好开心",
    "好无聊啊",
    "谢谢你",
    "你好",
    "你真聪明",
    "今天是什么节日",
    "长城有多长",
    "太阳为什么是圆的",
    "猫能吃巧克力吗",
    "怎么减肥",
    "给我推荐一本书",
    "唱首歌吧",
    "陪我聊聊天",
    "明年是什么年",
    "三乘以七等于多少",
    "苹果用英语怎么说",
    "中国有多少人口",
    "帮我查一下这个单词",
    "股票该买还是卖",
    "这道题怎么做",
    "今年春节是几号",
)


@dataclass(frozen=True)
class _Pools:
    """The names, fillers and slips of one language's training rows."""

    areas: Sequence[str]
    floors: Sequence[str]
    devices: Mapping[str, Sequence[str]]
    name_prefixes: Sequence[str]
    wildcards: Mapping[str, Sequence[str]]
    prefixes: Sequence[str]
    suffixes: Sequence[str]
    slips: Mapping[str, str]  # what a speech recogniser hears instead (a character, or a word)
    out_of_scope: Sequence[str]
    remarks: Sequence[str] = ()  # a situation or reason said with the command
    space: str = ""  # between words: "" in Chinese, " " in English
    comma: str = "，"

    def join(self, *words: str) -> str:
        return self.space.join(w for w in words if w)


_ZH = _Pools(_AREAS, _FLOORS, _DEVICES, _NAME_PREFIXES, _WILDCARDS, _PREFIXES, _SUFFIXES, _SLIPS, _OUT_OF_SCOPE, _REMARKS)
_EN = _Pools(
    areas=(
        "living room",
        "kitchen",
        "bedroom",
        "master bedroom",
        "guest room",
        "office",
        "study",
        "bathroom",
        "garage",
        "garden",
        "hallway",
        "dining room",
        "basement",
        "attic",
        "laundry room",
        "nursery",
        "kids room",
        "porch",
        "patio",
        "den",
    ),
    floors=("first floor", "second floor", "ground floor", "upstairs", "downstairs", "top floor", "basement level"),
    devices={
        "light": (
            "light",
            "lamp",
            "ceiling light",
            "floor lamp",
            "desk lamp",
            "light strip",
            "spotlights",
            "chandelier",
            "night light",
        ),
        "switch": ("plug", "outlet", "smart plug", "switch", "power strip"),
        "fan": ("fan", "ceiling fan", "tower fan", "exhaust fan"),
        "cover": ("curtains", "blinds", "shades", "garage door", "shutters", "skylight"),
        "climate": ("thermostat", "air conditioner", "heater", "heat pump"),
        "media_player": ("tv", "speaker", "soundbar", "stereo", "projector", "sonos", "homepod"),
        "lock": ("front door lock", "back door lock", "lock", "smart lock"),
        "valve": ("water valve", "gas valve", "main valve"),
        "vacuum": ("robot vacuum", "roomba", "vacuum"),
        "lawn_mower": ("lawn mower", "mower"),
        "input_boolean": ("guest mode", "sleep mode", "away mode"),
        "scene": ("movie night", "good morning", "dinner", "reading", "party", "relax"),
        "script": ("good night", "leaving home", "water the plants"),
        "todo": ("shopping list", "to do list", "grocery list", "chores"),
        "weather": ("home", "london", "new york", "tokyo", "paris"),
        "person": ("alice", "bob", "mom", "dad", "emma", "james", "grandma", "sarah"),
        "binary_sensor": ("motion sensor", "door sensor", "window sensor", "smoke detector", "leak sensor"),
        "sensor": ("outdoor temperature", "indoor humidity", "air quality", "power usage", "temperature sensor"),
    },
    name_prefixes=("left", "right", "main", "small", "big", "hue", "ikea", "smart", "new", "corner"),
    wildcards={
        "message": ("dinner is ready", "time for bed", "the package is here", "we are leaving", "guests are here"),
        "shopping_list_item": ("milk", "eggs", "apples", "bread", "coffee", "paper towels", "yogurt", "rice"),
        "todo_list_item": ("pay the bills", "call mom", "pick up the package", "wash the car", "walk the dog"),
        "timer_name": ("pasta", "eggs", "pizza", "laundry", "nap", "oven", "tea"),
        "timer_command": ("turn off the lights", "turn off the tv", "turn on the fan"),
        "zone": ("home", "work", "school", "the gym", "the store"),
        "search_query": ("jazz", "the news", "taylor swift", "podcasts"),
    },
    prefixes=("please", "hey,", "could you", "can you", "would you", "i want to", "quickly", "um,", "oh and"),
    suffixes=("please", "thanks", "now", "for me", "right now"),
    slips={"light": "lite", "lights": "lice", "lamp": "lamb", "fan": "van", "kitchen": "chicken", "blinds": "blends"},
    out_of_scope=(
        "tell me a joke",
        "what's your name",
        "how is the stock market today",
        "book a flight to paris",
        "recommend a good movie",
        "what is one plus one",
        "i'm hungry",
        "can you sing",
        "what's the capital of france",
        "translate thank you into spanish",
        "what's in the news",
        "write me a poem",
        "how do i make pancakes",
        "where should we go this weekend",
        "are you a robot",
        "order me a taxi",
        "track my package",
        "i want to learn french",
        "did the stock market go up today",
        "who won the game last night",
        "how much is bitcoin worth",
        "is my flight on time",
        "when does the movie start",
        "is the pharmacy still open",
        "how much does a new thermostat cost",
        "which robot vacuum should i buy",
        "send a text to mom",
        "call my boss",
        "order a pizza",
        "take a picture",
        "i'm so bored",
        "thank you",
        "hello there",
        "how tall is mount everest",
        "can cats eat chocolate",
        "how do i lose weight",
        "recommend a good book",
        "what is seven times three",
        "how do you say apple in french",
        "what holiday is it today",
    ),
    remarks=(
        "it's dark in here",
        "it's so hot",
        "it's cold",
        "i'm going to bed",
        "i'm home",
        "i'm heading out",
        "it's too loud",
        "i can't see",
        "dinner's almost ready",
        "the baby is asleep",
    ),
    space=" ",
    comma=", ",
)


@dataclass(frozen=True, slots=True)
class HaRow:
    """One training row: the utterance, the intent and its slots as Home Assistant takes them."""

    text: str
    intent: str | None
    slots: Mapping[str, Any]

    def to_json(self) -> dict[str, Any]:
        if self.intent is None:
            return {"instruction": self.text, "output": None}
        return {
            "instruction": self.text,
            "output": render_call(self.intent, (), dict(self.slots)),
            "name": self.intent,
            "args": dict(self.slots),
        }


def ha_rows(
    language: str = "zh-CN",
    *,
    per_intent: int = 60,
    per_sentence: float = 0.0,
    out_of_scope: float = 0.1,
    styles: float = 0.35,
    seed: int = 0,
) -> list[HaRow]:
    """``per_intent`` rows for each of ``language``'s intents (see the module docstring), plus
    ``per_sentence`` more for each of its template sentences (``HassGetState`` has 113 templates
    over eleven domains, ``HassGetCurrentDate`` 5), at most four times ``per_intent``; plus
    ``out_of_scope`` × ``per_intent`` × intents out-of-scope rows. ``styles`` is the share given
    fillers or slips."""
    language = package_language(language)
    pools = _pools(language)
    intents, _, _ = language_data(language)
    order = language_intents(language)
    rng = random.Random(seed)
    local = _localiser(language)
    rows: list[HaRow] = []
    for name, intent in intents.intents.items():
        slots_order = order[name].slots
        sentences = sum(len(item.sentences) for item in intent.data)
        wanted = min(4 * per_intent, per_intent + round(per_sentence * sentences))
        made, seen, tries = 0, set(), 0
        while made < wanted and tries < wanted * 30:
            tries += 1
            item = rng.choice(intent.data)
            sentence = rng.choice(item.sentences)
            walk = _Walk(rng, intents, {**intents.expansion_rules, **item.expansion_rules}, item, local, pools)
            text = walk.text(sentence.expression)
            if not text or "的的" in text or ("百分之" in text and "%" in text) or text in seen or walk.doubled(text):
                continue
            slots = {**{k: v for k, v in item.slots.items()}, **walk.slots}
            ordered = {k: slots[k] for k in slots_order if k in slots}
            text = " ".join(text.split()) if pools.space else text
            if rng.random() < styles:
                text = _style(rng, text, walk.spoken_names, local, pools)
            seen.add(text)
            rows.append(HaRow(text, name, ordered))
            made += 1
    unclaimed = _unclaimed(pools.out_of_scope, language, pools, local)
    for _ in range(round(len(intents.intents) * per_intent * out_of_scope)):
        text = rng.choice(unclaimed)
        rows.append(HaRow(_style(rng, text, [], local, pools) if rng.random() < styles else text, None, {}))
    rng.shuffle(rows)
    return rows


class _Walk:
    """One random expansion of a template, recording the slot values it chose."""

    def __init__(
        self,
        rng: random.Random,
        intents: Any,
        rules: Mapping[str, Any],
        item: Any,
        local: Callable[[str], str],
        pools: _Pools,
    ) -> None:
        self.rng, self.intents, self.rules, self.item, self.local, self.pools = rng, intents, rules, item, local, pools
        self.slots: dict[str, Any] = {}
        self.spoken_names: list[str] = []
        self.area = local(rng.choice(pools.areas))
        devices = pools.devices
        domains = (item.requires_context or {}).get("domain") or list(devices)
        self.domains = [domains] if isinstance(domains, str) else [d for d in domains if d in devices] or ["light"]

    def text(self, expression: Any) -> str:
        return "".join(self._expand(expression))

    def doubled(self, text: str) -> bool:
        """Whether a floor named with its own 楼/层 got the template's too (二楼层)."""
        floor = str(self.slots.get("floor", ""))
        return floor[-1:] in ("楼", "层", "樓", "層") and any(floor + c in text for c in "楼层樓層")

    def _expand(self, expression: Any) -> Iterator[str]:
        from hassil.expression import Alternative, ListReference, Permutation, RuleReference, Sequence, TextChunk

        if isinstance(expression, TextChunk):
            yield expression.text
        elif isinstance(expression, Alternative):
            items = list(expression.items)
            yield from self._expand(self.rng.choice(items))
        elif isinstance(expression, Permutation):
            items = list(expression.items)
            self.rng.shuffle(items)
            for item in items:
                yield from self._expand(item)
        elif isinstance(expression, Sequence):
            for item in expression.items:
                yield from self._expand(item)
        elif isinstance(expression, RuleReference):
            yield from self._expand(self.rules[expression.rule_name].expression)
        elif isinstance(expression, ListReference):
            yield self._fill(expression.list_name, expression.slot_name)

    def _fill(self, list_name: str, slot: str) -> str:
        from hassil import RangeSlotList, TextSlotList

        rng = self.rng
        if list_name == "area":
            value = spoken = self.area
        elif list_name == "floor":
            value = spoken = self.local(rng.choice(self.pools.floors))
        elif list_name == "name":
            pools = self.pools
            domain = rng.choice(self.domains)
            device = rng.choice(pools.devices.get(domain) or pools.devices["light"])
            roll = rng.random() if domain not in ("scene", "script", "todo", "weather", "input_boolean", "person") else 1.0
            if roll < 0.45:  # 书房台灯, kitchen lamp
                device = pools.join(rng.choice(pools.areas), device)
            elif roll < 0.65:  # 左侧窗帘, 易来吸顶灯, hue lamp
                device = pools.join(rng.choice(pools.name_prefixes), device)
            value = spoken = self.local(device)
            self.spoken_names.append(spoken)
        else:
            slot_list = self.intents.slot_lists.get(list_name)
            if isinstance(slot_list, TextSlotList):
                choice = rng.choice(slot_list.values)
                spoken = self.text(choice.text_in) if not isinstance(choice.text_in, str) else choice.text_in
                value = choice.value_out if choice.value_out is not None else spoken
            elif isinstance(slot_list, RangeSlotList):
                value, spoken = _number(rng, slot_list, chinese=not self.pools.space)
            else:  # a wildcard
                value = spoken = self.local(
                    rng.choice(self.pools.wildcards.get(list_name, ("这个" if not self.pools.space else "it",)))
                )
        self.slots[slot] = value
        return str(spoken)


def _unclaimed(sentences: Sequence[str], language: str, pools: _Pools, local: Callable[[str], str]) -> list[str]:
    """The out-of-scope sentences no template of ``language`` matches in a home of the pools'
    names (你好 is ``HassRespond``'s): a sentence Home Assistant answers is never trained as out of
    scope."""
    from hassil import recognize_best

    from intentkit.homeassistant import Home
    from intentkit.homeassistant.templates import slot_lists

    home = Home(
        language=language,
        areas=list(dict.fromkeys(local(a) for a in pools.areas)),
        floors=list(dict.fromkeys(local(f) for f in pools.floors)),
        entities=[{"name": local(n), "domain": d} for d, group in pools.devices.items() for n in group],
    )
    intents, data, _ = language_data(language)
    lists, skip = slot_lists(home), data.get("skip_words", [])
    texts = [local(t) for t in sentences]
    kept = [t for t in texts if recognize_best(t, intents, slot_lists=lists, skip_words=skip, language=language) is None]
    if not kept:
        raise ConfigError(f"every out-of-scope sentence of {language} is matched by a template")
    return kept


def _number(rng: random.Random, slot_list: Any, *, chinese: bool = True) -> tuple[Any, str]:
    import cn2an

    step = slot_list.step or 1
    low, high = sorted((slot_list.start, slot_list.stop))
    if slot_list.type is not None and str(slot_list.type.value) == "temperature":
        low, high = max(low, 16), min(high, 30)  # what people set a thermostat to
    number: float = rng.randrange(low, high + 1, step)
    if slot_list.fraction_type is not None and rng.random() < 0.2:
        number += 0.5
    value = number * (slot_list.multiplier or 1)
    value = int(value) if float(value).is_integer() else value
    spoken = cn2an.an2cn(str(number)) if chinese and rng.random() < 0.5 else f"{number:g}"
    return value, spoken


def _style(rng: random.Random, text: str, names: Sequence[str], local: Callable[[str], str], pools: _Pools) -> str:
    roll = rng.random()
    if roll < 0.3:
        text = pools.join(local(rng.choice(pools.prefixes)), text)
    elif roll < 0.5:
        text = pools.join(text, local(rng.choice(pools.suffixes)))
    elif roll < 0.62:
        text = pools.join(local(rng.choice(pools.prefixes)), text, local(rng.choice(pools.suffixes)))
    elif roll < 0.85 and pools.remarks:  # 好暗啊，把灯打开 / 把灯打开，好暗啊
        remark = local(rng.choice(pools.remarks))
        if rng.random() < 0.3:
            text = pools.join(local(rng.choice(pools.prefixes)), text)
        text = remark + pools.comma + text if rng.random() < 0.6 else text + pools.comma + remark
    elif names:
        name = rng.choice(list(names))
        if pools.space:  # a word the recogniser heard as another
            slipped = " ".join(pools.slips.get(w, w) if rng.random() < 0.6 else w for w in name.split())
        else:
            slipped = "".join(pools.slips.get(c, c) if rng.random() < 0.5 else c for c in name)
        text = text.replace(name, slipped, 1)
    return text


def _pools(language: str) -> _Pools:
    """The pools for an intents-package language: Chinese (zh-CN, zh-TW, zh-HK), English (en)."""
    if language.startswith("zh"):
        return _ZH
    if language.split("-")[0] == "en":
        return _EN
    raise ConfigError(f"training data for {language} needs name pools in that language; built in: zh-CN, zh-TW, zh-HK and en")


def _localiser(language: str) -> Callable[[str], str]:
    """The Chinese pools are written in simplified characters; Taiwan's and Hong Kong's templates
    get them in traditional ones (opencc), as their homes name things."""
    if not language.startswith("zh") or language == "zh-CN":
        return lambda text: text
    try:
        import opencc
    except ImportError:
        raise MissingDependencyError("opencc") from None
    converter = opencc.OpenCC("s2tw" if language == "zh-TW" else "s2hk")
    return converter.convert


def write_rows(rows: Sequence[HaRow], path: str | Path) -> Path:
    """The rows as JSON Lines in the datasets format."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as out:
        for row in rows:
            out.write(json.dumps(row.to_json(), ensure_ascii=False) + "\n")
    return path
