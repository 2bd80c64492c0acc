"""Observations for the SLA report from one agent's own files (``report sla --local -c FILE``).

* Probe results: ``<data_dir>/history.db`` (:mod:`agent.store`, table ``results``), aggregated per
  target and minute in SQL.  The agent was **present** in a minute when it stored any result in
  it (its uplink checks run every 30 s); otherwise the minute is **unknown**.
* Systems, objectives, uplink targets: the agent config (``systems:``; a target is a link check
  when ``uplink: true`` or ``system: uplink``; ``host`` targets are not services).
* Maintenance: the config's ``alerting.maintenance`` windows (:class:`alerts.maintenance.
  MaintenanceSchedule`, matched per target) and silences created with ``maintenance`` in
  ``<data_dir>/alerts.db``.  A target in maintenance is left out of the minute; the (commune,
  system) minute is maintenance only when every target of the system probed in that minute is in
  maintenance (every configured target when none was probed).
* Incidents and who was notified when: ``alerts.db`` tables ``incidents``, ``incident_units``,
  ``messages`` and ``deliveries`` (the outbox); channels appear as their scheme and fingerprint,
  never as the URL.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np

from agent.report.accounting import (FAIL, NOPROBE, OK, SLOW, UNKNOWN, UPLINK, AlertRecord, CommuneMeta,
                                     Observations, SystemMeta)


class LocalSourceError(RuntimeError):
    """The agent's history cannot be read (message names the file and what to do)."""


def systems_from_config(config: Any) -> dict[str, SystemMeta]:
    """``{id: SystemMeta}`` from an agent config's ``systems:`` (``uplink`` and ``host`` included)."""
    return {s.id: SystemMeta(id=s.id, name=s.name, name_en=s.name_en or "", owner=s.owner or "",
                             objective=s.objective) for s in config.systems}


def _target_system(config: Any, t: Any) -> str | None:
    if t.probe_kind == "host" or t.system == "host":
        return None
    if t.uplink or t.system == UPLINK:
        return UPLINK
    return t.system or t.id


def load(config: Any, start: int, end: int) -> Observations:
    """Observations of the agent configured by ``config`` for ``[start, end)`` (Unix seconds,
    multiples of 60).

    Raises:
        LocalSourceError: no ``history.db`` under ``data_dir`` or it cannot be read.
        ValueError: bad period.
    """
    from agent.store import DB_NAME, HistoryDB, StoreError

    if start % 60 or end % 60 or end <= start:
        raise ValueError("start and end must be multiples of 60 s with end > start")
    n = (end - start) // 60
    data_dir = Path(config.agent.data_dir)
    path = data_dir / DB_NAME
    if not path.exists():
        raise LocalSourceError(f"{path}: no probe history (has the agent run with this config? is data_dir right?)")
    try:
        db = HistoryDB(path, readonly=True)
    except StoreError as exc:
        raise LocalSourceError(str(exc)) from None
    try:
        with db._lock:  # the report reads in bulk; HistoryDB has no aggregate query for this
            rows = db.conn.execute(
                "SELECT target, CAST((started_at - ?) / 60 AS INTEGER) AS m, "
                "MAX(outcome IN ('error', 'hang')), MAX(outcome = 'slow'), COUNT(*) "
                "FROM results WHERE started_at >= ? AND started_at < ? GROUP BY target, m",
                (start, start, end)).fetchall()
            counts = db.conn.execute(
                "SELECT target, outcome, COUNT(*) FROM results WHERE started_at >= ? AND started_at < ? "
                "GROUP BY target, outcome", (start, end)).fetchall()
    except sqlite3.Error as exc:
        raise LocalSourceError(f"{path}: cannot read the history: {exc}") from None
    finally:
        db.close()

    commune = config.agent.commune.code
    tsys = {t.id: _target_system(config, t) for t in config.targets}
    present = np.zeros(n, bool)
    per_target: dict[str, dict[int, tuple[int, int]]] = {}
    for target, m, bad, slow, _cnt in rows:
        if 0 <= m < n:
            present[m] = True
            per_target.setdefault(target, {})[m] = (bad, slow)
    systems_used = sorted({s for s in tsys.values() if s})

    # maintenance per target: the config's windows and maintenance silences
    from alerts.maintenance import MaintenanceSchedule

    tz = config.agent.timezone
    schedule = MaintenanceSchedule(config.alerting.maintenance, tz) if hasattr(config.alerting, "maintenance") \
        else None
    silences = _maintenance_silences(data_dir)
    target_maint: dict[str, np.ndarray] = {}
    for t in config.targets:
        if not tsys.get(t.id):
            continue
        facts = {"target": t.id, "system": t.system, "owner": config.owner_of(t), "commune": commune,
                 "kind": None, "severity": None, "cause": None, "outcome": None}
        windows = [(w.start, w.end) for w in (schedule.occurrences(start, end, facts) if schedule else [])]
        windows += [(max(a, start), min(b, end)) for a, b, m in silences if m.matches(facts) and a < end and b > start]
        arr = target_maint[t.id] = np.zeros(n, bool)
        for a, b in windows:
            arr[int((a - start) // 60):int(-(-(b - start) // 60))] = True

    codes: dict[tuple[str, str], np.ndarray] = {}
    maint: dict[tuple[str, str], np.ndarray] = {}
    for s in systems_used:
        targets = [t for t, sys_id in tsys.items() if sys_id == s]
        # worst observation of the targets NOT in maintenance, and of those in maintenance (0 = none)
        active = np.zeros(n, np.int8)
        in_maint = np.zeros(n, np.int8)
        all_maint = np.ones(n, bool)  # every configured target of s in maintenance
        for t in targets:
            tm = target_maint.get(t, np.zeros(n, bool))
            all_maint &= tm
            for m, (bad, slow) in per_target.get(t, {}).items():
                code = FAIL if bad else (SLOW if slow else OK)
                dest = in_maint if tm[m] else active
                dest[m] = max(dest[m], code)
        # the minute is maintenance only when every target observed in it is in maintenance (or,
        # when none was probed, every target of the system); otherwise the targets in maintenance
        # are left out and the minute is judged on the others
        is_maint = (active == 0) & ((in_maint > 0) | all_maint)
        arr = np.where(present, NOPROBE, UNKNOWN).astype(np.int8)
        arr = np.where(active > 0, active, np.where(in_maint > 0, in_maint, arr)).astype(np.int8)
        codes[(commune, s)] = arr
        if is_maint.any():
            maint[(commune, s)] = is_maint

    success: dict[str, dict[str, int]] = {}
    for target, outcome, cnt in counts:
        s = tsys.get(target)
        if s and s != UPLINK and outcome in ("ok", "slow"):
            success.setdefault(s, {"ok": 0, "slow": 0})[outcome] += cnt

    meta = systems_from_config(config)
    systems = {s: meta.get(s) or SystemMeta(id=s, name=s) for s in systems_used if s != UPLINK}
    alerts, have_alerts_db = _alerts(data_dir, start, end)
    c = config.agent.commune
    notes = ["Nguồn dữ liệu: lịch sử đo của agent tại xã (history.db) và cơ sở dữ liệu cảnh báo (alerts.db)."]
    if not have_alerts_db:
        notes.append("Không có alerts.db: không có danh sách sự cố đã cảnh báo và người nhận thông báo.")
    return Observations(start=start, minutes=n, communes={c.code: CommuneMeta(c.code, c.name, c.type)},
                        systems=systems, codes=codes, maint=maint, source="local", notes=notes, alerts=alerts,
                        notifications_available=have_alerts_db, success_counts=success)


def _maintenance_silences(data_dir: Path) -> list[tuple[float, float, Any]]:
    from alerts import db as adb

    path = adb.db_path(data_dir)
    if not path.exists():
        return []
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        conn.row_factory = sqlite3.Row
        try:
            rows = conn.execute("SELECT * FROM silences WHERE maintenance = 1").fetchall()
        finally:
            conn.close()
    except sqlite3.Error:
        return []
    from alerts.maintenance import Silence

    out = []
    for r in rows:
        s = Silence.from_row(r)
        end = s.ends_at if s.expired_at is None else min(s.ends_at, s.expired_at)
        out.append((s.starts_at, end, s.matchers))
    return out


def _alerts(data_dir: Path, start: int, end: int) -> tuple[list[AlertRecord], bool]:
    """Incidents of the agent's alerts database overlapping the period, with their notifications."""
    from alerts import db as adb

    path = adb.db_path(data_dir)
    if not path.exists():
        return [], False
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        conn.row_factory = sqlite3.Row
        try:
            incs = conn.execute(
                "SELECT * FROM incidents WHERE opened_at < ? AND (resolved_at IS NULL OR resolved_at >= ?) "
                "ORDER BY opened_at", (end, start)).fetchall()
            units = conn.execute("SELECT * FROM incident_units").fetchall()
            msgs = conn.execute("SELECT id, unit_id, kind, subject, created_at, incident_ids FROM messages").fetchall()
            dels = conn.execute("SELECT message_id, unit_id, channel, scheme, status, attempts, sent_at "
                                "FROM deliveries").fetchall()
        finally:
            conn.close()
    except sqlite3.Error:
        return [], False
    by_msg: dict[int, list[sqlite3.Row]] = {}
    for d in dels:
        by_msg.setdefault(d["message_id"], []).append(d)
    msgs_by_inc: dict[int, list[sqlite3.Row]] = {}
    for m in msgs:
        try:
            ids = json.loads(m["incident_ids"] or "[]")
        except ValueError:
            ids = []
        for i in ids:
            msgs_by_inc.setdefault(int(i), []).append(m)
    units_by_inc: dict[int, list[sqlite3.Row]] = {}
    for u in units:
        units_by_inc.setdefault(u["incident_id"], []).append(u)
    out: list[AlertRecord] = []
    for inc in incs:
        notes: list[dict[str, Any]] = []
        for m in msgs_by_inc.get(inc["id"], []):
            ds = by_msg.get(m["id"], [])
            if not ds:
                notes.append({"at": m["created_at"], "unit": m["unit_id"], "kind": m["kind"],
                              "channel": "", "status": "queued", "subject": m["subject"]})
            for d in ds:
                notes.append({"at": d["sent_at"] or m["created_at"], "unit": d["unit_id"], "kind": m["kind"],
                              "channel": f"{d['scheme']} ({str(d['channel'])[:8]})", "status": d["status"],
                              "subject": m["subject"]})
        for u in units_by_inc.get(inc["id"], []):
            if not any(x["unit"] == u["unit_id"] for x in notes):
                notes.append({"at": u["first_at"], "unit": u["unit_id"], "kind": f"routed (level {u['level']})",
                              "channel": "", "status": "routed", "subject": ""})
        notes.sort(key=lambda x: x["at"] or 0)
        labels = {"target": inc["target"], "system": inc["system"] or "", "commune_code": inc["commune"] or ""}
        cause = {"system": "central", "local_link": "local-link"}.get(inc["cause"], inc["cause"])
        if inc["cause"] == "local_link":
            labels["system"] = UPLINK if inc["system"] in (None, "", UPLINK) else inc["system"]
        out.append(AlertRecord(name=f"incident #{inc['id']} {inc['target']}", start=inc["opened_at"],
                               end=inc["resolved_at"], labels=labels, source="alerts.db",
                               notifications=notes, cause=cause))
    return out, True
