"""The alerts database: ``<data_dir>/alerts.db`` (SQLite, WAL journal).

One file holds target states, incidents, silences and the outbox, so that "mark the incident
announced" and "write the message to the outbox" commit in one transaction: after a crash
(``kill -9``) either both happened or neither did, and no incident is announced twice.

WAL mode lets the CLI (``hcc-sentinel ack``, ``silence``, ``incidents``, ``outbox``) read and write
while the daemon runs; ``synchronous=NORMAL`` in WAL mode is durable against a process crash
(the OS keeps the written WAL pages), and loses at most the last transactions on power loss
(SQLite docs, "Write-Ahead Logging" and "PRAGMA synchronous").  ``busy_timeout`` makes a writer
wait for the other process's short transactions instead of failing.

Tables (times are Unix seconds, UTC):

* ``target_state(target, data JSON, updated_at)`` — :class:`alerts.state.TargetState`.
* ``incidents`` — one row per incident; ``cause`` is ``system`` (the system failed, seen from a
  healthy link) or ``local_link`` (the commune's link, or a target unreachable behind it; SLA
  reports exclude these from a system's availability); ``parent_id`` links an unreachable
  target's row to the link incident.
* ``incident_units(incident_id, unit_id, level, first_at, last_at)`` — who was told (level 0 =
  routed, n = escalation step n) and when last (for reminders).
* ``escalations(incident_id, unit_id, step, at)`` — escalation steps done.
* ``silences`` — see :class:`alerts.maintenance.Silence`.
* ``messages(id, key UNIQUE, unit_id, kind, subject, body, notify_type, created_at, incident_ids)``
  and ``deliveries(id, message_id, unit_id, channel, scheme, status, attempts, next_attempt_at,
  last_error, sent_at, finished_at)`` — the outbox, one delivery per channel of the unit;
  ``channel`` is a fingerprint of the URL (never the URL); ``status`` is ``pending``, ``sent``,
  ``expired`` or ``orphaned`` (the channel left the config).
* ``attempts(id, delivery_id, at, duration, ok, error)`` — every delivery attempt.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any, Iterator
from contextlib import contextmanager

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS target_state (
    target TEXT PRIMARY KEY,
    data TEXT NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS incidents (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    target TEXT NOT NULL,
    system TEXT,
    owner TEXT,
    commune TEXT,
    cause TEXT NOT NULL,
    parent_id INTEGER,
    level INTEGER NOT NULL DEFAULT 0,
    current TEXT NOT NULL,
    flapping INTEGER NOT NULL DEFAULT 0,
    was_flapping INTEGER NOT NULL DEFAULT 0,
    opened_at REAL NOT NULL,
    confirmed_at REAL NOT NULL,
    resolved_at REAL,
    resolve_note TEXT,
    last_outcome TEXT,
    last_reason TEXT,
    last_detail TEXT,
    announced_level INTEGER NOT NULL DEFAULT 0,
    announced_flapping INTEGER NOT NULL DEFAULT 0,
    announced_at REAL,
    pending_since REAL,
    resolve_pending_since REAL,
    resolved_announced INTEGER NOT NULL DEFAULT 0,
    acked_at REAL,
    acked_by TEXT,
    ack_note TEXT
);
CREATE INDEX IF NOT EXISTS incidents_open ON incidents(resolved_at, target);
CREATE TABLE IF NOT EXISTS incident_units (
    incident_id INTEGER NOT NULL,
    unit_id TEXT NOT NULL,
    level INTEGER NOT NULL,
    first_at REAL NOT NULL,
    last_at REAL NOT NULL,
    PRIMARY KEY (incident_id, unit_id)
);
CREATE TABLE IF NOT EXISTS escalations (
    incident_id INTEGER NOT NULL,
    unit_id TEXT NOT NULL,
    step INTEGER NOT NULL,
    at REAL NOT NULL,
    PRIMARY KEY (incident_id, unit_id, step)
);
CREATE TABLE IF NOT EXISTS silences (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at REAL NOT NULL,
    author TEXT NOT NULL,
    reason TEXT NOT NULL,
    starts_at REAL NOT NULL,
    ends_at REAL NOT NULL,
    matchers TEXT NOT NULL,
    maintenance INTEGER NOT NULL DEFAULT 0,
    expired_at REAL,
    expired_by TEXT
);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL UNIQUE,
    unit_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    subject TEXT NOT NULL,
    body TEXT NOT NULL,
    notify_type TEXT NOT NULL DEFAULT 'info',
    created_at REAL NOT NULL,
    incident_ids TEXT NOT NULL DEFAULT '[]',
    first_attempt_at REAL
);
CREATE TABLE IF NOT EXISTS deliveries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id INTEGER NOT NULL,
    unit_id TEXT NOT NULL,
    channel TEXT NOT NULL,
    scheme TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    last_error TEXT,
    sent_at REAL,
    finished_at REAL,
    UNIQUE (message_id, channel)
);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries(status, next_attempt_at);
CREATE TABLE IF NOT EXISTS attempts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    delivery_id INTEGER NOT NULL,
    at REAL NOT NULL,
    duration REAL NOT NULL,
    ok INTEGER NOT NULL,
    error TEXT
);
"""


def db_path(data_dir: str | Path) -> Path:
    """``<data_dir>/alerts.db``."""
    return Path(data_dir) / "alerts.db"


def connect(path: str | Path, *, create: bool = True) -> sqlite3.Connection:
    """Open (and create/migrate) the alerts database.

    Args:
        path: the file (its directory is created when ``create``).
        create: create the file and schema if missing; with ``False`` a missing file raises.

    Returns:
        A connection with ``row_factory = sqlite3.Row``, WAL journal, ``synchronous=NORMAL``,
        ``busy_timeout`` 10 s, in autocommit mode (use :func:`transaction`).

    Raises:
        FileNotFoundError: ``create`` is false and the file does not exist.
        sqlite3.DatabaseError: not an SQLite file, or a newer schema than this code knows.
    """
    path = Path(path)
    if not create and not path.exists():
        raise FileNotFoundError(f"{path} does not exist (has the agent run with this config?)")
    if create:
        path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), timeout=10.0, isolation_level=None)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA busy_timeout = 10000")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA foreign_keys = OFF")
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise sqlite3.DatabaseError(f"{path} has schema version {version}; this hcc-sentinel knows {SCHEMA_VERSION}")
    if version < SCHEMA_VERSION:
        with transaction(conn):
            _create(conn)
    return conn


def _create(conn: sqlite3.Connection) -> None:
    for statement in _SCHEMA.split(";"):
        if statement.strip():
            conn.execute(statement)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` … ``COMMIT`` (``ROLLBACK`` on error); nests as a no-op."""
    if conn.in_transaction:
        yield conn
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def row_dict(row: sqlite3.Row | None) -> dict[str, Any] | None:
    """A row as a plain dict (``None`` stays ``None``)."""
    return dict(row) if row is not None else None


# ------------------------------------------------------------------------------------------
# Operations shared by the engine, the CLI and the HTTP API (all act on the file directly)
# ------------------------------------------------------------------------------------------


def list_incidents(conn: sqlite3.Connection, *, open_only: bool = False, limit: int = 100) -> list[dict[str, Any]]:
    """Incidents, newest first, each with its ``units`` (list of ``{unit_id, level}``).

    Args:
        open_only: only incidents not yet resolved.
        limit: at most this many rows.
    """
    where = "WHERE resolved_at IS NULL" if open_only else ""
    rows = conn.execute(f"SELECT * FROM incidents {where} ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
    out = []
    for row in rows:
        d = dict(row)
        d["units"] = [dict(r) for r in conn.execute(
            "SELECT unit_id, level, first_at, last_at FROM incident_units WHERE incident_id = ? ORDER BY level, first_at",
            (row["id"],))]
        out.append(d)
    return out


def ack_incident(conn: sqlite3.Connection, incident_id: int, by: str, note: str | None, now: float) -> dict[str, Any]:
    """Acknowledge an incident: stops its reminders and further escalation.

    Idempotent: a second ack keeps the first author and time.

    Returns:
        The incident row as a dict.

    Raises:
        KeyError: no incident with that id.
    """
    with transaction(conn):
        row = conn.execute("SELECT * FROM incidents WHERE id = ?", (incident_id,)).fetchone()
        if row is None:
            raise KeyError(incident_id)
        if row["acked_at"] is None:
            conn.execute("UPDATE incidents SET acked_at = ?, acked_by = ?, ack_note = ? WHERE id = ?",
                         (now, by, note, incident_id))
        row = conn.execute("SELECT * FROM incidents WHERE id = ?", (incident_id,)).fetchone()
    return dict(row)


def add_silence(conn: sqlite3.Connection, *, author: str, reason: str, starts_at: float, ends_at: float,
                match: dict[str, list[str]] | None = None, match_re: dict[str, str] | None = None,
                maintenance: bool = False, now: float) -> int:
    """Insert a silence; returns its id.

    Raises:
        ValueError: empty author or reason, ``ends_at <= starts_at``, or invalid matchers.
    """
    from alerts.config import Matchers

    if not author.strip() or not reason.strip():
        raise ValueError("a silence needs an author and a reason")
    if ends_at <= starts_at:
        raise ValueError("a silence must end after it starts")
    matchers = Matchers(match=match or {}, match_re=match_re or {})
    payload = json.dumps({"match": matchers.match, "match_re": matchers.match_re}, ensure_ascii=False)
    with transaction(conn):
        cur = conn.execute(
            "INSERT INTO silences (created_at, author, reason, starts_at, ends_at, matchers, maintenance)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (now, author.strip(), reason.strip(), starts_at, ends_at, payload, int(maintenance)))
        return int(cur.lastrowid)


def expire_silence(conn: sqlite3.Connection, silence_id: int, by: str, now: float) -> bool:
    """Expire a silence now.  Returns ``False`` when it did not exist or had already ended.

    Raises:
        KeyError: no silence with that id.
    """
    with transaction(conn):
        row = conn.execute("SELECT * FROM silences WHERE id = ?", (silence_id,)).fetchone()
        if row is None:
            raise KeyError(silence_id)
        if row["expired_at"] is not None or row["ends_at"] <= now:
            return False
        conn.execute("UPDATE silences SET expired_at = ?, expired_by = ? WHERE id = ?", (now, by, silence_id))
        return True


def load_silences(conn: sqlite3.Connection, *, now: float | None = None, include_ended: bool = False) -> list[Any]:
    """Silences as :class:`alerts.maintenance.Silence`; by default only those not yet ended."""
    from alerts.maintenance import Silence

    if include_ended or now is None:
        rows = conn.execute("SELECT * FROM silences ORDER BY id").fetchall()
    else:
        rows = conn.execute("SELECT * FROM silences WHERE expired_at IS NULL AND ends_at > ? ORDER BY id",
                            (now,)).fetchall()
    return [Silence.from_row(r) for r in rows]


def pending_deliveries(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    """Deliveries not yet sent, expired or orphaned, with their message's subject and age data."""
    rows = conn.execute(
        "SELECT d.id, d.message_id, d.unit_id, d.scheme, d.channel, d.attempts, d.next_attempt_at,"
        " d.last_error, m.kind, m.subject, m.created_at, m.key"
        " FROM deliveries d JOIN messages m ON m.id = d.message_id"
        " WHERE d.status = 'pending' ORDER BY m.created_at, d.id").fetchall()
    return [dict(r) for r in rows]


def dumps(value: Any) -> str:
    """JSON for a TEXT column (UTF-8 kept as is)."""
    return json.dumps(value, ensure_ascii=False, sort_keys=True)
