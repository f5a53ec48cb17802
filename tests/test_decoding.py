"""Constrained decoding against a scripted token model: a character tokenizer whose logits favour
the next token of a chosen answer, so every decision of the decoder can be checked."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal

import numpy as np
import pytest

from intentkit import Param, Registry
from intentkit.backends.decoding import ConstrainedDecoder, DraftedModel, greedy_decode
from intentkit.drafts import Draft
from intentkit.parser import parse_calls
from intentkit.text import can_copy, word_boundaries

# "=-" is one token, as in gemma's vocabulary: a negative bare number opens with it.
MERGED = ["()", '="', '")', '",', ", ", '", "', '"]', "_", "杭州", "明天", "六点", "music", "weather", "Nothing", " Fancy", "=-"]
END = 0


class ScriptedModel:
    """Tokens: END, the merged pieces, then single characters added on demand (longest match wins)."""

    def __init__(self, answer: str, *, runner_up: str | None = None) -> None:
        self.pieces: list[bytes] = [b"<end>", *(m.encode() for m in MERGED)]
        self.index = {p: i for i, p in enumerate(self.pieces)}
        self.answer, self.runner_up = answer, runner_up
        self.tokens: list[int] = []
        self.prompt_len = 0
        self.fed_batches: list[int] = []
        for text in (answer, runner_up or "", "0123456789-."):
            self.tokenize(text)  # every token the script can prefer exists before any logits row

    @property
    def n_tokens(self) -> int:
        return len(self.tokens)

    def _id(self, piece: bytes) -> int:
        if piece not in self.index:
            self.index[piece] = len(self.pieces)
            self.pieces.append(piece)
        return self.index[piece]

    def tokenize(self, text: str, *, special: bool = False, bos: bool = False) -> list[int]:
        out, data = [], text.encode()
        while data:
            match = max((m for m in map(str.encode, MERGED) if data.startswith(m)), key=len, default=None)
            if match is None:  # one character
                match = data[: len(data.decode()[0].encode())]
            out.append(self._id(match))
            data = data[len(match) :]
        return out

    def piece(self, token: int) -> bytes:
        return self.pieces[token]

    def is_end(self, token: int) -> bool:
        return token == END

    def _logits(self, upto: int) -> np.ndarray:
        row = np.zeros(len(self.pieces), dtype=np.float32)
        said = b"".join(self.pieces[t] for t in self.tokens[self.prompt_len : upto])
        for target, score in ((self.answer, 12.0), (self.runner_up, 6.0)):
            if target is None:
                continue
            data = target.encode()
            if data.startswith(said):
                rest = data[len(said) :].decode()
                row[self.tokenize(rest)[0] if rest else END] += score
        return row

    def feed(self, tokens: Sequence[int], *, all_logits: bool = False) -> np.ndarray:
        self.fed_batches.append(len(tokens))
        start = len(self.tokens)
        self.tokens.extend(tokens)
        ends = range(start + 1, len(self.tokens) + 1) if all_logits else [len(self.tokens)]
        return np.stack([self._logits(end) for end in ends])

    def rewind(self, n_tokens: int) -> None:
        del self.tokens[n_tokens:]

    def start(self, prompt: str) -> np.ndarray:
        return self.prefill(self.tokenize(prompt))[0]

    def prefill(self, tokens: list[int]) -> tuple[np.ndarray, int]:
        self.tokens = list(tokens)
        self.prompt_len = len(self.tokens)
        return self._logits(len(self.tokens)), 0


def play_music() -> None: ...
def music_exit() -> None: ...
def weather_search(city: str | None = None, date: str | None = None) -> None: ...
def ac_set_mode(mode: Literal["制冷", "制热", "除湿"]) -> None: ...
def set_alarm(time: str) -> None: ...
def normalise_date(date: Annotated[str, Param(from_utterance=False)]) -> None: ...
def match_query(name: list[str]) -> None: ...
def listen(singer: list[str] | None = None, song: str | None = None) -> None: ...
def volume(step: Annotated[int, Param(from_utterance=False)]) -> None: ...


@pytest.fixture
def catalog():
    registry = Registry()
    for fn in (play_music, music_exit, weather_search, ac_set_mode, set_alarm, normalise_date, match_query, listen, volume):
        registry.register(fn)
    return registry.catalog


def decode(catalog, answer: str, utterance: str, **kwargs):
    model = ScriptedModel(answer, **kwargs)
    decoder = ConstrainedDecoder(model, catalog)
    logits = model.start(f"<prompt>{utterance}<answer>")
    return decoder.decode(logits, utterance), model


@pytest.mark.parametrize(
    ("answer", "utterance"),
    [
        ("play_music()", "我想听音乐"),
        ("music_exit()", "把歌关了"),
        ("no_intent()", "讲个笑话"),
        ('weather_search(city="杭州")', "杭州天气怎么样"),
        ('weather_search(city="杭州", date="明天")', "帮我查杭州明天的天气"),
        ('weather_search(date="明天", city="杭州")', "明天杭州冷不冷"),
        ('ac_set_mode(mode="制冷")', "空调开制冷"),
        ('set_alarm(time="明天早上六点半")', "明天早上六点半叫我"),
        # a required value the user did not say: the empty call, for the router to ask for it
        ("set_alarm()", "帮我定个闹钟"),
        ("ac_set_mode()", "换个空调模式"),
        # bare numbers, negative ones too (their minus may be merged into the "=" token)
        ("volume(step=20)", "音量调高20"),
        ("volume(step=-20)", "音量调低20"),
        ('match_query(name=["恒大", "鲁能"])', "恒大对鲁能谁赢了"),
        # a list parameter also takes one plain value, and a list may be followed by another parameter
        ('match_query(name="恒大")', "恒大昨天赢了吗"),
        ('listen(singer="周杰伦", song="晴天")', "播放周杰伦的晴天"),
        ('listen(singer=["周杰伦", "蔡依林"], song="布拉格广场")', "周杰伦和蔡依林的布拉格广场"),
        ('listen(song="晴天", singer="周杰伦")', "晴天，周杰伦唱的"),
        # a word token whose prefixes split into many tokens ("N", "o", "t", …) is still allowed
        ('listen(song="Nothing Fancy")', "add Nothing Fancy now"),
    ],
)
def test_follows_the_model_when_it_is_allowed(catalog, answer, utterance):
    decoded, _ = decode(catalog, answer, utterance)
    assert decoded.text == answer
    assert decoded.intent == answer.split("(")[0]
    assert decoded.confidence > 0.99


class Columns:
    """A row that only answers for the token ids read (as llama.cpp's HeadRow)."""

    def __init__(self, row: np.ndarray) -> None:
        self._row = row

    def __getitem__(self, tokens):
        return self._row[tokens]


class ColumnModel(ScriptedModel):
    """The scripted model returning :class:`Columns` rows; ``full_row`` evaluates the last token again."""

    def __init__(self, answer: str, **kwargs) -> None:
        super().__init__(answer, **kwargs)
        self.full_rows = 0

    def feed(self, tokens: Sequence[int], *, all_logits: bool = False):
        return [Columns(row) for row in super().feed(tokens, all_logits=all_logits)]

    def prefill(self, tokens: list[int]):
        row, reused = super().prefill(tokens)
        return Columns(row), reused

    def full_row(self) -> np.ndarray:
        self.full_rows += 1
        last = self.tokens.pop()
        return ScriptedModel.feed(self, [last])[0]


@pytest.mark.parametrize(
    ("answer", "utterance", "full_rows"),
    [
        ("play_music()", "我想听音乐", 0),
        ('weather_search(date="明天", city="杭州")', "明天杭州冷不冷", 0),
        ('listen(singer=["周杰伦", "蔡依林"], song="布拉格广场")', "周杰伦和蔡依林的布拉格广场", 0),
        ("volume(step=-20)", "音量调低20", 0),  # numbers: the vocabulary's number pieces, no whole row
        ('normalise_date(date="明天")', "明儿", 2),  # a free value reads the model's best tokens: whole rows
    ],
)
def test_rows_that_compute_only_the_columns_read_decode_the_same(catalog, answer, utterance, full_rows):
    model = ColumnModel(answer)
    drafted = DraftedModel(model)
    decoder = ConstrainedDecoder(drafted, catalog)
    logits, _ = drafted.prefill(model.tokenize(f"<prompt>{utterance}<answer>"))
    decoded = decoder.decode(logits, utterance)
    reference, _ = decode(catalog, answer, utterance)
    assert decoded.text == reference.text == answer
    assert decoded.confidence == pytest.approx(reference.confidence)
    assert model.full_rows == full_rows


def test_greedy_decoding_completes_rows_of_columns():
    model = ColumnModel("play_music()")
    text, _ = greedy_decode(model, model.start("<prompt>x<answer>"), 20)
    assert text == "play_music()" and model.full_rows == len(model.tokenize("play_music()")) + 1


def test_a_finished_call_is_not_evaluated_further(catalog):
    decoded, model = decode(catalog, "play_music()", "我想听音乐")
    # One decision after the prompt (play_music vs the others); the forced rest is never fed.
    assert model.fed_batches == []
    assert decoded.sampled >= 1 and decoded.forced >= 1


def test_unregistered_function_cannot_be_produced(catalog):
    decoded, _ = decode(catalog, 'shutdown(now="yes")', "关机")
    assert decoded.intent in {
        "play_music",
        "music_exit",
        "weather_search",
        "ac_set_mode",
        "set_alarm",
        "normalise_date",
        "match_query",
        "no_intent",
    }


def test_copied_value_stays_inside_the_utterance(catalog):
    decoded, _ = decode(catalog, 'weather_search(city="上海")', "杭州天气怎么样")
    value = decoded.text.split('"')[1]
    assert value and value in "杭州天气怎么样"


def _cuts(text: str, offsets: frozenset[int]) -> set[int]:
    """Byte offsets as character indices (the tests' texts mix scripts)."""
    return {len(text.encode()[:o].decode()) for o in offsets}


@pytest.mark.parametrize(
    ("text", "starts", "ends"),
    [
        ("play breathtaking music", {0, 5, 18}, {4, 17, 23}),
        ("杭州天气", {0, 1, 2, 3}, {1, 2, 3, 4}),
        ("PlayStation官方杂志", {0, 11, 12, 13, 14}, {11, 12, 13, 14, 15}),
        ("at 10:24!", {0, 3, 5, 6, 8}, {2, 5, 6, 8, 9}),
        ("Don Airey's song", {0, 4, 9, 10, 12}, {3, 9, 10, 11, 16}),
        ("  ", set(), set()),
    ],
)
def test_word_boundaries(text, starts, ends):
    found_starts, found_ends = word_boundaries(text)
    assert (_cuts(text, found_starts), _cuts(text, found_ends)) == (starts, ends)


def test_can_copy():
    assert can_copy("play breathtaking music", "breathtaking music")
    assert not can_copy("play breathtaking music", "breath")
    assert can_copy("breath of breathtaking", "breath")  # one whole-word occurrence is enough
    assert can_copy("帮我查杭州天气", "杭州") and not can_copy("帮我查杭州天气", "上海")
    assert not can_copy("add Nothing Fancy", "Nothing ")


def test_copied_value_does_not_stop_inside_a_word(catalog):
    # The model would stop after "breath"; the value may not end inside the word, so the
    # next best continuation (the runner-up's) finishes it.
    utterance = "play breathtaking music"
    decoded, _ = decode(catalog, 'listen(song="breath")', utterance, runner_up='listen(song="breathtaking")')
    assert decoded.text == 'listen(song="breathtaking")'


def test_copied_value_does_not_start_inside_a_word(catalog):
    decoded, _ = decode(catalog, 'listen(song="taking")', "play breathtaking music", runner_up='listen(song="music")')
    assert decoded.text == 'listen(song="music")'


def test_copied_value_does_not_end_on_a_space(catalog):
    decoded, _ = decode(catalog, 'listen(song="Nothing ")', "add Nothing Fancy now", runner_up='listen(song="Nothing")')
    value = parse_calls(decoded.text)[0].kwargs["song"]
    assert value == value.strip() and value in "add Nothing Fancy now"


class SplitModel(ScriptedModel):
    """A scripted model that, after ``at`` has been said, gives exactly the probabilities ``split``
    over the named pieces (and next to nothing to any other token)."""

    def __init__(self, answer: str, at: str, split: dict[str, float]) -> None:
        super().__init__(answer)
        self.at, self.split = at, split
        for piece in split:
            self._id(piece.encode())

    def _logits(self, upto: int) -> np.ndarray:
        said = b"".join(self.pieces[t] for t in self.tokens[self.prompt_len : upto]).decode()
        if said != self.at:
            return super()._logits(upto)
        row = np.full(len(self.pieces), -30.0, dtype=np.float32)
        for piece, p in self.split.items():
            row[self.index[piece.encode()]] = np.log(p)
        return row


@pytest.mark.parametrize(
    ("split", "expected"),
    [
        # stopping is likelier (0.3 + 0.3 over two closers) than going on, though "明天" alone tops either closer
        ({'")': 0.3, '",': 0.3, "明天": 0.4}, 'weather_search(city="杭州")'),
        # going on is likelier (0.3 + 0.3 over two pieces) than stopping, though '")' alone tops either piece
        ({'")': 0.4, "明": 0.3, "明天": 0.3}, 'weather_search(city="杭州明天")'),
    ],
)
def test_a_copied_value_stops_where_stopping_is_likelier_than_going_on(catalog, split, expected):
    model = SplitModel('weather_search(city="杭州明天")', 'weather_search(city="杭州', split)
    decoded = ConstrainedDecoder(model, catalog).decode(model.start("<p>杭州明天<a>"), "杭州明天")
    assert decoded.text == expected


def test_copied_value_never_breaks_the_quoting(catalog):
    utterance = '播放"晴天"'
    decoded, _ = decode(catalog, 'listen(song="\\"晴天\\"")', utterance)
    value = parse_calls(decoded.text)[0].kwargs["song"]
    assert '"' not in value and value in utterance


def test_free_value_may_differ_from_the_utterance(catalog):
    decoded, _ = decode(catalog, 'normalise_date(date="明天")', "明儿")
    assert decoded.text == 'normalise_date(date="明天")'


def test_choice_outside_the_declared_values_is_impossible(catalog):
    decoded, _ = decode(catalog, 'ac_set_mode(mode="送风")', "空调送风")
    assert decoded.text in {f'ac_set_mode(mode="{m}")' for m in ("制冷", "制热", "除湿")}


def test_confidence_is_renormalised_over_the_intents(catalog):
    decoded, _ = decode(catalog, "play_music()", "放歌", runner_up="music_exit()")
    # play_music and music_exit differ at their first token: scores 12 vs 6 over the branch tokens.
    assert 0.9 < decoded.confidence < 1.0
    assert decoded.intent_scores["play_music"] == pytest.approx(decoded.confidence)
    assert sum(decoded.intent_scores.values()) == pytest.approx(1.0, abs=1e-6)


def test_drafting_verifies_copied_values_in_one_batch(catalog):
    decoded, model = decode(catalog, 'set_alarm(time="明天早上六点半")', "明天早上六点半叫我")
    assert decoded.text == 'set_alarm(time="明天早上六点半")'
    value_tokens = len(model.tokenize("明天早上六点半"))
    assert decoded.evaluations < value_tokens  # the draft is checked in one feed, not one per token


def test_rejected_draft_is_removed_from_the_cache(catalog):
    # The utterance continues "明天早上…", the model stops the value after "明天".
    decoded, model = decode(catalog, 'weather_search(date="明天")', "明天早上冷不冷")
    assert decoded.text == 'weather_search(date="明天")'
    said = b"".join(model.pieces[t] for t in model.tokens[model.prompt_len :]).decode()
    assert decoded.text.startswith(said)  # nothing of the rejected draft is left behind


def test_greedy_decode_stops_at_the_end_token():
    model = ScriptedModel("play_music()")
    text, count = greedy_decode(model, model.start("<p>"), max_tokens=32)
    assert text == "play_music()"
    assert count == len(model.tokenize("play_music()")) + 1


def test_intent_confidence_excludes_the_parameter_choice(catalog):
    # weather_search is certain; which parameter comes first is not (city 12 vs date 6).
    decoded, _ = decode(catalog, 'weather_search(city="杭州")', "杭州明天天气", runner_up='weather_search(date="明天")')
    assert decoded.intent == "weather_search"
    assert decoded.confidence > 0.999


def test_max_tokens_counts_tokens_not_characters(catalog):
    city, date = "杭州" * 14, "明天" * 10
    answer = f'weather_search(city="{city}", date="{date}")'
    utterance = city + date
    model = ScriptedModel(answer)
    tokens = len(model.tokenize(answer))
    assert tokens < len(answer) - 10  # 杭州 and 明天 are one token each
    decoded = ConstrainedDecoder(model, catalog).decode(model.start(f"<prompt>{utterance}<answer>"), utterance, max_tokens=tokens)
    assert decoded.text == answer


# ---------------------------------------------------------------- drafted calls


def drafted_decode(catalog, answer: str, utterance: str, draft: Draft):
    model = ScriptedModel(answer)
    drafted = DraftedModel(model)
    decoder = ConstrainedDecoder(drafted, catalog)
    # The scripted vocabulary grows as texts are tokenized: a plain decode first completes it, so
    # that rows kept from the draft's batch are as wide as later ones.
    decoder.decode(drafted.prefill(model.tokenize(f"<prompt>{utterance}<answer>"))[0], utterance)
    tokens, reads = decoder.draft_tokens(draft, utterance)
    logits, _ = drafted.prefill(model.tokenize(f"<prompt>{utterance}<answer>"), draft=tokens, reads=reads)
    before = drafted.evaluations
    decoded = decoder.decode(logits, utterance)
    drafted.settle()
    return decoded, drafted.evaluations - before, model, tokens


@pytest.mark.parametrize(
    ("answer", "utterance"),
    [
        ("play_music()", "我想听音乐"),
        ("no_intent()", "讲个笑话"),
        ('weather_search(city="杭州", date="明天")', "帮我查杭州明天的天气"),
        ('ac_set_mode(mode="制冷")', "空调开制冷"),
        ('set_alarm(time="明天早上六点半")', "明天早上六点半叫我"),
        ("volume(step=-20)", "音量调低20"),
    ],
)
def test_a_right_draft_answers_every_decision_without_evaluating(catalog, answer, utterance):
    call = parse_calls(answer)[0]
    decoded, evaluations, _, _ = drafted_decode(catalog, answer, utterance, Draft(call.name, tuple(call.kwargs.items())))
    assert decoded.text == answer
    assert evaluations == 0


@pytest.mark.parametrize(
    "draft",
    [
        Draft("music_exit"),
        Draft("weather_search", (("city", "北京"),)),  # not in the utterance: drafted up to its opener
        Draft("weather_search", (("date", "明天"), ("city", "杭州"))),  # another order
        Draft("ac_set_mode", (("mode", "送风"),)),  # not a declared choice
        Draft("not_registered"),
    ],
)
def test_a_wrong_draft_leaves_the_answer_and_the_cache_as_without_one(catalog, draft):
    answer, utterance = 'weather_search(city="杭州", date="明天")', "帮我查杭州明天的天气"
    decoded, _, model, _ = drafted_decode(catalog, answer, utterance, draft)
    plain, _ = decode(catalog, answer, utterance)
    assert decoded.text == plain.text == answer
    said = b"".join(model.pieces[t] for t in model.tokens[model.prompt_len :]).decode()
    assert answer.startswith(said)  # nothing of the rejected draft is left behind


def test_a_draft_ends_at_its_last_decision(catalog):
    decoder = ConstrainedDecoder(ScriptedModel("play_music()"), catalog)
    text = lambda tokens: b"".join(decoder.model.piece(t) for t in tokens).decode()  # noqa: E731
    assert decoder.draft_tokens(Draft("play_music"), "放歌") == ([], [])  # decided at its first token: the rest is forced
    # The value is decided token by token and where it ends; which closer follows is decided at its first token.
    tokens, reads = decoder.draft_tokens(Draft("set_alarm", (("time", "六点"),)), "六点叫我")
    assert text(tokens) == 'set_alarm(time="六点'
    # Logits are kept only where a decision reads them: the empty call or a value, each value token.
    expected = ["set_alarm", 'set_alarm(time="', 'set_alarm(time="六点']  # 六点 is one token here
    assert [text(tokens[: i + 1]) for i in reads] == expected
    both, _ = decoder.draft_tokens(Draft("weather_search", (("city", "杭州"), ("date", "明天"))), "杭州明天天气")
    assert text(both) == 'weather_search(city="杭州", date="明天'


def test_draft_tokens_stop_at_what_they_cannot_vouch_for(catalog):
    decoder = ConstrainedDecoder(ScriptedModel("play_music()"), catalog)
    opener, _ = decoder.draft_tokens(Draft("weather_search", (("city", None),)), "查天气")
    assert b"".join(decoder.model.piece(t) for t in opener) == b'weather_search(city="'
    assert decoder.draft_tokens(Draft("weather_search", (("nowhere", "x"),)), "查天气") == ([], [])
    assert decoder.draft_tokens(Draft("match_query", (("name", ["a"]),)), "a") == ([], [])


def test_a_row_the_draft_did_not_keep_is_evaluated_when_asked_for():
    model = ScriptedModel("play_music()")
    drafted = DraftedModel(model)
    prompt = model.tokenize("<prompt>放歌<answer>")
    draft = model.tokenize("play")
    drafted.prefill(prompt, draft=draft, reads=[len(draft) - 1])
    first = drafted.feed(draft[:1])  # its row was not kept: evaluated now, the rest of the draft dropped
    assert drafted.n_tokens == model.n_tokens == len(prompt) + 1
    assert np.array_equal(first[-1], model._logits(len(prompt) + 1))
    assert drafted.evaluations == 2  # the draft (no prefill_draft here), then the row asked for


@pytest.mark.parametrize(
    ("answer", "utterance", "wrong"),
    [
        ('weather_search(city="杭州", date="明天")', "帮我查杭州明天的天气", Draft("music_exit")),
        ('listen(singer="周杰伦", song="晴天")', "播放周杰伦的晴天", Draft("play_music")),
        ('set_alarm(time="明天早上六点半")', "明天早上六点半叫我", Draft("weather_search", (("city", None),))),
        # the right opening, but the draft stops after the first value: the rest is drafted at the next opener
        ('weather_search(city="杭州", date="明天")', "帮我查杭州明天的天气", Draft("weather_search", (("city", "杭州"),))),
        ('listen(singer="周杰伦", song="晴天")', "播放周杰伦的晴天", Draft("listen", (("singer", "周杰伦"),))),
    ],
)
def test_drafting_again_where_the_prompts_draft_stops_holding(catalog, answer, utterance, wrong):
    """The prompt's draft guessed another call: once the model's choice leaves it, the call is
    drafted again among the intents still possible, and the rest is verified in the evaluation
    the next decision needs anyway. The answer is the same; the evaluations fewer."""
    call = parse_calls(answer)[0]
    asked: list[tuple[list[str], bool]] = []

    def redraft(intents, fits):
        right = Draft(call.name, tuple(call.kwargs.items()))
        asked.append((intents, fits(call)))
        return right if call.name in intents and fits(call) else None

    def run(again):
        model = ScriptedModel(answer)
        drafted = DraftedModel(model)
        decoder = ConstrainedDecoder(drafted, catalog)
        decoder.decode(drafted.prefill(model.tokenize(f"<prompt>{utterance}<answer>"))[0], utterance)  # vocabulary
        tokens, reads = decoder.draft_tokens(wrong, utterance)
        logits, _ = drafted.prefill(model.tokenize(f"<prompt>{utterance}<answer>"), draft=tokens, reads=reads)
        before = drafted.evaluations
        decoded = decoder.decode(logits, utterance, redraft=again)
        drafted.settle()
        said = b"".join(model.pieces[t] for t in model.tokens[model.prompt_len :]).decode()
        return decoded, drafted.evaluations - before, said

    alone, alone_evaluations, _ = run(None)
    again, again_evaluations, said = run(redraft)
    assert again.text == alone.text == answer
    assert again.confidence == pytest.approx(alone.confidence)
    assert asked and asked[-1] == ([call.name], True)  # the last asked for the intent chosen, and fit
    assert again_evaluations < alone_evaluations
    assert answer.startswith(said)  # nothing drafted and rejected is left in the cache


def test_extend_evaluates_the_chosen_tokens_and_a_new_draft_in_one_batch():
    model = ScriptedModel('set_alarm(time="六点")')
    drafted = DraftedModel(model)
    prompt = model.tokenize("<prompt>六点叫我<answer>")
    drafted.prefill(prompt)
    chosen, draft = model.tokenize("set_alarm("), model.tokenize('time="六点')
    assert not drafted.holds(chosen)  # no draft ahead
    row = drafted.extend(chosen, draft, [len(draft) - 1])
    assert model.fed_batches[-1] == len(chosen) + len(draft) and drafted.ahead == len(draft)
    assert np.array_equal(row, model._logits(len(prompt) + len(chosen)))
    assert drafted.holds(draft[:2]) and not drafted.holds([END])
    last = drafted.feed(draft)  # every drafted token taken: the kept row, no evaluation
    assert drafted.evaluations == 1 and np.array_equal(last[-1], model._logits(len(prompt) + len(chosen) + len(draft)))
