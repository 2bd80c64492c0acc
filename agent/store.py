"""Probe history in SQLite: ``<data_dir>/history.db``.

One row per probe result (table ``results``: target, kind, started_at, duration, outcome, reason,
detail, phases JSON, facts JSON) with an index on ``(target, started_at)``.  The database runs in
WAL mode with ``synchronous=NORMAL`` (https://www.sqlite.org/wal.html: readers — the status page,
the SLA report, another process — do not block the writer; a power cut may lose the last
transactions but never corrupts the file).

The agent writes through :class:`Store`: results are queued in memory by the result listener
(no I/O on the probe path) and written in batches by a background task through
:func:`asyncio.to_thread`; retention pruning runs periodically the same way.  Reads used by the
status page, ``/api/results`` and the SLA report are :class:`HistoryDB` methods (synchronous,
thread-safe) or their ``async`` wrappers on :class:`Store`.

A file that is not a SQLite database, or is locked by another process, raises :class:`StoreError`
with a one-line message; ``hcc-sentinel run`` prints it and exits with code 3 instead of
crash-looping.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Iterable

from probes.base import ProbeResult, REASONS

log = logging.getLogger("hcc_sentinel.store")

SCHEMA_VERSION = 1
DB_NAME = "history.db"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    id          INTEGER PRIMARY KEY,
    target      TEXT    NOT NULL,
    kind        TEXT    NOT NULL,
    started_at  REAL    NOT NULL,   -- Unix seconds (UTC)
    duration    REAL    NOT NULL,   -- seconds
    outcome     TEXT    NOT NULL,   -- ok | slow | error | hang
    reason      TEXT    NOT NULL,   -- probes.base.REASONS code
    detail      TEXT    NOT NULL,
    phases      TEXT    NOT NULL,   -- JSON object: phase -> seconds
    facts       TEXT    NOT NULL    -- JSON object
);
CREATE INDEX IF NOT EXISTS results_target_time ON results (target, started_at);
CREATE INDEX IF NOT EXISTS results_time ON results (started_at);
"""


class StoreError(Exception):
    """The history database cannot be used (not a database, locked, unwritable).

    ``str(err)`` is one line naming the file, the cause and what to do.
    """


def _describe(path: Path, exc: BaseException) -> str:
    text = str(exc)
    low = text.lower()
    if "not a database" in low or "malformed" in low or "corrupt" in low:
        return (f"{path}: not a usable SQLite database ({text}); move the file aside "
                f"(history starts again) or restore it from a backup")
    if "locked" in low or "busy" in low:
        return f"{path}: database is locked by another process ({text}); is another agent running on this data_dir?"
    if "readonly" in low or "read-only" in low or "permission" in low or "unable to open" in low:
        return f"{path}: cannot open the database for writing ({text}); check the data_dir and its permissions"
    return f"{path}: database error: {text}"


def row_to_result(row: tuple[Any, ...]) -> ProbeResult:
    """A ``results`` row (target, kind, started_at, duration, outcome, reason, detail, phases,
    facts) as a :class:`ProbeResult` (an unknown reason code from a newer version -> ``internal``)."""
    target, kind, started_at, duration, outcome, reason, detail, phases, facts = row
    if reason not in REASONS:
        reason, outcome = "internal", "error"
    return ProbeResult(target=target, kind=kind, outcome=outcome, reason=reason, detail=detail,
                       started_at=started_at, duration_seconds=duration,
                       phases=json.loads(phases or "{}"), facts=json.loads(facts or "{}"))


_COLS = "target, kind, started_at, duration, outcome, reason, detail, phases, facts"


class HistoryDB:
    """Synchronous, thread-safe access to ``history.db``.

    Args:
        path: the database file (created with its directory if missing, unless ``readonly``).
        readonly: open read-only (``mode=ro``), e.g. for the SLA report in another process.
        busy_timeout: seconds to wait for a lock held by another connection.

    Raises:
        StoreError: the file is not a SQLite database, is locked, or cannot be created.
    """

    def __init__(self, path: str | os.PathLike[str], readonly: bool = False, busy_timeout: float = 5.0):
        self.path = Path(path)
        self.readonly = readonly
        self._lock = threading.Lock()
        try:
            if readonly:
                uri = f"file:{self.path}?mode=ro"
                self.conn = sqlite3.connect(uri, uri=True, timeout=busy_timeout, check_same_thread=False)
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self.conn = sqlite3.connect(self.path, timeout=busy_timeout, check_same_thread=False,
                                            isolation_level=None)
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(_describe(self.path, exc)) from None
        try:
            self.conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
            if not readonly:
                mode = self.conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    raise StoreError(f"{self.path}: cannot switch the database to WAL mode (got {mode})")
                self.conn.execute("PRAGMA synchronous=NORMAL")
                version = self.conn.execute("PRAGMA user_version").fetchone()[0]
                if version > SCHEMA_VERSION:
                    raise StoreError(f"{self.path}: written by a newer hcc-sentinel (schema {version}, "
                                     f"this one knows {SCHEMA_VERSION})")
                self.conn.executescript(_SCHEMA)
                self.conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except sqlite3.Error as exc:
            self.conn.close()
            raise StoreError(_describe(self.path, exc)) from None
        except StoreError:
            self.conn.close()
            raise

    def close(self) -> None:
        with self._lock:
            self.conn.close()

    # -- writes ----------------------------------------------------------------------------
    def write(self, results: Iterable[ProbeResult]) -> int:
        """Insert results in one transaction; returns the number of rows.

        Raises:
            sqlite3.Error: on any database error (nothing is written then).
        """
        rows = [(r.target, r.kind, r.started_at, r.duration_seconds, r.outcome.value, r.reason, r.detail,
                 json.dumps(r.phases, ensure_ascii=False, default=str),
                 json.dumps(r.facts, ensure_ascii=False, default=str)) for r in results]
        if not rows:
            return 0
        with self._lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                self.conn.executemany(f"INSERT INTO results ({_COLS}) VALUES (?,?,?,?,?,?,?,?,?)", rows)
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")
        return len(rows)

    def prune(self, before: float, chunk: int = 5000) -> int:
        """Delete rows that started before ``before`` (Unix seconds), ``chunk`` rows per
        transaction so that readers and the writer are never held long. Returns rows deleted."""
        total = 0
        while True:
            with self._lock:
                cur = self.conn.execute(
                    "DELETE FROM results WHERE id IN (SELECT id FROM results WHERE started_at < ? LIMIT ?)",
                    (before, chunk))
                n = cur.rowcount
            total += n
            if n < chunk:
                return total

    # -- reads -----------------------------------------------------------------------------
    def history(self, target: str, since: float, until: float | None = None,
                limit: int | None = None) -> list[ProbeResult]:
        """Results of ``target`` with ``since <= started_at < until`` (Unix seconds), oldest first;
        with ``limit``, the newest ``limit`` of them (still oldest first)."""
        until = time.time() + 1e9 if until is None else until
        sql = f"SELECT {_COLS} FROM results WHERE target = ? AND started_at >= ? AND started_at < ?"
        with self._lock:
            if limit is None:
                rows = self.conn.execute(sql + " ORDER BY started_at", (target, since, until)).fetchall()
            else:
                rows = self.conn.execute(sql + " ORDER BY started_at DESC LIMIT ?",
                                         (target, since, until, int(limit))).fetchall()
                rows.reverse()
        return [row_to_result(r) for r in rows]

    def latest(self) -> dict[str, ProbeResult]:
        """The newest result of every target present in the database."""
        with self._lock:
            rows = self.conn.execute(
                f"SELECT {', '.join('r.' + c.strip() for c in _COLS.split(','))} FROM results r "
                "JOIN (SELECT target, MAX(started_at) AS m FROM results GROUP BY target) x "
                "ON r.target = x.target AND r.started_at = x.m").fetchall()
        return {r.target: r for r in map(row_to_result, rows)}

    def counts(self, since: float, until: float | None = None) -> dict[str, dict[str, int]]:
        """Number of results per target and outcome with ``since <= started_at < until``:
        ``{target: {"ok": n, "slow": n, "error": n, "hang": n}}`` (absent outcomes are 0)."""
        until = time.time() + 1e9 if until is None else until
        with self._lock:
            rows = self.conn.execute(
                "SELECT target, outcome, count(*) FROM results WHERE started_at >= ? AND started_at < ? "
                "GROUP BY target, outcome", (since, until)).fetchall()
        out: dict[str, dict[str, int]] = {}
        for target, outcome, n in rows:
            out.setdefault(target, {"ok": 0, "slow": 0, "error": 0, "hang": 0})[outcome] = n
        return out

    def targets(self) -> list[str]:
        """Target ids present in the database."""
        with self._lock:
            return [r[0] for r in self.conn.execute("SELECT DISTINCT target FROM results ORDER BY target")]

    def count(self) -> int:
        with self._lock:
            return self.conn.execute("SELECT count(*) FROM results").fetchone()[0]


class Store:
    """The agent's history store: a result listener that batches writes off the event loop.

    Args:
        path: ``<data_dir>/history.db``.
        retention: seconds of history kept (``agent.retention``).
        flush_interval: seconds between batch writes.
        prune_interval: seconds between retention runs (the first runs right after start).
        max_pending: results kept in memory while the database cannot be written; the oldest are
            dropped beyond this (and counted in ``dropped``).
    """

    def __init__(self, path: str | os.PathLike[str], retention: float, flush_interval: float = 1.0,
                 prune_interval: float = 3600.0, max_pending: int = 100_000, busy_timeout: float = 5.0):
        self.path = Path(path)
        self.retention = retention
        self.flush_interval = flush_interval
        self.prune_interval = prune_interval
        self.max_pending = max_pending
        self.busy_timeout = busy_timeout
        self.db: HistoryDB | None = None
        self._pending: list[ProbeResult] = []
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._writes: set[asyncio.Task[None]] = set()  # batch writes in flight (see _flush)
        self.stats: dict[str, float] = {"rows_written": 0, "write_errors": 0, "rows_pruned": 0,
                                        "dropped": 0, "pending": 0}
        self._last_error: str | None = None

    async def open(self) -> None:
        """Open (or create) the database and start the writer and pruning tasks.

        Raises:
            StoreError: see :class:`HistoryDB`.
        """
        self.db = await asyncio.to_thread(HistoryDB, self.path, False, self.busy_timeout)
        self._tasks = [asyncio.create_task(self._writer(), name="store-writer"),
                       asyncio.create_task(self._pruner(), name="store-pruner")]

    async def close(self) -> None:
        """Write what is pending, stop the tasks, close the database."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except asyncio.CancelledError:
                pass
        self._tasks = []
        if self._writes:  # a batch the cancelled writer (or a reader) was writing: let it finish
            await asyncio.gather(*self._writes, return_exceptions=True)
        if self.db is not None:
            await self._flush()
            await asyncio.to_thread(self.db.close)
            self.db = None

    async def observe(self, result: ProbeResult) -> None:
        """Result listener: queue the result (no I/O here)."""
        self._pending.append(result)
        if len(self._pending) > self.max_pending:
            drop = len(self._pending) - self.max_pending
            del self._pending[:drop]
            self.stats["dropped"] += drop
        self.stats["pending"] = len(self._pending)
        if len(self._pending) >= 500:
            self._wake.set()

    async def _flush(self) -> None:
        """Write the queued results as one batch.

        The write runs as its own task, shielded from the caller's cancellation: once the batch
        has left ``_pending`` it must reach the database (or come back to ``_pending`` on an
        error) even when the caller — the writer task stopped by :meth:`close`, or an HTTP
        reader — is cancelled.  Cancelling ``asyncio.to_thread`` directly would drop a job the
        thread pool has not started yet, and the batch with it (seen on a loaded machine as an
        empty history after a clean stop).  :meth:`close` waits for writes in flight.
        """
        if not self._pending or self.db is None:
            return
        batch, self._pending = self._pending, []
        task = asyncio.create_task(self._write_batch(self.db, batch), name="store-batch-write")
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)
        await asyncio.shield(task)

    async def _write_batch(self, db: HistoryDB, batch: list[ProbeResult]) -> None:
        try:
            n = await asyncio.to_thread(db.write, batch)
        except sqlite3.Error as exc:
            self._pending = batch + self._pending  # keep, retry later
            self.stats["write_errors"] += 1
            message = _describe(self.path, exc)
            if message != self._last_error:  # one line per distinct problem, not per batch
                log.error("history not written, will retry: %s", message)
                self._last_error = message
        else:
            self.stats["rows_written"] += n
            if self._last_error is not None:
                log.info("history database writable again (%s)", self.path)
                self._last_error = None
        self.stats["pending"] = len(self._pending)

    async def _writer(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self.flush_interval)
            except TimeoutError:
                pass
            self._wake.clear()
            await self._flush()

    async def prune_now(self) -> int:
        """Delete rows older than the retention; returns rows deleted."""
        if self.db is None:
            return 0
        n = await asyncio.to_thread(self.db.prune, time.time() - self.retention)
        self.stats["rows_pruned"] += n
        if n:
            log.info("retention: removed %d result(s) older than %.0f day(s)", n, self.retention / 86400)
        return n

    async def _pruner(self) -> None:
        while True:
            try:
                await self.prune_now()
            except sqlite3.Error as exc:
                log.error("retention pruning failed: %s", _describe(self.path, exc))
            await asyncio.sleep(self.prune_interval)

    # -- async reads -----------------------------------------------------------------------
    def _need_db(self) -> HistoryDB:
        if self.db is None:
            raise StoreError(f"{self.path}: store is not open")
        return self.db

    async def history(self, target: str, since: float, until: float | None = None,
                      limit: int | None = None) -> list[ProbeResult]:
        """See :meth:`HistoryDB.history`; includes results not yet written."""
        await self._flush()
        return await asyncio.to_thread(self._need_db().history, target, since, until, limit)

    async def latest(self) -> dict[str, ProbeResult]:
        """See :meth:`HistoryDB.latest`."""
        await self._flush()
        return await asyncio.to_thread(self._need_db().latest)

    async def counts(self, since: float, until: float | None = None) -> dict[str, dict[str, int]]:
        """See :meth:`HistoryDB.counts`."""
        await self._flush()
        return await asyncio.to_thread(self._need_db().counts, since, until)
