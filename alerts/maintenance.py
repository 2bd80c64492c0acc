"""Maintenance windows (from the config) and silences (added at run time), in local time.

* A **maintenance window** is planned work: targets it matches are in state ``maintenance``,
  nobody is alerted, and the SLA report can exclude the time.  One-off windows have ``start`` and
  ``end``; recurring ones a cron expression (five fields, evaluated with croniter in the agent's
  time zone, Asia/Ho_Chi_Minh by default) and a ``duration``, so "every Saturday 23:00 for 3 h"
  crosses midnight naturally.  Intervals are half-open ``[start, end)``: a probe exactly at the
  start is inside, one exactly at the end is outside.
* A **silence** (Alertmanager's term) mutes notifications for matching targets between
  ``starts_at`` and ``ends_at``; it has an author and a reason, and is added or expired from the
  CLI or the HTTP API.  A silence created with ``maintenance=True`` also puts the targets in state
  ``maintenance`` (ad-hoc planned work).

When a window or silence ends while a target is still bad, the engine sends the alert then.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable
from zoneinfo import ZoneInfo

from alerts.config import MaintenanceWindow, Matchers


def to_local(ts: float, tz: str | ZoneInfo) -> datetime:
    """Unix seconds -> aware datetime in ``tz``."""
    zone = ZoneInfo(tz) if isinstance(tz, str) else tz
    return datetime.fromtimestamp(ts, tz=zone)


def local_to_ts(value: datetime, tz: str | ZoneInfo) -> float:
    """A datetime -> Unix seconds; a naive datetime is taken as local time in ``tz``."""
    zone = ZoneInfo(tz) if isinstance(tz, str) else tz
    if value.tzinfo is None:
        value = value.replace(tzinfo=zone)
    return value.timestamp()


@dataclasses.dataclass(frozen=True)
class ActiveWindow:
    """A window occurrence: name, start and end (Unix seconds), and where it comes from
    (``"config"`` or ``"silence:<id>"``)."""

    name: str
    start: float
    end: float
    source: str = "config"


class MaintenanceSchedule:
    """The configured windows, evaluated in one time zone.

    Args:
        windows: validated :class:`alerts.config.MaintenanceWindow` items.
        tz: IANA zone name (e.g. ``"Asia/Ho_Chi_Minh"``).
    """

    def __init__(self, windows: Iterable[MaintenanceWindow], tz: str) -> None:
        self.windows = list(windows)
        self.tz = ZoneInfo(tz)

    def occurrence_at(self, window: MaintenanceWindow, now: float) -> ActiveWindow | None:
        """The occurrence of ``window`` that contains ``now`` (Unix seconds), or ``None``.

        For a recurring window the last cron fire time ``p <= now`` is found with croniter
        (``get_prev`` from ``now + 1 µs`` so that a fire exactly at ``now`` counts); the window is
        active when ``now < p + duration``.  A later fire always supersedes an earlier one, so
        only the last fire needs checking even when ``duration`` exceeds the cron period.
        """
        if window.cron is not None:
            from croniter import croniter  # only with a recurring window (~0.5 MiB RSS)

            assert window.duration is not None
            base = to_local(now, self.tz) + timedelta(microseconds=1)
            prev = croniter(window.cron, base).get_prev(datetime)
            start = prev.timestamp()
            end = start + window.duration
            return ActiveWindow(window.name, start, end) if start <= now < end else None
        assert window.start is not None and window.end is not None
        start, end = local_to_ts(window.start, self.tz), local_to_ts(window.end, self.tz)
        return ActiveWindow(window.name, start, end) if start <= now < end else None

    def active(self, now: float) -> list[tuple[MaintenanceWindow, ActiveWindow]]:
        """Every window active at ``now`` with its occurrence."""
        out = []
        for window in self.windows:
            occ = self.occurrence_at(window, now)
            if occ is not None:
                out.append((window, occ))
        return out

    def occurrences(self, start: float, end: float, facts: dict[str, str | None] | None = None
                    ) -> list[ActiveWindow]:
        """All window occurrences overlapping ``[start, end)`` (Unix seconds), clipped to it.

        For the SLA report (time in maintenance is excluded).  ``facts`` restricts to windows
        whose matchers hold for one target (``None``: every window).

        Raises:
            ValueError: ``end < start``.
        """
        if end < start:
            raise ValueError("end before start")
        out: list[ActiveWindow] = []
        for window in self.windows:
            if facts is not None and not window.matches(facts):
                continue
            if window.cron is None:
                assert window.start is not None and window.end is not None
                s, e = local_to_ts(window.start, self.tz), local_to_ts(window.end, self.tz)
                if s < end and e > start:
                    out.append(ActiveWindow(window.name, max(s, start), min(e, end)))
                continue
            from croniter import croniter

            assert window.duration is not None
            first = self.occurrence_at(window, start)
            if first is not None:
                out.append(ActiveWindow(window.name, start, min(first.end, end)))
            it = croniter(window.cron, to_local(start, self.tz))
            while True:
                s = it.get_next(datetime).timestamp()
                if s >= end:
                    break
                out.append(ActiveWindow(window.name, s, min(s + window.duration, end)))
        return sorted(out, key=lambda w: w.start)


@dataclasses.dataclass
class Silence:
    """A silence row (``silences`` table).

    Attributes:
        id: row id; created_at: Unix seconds; author: who added it; reason: why.
        starts_at / ends_at: Unix seconds, half-open ``[starts_at, ends_at)``.
        matchers: :class:`alerts.config.Matchers` (empty = every target).
        maintenance: also put matched targets in state ``maintenance``.
        expired_at / expired_by: set when expired early from the CLI or API.
    """

    id: int
    created_at: float
    author: str
    reason: str
    starts_at: float
    ends_at: float
    matchers: Matchers
    maintenance: bool = False
    expired_at: float | None = None
    expired_by: str | None = None

    def active(self, now: float) -> bool:
        """True when ``starts_at <= now < ends_at`` and not expired."""
        end = self.ends_at if self.expired_at is None else min(self.ends_at, self.expired_at)
        return self.starts_at <= now < end

    def to_json(self, tz: str = "Asia/Ho_Chi_Minh") -> dict[str, Any]:
        """JSON-ready dict (times as Unix seconds and ISO 8601 local)."""
        return {
            "id": self.id,
            "author": self.author,
            "reason": self.reason,
            "created_at": self.created_at,
            "starts_at": self.starts_at,
            "ends_at": self.ends_at,
            "starts_at_local": to_local(self.starts_at, tz).isoformat(timespec="seconds"),
            "ends_at_local": to_local(self.ends_at, tz).isoformat(timespec="seconds"),
            "match": {k: v for k, v in self.matchers.match.items()},
            "match_re": dict(self.matchers.match_re),
            "maintenance": self.maintenance,
            "expired_at": self.expired_at,
            "expired_by": self.expired_by,
        }

    @classmethod
    def from_row(cls, row: Any) -> "Silence":
        """From a ``sqlite3.Row`` of the ``silences`` table."""
        m = json.loads(row["matchers"] or "{}")
        return cls(
            id=row["id"], created_at=row["created_at"], author=row["author"], reason=row["reason"],
            starts_at=row["starts_at"], ends_at=row["ends_at"],
            matchers=Matchers(match=m.get("match", {}), match_re=m.get("match_re", {})),
            maintenance=bool(row["maintenance"]), expired_at=row["expired_at"], expired_by=row["expired_by"])


def utc_now() -> float:
    """Current wall clock, Unix seconds."""
    return datetime.now(timezone.utc).timestamp()
