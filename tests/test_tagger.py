"""The slot tagger drafted values are read with: labels, training, files, and its place in drafts."""

from __future__ import annotations

import ctypes
import itertools
import sys
import threading
from pathlib import Path

import pytest

from intentkit.calls import Call
from intentkit.drafts import DRAFTS_FILE, Draft, DraftIndex
from intentkit.errors import ModelDirError
from intentkit.parser import parse_calls
from intentkit.tagger import TAGGER_FILE, SlotTagger, spans_of, tag_labels, taggable_intents

BUNDLED = Path(__file__).parent.parent / "models" / "smart-home"


@pytest.mark.parametrize(
    ("utterance", "call", "expected"),
    [
        ("查杭州天气", Call("w", kwargs={"city": "杭州"}), ["O", "B-city", "I-city", "O", "O"]),
        ("北京到北京", Call("t", kwargs={"a": "北京", "b": "北京"}), ["B-a", "I-a", "O", "B-b", "I-b"]),  # next free occurrence
        ("放歌", Call("play"), ["O", "O"]),
        ("查天气", Call("w", kwargs={"city": "杭州"}), None),  # not said
        ("音量30", Call("v", kwargs={"level": 30}), None),  # not text
    ],
)
def test_labels_mark_each_value_where_it_is_said(utterance, call, expected):
    assert tag_labels(utterance, call) == expected


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        (["O", "B-city", "I-city", "O", "O"], {"city": "杭州"}),
        (["O", "I-city", "I-city", "O", "O"], {"city": "杭州"}),  # an I- without its B- opens a span
        (["O", "B-city", "B-date", "O", "O"], {"city": "杭", "date": "州"}),
        (["B-city", "O", "B-city", "I-city", "I-city"], {"city": "查"}),  # the first span counts
        (["O", "O", "O", "B-date", "I-city"], {"date": "天", "city": "气"}),
        (["O"] * 5, {}),
    ],
)
def test_spans_are_read_from_labels(labels, expected):
    assert spans_of("查杭州天气", labels) == expected


def test_only_intents_whose_values_are_said_verbatim_are_tagged():
    rows = [
        ("查杭州天气", Call("weather", kwargs={"city": "杭州"})),
        ("五分钟后提醒我", Call("timer", kwargs={"minutes": 5})),
        ("放歌", Call("play")),
        ("第一首", Call("pick", (1,))),
    ]
    assert taggable_intents(rows) == {"weather", "play"}


CITIES = ["杭州", "北京", "上海", "广州", "深圳", "成都", "武汉", "西安", "南京", "重庆"]
DATES = ["明天", "后天", "今天", "周末"]
TEMPLATES = ["查一下{c}{d}的天气", "{d}{c}会下雨吗", "{c}{d}天气怎么样", "帮我看看{c}{d}冷不冷"]


def weather_rows() -> list[tuple[str, str | None]]:
    rows: list[tuple[str, str | None]] = []
    for (c, d), template in zip(itertools.product(CITIES, DATES), itertools.cycle(TEMPLATES)):
        rows.append((template.format(c=c, d=d), f'weather_search(city="{c}", date="{d}")'))
    for c, template in zip(CITIES, itertools.cycle(["{c}天气", "{c}下雨吗"])):
        rows.append((template.format(c=c), f'weather_search(city="{c}")'))
    rows += [(f"把{room}的灯打开", f'light_on(room="{room}")') for room in ["卧室", "客厅", "厨房", "书房", "阳台"]]
    rows += [("我想听音乐", "play_music()"), ("放首歌", "play_music()"), ("讲个笑话", None)]
    return rows


@pytest.fixture(scope="module")
def tagged(tmp_path_factory) -> DraftIndex:
    index = DraftIndex.from_outputs(weather_rows())
    assert index.fit_tagger(tmp_path_factory.mktemp("tagger") / TAGGER_FILE) is not None
    return index


def test_the_tagger_reads_values_the_rows_never_said(tagged):
    plain = DraftIndex(zip(tagged.utterances, tagged.calls, strict=True))
    # A city no row names, phrased as a row is.
    assert tagged.draft("查一下苏州明天的天气") == Draft("weather_search", (("city", "苏州"), ("date", "明天")))
    assert tagged.draft("把主卧的灯打开") == Draft("light_on", (("room", "主卧"),))
    assert tagged.draft("我想听音乐吧") == Draft("play_music")
    # Phrased as no row is: the nearest rows' alignment takes in the date, or places no city.
    assert tagged.draft("明天苏州天气怎么样") == Draft("weather_search", (("city", "苏州"), ("date", "明天")))
    assert plain.draft("明天苏州天气怎么样") == Draft("weather_search", (("city", "明天苏州"), ("date", "明天")))
    assert tagged.draft("帮我看看苏州冷不冷") == Draft("weather_search", (("city", "苏州"),))
    assert plain.draft("帮我看看苏州冷不冷") == Draft("weather_search", (("city", None),))


def test_a_tagged_call_the_model_rules_out_falls_back_to_the_nearest_rows(tagged):
    # The tagged call has a date; once the model rules dates out, the voted rows' call is drafted.
    no_date = tagged.draft("查一下苏州明天的天气", intents=["weather_search"], fits=lambda call: "date" not in call.kwargs)
    assert no_date is not None and "date" not in dict(no_date.items)


def test_tagger_file_is_found_beside_the_drafts_and_can_be_left_out(tagged, tmp_path):
    tagged.save(tmp_path / DRAFTS_FILE)
    assert tagged.tagger is not None
    (tmp_path / TAGGER_FILE).write_bytes(tagged.tagger.path.read_bytes())
    loaded = DraftIndex.load(tmp_path / DRAFTS_FILE)
    assert loaded.tagger is not None
    assert loaded.draft("查一下苏州明天的天气") == tagged.draft("查一下苏州明天的天气")
    assert DraftIndex.load(tmp_path / DRAFTS_FILE, tagger=False).tagger is None


@pytest.mark.parametrize("content", [b"", b"not a model", bytes(range(256)) * 4])
def test_a_tagger_file_that_is_none_names_the_file(tmp_path, content):
    DraftIndex.from_outputs([("我想听音乐", "play_music()")]).save(tmp_path / DRAFTS_FILE)
    (tmp_path / TAGGER_FILE).write_bytes(content)
    with pytest.raises(ModelDirError, match=r"drafts\.crf"):
        DraftIndex.load(tmp_path / DRAFTS_FILE)


def test_no_values_to_tag_writes_no_tagger(tmp_path):
    path = tmp_path / TAGGER_FILE
    path.write_bytes(b"stale")
    index = DraftIndex.from_outputs([("我想听音乐", "play_music()"), ("音量调到30", "volume(level=30)")])
    assert index.fit_tagger(path) is None
    assert not path.exists() and index.tagger is None


@pytest.mark.skipif(sys.platform == "win32", reason="the C library's rand() is reached through the process's symbols")
def test_the_same_rows_give_the_same_tagger_whatever_ran_before(tmp_path):
    """CRFsuite shuffles with the C library's rand(): whatever else in the process drew from it
    (here 1,000 draws) must not change the tagger the same rows train."""
    rows = [(utterance, parse_calls(output)[0]) for utterance, output in weather_rows() if output]
    libc = ctypes.CDLL(None)
    trained = []
    for draws in (0, 1, 1000):
        for _ in range(draws):
            libc.rand()
        path = tmp_path / f"after-{draws}.crf"
        assert SlotTagger.fit(rows, path) is not None
        trained.append(path.read_bytes())
    assert trained[0] == trained[1] == trained[2]


def test_tagging_from_threads_gives_each_its_own_answer(tagged):
    tagger = tagged.tagger
    assert tagger is not None
    utterances = [f"查一下{c}{d}的天气" for c, d in itertools.product(["苏州", "厦门", "杭州"], DATES)]
    expected = [tagger.tag(u, "weather_search") for u in utterances]
    results: dict[int, list[dict[str, str]]] = {}

    def work(k: int) -> None:
        results[k] = [tagger.tag(u, "weather_search") for u in utterances * 20]

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(found == expected * 20 for found in results.values())


def test_the_bundled_model_ships_its_tagger():
    index = DraftIndex.load(BUNDLED / DRAFTS_FILE)
    assert isinstance(index.tagger, SlotTagger)
    assert index.draft("想听十年这首歌，谢谢") == Draft("music_query_player", (("song", "十年"),))
    assert index.draft("把主卧的灯打开") == Draft("light_on", (("room", "主卧"),))
