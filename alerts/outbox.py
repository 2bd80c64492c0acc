"""Durable outbox: every notification is written to SQLite before any delivery attempt.

Life of a message (see :mod:`alerts.db` for the tables):

1. :meth:`Outbox.enqueue` writes one ``messages`` row per unit (idempotency key
   ``<key>|<unit>``: enqueueing the same key twice is a no-op) and one ``deliveries`` row per
   channel of the unit, in one transaction — possibly the caller's (the engine marks the
   incident announced in the same transaction).
2. The worker (:meth:`Outbox.run`, or one pass with :meth:`Outbox.deliver_due`) picks due
   deliveries, at most one in flight per channel and ``concurrency`` in all, and sends each
   through its own apprise object (:class:`alerts.delivery.AppriseSender`), so one dead channel
   neither blocks nor marks the others.
3. Each attempt is recorded (``attempts``); a delivery is marked ``sent`` only after the channel
   accepted it; a failure schedules the next attempt with exponential backoff and jitter
   (tenacity's ``wait_exponential_jitter``: ``retry_initial * 2**(n-1) + U(0, retry_initial)``,
   capped at ``retry_max``; Google Cloud's retry strategy, which tenacity cites).
4. A delivery still pending ``max_age`` after its message was written is given up (``expired``,
   counted in ``hcc_sentinel_notifications_expired_total``).

Delivery is at-least-once: a crash between a channel's acceptance and the ``sent`` record
re-sends that one message after the restart (the window is milliseconds).

Per-unit rate limit: a message whose first attempt has not started waits while the unit already
had ``rate_limit.count`` messages started within ``rate_limit.per`` seconds.

Reuse by the central relay: ``outbox.enqueue(["so-khcn"], subject, body, key="am:<fingerprint>")``
delivers an arbitrary rendered message to units with the same guarantees.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

from alerts.config import AlertingConfig, RateLimit
from alerts.db import dumps, transaction
from alerts.delivery import AppriseSender, Sender, fingerprint, redact, register_secret, scheme_of

log = logging.getLogger("hcc_sentinel.alerts.outbox")

#: apprise notify types accepted by :meth:`Outbox.enqueue`.
NOTIFY_TYPES = ("info", "success", "warning", "failure")


def backoff(retry_initial: float, retry_max: float) -> Callable[[int], float]:
    """Delay before retry number ``n`` (n = failed attempts so far, ≥ 1), seconds.

    Uses tenacity's ``wait_exponential_jitter`` (``initial * 2**(n-1) + uniform(0, initial)``,
    capped at ``retry_max``).  tenacity is imported at the first retry, not before (an agent
    whose messages all go through at once never needs its ~0.3 MiB).
    """
    wait: Any = None

    def delay(n: int) -> float:
        nonlocal wait
        import tenacity

        if wait is None:
            try:
                wait = tenacity.wait_exponential_jitter(multiplier=retry_initial, max=retry_max, jitter=retry_initial)
            except TypeError:  # tenacity < 9: no 'multiplier' yet, 'initial' means the same
                wait = tenacity.wait_exponential_jitter(initial=retry_initial, max=retry_max, jitter=retry_initial)
        state = tenacity.RetryCallState(None, None, (), {})
        state.attempt_number = max(1, n)
        return float(wait(state))

    return delay


@dataclass(frozen=True)
class Channel:
    """One channel of a unit: URL fingerprint, scheme (the only public part) and the URL."""

    fingerprint: str
    scheme: str
    url: str


class Outbox:
    """The outbox and its delivery worker.

    Args:
        conn: the alerts database connection (:func:`alerts.db.connect`).
        config: the ``alerting`` section (units and their URLs, outbox settings, rate limit).
        clock: wall clock, Unix seconds (injectable for tests).
        sender: channel sender (default :class:`alerts.delivery.AppriseSender`).
    """

    def __init__(self, conn: sqlite3.Connection, config: AlertingConfig,
                 clock: Callable[[], float] = time.time, sender: Sender | None = None) -> None:
        self.conn = conn
        self.clock = clock
        self.sender: Sender = sender or AppriseSender()
        self._wake = asyncio.Event()
        self._inflight: dict[int, asyncio.Task[None]] = {}
        self._busy_channels: set[str] = set()
        self._stopping = False
        #: (unit, scheme, result) -> count; result is ``sent`` or ``failed`` (per attempt).
        self.counts: dict[tuple[str, str, str], int] = {}
        #: (unit, scheme) -> deliveries given up after max_age.
        self.expired: dict[tuple[str, str], int] = {}
        self.depth = 0
        self.oldest_created: float | None = None
        self.set_config(config)
        self.refresh_stats()

    # -- config ----------------------------------------------------------------------------

    def set_config(self, config: AlertingConfig) -> None:
        """Adopt a new config (reload): unit channels, limits, backoff."""
        self.config = config
        self._channels: dict[str, list[Channel]] = {}
        for unit in config.units:
            chans = []
            for secret in unit.urls:
                url = secret.get_secret_value()
                register_secret(url)
                chans.append(Channel(fingerprint(url), scheme_of(url), url))
            self._channels[unit.id] = chans
        self._delay = backoff(config.outbox.retry_initial, config.outbox.retry_max)
        self._sem = asyncio.Semaphore(config.outbox.concurrency)

    def channels(self, unit_id: str) -> list[Channel]:
        """The unit's channels (empty for an unknown unit)."""
        return list(self._channels.get(unit_id, []))

    def _rate_limit(self, unit_id: str) -> RateLimit:
        unit = self.config.unit(unit_id)
        return (unit.rate_limit if unit and unit.rate_limit else None) or self.config.rate_limit

    # -- enqueue ---------------------------------------------------------------------------

    def enqueue(self, unit_ids: Iterable[str], subject: str, body: str, key: str, *,
                kind: str = "custom", notify_type: str = "info",
                incident_ids: Sequence[int] = (), now: float | None = None) -> list[int]:
        """Write a rendered notification for each unit to the outbox (durably, before sending).

        Args:
            unit_ids: configured unit ids.
            subject: title; body: text (UTF-8).
            key: idempotency key; the stored key is ``"<key>|<unit_id>"`` and a second enqueue
                with the same key and unit is ignored.
            kind: free label stored with the message (``problem``, ``resolved``, ``reminder``,
                ``escalation``, ``relay`` ...).
            notify_type: apprise notify type, one of :data:`NOTIFY_TYPES`.
            incident_ids: incidents the message is about (for the CLI and audits).
            now: creation time (default: the clock).

        Returns:
            Ids of the messages newly written (duplicates omitted).

        Raises:
            KeyError: an unknown unit id (nothing is written).
            ValueError: an unknown ``notify_type``.
        """
        if notify_type not in NOTIFY_TYPES:
            raise ValueError(f"notify_type must be one of {NOTIFY_TYPES}")
        units = list(dict.fromkeys(unit_ids))
        unknown = [u for u in units if self.config.unit(u) is None]
        if unknown:
            raise KeyError(f"unknown unit(s): {', '.join(unknown)}")
        now = self.clock() if now is None else now
        created: list[int] = []
        with transaction(self.conn):
            for unit_id in units:
                cur = self.conn.execute(
                    "INSERT OR IGNORE INTO messages (key, unit_id, kind, subject, body, notify_type, created_at, incident_ids)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (f"{key}|{unit_id}", unit_id, kind, subject, body, notify_type, now, dumps(list(incident_ids))))
                if cur.rowcount == 0:
                    continue
                message_id = int(cur.lastrowid)
                created.append(message_id)
                chans = self._channels.get(unit_id, [])
                if not chans:
                    log.warning("unit %s has no channels: message %d is recorded but cannot be delivered",
                                unit_id, message_id)
                for ch in chans:
                    self.conn.execute(
                        "INSERT OR IGNORE INTO deliveries (message_id, unit_id, channel, scheme, next_attempt_at)"
                        " VALUES (?, ?, ?, ?, ?)", (message_id, unit_id, ch.fingerprint, ch.scheme, now))
        if created:
            self.refresh_stats()
            self.kick()
        return created

    # -- worker ----------------------------------------------------------------------------

    def kick(self) -> None:
        """Wake the worker (new messages, or the clock moved in a test)."""
        self._wake.set()

    def refresh_stats(self) -> None:
        """Recompute the depth (messages with a pending delivery) and the oldest pending time."""
        row = self.conn.execute(
            "SELECT COUNT(DISTINCT d.message_id), MIN(m.created_at) FROM deliveries d"
            " JOIN messages m ON m.id = d.message_id WHERE d.status = 'pending'").fetchone()
        self.depth = int(row[0] or 0)
        self.oldest_created = row[1]

    def oldest_age(self, now: float | None = None) -> float:
        """Age of the oldest pending message, seconds (0 when none)."""
        if self.oldest_created is None:
            return 0.0
        return max(0.0, (self.clock() if now is None else now) - self.oldest_created)

    def _expire(self, now: float) -> None:
        cutoff = now - self.config.outbox.max_age
        rows = self.conn.execute(
            "SELECT d.id, d.unit_id, d.scheme FROM deliveries d JOIN messages m ON m.id = d.message_id"
            " WHERE d.status = 'pending' AND m.created_at < ?", (cutoff,)).fetchall()
        if not rows:
            return
        with transaction(self.conn):
            for r in rows:
                if r["id"] in self._inflight:
                    continue
                self.conn.execute("UPDATE deliveries SET status = 'expired', finished_at = ? WHERE id = ?",
                                  (now, r["id"]))
                k = (r["unit_id"], r["scheme"])
                self.expired[k] = self.expired.get(k, 0) + 1
                log.warning("gave up a notification to unit %s on a %s channel after %.0f s (max_age)",
                            r["unit_id"], r["scheme"], self.config.outbox.max_age)

    def _due(self, now: float) -> list[sqlite3.Row]:
        rows = self.conn.execute(
            "SELECT d.*, m.subject, m.body, m.notify_type, m.first_attempt_at, m.created_at"
            " FROM deliveries d JOIN messages m ON m.id = d.message_id"
            " WHERE d.status = 'pending' AND d.next_attempt_at <= ? ORDER BY m.created_at, d.id",
            (now,)).fetchall()
        picked: list[sqlite3.Row] = []
        started_counts: dict[str, int] = {}
        for r in rows:
            if r["id"] in self._inflight or r["channel"] in self._busy_channels:
                continue
            if any(p["channel"] == r["channel"] for p in picked):
                continue
            if r["first_attempt_at"] is None:
                limit = self._rate_limit(r["unit_id"])
                if r["unit_id"] not in started_counts:
                    started_counts[r["unit_id"]] = self.conn.execute(
                        "SELECT COUNT(*) FROM messages WHERE unit_id = ? AND first_attempt_at >= ?",
                        (r["unit_id"], now - limit.per)).fetchone()[0]
                if started_counts[r["unit_id"]] >= limit.count:
                    continue  # over the unit's rate limit: wait in the outbox
                started_counts[r["unit_id"]] += 1
                # one message, several channels: the message counts once
                self.conn.execute("UPDATE messages SET first_attempt_at = ? WHERE id = ? AND first_attempt_at IS NULL",
                                  (now, r["message_id"]))
            picked.append(r)
        return picked

    def _spawn_due(self) -> list[asyncio.Task[None]]:
        now = self.clock()
        self._expire(now)
        tasks = []
        for r in self._due(now):
            chans = {c.fingerprint: c for c in self._channels.get(r["unit_id"], [])}
            channel = chans.get(r["channel"])
            if channel is None:
                with transaction(self.conn):
                    self.conn.execute(
                        "UPDATE deliveries SET status = 'orphaned', finished_at = ?, last_error = ? WHERE id = ?",
                        (now, "channel no longer in the unit's config", r["id"]))
                log.warning("dropped a notification to unit %s: its %s channel is no longer configured",
                            r["unit_id"], r["scheme"])
                continue
            self._busy_channels.add(channel.fingerprint)
            task = asyncio.ensure_future(self._deliver(dict(r), channel))
            self._inflight[r["id"]] = task
            tasks.append(task)
        self.refresh_stats()
        return tasks

    async def _deliver(self, row: dict, channel: Channel) -> None:
        try:
            async with self._sem:
                result = await self.sender.send(channel.url, row["subject"], row["body"], row["notify_type"],
                                                self.config.outbox.send_timeout)
            now = self.clock()
            attempts = row["attempts"] + 1
            with transaction(self.conn):
                self.conn.execute("INSERT INTO attempts (delivery_id, at, duration, ok, error) VALUES (?, ?, ?, ?, ?)",
                                  (row["id"], now, result.duration, int(result.ok), result.error))
                if result.ok:
                    self.conn.execute(
                        "UPDATE deliveries SET status = 'sent', attempts = ?, sent_at = ?, finished_at = ?,"
                        " last_error = NULL WHERE id = ?", (attempts, now, now, row["id"]))
                else:
                    nxt = now + self._delay(attempts)
                    self.conn.execute(
                        "UPDATE deliveries SET attempts = ?, next_attempt_at = ?, last_error = ? WHERE id = ?",
                        (attempts, nxt, redact(result.error or "failed"), row["id"]))
            k = (row["unit_id"], channel.scheme, "sent" if result.ok else "failed")
            self.counts[k] = self.counts.get(k, 0) + 1
            if result.ok:
                log.info("delivered message %d to unit %s on a %s channel (attempt %d)",
                         row["message_id"], row["unit_id"], channel.scheme, attempts)
            else:
                log.warning("delivery of message %d to unit %s on a %s channel failed (attempt %d): %s",
                            row["message_id"], row["unit_id"], channel.scheme, attempts, redact(result.error or ""))
        finally:
            self._busy_channels.discard(channel.fingerprint)
            self._inflight.pop(row["id"], None)
            self.refresh_stats()
            self._wake.set()

    async def deliver_due(self) -> int:
        """One pass: expire, then attempt every due delivery and wait for those attempts.

        Returns:
            Number of attempts made.
        """
        tasks = self._spawn_due()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        return len(tasks)

    def next_due(self) -> float | None:
        """Earliest ``next_attempt_at`` of a pending delivery not in flight (Unix seconds)."""
        row = self.conn.execute("SELECT MIN(next_attempt_at) FROM deliveries WHERE status = 'pending'").fetchone()
        return row[0]

    async def run(self, poll: float = 1.0) -> None:
        """Deliver forever (until :meth:`stop`): spawn due deliveries without waiting for slow
        channels, then sleep until woken, the next due time, or ``poll`` seconds."""
        self._stopping = False
        while not self._stopping:
            self._wake.clear()
            spawned: list[asyncio.Task[None]] = []
            try:
                spawned = self._spawn_due()
            except sqlite3.Error:
                log.exception("outbox pass failed; retrying")
            nxt = self.next_due()
            if nxt is None or (not spawned and nxt <= self.clock()):
                # nothing due, or only deliveries in flight / held by the rate limit: a finished
                # attempt or a new message wakes us earlier
                wait = poll
            else:
                wait = min(poll, max(0.05, nxt - self.clock()))
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=wait)
            except asyncio.TimeoutError:
                pass

    async def stop(self, grace: float = 5.0) -> None:
        """Stop the loop; wait up to ``grace`` seconds for attempts in flight (the rest stay
        pending in the database and are retried after the next start)."""
        self._stopping = True
        self._wake.set()
        tasks = list(self._inflight.values())
        if tasks:
            done, pending = await asyncio.wait(tasks, timeout=grace)
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
