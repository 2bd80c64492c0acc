"""SQLite history: read API, retention, batching off the loop, corrupt/locked files."""

from __future__ import annotations

import asyncio
import sqlite3
import time

import pytest

from agent.store import HistoryDB, Store, StoreError
from probes.base import Outcome, ProbeResult


def result(target: str, started: float, outcome: str = "ok", reason: str | None = None,
           facts: dict | None = None) -> ProbeResult:
    reason = reason or {"ok": "ok", "slow": "slow", "error": "http_status", "hang": "timeout_first_byte"}[outcome]
    return ProbeResult(target=target, kind="http", outcome=Outcome(outcome), reason=reason,
                       detail=f"{outcome} — Hệ thống", started_at=started, duration_seconds=0.25,
                       phases={"connect": 0.01, "processing": 0.2}, facts=facts or {"http_status_code": 200})


def test_history_latest_counts(tmp_path):
    db = HistoryDB(tmp_path / "h" / "history.db")
    now = time.time()
    db.write([result("a", now - 30, "ok"), result("a", now - 20, "error"), result("a", now - 10, "hang"),
              result("b", now - 15, "slow", facts={"tên": "Phường Biên Hòa", "n": [1, 2]})])
    hist = db.history("a", now - 25)
    assert [r.outcome.value for r in hist] == ["error", "hang"]
    assert hist[0].phases == {"connect": 0.01, "processing": 0.2} and hist[0].detail == "error — Hệ thống"
    assert [r.outcome.value for r in db.history("a", 0, limit=1)] == ["hang"]
    assert db.history("a", 0, until=now - 25)[0].outcome is Outcome.OK
    latest = db.latest()
    assert latest["a"].outcome is Outcome.HANG and latest["b"].facts == {"tên": "Phường Biên Hòa", "n": [1, 2]}
    assert db.counts(now - 60) == {"a": {"ok": 1, "slow": 0, "error": 1, "hang": 1},
                                   "b": {"ok": 0, "slow": 1, "error": 0, "hang": 0}}
    assert db.targets() == ["a", "b"]
    mode = db.conn.execute("PRAGMA journal_mode").fetchone()[0]
    sync = db.conn.execute("PRAGMA synchronous").fetchone()[0]
    assert (mode, sync) == ("wal", 1)  # WAL, NORMAL
    indexes = {r[1] for r in db.conn.execute("PRAGMA index_list(results)")}
    assert "results_target_time" in indexes
    db.close()
    ro = HistoryDB(tmp_path / "h" / "history.db", readonly=True)  # e.g. the SLA report
    assert ro.count() == 4
    ro.close()


async def test_store_batches_prunes_and_reads(tmp_path):
    store = Store(tmp_path / "history.db", retention=3600, flush_interval=0.1, prune_interval=0.2)
    await store.open()
    now = time.time()
    old = [result("a", now - 7200 - i) for i in range(20)]
    await asyncio.to_thread(store.db.write, old)
    for i in range(5):
        await store.observe(result("a", now - i))
    assert store.stats["pending"] == 5  # queued, nothing written on the probe path
    await asyncio.sleep(0.6)
    assert store.stats["rows_written"] == 5
    assert store.stats["rows_pruned"] == 20  # older than the 1 h retention
    assert len(await store.history("a", 0)) == 5
    assert (await store.counts(now - 60))["a"]["ok"] == 5
    await store.observe(result("b", now))
    assert (await store.latest())["b"].target == "b"  # reads include what is still queued
    await store.close()
    assert HistoryDB(tmp_path / "history.db").count() == 6


async def test_store_keeps_rows_while_db_locked(tmp_path, caplog):
    path = tmp_path / "history.db"
    store = Store(path, retention=86400, flush_interval=0.1, busy_timeout=0.1)
    await store.open()
    other = sqlite3.connect(path, timeout=0.1, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another writer holds the lock
    for i in range(3):
        await store.observe(result("a", time.time()))
        await asyncio.sleep(0.4)
    assert store.stats["write_errors"] >= 2 and store.stats["pending"] == 3
    errors = [r for r in caplog.records if "not written" in r.getMessage()]
    assert len(errors) == 1 and "locked" in errors[0].getMessage()  # one line, not one per retry
    other.execute("ROLLBACK")
    other.close()
    await asyncio.sleep(0.5)
    assert store.stats["pending"] == 0 and store.stats["rows_written"] == 3
    await store.close()


def test_garbage_file_is_a_clear_error(tmp_path):
    path = tmp_path / "history.db"
    path.write_bytes(b"\x00garbage" * 1000)
    with pytest.raises(StoreError) as err:
        HistoryDB(path)
    message = str(err.value)
    assert "\n" not in message and str(path) in message and "not a usable SQLite database" in message


def test_locked_file_is_a_clear_error(tmp_path):
    path = tmp_path / "history.db"
    HistoryDB(path).close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("PRAGMA locking_mode=EXCLUSIVE")
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(StoreError) as err:
            HistoryDB(path, busy_timeout=0.2)
        assert "locked" in str(err.value) and "another agent" in str(err.value)
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_newer_schema_refused(tmp_path):
    path = tmp_path / "history.db"
    con = sqlite3.connect(path)
    con.execute("PRAGMA user_version=99")
    con.close()
    with pytest.raises(StoreError, match="newer hcc-sentinel"):
        HistoryDB(path)


async def test_close_during_a_batch_write_loses_nothing(tmp_path):
    """Stopping while the writer's batch is still queued for the thread pool (a loaded machine:
    the worker thread has not picked the job up yet) must not drop that batch: the job used to
    be cancelled with the writer task, after the batch had left the queue."""
    import concurrent.futures
    import threading

    store = Store(tmp_path / "history.db", retention=86400, flush_interval=3600)
    await store.open()
    loop = asyncio.get_running_loop()
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    loop.set_default_executor(pool)
    gate = threading.Event()
    blocker = loop.run_in_executor(None, gate.wait)  # the only worker is busy: later jobs queue
    try:
        await store.observe(result("a", time.time()))
        store._wake.set()  # the writer takes the batch and queues its write behind the blocker
        for _ in range(100):
            await asyncio.sleep(0)
            if not store._pending:
                break
        assert not store._pending  # the batch is in the writer's hands
        closing = asyncio.create_task(store.close())
        for _ in range(5):
            await asyncio.sleep(0)  # close() cancels the writer now
    finally:
        gate.set()
        await blocker
    await closing
    assert HistoryDB(tmp_path / "history.db").count() == 1
