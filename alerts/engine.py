"""The alerting engine: states, incidents, dependencies, maintenance, routing, escalation.

Data flow: the scheduler hands every :class:`probes.base.ProbeResult` to :meth:`AlertEngine.observe`;
a timer calls :meth:`AlertEngine.tick` (once a second when started with :meth:`start`); both
update per-target states (:mod:`alerts.state`), open/close incidents, and write notices to the
durable outbox (:mod:`alerts.outbox`), whose worker delivers them through apprise.

Rules, with their sources:

* **States and thresholds** — :mod:`alerts.state` (Icinga/Nagios soft→hard states, Gatus
  failure/success thresholds).  While a target is failing, :meth:`AlertEngine.interval_for`
  returns its ``retry_interval`` (Icinga ``retry_interval``, Uptime Kuma ``retryInterval``).
* **Dependencies** — as Nagios host parents: while a dependency (typically the commune uplink)
  is down, or its last probe failed, a failing dependent is ``unreachable``, not ``down``; its
  incident gets ``cause = local_link`` and is never announced.  The uplink's own incident is the
  one "commune link lost" (*mất kết nối đường truyền của xã*) notice, routed like any incident
  (normally to the commune's IT contact as the uplink system's owner).  Source: Nagios Core docs
  "Determining Status and Reachability of Network Hosts".
* **Incidents** — one open incident per target, from the first failed probe of the streak
  (``opened_at``) to recovery (``resolved_at``); ``cause`` ``system`` or ``local_link`` lets the
  SLA report exclude the commune's own link outages.
* **Grouping** — notices wait until ``group_wait`` has passed since the first failure of the
  first incident of the group (or since it became announceable, e.g. when a maintenance window
  ended); all incidents pending at that moment go out as ONE message per unit.  Like
  Alertmanager's ``group_wait``, but counted from the start of the failure so that a confirmed
  outage is not held back longer than needed.
* **Maintenance and silences** — :mod:`alerts.maintenance`; a muted incident is announced when
  the mute ends if the target is still bad.
* **Flapping** — one ``flapping`` notice when flapping starts; no state notices while flapping;
  when it stops, a ``resolved`` notice if the target is up, or the pending state notice if not.
* **Reminders / escalation / ack** — an announced, unacknowledged incident is re-sent to its
  units every ``repeat_interval`` (Alertmanager ``repeat_interval``) and, after each step's
  ``after`` (counted from the first notice), to the next level of the routed unit's escalation
  chain (SRE workbook, "On-Call": escalate when the primary does not acknowledge).  An ack
  (CLI, HTTP API) stops both.
* **Restarts** — states, incidents and the outbox are in SQLite; marking an incident announced
  and writing its message commit together, so nothing is announced twice or lost.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from alerts import db as adb
from alerts.config import AlertingConfig
from alerts.delivery import Sender
from alerts.maintenance import MaintenanceSchedule, Silence
from alerts.model import AlertTarget, Site
from alerts.outbox import Outbox
from alerts.routing import Router
from alerts.state import STATES, State, TargetState
from alerts.templates import ADVICE, Notice, NoticeItem, Renderer
from probes.base import ProbeResult

log = logging.getLogger("hcc_sentinel.alerts")

SYSTEM = "system"
LOCAL_LINK = "local_link"

_LEVEL = {State.DOWN: 2, State.DEGRADED: 1}

#: ``resolve_note`` of an incident closed because its target left the config.
REMOVED_NOTE = "target removed from the config"
#: A target put back in the config (same id) within this time after its removal gets its
#: incident back, as it was (ack, announced level, units told): a wrong edit that is reverted
#: announces nothing again.  One day covers "saved a wrong file, fixed it the next morning";
#: a target back later starts afresh, like a new one.
RETURN_GRACE = 24 * 3600.0

#: Columns of ``incidents`` the engine writes (never the ack columns, which the CLI may write).
_ENGINE_COLUMNS = (
    "cause", "parent_id", "level", "current", "flapping", "was_flapping", "resolved_at", "resolve_note",
    "last_outcome", "last_reason", "last_detail", "announced_level", "announced_flapping", "announced_at",
    "pending_since", "resolve_pending_since", "resolved_announced")


@dataclasses.dataclass
class Incident:
    """In-memory mirror of an ``incidents`` row (see :mod:`alerts.db`)."""

    id: int
    target: str
    system: str | None
    owner: str | None
    commune: str | None
    cause: str
    parent_id: int | None
    level: int
    current: str
    flapping: int
    was_flapping: int
    opened_at: float
    confirmed_at: float
    resolved_at: float | None = None
    resolve_note: str | None = None
    last_outcome: str | None = None
    last_reason: str | None = None
    last_detail: str | None = None
    announced_level: int = 0
    announced_flapping: int = 0
    announced_at: float | None = None
    pending_since: float | None = None
    resolve_pending_since: float | None = None
    resolved_announced: int = 0
    acked_at: float | None = None
    acked_by: str | None = None
    ack_note: str | None = None

    @classmethod
    def from_row(cls, row: Any) -> "Incident":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: row[k] for k in row.keys() if k in names})

    @property
    def announced(self) -> bool:
        return self.announced_level > 0 or bool(self.announced_flapping)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class AlertEngine:
    """Per-agent alerting.

    Args:
        config: the ``alerting`` section.
        targets: what the engine knows of each target (:class:`alerts.model.AlertTarget`).
        site: the agent's identity (:class:`alerts.model.Site`).
        db_path: the SQLite file (``<data_dir>/alerts.db``); created when missing.
        clock: wall clock, Unix seconds (injectable; tests use a fake clock).
        sender: channel sender for the outbox (default apprise).
        tick_interval: seconds between timer ticks when started with :meth:`start`.

    Raises:
        sqlite3.DatabaseError: the database cannot be opened.
    """

    def __init__(self, config: AlertingConfig, targets: Sequence[AlertTarget], site: Site,
                 db_path: str | Path, *, clock: Callable[[], float] = time.time,
                 sender: Sender | None = None, tick_interval: float = 1.0) -> None:
        self.clock = clock
        self.tick_interval = tick_interval
        self.db_path = Path(db_path)
        self.conn = adb.connect(self.db_path)
        self.outbox = Outbox(self.conn, config, clock, sender)
        self.states: dict[str, TargetState] = {}
        self.open: dict[str, Incident] = {}
        self.resolving: dict[int, Incident] = {}
        self.exported: dict[str, State] = {}
        self._silences: list[Silence] = []
        self._unmuted_at: dict[str, float] = {}
        self._muted: dict[str, bool] = {}
        #: per target: not-ok results since no dependency blocked it, and the first one's time
        self._own_bad: dict[str, int] = {}
        self._own_bad_since: dict[str, float] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._saved: dict[int, tuple[Any, ...]] = {}
        self.collector = EngineCollector(self)
        self._apply(config, targets, site)
        self._restore()

    # ------------------------------------------------------------------------------------
    # configuration and restore
    # ------------------------------------------------------------------------------------

    def _apply(self, config: AlertingConfig, targets: Sequence[AlertTarget], site: Site) -> None:
        self.config = config
        self.site = site
        self.targets = {t.id: t for t in targets}
        self.router = Router(config.route, config.units)
        self.schedule = MaintenanceSchedule(config.maintenance, site.timezone)
        self.renderer = Renderer(config.templates_dir)
        self.outbox.set_config(config)
        self.dependents: dict[str, list[str]] = {tid: [] for tid in self.targets}
        for t in targets:
            for dep in t.depends_on:
                self.dependents.setdefault(dep, []).append(t.id)

    def update(self, config: AlertingConfig, targets: Sequence[AlertTarget], site: Site) -> None:
        """Adopt a reloaded config.  Incidents of targets that left the config are closed
        silently (no "resolved": nothing recovered); a target back within
        :data:`RETURN_GRACE` gets its incident back (:meth:`_readopt_returned`); new targets
        start ``up``."""
        self._apply(config, targets, site)
        now = self.clock()
        for tid in list(self.open):
            if tid not in self.targets:
                self._close_silently(self.open[tid], now, REMOVED_NOTE)
        self._readopt_returned(now)
        for tid in self.targets:
            self.states.setdefault(tid, TargetState(tid))
        self.tick_sync(now)

    def _restore(self) -> None:
        for row in self.conn.execute("SELECT target, data FROM target_state"):
            try:
                self.states[row["target"]] = TargetState.from_json(json.loads(row["data"]))
            except (ValueError, TypeError, KeyError):
                log.warning("ignoring unreadable saved state of target %s", row["target"])
        for tid in self.targets:
            self.states.setdefault(tid, TargetState(tid))
        for row in self.conn.execute("SELECT * FROM incidents WHERE resolved_at IS NULL ORDER BY id"):
            inc = Incident.from_row(row)
            if inc.target in self.open:  # should not happen; keep the newest
                self._close_silently(self.open[inc.target], self.clock(), "duplicate open incident")
            self.open[inc.target] = inc
        for row in self.conn.execute(
                "SELECT * FROM incidents WHERE resolved_at IS NOT NULL AND resolve_pending_since IS NOT NULL"
                " AND resolved_announced = 0"):
            inc = Incident.from_row(row)
            self.resolving[inc.id] = inc
        now = self.clock()
        for tid in list(self.open):
            if tid not in self.targets:
                self._close_silently(self.open[tid], now, REMOVED_NOTE)
        self._readopt_returned(now)
        self._refresh_silences(now)
        for tid in self.targets:
            self.exported[tid] = self._exported(tid, now)
            self._muted[tid] = self._is_muted(tid, now)

    def _readopt_returned(self, now: float) -> None:
        """Targets back in the config after a removal (by a reload or a restart).

        A removed target's incident was closed with :data:`REMOVED_NOTE` and its state kept.
        Back with the same id within :data:`RETURN_GRACE`: the incident is reopened as it was —
        same id and start, its ack, announced level, units told and escalation steps — so
        nothing is announced twice; the next probes continue from the kept state (a recovery
        then gets its usual "resolved").  Back later: the old state is stale, so the target
        starts afresh (``up``, like a new target) and a failure is a new incident.
        """
        rows = self.conn.execute(
            "SELECT i.*, s.updated_at AS state_at FROM incidents i LEFT JOIN target_state s ON s.target = i.target"
            " WHERE i.resolve_note = ? AND i.id = (SELECT MAX(j.id) FROM incidents j WHERE j.target = i.target)",
            (REMOVED_NOTE,)).fetchall()
        for row in rows:
            tid = row["target"]
            if tid not in self.targets or tid in self.open:
                continue
            inc = Incident.from_row(row)
            if inc.resolved_at is not None and now - inc.resolved_at <= RETURN_GRACE:
                inc.resolved_at, inc.resolve_note = None, None
                self.open[tid] = inc
                self._save(inc)
                log.info("incident %d reopened: target %s is back in the config", inc.id, tid)
            elif row["state_at"] is None or row["state_at"] <= (inc.resolved_at or 0.0):
                self.states[tid] = TargetState(tid)  # not probed since its removal: stale
                self.exported.pop(tid, None)
                self._own_bad.pop(tid, None)
                self._own_bad_since.pop(tid, None)
                self._persist_state(tid, now)

    # ------------------------------------------------------------------------------------
    # public API
    # ------------------------------------------------------------------------------------

    async def observe(self, result: ProbeResult) -> None:
        """Fold one probe result in (scheduler listener).  Results of unknown targets are ignored.

        Never raises for a bad result; database errors propagate (they are bugs or a full disk).
        """
        self.observe_sync(result)

    def observe_sync(self, result: ProbeResult) -> None:
        """Synchronous body of :meth:`observe` (same effect)."""
        t = self.targets.get(result.target)
        if t is None:
            return
        now = self.clock()
        ts = self.states.setdefault(t.id, TargetState(t.id))
        tr = ts.observe(result, t.failure_threshold, t.success_threshold, t.degraded_threshold,
                        self.config.flap.samples, self.config.flap.start_percent,
                        self.config.flap.stop_percent, self.config.flap.enabled)
        if self._blocking(t.id) is not None or result.outcome.value == "ok":
            self._own_bad[t.id] = 0
            self._own_bad_since.pop(t.id, None)
        else:
            self._own_bad[t.id] = self._own_bad.get(t.id, 0) + 1
            self._own_bad_since.setdefault(t.id, float(result.started_at))
        if tr.old != tr.new:
            log.info("target %s: %s -> %s (%s)", t.id, tr.old.value, tr.new.value, result.reason)
        if tr.flap_started:
            log.info("target %s started flapping (%.1f %%)", t.id, ts.flap_percent)
        if tr.flap_stopped:
            log.info("target %s stopped flapping (%.1f %%)", t.id, ts.flap_percent)
        self._persist_state(t.id, now)
        for tid in [t.id, *self._dependents_closure(t.id)]:
            self._evaluate(tid, now)
        self._process(now)

    def _persist_state(self, tid: str, now: float) -> None:
        ts = self.states[tid]
        data = ts.to_json()
        data["state"] = self.exported.get(tid, ts.health).value
        self.conn.execute(
            "INSERT INTO target_state (target, data, updated_at) VALUES (?, ?, ?)"
            " ON CONFLICT(target) DO UPDATE SET data = excluded.data, updated_at = excluded.updated_at",
            (tid, adb.dumps(data), now))

    def interval_for(self, target_id: str) -> float | None:
        """The probe interval the scheduler should use now, seconds, or ``None`` for the normal one.

        Returns the target's ``retry_interval`` while its last probe failed or it is ``down``
        (to confirm, and to see the recovery, sooner), except while it is ``unreachable`` behind
        a failed dependency (probing faster behind a dead link only adds load).
        """
        t = self.targets.get(target_id)
        ts = self.states.get(target_id)
        if t is None or ts is None or t.retry_interval is None:
            return None
        if (ts.failing or ts.health != State.UP) and self._blocking(target_id):
            return None
        if ts.failing or ts.health == State.DOWN:
            return min(t.retry_interval, t.interval)
        # a dependent started failing: probe this dependency sooner, so that a lost link is
        # known before the dependents' alerts go out (Nagios checks the parent on demand)
        for dep in self.dependents.get(target_id, []):
            ds = self.states.get(dep)
            if ds is not None and ds.failing:
                return min(t.retry_interval, t.interval)
        return None

    async def tick(self, now: float | None = None) -> None:
        """Timers: silences and acks from the database, maintenance transitions, group flushes,
        reminders, escalations.  Call about once a second (``start`` does)."""
        self.tick_sync(now)

    def tick_sync(self, now: float | None = None) -> None:
        """Synchronous body of :meth:`tick`."""
        now = self.clock() if now is None else now
        self._refresh_silences(now)
        self._refresh_acks()
        for tid in self.targets:
            self._evaluate(tid, now)
        self._process(now)
        self.outbox.refresh_stats()

    def ack(self, incident_id: int, by: str, note: str | None = None) -> dict[str, Any]:
        """Acknowledge an incident (stops its reminders and escalation).

        Returns:
            The incident as a dict.

        Raises:
            KeyError: unknown incident id.
        """
        row = adb.ack_incident(self.conn, incident_id, by, note, self.clock())
        for inc in self.open.values():
            if inc.id == incident_id:
                inc.acked_at, inc.acked_by, inc.ack_note = row["acked_at"], row["acked_by"], row["ack_note"]
        log.info("incident %d acknowledged by %s", incident_id, by)
        return row

    def add_silence(self, *, author: str, reason: str, starts_at: float, ends_at: float,
                    match: dict[str, list[str]] | None = None, match_re: dict[str, str] | None = None,
                    maintenance: bool = False) -> int:
        """Add a silence (see :func:`alerts.db.add_silence`); returns its id.

        Raises:
            ValueError: missing author/reason, bad times or matchers.
        """
        sid = adb.add_silence(self.conn, author=author, reason=reason, starts_at=starts_at, ends_at=ends_at,
                              match=match, match_re=match_re, maintenance=maintenance, now=self.clock())
        self.tick_sync()
        return sid

    def expire_silence(self, silence_id: int, by: str) -> bool:
        """Expire a silence now; ``False`` when it had already ended.

        Raises:
            KeyError: unknown silence id.
        """
        done = adb.expire_silence(self.conn, silence_id, by, self.clock())
        self.tick_sync()
        return done

    def silences(self, include_ended: bool = False) -> list[Silence]:
        """Silences (by default those not yet ended)."""
        return adb.load_silences(self.conn, now=self.clock(), include_ended=include_ended)

    def incidents(self, open_only: bool = False, limit: int = 100) -> list[dict[str, Any]]:
        """Incidents, newest first (see :func:`alerts.db.list_incidents`)."""
        return adb.list_incidents(self.conn, open_only=open_only, limit=limit)

    def state_of(self, target_id: str) -> State | None:
        """Exported state of a target, or ``None`` for an unknown target."""
        return self.exported.get(target_id)

    def snapshot(self) -> list[dict[str, Any]]:
        """Per-target view for status pages: state, health, flapping, open incident, since."""
        out = []
        for tid, t in self.targets.items():
            ts = self.states.get(tid) or TargetState(tid)
            inc = self.open.get(tid)
            out.append({
                "target": tid, "name": t.display_name, "system": t.system,
                "state": self.exported.get(tid, ts.health).value, "health": ts.health.value,
                "flapping": ts.flapping, "flap_percent": round(ts.flap_percent, 1),
                "since": ts.bad_since if ts.health != State.UP else ts.health_since,
                "incident": inc.id if inc else None,
                "cause": inc.cause if inc else None,
                "acked_by": inc.acked_by if inc else None,
            })
        return out

    def notify(self, unit_ids: Iterable[str], subject: str, body: str, key: str, **kw: Any) -> list[int]:
        """Enqueue an arbitrary rendered notification (see :meth:`alerts.outbox.Outbox.enqueue`)."""
        return self.outbox.enqueue(unit_ids, subject, body, key, **kw)

    async def start(self) -> None:
        """Start the timer loop and the outbox worker (idempotent)."""
        if self._tasks:
            return
        self._tasks = [asyncio.ensure_future(self._tick_loop()), asyncio.ensure_future(self.outbox.run())]

    async def stop(self) -> None:
        """Stop the loops (pending messages stay in the outbox) and close the database."""
        tasks, self._tasks = self._tasks, []
        await self.outbox.stop()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.conn.close()

    async def _tick_loop(self) -> None:
        while True:
            try:
                self.tick_sync()
            except Exception:
                log.exception("alert engine tick failed")
            await asyncio.sleep(self.tick_interval)

    # ------------------------------------------------------------------------------------
    # evaluation
    # ------------------------------------------------------------------------------------

    def _dependents_closure(self, tid: str) -> list[str]:
        seen: list[str] = []
        stack = list(self.dependents.get(tid, []))
        while stack:
            d = stack.pop()
            if d not in seen and d != tid:
                seen.append(d)
                stack.extend(self.dependents.get(d, []))
        return seen

    def _blocking(self, tid: str, depth: int = 0) -> str | None:
        """Id of a dependency that is down, failing, or itself blocked; else ``None``."""
        t = self.targets.get(tid)
        if t is None or depth > 16:
            return None
        for dep in t.depends_on:
            ds = self.states.get(dep)
            if ds is None:
                continue
            if ds.health == State.DOWN or ds.failing or (
                    (ds.health != State.UP or ds.failing) and self._blocking(dep, depth + 1)):
                return dep
        return None

    def _link_incident(self, tid: str, depth: int = 0) -> Incident | None:
        """The open incident of the first failed dependency up the chain (the link incident)."""
        t = self.targets.get(tid)
        if t is None or depth > 16:
            return None
        for dep in t.depends_on:
            inc = self.open.get(dep)
            if inc is not None and inc.cause == LOCAL_LINK and self.targets.get(dep) and self.targets[dep].uplink:
                return inc
            found = self._link_incident(dep, depth + 1)
            if found is not None:
                return found
        for dep in t.depends_on:
            if dep in self.open:
                return self.open[dep]
        return None

    def _target_facts(self, tid: str) -> dict[str, str | None]:
        t = self.targets.get(tid)
        return {
            "target": tid,
            "system": t.system if t else None,
            "owner": t.owner if t else None,
            "commune": self.site.commune_code,
        }

    def _in_maintenance(self, tid: str, now: float) -> str | None:
        facts = self._target_facts(tid)
        for window, _occ in self.schedule.active(now):
            if window.matches(facts):
                return window.name
        for s in self._silences:
            if s.maintenance and s.active(now) and s.matchers.matches(facts):
                return f"silence {s.id}"
        return None

    def _exported(self, tid: str, now: float) -> State:
        ts = self.states.get(tid) or TargetState(tid)
        if self._in_maintenance(tid, now):
            return State.MAINTENANCE
        if (ts.health != State.UP or ts.failing) and self._blocking(tid):
            return State.UNREACHABLE
        inc = self.open.get(tid)
        t = self.targets.get(tid)
        if (inc is not None and inc.cause == LOCAL_LINK and t is not None and not t.uplink
                and ts.health != State.UP and not self._reconfirmed(tid)):
            # the link is back but this target has not been probed enough since: not yet "down"
            return State.UNREACHABLE
        return ts.health

    def _reconfirmed(self, tid: str) -> bool:
        """The target failed on its own (no dependency blocking) for its threshold."""
        t = self.targets[tid]
        ts = self.states.get(tid) or TargetState(tid)
        need = t.failure_threshold if ts.health == State.DOWN else t.degraded_threshold
        return self._own_bad.get(tid, 0) >= need

    def _awaiting_dependency(self, tid: str, inc: Incident, now: float) -> bool:
        """A dependency has not been probed since this target's failure began: wait for its
        verdict (at most 1.5 of its interval plus 5 s) before announcing."""
        t = self.targets[tid]
        for dep in t.depends_on:
            ds, dt = self.states.get(dep), self.targets.get(dep)
            if ds is None or dt is None:
                continue
            if ds.last_at is None or ds.last_at < inc.opened_at:
                patience = 1.5 * (min(dt.retry_interval, dt.interval) if dt.retry_interval else dt.interval) + 5.0
                if now < inc.opened_at + patience:
                    return True
        return False

    def _kind(self, tid: str, inc: Incident | None = None) -> str:
        t = self.targets.get(tid)
        ts = self.states.get(tid) or TargetState(tid)
        if ts.flapping:
            return "flapping"
        health = ts.health
        if inc is not None and health == State.UP:
            health = State.DOWN if inc.level >= 2 else State.DEGRADED
        if health == State.DOWN:
            return "link" if t and t.uplink else "down"
        return "degraded"

    def _facts(self, tid: str, inc: Incident | None) -> dict[str, str | None]:
        facts = self._target_facts(tid)
        ts = self.states.get(tid) or TargetState(tid)
        kind = self._kind(tid, inc)
        t = self.targets.get(tid)
        severity = "critical" if kind in ("down", "link") else "warning"
        if t is not None and t.labels.get("severity"):
            severity = t.labels["severity"]
        facts.update({
            "outcome": ts.last_bad_outcome or (inc.last_outcome if inc else None),
            "severity": severity,
            "cause": inc.cause if inc else (LOCAL_LINK if t and t.uplink else SYSTEM),
            "kind": kind,
        })
        return facts

    def _silenced(self, facts: dict[str, str | None], now: float) -> bool:
        return any(s.active(now) and s.matchers.matches(facts) for s in self._silences)

    def _is_muted(self, tid: str, now: float, inc: Incident | None = None) -> bool:
        t = self.targets.get(tid)
        exp = self.exported.get(tid) or self._exported(tid, now)
        if exp in (State.MAINTENANCE, State.UNREACHABLE):
            return True
        if inc is not None and inc.cause == LOCAL_LINK and not (t and t.uplink):
            return True
        return self._silenced(self._facts(tid, inc), now)

    def _evaluate(self, tid: str, now: float) -> None:
        t = self.targets.get(tid)
        if t is None:
            return
        ts = self.states.setdefault(tid, TargetState(tid))
        exp = self._exported(tid, now)
        previous = self.exported.get(tid)
        self.exported[tid] = exp
        if previous is not None and previous != exp:
            log.info("target %s: state %s -> %s", tid, previous.value, exp.value)
            self._persist_state(tid, now)
        inc = self.open.get(tid)
        health_bad = ts.health in (State.DOWN, State.DEGRADED)
        if inc is None:
            # flapping opens an incident only when a probe fails while flapping, so that the
            # recovery that completes a flap pattern is a plain "resolved"
            bad = health_bad or (ts.flapping and ts.notok_streak > 0)
        else:
            # a flapping notice stands in for state notices: such an incident (and a
            # flapping-only one) stays open until the flapping stops
            bad = health_bad or (ts.flapping and (bool(inc.announced_flapping) or inc.level == 0))
        blocking = self._blocking(tid) if (ts.health != State.UP or ts.failing) else None

        if bad and inc is None:
            cause = LOCAL_LINK if (t.uplink or blocking) else SYSTEM
            parent = self._link_incident(tid) if (blocking and not t.uplink) else None
            inc = self._open_incident(t, ts, cause, parent.id if parent else None, now)
        elif inc is not None and bad and not t.uplink:
            if (inc.cause == LOCAL_LINK and blocking is None and exp != State.MAINTENANCE
                    and self._reconfirmed(tid)):
                if inc.parent_id is None:
                    # the dependency only blipped: this was the target's own failure all along
                    inc.cause = SYSTEM
                else:
                    # the link is back but this target still fails on its own: a new incident
                    self._close_silently(inc, now, "link restored; the target still fails on its own")
                    inc = self._open_incident(t, ts, SYSTEM, None, now,
                                              opened_at=self._own_bad_since.get(tid, now))
            elif inc.cause == SYSTEM and blocking and not inc.announced:
                parent = self._link_incident(tid)
                inc.cause, inc.parent_id, inc.pending_since = LOCAL_LINK, parent.id if parent else None, None
            elif inc.cause == LOCAL_LINK and inc.parent_id is None and blocking:
                parent = self._link_incident(tid)
                inc.parent_id = parent.id if parent else None
        if inc is None:
            self._muted[tid] = self._is_muted(tid, now)
            return
        if not bad:
            self._resolve(inc, ts, now)
            return

        level = _LEVEL.get(ts.health, 0)
        inc.level = max(inc.level, level)
        inc.current = ("flapping" if ts.flapping else
                       "unreachable" if exp == State.UNREACHABLE else
                       ts.health.value if ts.health != State.UP else inc.current)
        inc.flapping = int(ts.flapping)
        inc.was_flapping = int(inc.was_flapping or ts.flapping)
        if ts.last_bad_outcome:
            inc.last_outcome, inc.last_reason, inc.last_detail = (
                ts.last_bad_outcome, ts.last_bad_reason, ts.last_bad_detail)

        muted = self._is_muted(tid, now, inc)
        if self._muted.get(tid) and not muted:
            self._unmuted_at[tid] = now
        self._muted[tid] = muted
        want = False
        if not muted and not self._awaiting_dependency(tid, inc, now):
            if level > inc.announced_level:
                # a state notice is due; while flapping, ONE flapping notice replaces them all
                want = not inc.announced_flapping if ts.flapping else True
            elif inc.level == 0 and ts.flapping:
                want = not inc.announced_flapping
        if want and inc.pending_since is None:
            if inc.announced or ts.flapping:
                inc.pending_since = now
            else:
                # group_wait counts from the first failed probe (or from the end of a mute)
                inc.pending_since = max(inc.opened_at, self._unmuted_at.get(tid, 0.0))
        elif not want:
            inc.pending_since = None
        self._save(inc)

    def _open_incident(self, t: AlertTarget, ts: TargetState, cause: str, parent_id: int | None,
                       now: float, opened_at: float | None = None) -> Incident:
        opened = opened_at if opened_at is not None else (ts.bad_since if ts.bad_since is not None else now)
        current = "flapping" if ts.flapping else ts.health.value
        cur = self.conn.execute(
            "INSERT INTO incidents (target, system, owner, commune, cause, parent_id, level, current, flapping,"
            " was_flapping, opened_at, confirmed_at, last_outcome, last_reason, last_detail)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (t.id, t.system, t.owner, self.site.commune_code, cause, parent_id, _LEVEL.get(ts.health, 0),
             current, int(ts.flapping), int(ts.flapping), opened, now,
             ts.last_bad_outcome, ts.last_bad_reason, ts.last_bad_detail))
        row = self.conn.execute("SELECT * FROM incidents WHERE id = ?", (cur.lastrowid,)).fetchone()
        inc = Incident.from_row(row)
        self.open[t.id] = inc
        log.info("incident %d opened: target %s %s (cause %s)", inc.id, t.id, current, cause)
        return inc

    def _resolve(self, inc: Incident, ts: TargetState, now: float) -> None:
        resolved_at = ts.last_at if ts.last_at is not None and ts.last_at <= now else now
        inc.resolved_at = max(resolved_at, inc.opened_at)
        inc.pending_since = None
        inc.current = "up"
        inc.flapping = 0
        if inc.announced:
            inc.resolve_pending_since = now
            self.resolving[inc.id] = inc
        self._save(inc)
        self.open.pop(inc.target, None)
        log.info("incident %d resolved: target %s", inc.id, inc.target)

    def _close_silently(self, inc: Incident, now: float, note: str) -> None:
        inc.resolved_at = now
        inc.resolve_note = note
        inc.pending_since = None
        self._save(inc)
        self.open.pop(inc.target, None)

    def _save(self, inc: Incident) -> None:
        values = tuple(getattr(inc, c) for c in _ENGINE_COLUMNS)
        if self._saved.get(inc.id) == values:
            return  # unchanged since the last write (the tick re-evaluates every second)
        sets = ", ".join(f"{c} = ?" for c in _ENGINE_COLUMNS)
        self.conn.execute(f"UPDATE incidents SET {sets} WHERE id = ?", values + (inc.id,))
        if inc.resolved_at is None:
            self._saved[inc.id] = values
        else:
            self._saved.pop(inc.id, None)

    def _refresh_silences(self, now: float) -> None:
        self._silences = adb.load_silences(self.conn, now=now)

    def _refresh_acks(self) -> None:
        if not self.open:
            return
        ids = {inc.id: inc for inc in self.open.values()}
        marks = ",".join("?" * len(ids))
        for row in self.conn.execute(
                f"SELECT id, acked_at, acked_by, ack_note FROM incidents WHERE id IN ({marks})", tuple(ids)):
            inc = ids[row["id"]]
            inc.acked_at, inc.acked_by, inc.ack_note = row["acked_at"], row["acked_by"], row["ack_note"]

    # ------------------------------------------------------------------------------------
    # notices
    # ------------------------------------------------------------------------------------

    def _process(self, now: float) -> None:
        if not self.config.enabled:
            return
        self._flush_problems(now)
        self._flush_resolved(now)
        self._escalate(now)
        self._remind(now)

    def _unit_name(self, unit_id: str) -> str:
        u = self.config.unit(unit_id)
        return u.name if u else unit_id

    def _incident_units(self, inc_id: int) -> list[tuple[str, int]]:
        return [(r["unit_id"], r["level"]) for r in self.conn.execute(
            "SELECT unit_id, level FROM incident_units WHERE incident_id = ? ORDER BY level, first_at", (inc_id,))]

    def _advice(self, inc: Incident, state: str) -> tuple[str, str]:
        for key in (inc.target, inc.system, LOCAL_LINK if state == "link" else None):
            if key and key in self.config.advice:
                return self.config.advice[key], ""
        key = "local_link" if state == "link" else state if state in ADVICE else "down"
        return ADVICE[key]

    def _item(self, inc: Incident, *, resolved: bool = False) -> NoticeItem:
        t = self.targets.get(inc.target)
        ts = self.states.get(inc.target)
        if resolved:
            state = "up"
        elif ts is not None and ts.flapping:
            state = "flapping"
        elif t is not None and t.uplink and inc.level >= 2:
            state = "link"
        else:
            state = "down" if (ts is not None and ts.health == State.DOWN) or inc.current == "down" else "degraded"
        advice_vi, advice_en = self._advice(inc, state)
        return NoticeItem(
            incident_id=inc.id, target_id=inc.target,
            target_name=t.display_name if t else inc.target,
            system_id=inc.system, system_name=t.system_name if t else None,
            system_name_en=t.system_name_en if t else None,
            state=state, outcome=inc.last_outcome, reason=inc.last_reason, detail=inc.last_detail,
            since=inc.opened_at, resolved_at=inc.resolved_at, cause=inc.cause, acked_by=inc.acked_by,
            advice_vi=advice_vi, advice_en=advice_en,
            flap_percent=ts.flap_percent if ts is not None else None,
            link=bool(t is not None and t.uplink and inc.level >= 2))

    def _affected(self) -> list[str]:
        return [self.targets[tid].display_name for tid, st in self.exported.items()
                if st == State.UNREACHABLE and tid in self.targets]

    def _send(self, event: str, unit_id: str, incs: list[Incident], other_units: Iterable[str], key: str,
              now: float, *, resolved: bool = False, step: int = 0) -> None:
        items = [self._item(i, resolved=resolved) for i in incs]
        items.sort(key=lambda i: (not i.link, i.target_id))
        notice = Notice(event=event, site=self.site, unit_id=unit_id, unit_name=self._unit_name(unit_id),
                        items=items, other_units=[self._unit_name(u) for u in other_units if u != unit_id],
                        affected=self._affected() if any(i.state == "link" for i in items) else (),
                        now=now, escalation_step=step, ack_hint=not resolved)
        subject, body = self.renderer.render(notice)
        if event == "resolved":
            ntype = "success"
        elif event in ("problem", "escalation") and any(i.state in ("down", "link") for i in items):
            ntype = "failure"
        else:
            ntype = "warning"
        self.outbox.enqueue([unit_id], subject, body, key, kind=event, notify_type=ntype,
                            incident_ids=[i.id for i in incs], now=now)

    def _flush_problems(self, now: float) -> None:
        pending = [inc for inc in self.open.values() if inc.pending_since is not None]
        if not pending:
            return
        window_end = min(inc.pending_since for inc in pending) + self.config.group_wait
        if now < window_end:
            return
        # hold the group for targets that started failing inside the window but are not yet
        # confirmed (at most until their threshold could have been reached), so that targets
        # that go down together are one message
        pending_targets = {inc.target for inc in pending}
        for tid, ts in self.states.items():
            t = self.targets.get(tid)
            if (t is None or tid in pending_targets or not ts.failing or ts.bad_since is None
                    or ts.bad_since > window_end or tid in self.open or self._is_muted(tid, now)):
                continue
            horizon = ts.bad_since + t.failure_threshold * min(t.retry_interval or t.interval, t.interval) + 5.0
            if now < horizon:
                return
        per_unit: dict[str, list[Incident]] = {}
        routed: dict[int, list[str]] = {}
        for inc in pending:
            units = self.router.units_for(self._facts(inc.target, inc))
            routed[inc.id] = units
            for u in units:
                per_unit.setdefault(u, []).append(inc)
        with adb.transaction(self.conn):
            for unit_id, incs in per_unit.items():
                others: list[str] = []
                for inc in incs:
                    for u in routed[inc.id] + [u for u, _ in self._incident_units(inc.id)]:
                        if u not in others:
                            others.append(u)
                key = "problem:" + ",".join(
                    f"{i.id}@{'f' if i.flapping else _LEVEL.get(self.states[i.target].health, i.level)}"
                    for i in sorted(incs, key=lambda i: i.id))
                self._send("problem", unit_id, incs, others, key, now)
            for inc in pending:
                ts = self.states[inc.target]
                if ts.flapping:
                    inc.announced_flapping = 1
                else:
                    inc.announced_level = max(inc.announced_level, _LEVEL.get(ts.health, inc.level))
                if inc.announced_at is None:
                    inc.announced_at = now
                inc.pending_since = None
                for u in routed[inc.id]:
                    self.conn.execute(
                        "INSERT INTO incident_units (incident_id, unit_id, level, first_at, last_at) VALUES (?, ?, 0, ?, ?)"
                        " ON CONFLICT(incident_id, unit_id) DO UPDATE SET last_at = excluded.last_at",
                        (inc.id, u, now, now))
                self._save(inc)
                if not routed[inc.id]:
                    log.warning("incident %d (target %s) matched no unit: nobody was told", inc.id, inc.target)
        log.info("announced %d incident(s) to %d unit(s)", len(pending), len(per_unit))

    def _flush_resolved(self, now: float) -> None:
        pending = [inc for inc in self.resolving.values() if inc.resolve_pending_since is not None]
        if not pending:
            return
        if now < min(inc.resolve_pending_since for inc in pending) + self.config.group_wait:
            return
        per_unit: dict[str, list[Incident]] = {}
        told: dict[int, list[str]] = {}
        for inc in pending:
            told[inc.id] = [u for u, _ in self._incident_units(inc.id)]
            for u in told[inc.id]:
                unit = self.config.unit(u)
                if unit is not None and unit.send_resolved:
                    per_unit.setdefault(u, []).append(inc)
        with adb.transaction(self.conn):
            for unit_id, incs in per_unit.items():
                others: list[str] = []
                for inc in incs:
                    for u in told[inc.id]:
                        if u not in others:
                            others.append(u)
                key = "resolved:" + ",".join(str(i.id) for i in sorted(incs, key=lambda i: i.id))
                self._send("resolved", unit_id, incs, others, key, now, resolved=True)
            for inc in pending:
                inc.resolved_announced = 1
                inc.resolve_pending_since = None
                self._save(inc)
                self.resolving.pop(inc.id, None)

    def _active_for_timers(self, inc: Incident, now: float) -> bool:
        return (inc.announced and inc.acked_at is None and inc.pending_since is None
                and not self._is_muted(inc.target, now, inc))

    def _escalate(self, now: float) -> None:
        buckets: dict[str, list[tuple[Incident, int]]] = {}
        done: list[tuple[int, str, int, list[str]]] = []
        for inc in list(self.open.values()):
            if not self._active_for_timers(inc, now) or inc.announced_at is None:
                continue
            units = self._incident_units(inc.id)
            for unit_id, level in units:
                if level != 0:
                    continue
                unit = self.config.unit(unit_id)
                if unit is None:
                    continue
                for step_no, step in enumerate(unit.escalation, start=1):
                    if now - inc.announced_at < step.after:
                        break
                    exists = self.conn.execute(
                        "SELECT 1 FROM escalations WHERE incident_id = ? AND unit_id = ? AND step = ?",
                        (inc.id, unit_id, step_no)).fetchone()
                    if exists:
                        continue
                    told = {u for u, _ in units}
                    recipients = [u for u in step.units if u not in told and self.config.unit(u)]
                    done.append((inc.id, unit_id, step_no, recipients))
                    for r in recipients:
                        buckets.setdefault(r, []).append((inc, step_no))
        if not done:
            return
        with adb.transaction(self.conn):
            for recipient, pairs in buckets.items():
                incs = list({i.id: i for i, _ in pairs}.values())
                step = max(s for _, s in pairs)
                others: list[str] = []
                for inc in incs:
                    for u, _ in self._incident_units(inc.id):
                        if u not in others:
                            others.append(u)
                key = f"escalation:{step}:" + ",".join(str(i.id) for i in sorted(incs, key=lambda i: i.id))
                self._send("escalation", recipient, incs, others, key, now, step=step)
                for inc, s in pairs:
                    self.conn.execute(
                        "INSERT INTO incident_units (incident_id, unit_id, level, first_at, last_at) VALUES (?, ?, ?, ?, ?)"
                        " ON CONFLICT(incident_id, unit_id) DO UPDATE SET last_at = excluded.last_at",
                        (inc.id, recipient, s, now, now))
            for inc_id, unit_id, step_no, recipients in done:
                self.conn.execute("INSERT OR IGNORE INTO escalations (incident_id, unit_id, step, at) VALUES (?, ?, ?, ?)",
                                  (inc_id, unit_id, step_no, now))
                log.info("incident %d escalated from %s (step %d) to %s", inc_id, unit_id, step_no,
                         ", ".join(recipients) or "nobody new")

    def _remind(self, now: float) -> None:
        buckets: dict[str, list[Incident]] = {}
        for inc in list(self.open.values()):
            if not self._active_for_timers(inc, now):
                continue
            for row in self.conn.execute(
                    "SELECT unit_id, last_at FROM incident_units WHERE incident_id = ?", (inc.id,)):
                if now - row["last_at"] >= self.config.repeat_interval and self.config.unit(row["unit_id"]):
                    buckets.setdefault(row["unit_id"], []).append(inc)
        if not buckets:
            return
        with adb.transaction(self.conn):
            for unit_id, incs in buckets.items():
                others: list[str] = []
                for inc in incs:
                    for u, _ in self._incident_units(inc.id):
                        if u not in others:
                            others.append(u)
                key = f"reminder:{int(now)}:" + ",".join(str(i.id) for i in sorted(incs, key=lambda i: i.id))
                self._send("reminder", unit_id, incs, others, key, now)
                for inc in incs:
                    self.conn.execute("UPDATE incident_units SET last_at = ? WHERE incident_id = ? AND unit_id = ?",
                                      (now, inc.id, unit_id))


class EngineCollector:
    """Prometheus collector for the engine (register with ``registry.register(engine.collector)``).

    Series:
        ``hcc_sentinel_target_state{target,state}`` — 1 for the current state, 0 for the other
        four (enum style, as prometheus-client's ``Enum`` metric);
        ``hcc_sentinel_target_flapping{target}`` — 1 while flapping;
        ``hcc_sentinel_incidents_open{cause}``;
        ``hcc_sentinel_notifications_total{unit,channel,result}`` — delivery attempts, ``result``
        ``sent`` or ``failed``, ``channel`` the URL scheme only;
        ``hcc_sentinel_notifications_expired_total{unit,channel}`` — given up after max_age;
        ``hcc_sentinel_outbox_messages`` — messages with a delivery still pending;
        ``hcc_sentinel_outbox_oldest_age_seconds`` — age of the oldest of them.

    ``collect`` reads only in-memory snapshots (no database access), so it is safe from the
    scrape thread.
    """

    def __init__(self, engine: AlertEngine) -> None:
        self.engine = engine

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterable[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        e = self.engine
        state = GaugeMetricFamily("hcc_sentinel_target_state",
                                  "State of a target as the alerting engine sees it (1 for the current state).",
                                  labels=["target", "state"])
        flap = GaugeMetricFamily("hcc_sentinel_target_flapping", "1 while the target is flapping.", labels=["target"])
        exported = dict(e.exported)
        states = dict(e.states)
        for tid in list(e.targets):
            current = exported.get(tid, State.UP)
            for s in STATES:
                state.add_metric([tid, s.value], 1.0 if s == current else 0.0)
            ts = states.get(tid)
            flap.add_metric([tid], 1.0 if ts is not None and ts.flapping else 0.0)
        yield state
        yield flap
        inc = GaugeMetricFamily("hcc_sentinel_incidents_open", "Open incidents by cause.", labels=["cause"])
        by_cause = {SYSTEM: 0, LOCAL_LINK: 0}
        for i in list(e.open.values()):
            by_cause[i.cause] = by_cause.get(i.cause, 0) + 1
        for cause, n in sorted(by_cause.items()):
            inc.add_metric([cause], float(n))
        yield inc
        sent = CounterMetricFamily("hcc_sentinel_notifications",
                                   "Notification delivery attempts by unit, channel scheme and result.",
                                   labels=["unit", "channel", "result"])
        for (unit, scheme, result), n in sorted(dict(e.outbox.counts).items()):
            sent.add_metric([unit, scheme, result], float(n))
        yield sent
        expired = CounterMetricFamily("hcc_sentinel_notifications_expired",
                                      "Notifications given up after the outbox max_age.", labels=["unit", "channel"])
        for (unit, scheme), n in sorted(dict(e.outbox.expired).items()):
            expired.add_metric([unit, scheme], float(n))
        yield expired
        yield GaugeMetricFamily("hcc_sentinel_outbox_messages", "Messages with a delivery still pending.",
                                value=float(e.outbox.depth))
        yield GaugeMetricFamily("hcc_sentinel_outbox_oldest_age_seconds",
                                "Age of the oldest pending message, seconds (0 when none).",
                                value=e.outbox.oldest_age())
