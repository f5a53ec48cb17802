"""The request log on SQLite and on a real PostgreSQL server: rows, feedback, the review queue,
labelled rows back out, retention, and what happens when the queue is full."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("sqlalchemy")

from intentkit import Router
from intentkit.errors import ConfigError
from intentkit.feedback import (
    CorrectionError,
    LoggedRequest,
    RequestLog,
    export_corrections,
    from_result,
    validate_correction,
)
from intentkit.testing import FakeBackend


@pytest.fixture(params=["sqlite", "postgresql"])
def log_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'log.db'}"
        return
    pytest.importorskip("psycopg")
    url = request.getfixturevalue("postgres_url")
    yield url
    import sqlalchemy as sa

    engine = sa.create_engine("postgresql+psycopg://" + url.split("://", 1)[1])
    with engine.begin() as connection:  # each test starts from empty tables
        connection.execute(sa.text("DROP TABLE IF EXISTS intentkit_requests, intentkit_feedback"))
    engine.dispose()


def row(request_id: str, utterance: str, *, status: str = "ok", confidence: float | None = 0.95, at: float | None = None,
        call: str = "play_music()", intent: str | None = "play_music") -> LoggedRequest:  # fmt: skip
    return LoggedRequest(
        id=request_id,
        created_at=at if at is not None else time.time(),
        utterance=utterance,
        status=status,
        call_text=call,
        intent=intent,
        confidence=confidence,
        runners_up=[("music_pause", 0.03)],
    )


def test_rows_are_written_off_the_request_path_and_read_back(log_url: str) -> None:
    with RequestLog(log_url, flush_interval_s=0.05) as log:
        for i in range(150):
            assert log.record(row(f"r{i}", f"第{i}句"))
        log.flush()
        assert log.count() == 150 and log.written == 150 and log.pending == 0
        got = log.get("r7")
        assert got is not None and got.utterance == "第7句" and got.runners_up == [("music_pause", 0.03)]
        assert log.get("nope") is None


def test_close_drains_the_queue(log_url: str) -> None:
    log = RequestLog(log_url, flush_interval_s=5.0, batch_size=1000)
    for i in range(40):
        log.record(row(f"d{i}", "hi"))
    log.close()
    assert not log.record(row("late", "hi")) and log.dropped == 1  # a closed log refuses, counted
    with RequestLog(log_url) as again:
        assert again.count() == 40


def test_feedback_is_committed_and_reaches_the_review_queue_and_the_export(log_url: str) -> None:
    with RequestLog(log_url) as log:
        now = time.time()
        log.record(row("ok1", "我想听音乐", at=now - 5))
        log.record(row("low", "放点啥", confidence=0.3, at=now - 4))
        log.record(row("oos", "讲个笑话", status="no_intent", call="no_intent()", intent=None, at=now - 3))
        log.record(row("bad", "乱说", status="invalid", call="rm -rf /", intent=None, confidence=None, at=now - 2))
        log.record(row("fine", "下一首", call="music_next()", intent="music_next", at=now - 1))
        # feedback on a row still in the queue finds it (the log flushes first)
        log.add_feedback("fine", vote="down", note="wanted the previous one")
        queue = [r.id for r in log.review_queue(threshold=0.6)]
        assert queue == ["fine", "bad", "oos", "low"]  # newest first; ok1 is confident and nobody complained
        log.add_feedback("low", correct="play_music()", source="review")
        log.add_feedback("oos", correct="no_intent()", source="review")
        log.add_feedback("ok1", vote="up")
        assert [r.id for r in log.review_queue()] == ["fine", "bad"]
        assert [r.id for r in log.review_queue(reviewed=True)] == ["fine", "bad", "oos", "low"]
        with pytest.raises(KeyError):
            log.add_feedback("missing", vote="up")
        with pytest.raises(ValueError, match="needs a vote"):
            log.add_feedback("ok1")
        rows = export_corrections(log)
        assert [(r["instruction"], r["output"], r["labelled_by"]) for r in rows] == [
            ("我想听音乐", "play_music()", "vote"),
            ("放点啥", "play_music()", "correction"),
            ("讲个笑话", None, "correction"),
        ]
        assert export_corrections(log, since=time.time() + 60) == []
        stats = log.stats()
        assert stats["requests"] == 5 and stats["up"] == 1 and stats["down"] == 1 and stats["corrected"] == 2


def test_the_latest_correction_wins(log_url: str) -> None:
    with RequestLog(log_url) as log:
        log.record(row("x", "放首歌", confidence=0.2))
        log.add_feedback("x", correct="music_next()")
        log.add_feedback("x", correct="play_music()")
        assert [r["output"] for r in export_corrections(log)] == ["play_music()"]


def test_retention_deletes_old_rows_nobody_gave_feedback_on(log_url: str) -> None:
    with RequestLog(log_url) as log:
        old = time.time() - 10 * 86400
        log.record(row("old", "很久以前", at=old))
        log.record(row("old-corrected", "很久以前改过", at=old))
        log.record(row("new", "刚才"))
        log.add_feedback("old-corrected", correct="play_music()")
        assert log.purge(7) == 1
        assert {r.id for r in log.requests()} == {"old-corrected", "new"}


def test_a_full_queue_drops_and_counts_instead_of_blocking(tmp_path: Path) -> None:
    with RequestLog(f"sqlite:///{tmp_path / 'q.db'}", queue_size=1, flush_interval_s=5.0, batch_size=10_000) as log:
        accepted = sum(log.record(row(f"q{i}", "hi")) for i in range(500))
        assert accepted + log.dropped == 500 and log.dropped > 0


@pytest.mark.parametrize(
    ("url", "message"),
    [("mysql://x", "expected sqlite"), ("sqlite:///x.db?", None)],
)
def test_log_urls(url: str, message: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    if message:
        with pytest.raises(ConfigError, match=message):
            RequestLog(url)
    else:
        RequestLog(url).close()


def test_password_is_kept_out_of_messages() -> None:
    with pytest.raises(ConfigError) as caught:
        RequestLog("mysql://me:hunter2@db/x")
    assert "hunter2" not in str(caught.value)


def make_router() -> Router:
    script = {"查下杭州天气": 'weather_search(city="杭州")'}
    router = Router(FakeBackend(lambda r: script.get(r.text, "no_intent()"), confidence=0.9), fast_path=False)

    @router.intent
    def weather_search(city: str, days: int = 1) -> str:
        return city

    @router.intent
    def play_music() -> None:
        return None

    return router


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('weather_search(city="杭州")', 'weather_search(city="杭州", days=1)'),
        ("weather_search('杭州', days=3)", 'weather_search(city="杭州", days=3)'),
        ("no_intent()", "no_intent()"),
        ('play_music(); weather_search(city="北京")', 'play_music(); weather_search(city="北京", days=1)'),
    ],
)
def test_corrections_are_validated_and_canonical(text: str, expected: str) -> None:
    assert validate_correction(make_router().registry, text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("weather_search(city=", "does not parse"),
        ("launch_rocket()", "launch_rocket"),
        ("weather_search()", "city"),
        ('weather_search(city="杭州", days="many")', "days"),
        ("no_intent(1)", "takes no arguments"),
        ("no_intent(); play_music()", "cannot stand beside"),
        ("", "no call"),
    ],
)
def test_bad_corrections_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(CorrectionError, match=message):
        validate_correction(make_router().registry, text)


def test_a_routed_result_becomes_a_log_row() -> None:
    router = make_router()
    result = router.handle("查下杭州天气", dispatch=False)
    logged = from_result(result, "abc", endpoint="/v1/route", session_id="s1", latency_ms=1.5, fingerprint="f")
    assert logged.call_text == 'weather_search(city="杭州", days=1)' and logged.intent == "weather_search"
    assert logged.status == "ok" and logged.confidence == pytest.approx(0.9) and logged.session_id == "s1"
    nothing = from_result(router.handle("不知道", dispatch=False), "def", endpoint="/v1/route")
    assert nothing.call_text == "no_intent()" and nothing.intent is None
