"""The request log: every routed request and the feedback on it, in SQLite or PostgreSQL.

``RequestLog("sqlite:///intentkit.db")`` (the embedded default) or
``RequestLog("postgresql://user@host/db")`` (several replicas sharing one log). Two tables:

- ``requests``: one row per routed request (``record``), written off the request path: rows go
  into a bounded queue and a writer thread commits them in batches (at most ``batch_size`` rows,
  or what arrived within ``flush_interval_s``). A process killed outright loses at most the rows
  still in the queue: the batch being gathered, ``flush_interval_s`` of traffic. A full queue
  (the database cannot keep up) drops the row and counts it in :attr:`RequestLog.dropped`, so
  routing never waits on the database.
- ``feedback``: votes and corrections (``add_feedback``), committed before the call returns: an
  acknowledged vote is on disk (SQLite: WAL with ``synchronous=FULL``).

``retention_days`` deletes requests older than that which nobody gave feedback on (once at start
and then hourly); a corrected request stays until its correction is no longer wanted.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ..errors import ConfigError, MissingDependencyError

__all__ = ["FeedbackRow", "LoggedRequest", "RequestLog", "Vote"]

log = logging.getLogger("intentkit.feedback")

Vote = Literal["up", "down"]
#: Statuses that put a request in the review queue whatever its confidence.
REVIEW_STATUSES = ("no_intent", "invalid", "low_confidence")


@dataclass(slots=True)
class LoggedRequest:
    """One routed request as the log keeps it. ``runners_up``: the intents the model weighed
    next, ``[(name, probability), …]`` best first. ``suggestion``: a teacher model's call for
    the same utterance where it disagreed (``intentkit data label``)."""

    id: str
    created_at: float
    utterance: str
    status: str
    call_text: str
    model_input: str | None = None
    session_id: str | None = None
    endpoint: str = "/v1/route"
    path: str = "model"
    intent: str | None = None
    confidence: float | None = None
    runners_up: list[tuple[str, float]] = field(default_factory=list)
    latency_ms: float | None = None
    fingerprint: str | None = None
    scope_distance: float | None = None
    out_of_scope: bool | None = None
    source: str = "service"
    suggestion: str | None = None
    suggestion_confidence: float | None = None
    feedback: list[FeedbackRow] = field(default_factory=list)

    @property
    def correction(self) -> str | None:
        """The latest corrected call (``no_intent()`` for out of scope), if any."""
        for row in reversed(self.feedback):
            if row.correct is not None:
                return row.correct
        return None

    def to_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.__slots__ if k != "feedback"}  # type: ignore[attr-defined]
        out["runners_up"] = [list(r) for r in self.runners_up]
        out["feedback"] = [row.to_dict() for row in self.feedback]
        out["correction"] = self.correction
        return out


@dataclass(slots=True)
class FeedbackRow:
    id: int
    request_id: str
    created_at: float
    vote: str | None
    correct: str | None
    note: str | None
    source: str

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__slots__}  # type: ignore[attr-defined]


_FLUSH = object()


class RequestLog:
    """A request log at ``url`` (``sqlite:///path.db``, ``sqlite://`` in memory, or
    ``postgresql://…``); creates its tables. Thread-safe; ``close()`` drains the queue."""

    def __init__(
        self,
        url: str,
        *,
        batch_size: int = 64,
        flush_interval_s: float = 0.2,
        queue_size: int = 10_000,
        retention_days: float | None = None,
    ) -> None:
        try:
            import sqlalchemy as sa
        except ImportError:
            raise MissingDependencyError("sqlalchemy") from None
        if batch_size < 1 or flush_interval_s <= 0 or queue_size < 1:
            raise ConfigError("batch_size and queue_size must be at least 1, flush_interval_s above 0")
        if retention_days is not None and retention_days <= 0:
            raise ConfigError(f"retention_days must be above 0, got {retention_days}")
        self.url = url
        self.batch_size, self.flush_interval_s, self.retention_days = batch_size, flush_interval_s, retention_days
        self.engine = _engine(url)
        self.dropped = 0
        self.written = 0
        self._accepted = 0
        self._failed = 0
        self._count_lock = threading.Lock()
        self._sa = sa
        self._tables = _tables(sa)
        self._tables.metadata.create_all(self.engine)
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self._closed = False
        self._last_purge = 0.0
        self._writer = threading.Thread(target=self._write_loop, name="intentkit-request-log", daemon=True)
        self._writer.start()

    # -- requests ---------------------------------------------------------------------------

    @staticmethod
    def new_id() -> str:
        return uuid.uuid4().hex

    def record(self, request: LoggedRequest) -> bool:
        """Queue ``request`` for the writer; ``False`` (and counted in :attr:`dropped`) where the
        queue is full or the log closed."""
        if self._closed:
            self.dropped += 1
            return False
        try:
            with self._count_lock:
                self._queue.put_nowait(request)
                self._accepted += 1
        except queue.Full:
            self.dropped += 1
            if self.dropped in (1, 10, 100) or self.dropped % 1000 == 0:
                log.warning("request log queue full: %d request rows dropped so far", self.dropped)
            return False
        return True

    def record_now(self, requests: Sequence[LoggedRequest]) -> None:
        """Write ``requests`` at once, on this thread (imports, teacher labelling)."""
        with self.engine.begin() as connection:
            self._insert(connection, list(requests))

    @property
    def pending(self) -> int:
        """Rows queued or being gathered into a batch, not yet committed."""
        return self._accepted - self.written - self._failed

    def flush(self, timeout: float | None = 10.0) -> None:
        """Wait until every row queued before this call is committed."""
        if self._closed or not self._writer.is_alive():
            return
        done = threading.Event()
        self._queue.put((_FLUSH, done))
        done.wait(timeout)

    def close(self) -> None:
        """Commit what is queued, stop the writer, release the database."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._writer.join()
        self.engine.dispose()

    def __enter__(self) -> RequestLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def get(self, request_id: str) -> LoggedRequest | None:
        """The request and its feedback; looks in the queue's rows too (flushing them first)."""
        found = self._select(self._tables.requests.c.id == request_id)
        if not found and self.pending:  # it may be in the batch the writer is gathering
            self.flush()
            found = self._select(self._tables.requests.c.id == request_id)
        return found[0] if found else None

    def requests(self, *, since: float | None = None, limit: int | None = None) -> list[LoggedRequest]:
        """Logged requests, newest first."""
        t = self._tables.requests
        self._settle()
        return self._select(t.c.created_at >= since if since is not None else None, limit=limit)

    def count(self) -> int:
        with self.engine.connect() as connection:
            return int(connection.execute(self._sa.select(self._sa.func.count()).select_from(self._tables.requests)).scalar_one())

    # -- feedback ---------------------------------------------------------------------------

    def add_feedback(
        self,
        request_id: str,
        *,
        vote: Vote | None = None,
        correct: str | None = None,
        note: str | None = None,
        source: str = "api",
    ) -> FeedbackRow:
        """Store a vote and/or a correction (already validated by the caller) and commit it
        before returning. Raises ``KeyError`` for an unknown request."""
        if vote is None and correct is None and not note:
            raise ValueError("feedback needs a vote, a correction or a note")
        if self.get(request_id) is None:
            raise KeyError(request_id)
        f = self._tables.feedback
        now = time.time()
        with self.engine.begin() as connection:
            row_id = connection.execute(
                f.insert().values(request_id=request_id, created_at=now, vote=vote, correct=correct, note=note, source=source)
            ).inserted_primary_key[0]
        return FeedbackRow(int(row_id), request_id, now, vote, correct, note, source)

    def review_queue(
        self, *, threshold: float = 0.6, limit: int = 50, offset: int = 0, reviewed: bool = False
    ) -> list[LoggedRequest]:
        """Requests to look at, newest first: answered below ``threshold`` confidence,
        ``no_intent``, ``invalid`` or low confidence, voted down, or disputed by a teacher; without
        ``reviewed``, only those nobody has corrected or confirmed yet."""
        sa, t, f = self._sa, self._tables.requests, self._tables.feedback
        voted_down = sa.exists().where(f.c.request_id == t.c.id, f.c.vote == "down")
        corrected = sa.exists().where(f.c.request_id == t.c.id, f.c.correct.is_not(None))
        wanted = sa.or_(
            t.c.status.in_(REVIEW_STATUSES),
            sa.and_(t.c.confidence.is_not(None), t.c.confidence < threshold),
            voted_down,
            t.c.suggestion.is_not(None),
        )
        condition = wanted if reviewed else sa.and_(wanted, sa.not_(corrected))
        self._settle()
        return self._select(condition, limit=limit, offset=offset)

    def labelled(self, *, since: float | None = None) -> list[tuple[LoggedRequest, str]]:
        """``(request, call_text)`` for every request someone labelled: its latest correction, or
        the answer itself where it was voted up and never corrected; ``since`` bounds the time of
        that feedback. Oldest first."""
        sa, t, f = self._sa, self._tables.requests, self._tables.feedback
        condition = sa.exists().where(
            f.c.request_id == t.c.id,
            sa.or_(f.c.correct.is_not(None), f.c.vote == "up"),
            *([f.c.created_at >= since] if since is not None else []),
        )
        out = []
        self._settle()
        for request in reversed(self._select(condition)):
            label = request.correction
            if label is None and any(row.vote == "up" for row in request.feedback) and request.status == "ok":
                label = request.call_text
            if label is not None:
                out.append((request, label))
        return out

    def stats(self) -> dict[str, int]:
        """Counts for the review page's header."""
        sa, t, f = self._sa, self._tables.requests, self._tables.feedback
        with self.engine.connect() as connection:
            requests = connection.execute(sa.select(sa.func.count()).select_from(t)).scalar_one()
            votes = dict(connection.execute(sa.select(f.c.vote, sa.func.count()).group_by(f.c.vote)).all())
            corrected = connection.execute(
                sa.select(sa.func.count(sa.distinct(f.c.request_id))).where(f.c.correct.is_not(None))
            ).scalar_one()
        return {
            "requests": int(requests),
            "up": int(votes.get("up", 0)),
            "down": int(votes.get("down", 0)),
            "corrected": int(corrected),
            "dropped": self.dropped,
        }

    def purge(self, older_than_days: float) -> int:
        """Delete requests older than that without feedback; returns how many went."""
        sa, t, f = self._sa, self._tables.requests, self._tables.feedback
        cutoff = time.time() - older_than_days * 86400
        with self.engine.begin() as connection:
            result = connection.execute(
                t.delete().where(t.c.created_at < cutoff, sa.not_(sa.exists().where(f.c.request_id == t.c.id)))
            )
        return int(result.rowcount or 0)

    # -- internals --------------------------------------------------------------------------

    def _settle(self) -> None:
        """Readers see what was recorded before they asked: commit the queue first."""
        if self.pending:
            self.flush()

    def _select(self, condition: Any, *, limit: int | None = None, offset: int = 0) -> list[LoggedRequest]:
        sa, t, f = self._sa, self._tables.requests, self._tables.feedback
        query = sa.select(t).order_by(t.c.created_at.desc(), t.c.id)
        if condition is not None:
            query = query.where(condition)
        if limit is not None:
            query = query.limit(limit).offset(offset)
        with self.engine.connect() as connection:
            rows = [_request(row._mapping) for row in connection.execute(query)]
            by_id = {r.id: r for r in rows}
            for chunk in _chunks(list(by_id), 500):
                for row in connection.execute(sa.select(f).where(f.c.request_id.in_(chunk)).order_by(f.c.id)):
                    m = row._mapping
                    by_id[m["request_id"]].feedback.append(
                        FeedbackRow(m["id"], m["request_id"], m["created_at"], m["vote"], m["correct"], m["note"], m["source"])
                    )
        return rows

    def _insert(self, connection: Any, batch: list[LoggedRequest]) -> None:
        if batch:
            connection.execute(self._tables.requests.insert(), [_row(r) for r in batch])

    def _write_loop(self) -> None:
        stop = False
        while not stop:
            item = self._queue.get()
            batch: list[LoggedRequest] = []
            waiters: list[threading.Event] = []
            deadline = time.monotonic() + self.flush_interval_s
            while True:
                if item is None:
                    stop = True
                elif isinstance(item, tuple):
                    waiters.append(item[1])
                else:
                    batch.append(item)
                if stop or len(batch) >= self.batch_size or (waiters and self._queue.empty()):
                    break
                try:
                    item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
            self._commit(batch)
            for waiter in waiters:
                waiter.set()
            if self.retention_days is not None and time.monotonic() - self._last_purge > 3600:
                self._last_purge = time.monotonic()
                try:
                    self.purge(self.retention_days)
                except Exception:  # the writer must outlive a failed purge
                    log.exception("request log: purge failed")
        while True:  # anything put after the stop marker (a race with close) is still written
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, LoggedRequest):
                self._commit([item])
            elif isinstance(item, tuple):
                item[1].set()

    def _commit(self, batch: list[LoggedRequest]) -> None:
        if not batch:
            return
        for attempt in range(3):
            try:
                with self.engine.begin() as connection:
                    self._insert(connection, batch)
                self.written += len(batch)
                return
            except Exception:
                if attempt == 2:
                    self.dropped += len(batch)
                    self._failed += len(batch)
                    log.exception("request log: %d rows could not be written to %s", len(batch), _safe(self.url))
                    return
                time.sleep(0.2 * (attempt + 1))


@dataclass(frozen=True)
class _Tables:
    metadata: Any
    requests: Any
    feedback: Any


def _tables(sa: Any) -> _Tables:
    metadata = sa.MetaData()
    requests = sa.Table(
        "intentkit_requests",
        metadata,
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("created_at", sa.Float, nullable=False, index=True),
        sa.Column("utterance", sa.Text, nullable=False),
        sa.Column("model_input", sa.Text),
        sa.Column("session_id", sa.String(128)),
        sa.Column("endpoint", sa.String(64), nullable=False),
        sa.Column("status", sa.String(32), nullable=False, index=True),
        sa.Column("path", sa.String(32), nullable=False),
        sa.Column("intent", sa.String(128)),
        sa.Column("call_text", sa.Text, nullable=False),
        sa.Column("confidence", sa.Float),
        sa.Column("runners_up", sa.Text),
        sa.Column("latency_ms", sa.Float),
        sa.Column("fingerprint", sa.String(64)),
        sa.Column("scope_distance", sa.Float),
        sa.Column("out_of_scope", sa.Boolean),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("suggestion", sa.Text),
        sa.Column("suggestion_confidence", sa.Float),
    )
    feedback = sa.Table(
        "intentkit_feedback",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("request_id", sa.String(32), nullable=False, index=True),
        sa.Column("created_at", sa.Float, nullable=False, index=True),
        sa.Column("vote", sa.String(8)),
        sa.Column("correct", sa.Text),
        sa.Column("note", sa.Text),
        sa.Column("source", sa.String(32), nullable=False),
    )
    return _Tables(metadata, requests, feedback)


def _row(r: LoggedRequest) -> dict[str, Any]:
    return {
        "id": r.id,
        "created_at": r.created_at,
        "utterance": r.utterance,
        "model_input": r.model_input,
        "session_id": r.session_id,
        "endpoint": r.endpoint,
        "status": r.status,
        "path": r.path,
        "intent": r.intent,
        "call_text": r.call_text,
        "confidence": r.confidence,
        "runners_up": json.dumps([list(x) for x in r.runners_up], ensure_ascii=False),
        "latency_ms": r.latency_ms,
        "fingerprint": r.fingerprint,
        "scope_distance": r.scope_distance,
        "out_of_scope": r.out_of_scope,
        "source": r.source,
        "suggestion": r.suggestion,
        "suggestion_confidence": r.suggestion_confidence,
    }


def _request(m: Any) -> LoggedRequest:
    values = {k: m[k] for k in m.keys() if k != "runners_up"}
    runners = json.loads(m["runners_up"]) if m["runners_up"] else []
    return LoggedRequest(**values, runners_up=[(str(n), float(p)) for n, p in runners])


def _engine(url: str) -> Any:
    import sqlalchemy as sa

    if url.startswith(("postgresql://", "postgres://")):
        try:
            import psycopg  # noqa: F401
        except ImportError:
            raise MissingDependencyError("psycopg") from None
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
        return sa.create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)
    if not url.startswith("sqlite:"):
        raise ConfigError(f"request log URL {_safe(url)!r}: expected sqlite:///path.db or postgresql://…")
    memory = url in ("sqlite://", "sqlite:///:memory:")
    engine = sa.create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": 30},
        **({"poolclass": sa.pool.StaticPool} if memory else {}),
    )

    @sa.event.listens_for(engine, "connect")
    def _pragmas(connection: Any, _record: Any) -> None:
        cursor = connection.cursor()
        if not memory:
            cursor.execute("PRAGMA journal_mode=WAL")  # readers never block the writer thread
        cursor.execute("PRAGMA synchronous=FULL")  # a committed vote survives a crash
        cursor.close()

    return engine


def _safe(url: str) -> str:
    """The URL without its password, for messages."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        credentials, _, host = rest.rpartition("@")
        return f"{scheme}{sep}{credentials.split(':', 1)[0]}:***@{host}"
    return url


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
