"""The commune status page (``GET /status``) and its JSON API (``GET /api/status``).

For the commune IT contact, in Vietnamese: the uplink verdict in the header ("is it our link or
the provincial/central system?"), each target's current state with since-when (local time of
``agent.timezone``, Asia/Ho_Chi_Minh), a 24-hour timeline bar per target (15-minute buckets
showing the worst outcome), open incidents (who was told and when, escalation level, an
acknowledge button guarded by ``alerting.ack_token``), maintenance windows and silences.

Routes (added by :func:`setup_routes`, called by :func:`agent.server.build_app`):

* ``GET /status`` — the HTML page (jinja2, autoescaped); refreshes itself every 30 s (``?refresh=N``
  seconds, 2..3600) with a
  small same-origin script (``<noscript>``: a meta refresh), works without any external asset
  (``/static/status.css``, ``/static/status.js`` are served by the agent; a
  ``Content-Security-Policy: default-src 'self'`` header forbids anything else).
* ``GET /api/status`` — the same data as JSON (see :func:`collect`).
* ``POST /status/ack`` — the page's form (``incident``, ``token``, ``by``, ``note``): acknowledge
  an incident and redirect back (303 to ``/status?msg=acked``).  **403** (the page again, saying
  why) when no ack token is configured or the token is wrong (constant-time comparison,
  :func:`hmac.compare_digest`), 404 for an unknown incident, 400 for a malformed request.
  Programs use the alerts API instead: ``POST /api/incidents/{id}/ack`` with
  ``Authorization: Bearer <token>`` (:mod:`agent.api_alerts`).

Data sources (the page is read-only except the acknowledgement):

* current results: the runtime's scheduler (last result per target, in memory);
* the timeline and "since" of targets without alert state: the history database
  (``<data_dir>/history.db``, table ``results``), read through a separate read-only SQLite
  connection (WAL: never blocks the writer), querying only the last 24 h through the
  ``(target, started_at)`` index;
* states (up/degraded/down/maintenance/unreachable and since when), incidents with the units
  told, escalations and acknowledgements, silences: the running alerts engine
  (``runtime.alerts``, :class:`alerts.engine.AlertEngine`, attached by
  :func:`agent.api_alerts.attach`); maintenance windows: ``alerting.maintenance``
  (:class:`alerts.maintenance.MaintenanceSchedule`).  With ``alerting.enabled: false`` there is
  no engine: states are derived from the last results (ok → up, slow → degraded, error/hang →
  down; maintenance windows and dependencies applied as the engine does) and there are no
  incidents.

Secrets never appear: results are stored without them (probes scrub their own), and as a last
line every string the page or the API returns is scrubbed of every :class:`pydantic.SecretStr`
value of the config.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hmac
import json
import logging
import sqlite3
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable
from zoneinfo import ZoneInfo

from aiohttp import web
from pydantic import BaseModel, SecretStr

from probes.base import Outcome, nfc
from probes.flow import Scrubber

if TYPE_CHECKING:
    import jinja2

    from agent.runtime import AgentRuntime

log = logging.getLogger("hcc_sentinel.status")

HERE = Path(__file__).resolve().parent
TEMPLATES_DIR = HERE / "templates"
STATIC_DIR = HERE / "static"

#: Timeline: 96 buckets of 15 minutes = the last 24 h.
BUCKET_SECONDS = 900
BUCKETS = 96
#: Seconds between page refreshes.
REFRESH_SECONDS = 30

#: Order of badness for "worst outcome" of a bucket (higher is worse).
OUTCOME_RANK = {"ok": 0, "slow": 1, "error": 2, "hang": 3}
_RANK_OUTCOME = {v: k for k, v in OUTCOME_RANK.items()}

#: Vietnamese labels of the exported states (alerts.state.State) plus "unknown".
STATE_VI = {
    "up": "Bình thường",
    "degraded": "Chậm (suy giảm)",
    "down": "Ngừng hoạt động",
    "maintenance": "Đang bảo trì",
    "unreachable": "Không kiểm tra được (mất đường truyền)",
    "unknown": "Chưa có dữ liệu",
}
#: Sort order on the page: worst first.
STATE_ORDER = {"down": 0, "unreachable": 1, "degraded": 2, "maintenance": 3, "unknown": 4, "up": 5}

#: Short Vietnamese explanation of reason codes (probes.base.REASONS).
REASON_VI = {
    "ok": "bình thường", "slow": "phản hồi chậm",
    "dns": "lỗi phân giải tên miền (DNS)", "dns_answer": "DNS trả lời sai",
    "refused": "máy chủ từ chối kết nối", "reset": "kết nối bị ngắt giữa chừng",
    "unreachable": "không có đường tới máy chủ", "connect": "lỗi kết nối",
    "tls": "lỗi TLS/chứng chỉ", "tls_expired": "chứng chỉ hết hạn", "tls_hostname": "chứng chỉ sai tên miền",
    "tls_expiring": "chứng chỉ sắp hết hạn", "http_status": "mã trạng thái HTTP không đúng",
    "content": "nội dung trang không đúng (có thể đang bảo trì)", "json": "dữ liệu JSON không đúng",
    "redirect_limit": "chuyển hướng quá nhiều lần", "redirect_policy": "chuyển hướng không được phép",
    "body_too_large": "trang quá lớn", "protocol": "phản hồi sai giao thức", "expect": "phản hồi không như mong đợi",
    "loss": "mất gói tin", "threshold": "tài nguyên máy vượt ngưỡng", "permission": "hệ điều hành không cho phép",
    "step": "một bước thao tác không đạt", "internal": "lỗi nội bộ của công cụ giám sát",
    "timeout_resolve": "DNS không trả lời (treo)", "timeout_connect": "không kết nối được (treo)",
    "timeout_tls": "bắt tay TLS bị treo", "timeout_first_byte": "gửi yêu cầu nhưng không có phản hồi (treo)",
    "stall": "dữ liệu ngừng truyền giữa chừng (treo)", "timeout_total": "quá thời gian cho phép (treo)",
}


# --------------------------------------------------------------------------------------------
# Secrets
# --------------------------------------------------------------------------------------------


def secret_values(obj: Any, _seen: set[int] | None = None) -> set[str]:
    """Every :class:`pydantic.SecretStr` value inside a config object (models, lists, dicts),
    at least 3 characters long."""
    seen = _seen if _seen is not None else set()
    if id(obj) in seen:
        return set()
    seen.add(id(obj))
    out: set[str] = set()
    if isinstance(obj, SecretStr):
        value = obj.get_secret_value()
        if len(value) >= 3:
            out.add(value)
    elif isinstance(obj, BaseModel):
        for name in type(obj).model_fields:
            out |= secret_values(getattr(obj, name, None), seen)
    elif isinstance(obj, dict):
        for value in obj.values():
            out |= secret_values(value, seen)
    elif isinstance(obj, (list, tuple, set, frozenset)):
        for value in obj:
            out |= secret_values(value, seen)
    return out


def Scrub(secrets: Iterable[str]) -> Scrubber:  # noqa: N802 - reads like the class it builds
    """A :class:`probes.flow.Scrubber` loaded with ``secrets``: replaces each (raw,
    percent-encoded, form-encoded, JSON-escaped) by ``***`` in strings, lists and dicts."""
    scrubber = Scrubber()
    for secret in secrets:
        scrubber.add(secret)
    return scrubber


# --------------------------------------------------------------------------------------------
# Time helpers (local time of the agent, Asia/Ho_Chi_Minh by default)
# --------------------------------------------------------------------------------------------


def local_text(ts: float | None, tz: ZoneInfo, with_date: bool = True) -> str:
    """``"08:15 30/11/2026"`` (or ``"08:15"``) in ``tz``; ``""`` for None."""
    if ts is None:
        return ""
    d = dt.datetime.fromtimestamp(ts, tz)
    return d.strftime("%H:%M %d/%m/%Y") if with_date else d.strftime("%H:%M")


def duration_vi(seconds: float) -> str:
    """``"2 ngày 3 giờ"``, ``"5 giờ 10 phút"``, ``"12 phút"``, ``"dưới 1 phút"``."""
    s = int(max(0, seconds))
    days, rest = divmod(s, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    if days:
        return f"{days} ngày {hours} giờ" if hours else f"{days} ngày"
    if hours:
        return f"{hours} giờ {minutes} phút" if minutes else f"{hours} giờ"
    if minutes:
        return f"{minutes} phút"
    return "dưới 1 phút"


def iso_local(ts: float | None, tz: ZoneInfo) -> str | None:
    return None if ts is None else dt.datetime.fromtimestamp(ts, tz).isoformat(timespec="seconds")


# --------------------------------------------------------------------------------------------
# History database queries (read-only connection)
# --------------------------------------------------------------------------------------------

_RANK_SQL = "CASE outcome WHEN 'hang' THEN 3 WHEN 'error' THEN 2 WHEN 'slow' THEN 1 ELSE 0 END"


class HistoryReader:
    """Read-only queries on ``history.db`` for the status page.

    Args:
        path: the history database (created by :class:`agent.store.Store`).

    Every query is bounded to a time window and filtered by target first, so SQLite walks the
    ``results_target_time (target, started_at)`` index (see :meth:`plan`).
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._conn: sqlite3.Connection | None = None

    def _connect(self) -> sqlite3.Connection | None:
        if self._conn is None:
            if not self.path.exists():
                return None
            try:
                self._conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=5.0,
                                             check_same_thread=False)
                self._conn.execute("PRAGMA query_only = ON")
            except sqlite3.Error as exc:
                log.warning("status page: cannot open %s read-only: %s", self.path, exc)
                return None
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    BUCKET_SQL = (f"SELECT CAST((started_at - ?) / ? AS INTEGER) AS b, MAX({_RANK_SQL}), "
                  "SUM(outcome = 'ok'), SUM(outcome = 'slow'), SUM(outcome = 'error'), SUM(outcome = 'hang') "
                  "FROM results WHERE target = ? AND started_at >= ? AND started_at < ? GROUP BY b")
    STREAK_SQL = (f"SELECT MAX(started_at) FROM results WHERE target = ? AND started_at >= ? AND started_at < ? "
                  f"AND {_RANK_SQL} != ?")
    FIRST_SQL = "SELECT MIN(started_at) FROM results WHERE target = ? AND started_at > ? AND started_at < ?"

    def buckets(self, targets: list[str], start: float, width: float, count: int) -> dict[str, list[dict[str, int]]]:
        """Per target, ``count`` buckets of ``width`` seconds from ``start`` (Unix seconds):
        ``{"worst": rank or -1 when empty, "ok": n, "slow": n, "error": n, "hang": n}``."""
        conn = self._connect()
        end = start + width * count
        out: dict[str, list[dict[str, int]]] = {}
        for target in targets:
            cells = [{"worst": -1, "ok": 0, "slow": 0, "error": 0, "hang": 0} for _ in range(count)]
            if conn is not None:
                try:
                    rows = conn.execute(self.BUCKET_SQL, (start, width, target, start, end)).fetchall()
                except sqlite3.Error as exc:
                    log.warning("status page: history query failed: %s", exc)
                    rows = []
                for b, worst, ok, slow, error, hang in rows:
                    if 0 <= b < count:
                        cells[b] = {"worst": int(worst), "ok": ok, "slow": slow, "error": error, "hang": hang}
            out[target] = cells
        return out

    def streak_start(self, target: str, rank_class: int, since: float, until: float) -> float | None:
        """Start of the current run of results whose class (0 ok, 1 slow, 2 error/hang) is
        ``rank_class`` (Unix seconds), looking back no further than ``since``; None when the run
        began before ``since`` or there are no results."""
        conn = self._connect()
        if conn is None:
            return None
        rank_expr = {0: 0, 1: 1, 2: 2}[rank_class]
        sql = self.STREAK_SQL.replace(f"{_RANK_SQL} != ?", f"MIN({_RANK_SQL}, 2) != ?") if rank_class == 2 else self.STREAK_SQL
        try:
            last_other = conn.execute(sql, (target, since, until, rank_expr)).fetchone()[0]
            if last_other is None:
                # the whole window is one run: it started with the target's first result, unless
                # there are results before the window (then it is older than the window)
                older = conn.execute("SELECT 1 FROM results WHERE target = ? AND started_at < ? LIMIT 1",
                                     (target, since)).fetchone()
                if older is not None:
                    return None
                return conn.execute(self.FIRST_SQL, (target, since - 1e-6, until)).fetchone()[0]
            return conn.execute(self.FIRST_SQL, (target, last_other, until)).fetchone()[0]
        except sqlite3.Error:
            return None

    def latest(self, targets: list[str], since: float) -> dict[str, Any]:
        """The newest result (:class:`probes.base.ProbeResult`) of each target since ``since``
        (for targets not probed since the agent started)."""
        from agent.store import _COLS, row_to_result

        conn = self._connect()
        out: dict[str, Any] = {}
        if conn is None:
            return out
        for target in targets:
            try:
                row = conn.execute(f"SELECT {_COLS} FROM results WHERE target = ? AND started_at >= ? "
                                   "ORDER BY started_at DESC LIMIT 1", (target, since)).fetchone()
            except sqlite3.Error:
                continue
            if row is not None:
                out[target] = row_to_result(row)
        return out

    def plan(self) -> str:
        """SQLite's plan of the bucket query (the test checks it uses the index)."""
        conn = self._connect()
        if conn is None:
            return ""
        rows = conn.execute("EXPLAIN QUERY PLAN " + self.BUCKET_SQL, (0, 900, "x", 0, 1)).fetchall()
        return " | ".join(str(r[-1]) for r in rows)


# --------------------------------------------------------------------------------------------
# The data of the page
# --------------------------------------------------------------------------------------------


def _class_of(outcome: str | None) -> int:
    return {"ok": 0, "slow": 1}.get(outcome or "", 2)


def _health_of(outcome: str | None) -> str:
    return {"ok": "up", "slow": "degraded", "error": "down", "hang": "down"}.get(outcome or "", "unknown")


class StatusPage:
    """Builds the page data from a runtime; one per application.

    Args:
        runtime: the :class:`agent.runtime.AgentRuntime` (reads ``config``, ``scheduler``,
            ``metrics``, ``store``).
    """

    def __init__(self, runtime: "AgentRuntime") -> None:
        self.runtime = runtime
        self._history: HistoryReader | None = None
        self._data_dir: Path | None = None
        self._env: jinja2.Environment | None = None

    @property
    def env(self) -> "jinja2.Environment":
        """The page's jinja2 environment, made at the first page view (jinja2 costs ~1 MiB of
        RSS that an agent nobody looks at does not need)."""
        if self._env is None:
            import jinja2

            self._env = jinja2.Environment(
                loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR)),
                autoescape=True,  # every template is HTML
                undefined=jinja2.StrictUndefined,
                trim_blocks=True,
                lstrip_blocks=True,
            )
        return self._env

    # -- sources -----------------------------------------------------------------------------
    def _reader(self) -> HistoryReader:
        data_dir = Path(self.runtime.config.agent.data_dir)
        if data_dir != self._data_dir or self._history is None:
            self.close()
            self._data_dir = data_dir
            store = getattr(self.runtime, "store", None)
            path = Path(store.path) if store is not None else data_dir / "history.db"
            self._history = HistoryReader(path)
        return self._history

    def close(self) -> None:
        if self._history is not None:
            self._history.close()
            self._history = None

    def _last_results(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        sched = getattr(self.runtime, "scheduler", None)
        if sched is not None:
            for tid, st in getattr(sched, "states", {}).items():
                if getattr(st, "last_result", None) is not None:
                    out[tid] = st.last_result
        for tid, c in getattr(self.runtime.metrics, "counters", {}).items():
            if tid not in out and getattr(c, "last", None) is not None:
                out[tid] = c.last
        return out

    def engine(self) -> Any | None:
        """The running :class:`alerts.engine.AlertEngine` (``runtime.alerts``, set by
        :func:`agent.api_alerts.attach`), or None when alerting is disabled."""
        candidate = getattr(self.runtime, "alerts", None)
        if candidate is not None and hasattr(candidate, "snapshot") and hasattr(candidate, "incidents"):
            return candidate
        return None

    def ack_configured(self) -> bool:
        token = self.runtime.config.alerting.ack_token
        return token is not None and bool(token.get_secret_value())

    def check_token(self, given: str | None) -> bool:
        """Constant-time comparison with ``alerting.ack_token``; False when none is set."""
        token = self.runtime.config.alerting.ack_token
        if token is None or not token.get_secret_value() or not given:
            return False
        return hmac.compare_digest(given.encode("utf-8"), token.get_secret_value().encode("utf-8"))

    def scrubber(self) -> Scrub:
        return Scrub(secret_values(self.runtime.config))

    # -- collect -----------------------------------------------------------------------------
    async def collect(self, now: float | None = None) -> dict[str, Any]:
        """Everything the page shows, JSON-ready (times as Unix seconds plus local text).

        Returns:
            ``{"generated_at", "generated_at_local", "timezone", "agent": {...}, "uplink": {...},
            "summary": {state: n}, "timeline": {"start", "bucket_seconds", "buckets", "labels"},
            "targets": [...], "incidents": [...], "maintenance": [...], "silences": [...],
            "ack": {"enabled", "why"}}`` — see docs/flow-status.md for every field.
        """
        now = time.time() if now is None else now
        config = self.runtime.config
        tz = ZoneInfo(config.agent.timezone)
        history = self._reader()
        last = self._last_results()
        specs = config.target_specs()
        ids = [s.id for s in specs]
        end = (int(now) // BUCKET_SECONDS + 1) * BUCKET_SECONDS
        start = end - BUCKETS * BUCKET_SECONDS

        engine = self.engine()
        snapshot: dict[str, dict[str, Any]] | None = None
        incidents: list[dict[str, Any]] = []
        silences: list[Any] = []
        states: dict[str, dict[str, Any]] = {}
        if engine is not None:
            # the engine's connection belongs to the event loop's thread: read it here (fast)
            snapshot = {s["target"]: s for s in engine.snapshot()}
            incidents = engine.incidents(open_only=True, limit=200)
            silences = engine.silences()
            states = {tid: {"health": s["health"], "state": s["state"], "since": s["since"],
                            "flapping": s["flapping"]} for tid, s in snapshot.items()}

        def read_db() -> tuple[dict[str, list[dict[str, int]]], dict[str, float | None]]:
            buckets = history.buckets(ids, start, BUCKET_SECONDS, BUCKETS)
            missing = [tid for tid in ids if tid not in last]
            if missing:  # not probed since the agent started: the newest stored result
                last.update(history.latest(missing, now - 86400))
            streaks: dict[str, float | None] = {}
            for tid in ids:
                r = last.get(tid)
                if r is not None and not (states.get(tid) or {}).get("since"):
                    streaks[tid] = history.streak_start(tid, _class_of(r.outcome.value), now - 86400, now + 1)
            return buckets, streaks

        buckets, streaks = await asyncio.to_thread(read_db)

        # maintenance: configured windows (alerts.maintenance) and maintenance silences
        windows_out: list[dict[str, Any]] = []
        active_windows: list[tuple[Any, Any]] = []
        try:
            from alerts.maintenance import MaintenanceSchedule

            schedule = MaintenanceSchedule(config.alerting.maintenance, config.agent.timezone)
            active_windows = schedule.active(now)
            upcoming = schedule.occurrences(now, now + 7 * 86400)
        except Exception as exc:  # noqa: BLE001 - a bad window must not take the page down
            log.warning("status page: maintenance windows: %s", exc)
            upcoming = []
        active_names = {w.name for w, _ in active_windows}
        seen: set[tuple[str, float]] = set()
        for w, occ in active_windows:
            seen.add((w.name, occ.start))
            windows_out.append({"name": w.name, "active": True, "start": occ.start, "end": occ.end,
                                "start_local": local_text(occ.start, tz), "end_local": local_text(occ.end, tz),
                                "match": _matchers_text(w)})
        for occ in upcoming[:20]:
            if (occ.name, occ.start) in seen or occ.start <= now:
                continue
            seen.add((occ.name, occ.start))
            w = next((x for x in config.alerting.maintenance if x.name == occ.name), None)
            windows_out.append({"name": occ.name, "active": False, "start": occ.start, "end": occ.end,
                                "start_local": local_text(occ.start, tz), "end_local": local_text(occ.end, tz),
                                "match": _matchers_text(w) if w is not None else ""})
        silences_out = []
        for s in silences:
            silences_out.append({"id": s.id, "author": s.author, "reason": s.reason, "active": s.active(now),
                                 "maintenance": s.maintenance, "starts_at": s.starts_at, "ends_at": s.ends_at,
                                 "starts_at_local": local_text(s.starts_at, tz), "ends_at_local": local_text(s.ends_at, tz),
                                 "match": _matchers_text(s.matchers)})

        # targets
        targets_out: list[dict[str, Any]] = []
        by_id: dict[str, dict[str, Any]] = {}
        for spec in specs:
            t = config.target(spec.id)
            system = config.system(t.system)
            r = last.get(spec.id)
            st = states.get(spec.id)
            facts = {"target": spec.id, "system": t.system, "owner": config.owner_of(t),
                     "commune": config.agent.commune.code}
            if st is not None:
                health = st["health"]
                since = st.get("since") or streaks.get(spec.id)
                flapping = bool(st.get("flapping"))
            else:
                health = _health_of(r.outcome.value if r is not None else None)
                since = streaks.get(spec.id)
                flapping = False
            if since is None and r is not None and not any(
                    c["ok"] or c["slow"] or c["error"] or c["hang"] for c in buckets.get(spec.id) or []):
                since = r.started_at  # first results not written to the history yet
            unknown = r is None and health == "up" and not since  # nothing probed yet: do not claim "up"
            if unknown:
                health = "unknown"
            maint = next((w.name for w, _ in active_windows if w.matches(facts)), None)
            if maint is None:
                maint = next((f"tạm tắt #{s.id}: {s.reason}" for s in silences
                              if s.maintenance and s.active(now) and s.matchers.matches(facts)), None)
            item: dict[str, Any] = {
                "id": spec.id, "name": t.name or spec.id, "kind": spec.kind, "system": t.system,
                "system_name": system.name if system else (t.system or ""),
                "owner": config.owner_of(t), "uplink": bool(t.uplink), "depends_on": list(t.depends_on),
                "health": health, "state": health if unknown else (st or {}).get("state") or health, "maintenance": maint, "flapping": flapping,
                "since": since, "since_local": local_text(since, tz) if since else "",
                "since_for": duration_vi(now - since) if since else "",
                "interval": spec.interval,
            }
            if r is not None:
                item["last"] = {
                    "outcome": r.outcome.value, "outcome_vi": Outcome(r.outcome).vietnamese,
                    "reason": r.reason, "reason_vi": REASON_VI.get(r.reason, r.reason), "detail": r.detail,
                    "at": r.started_at, "at_local": local_text(r.started_at, tz),
                    "duration_seconds": round(r.duration_seconds, 3),
                    "failed_step": r.facts.get("flow_failed_step"),
                    "steps": [{"name": s.get("name"), "title": s.get("title"), "outcome": s.get("outcome"),
                               "reason": s.get("reason"), "duration_seconds": s.get("duration_seconds"),
                               "status": s.get("status")}
                              for s in (r.facts.get("flow_steps") or []) if isinstance(s, dict)],
                }
            else:
                item["last"] = None
            cells = buckets.get(spec.id) or []
            total = sum(c["ok"] + c["slow"] + c["error"] + c["hang"] for c in cells)
            good = sum(c["ok"] + c["slow"] for c in cells)
            item["availability_24h"] = round(good / total, 4) if total else None
            item["timeline"] = [
                {"outcome": _RANK_OUTCOME.get(c["worst"], "none"), "ok": c["ok"], "slow": c["slow"],
                 "error": c["error"], "hang": c["hang"]} for c in cells]
            targets_out.append(item)
            by_id[spec.id] = item

        # exported state (the engine's when it runs): maintenance > unreachable (a dependency is
        # down) > health
        for item in targets_out:
            if snapshot is None or item["id"] not in snapshot:
                if item["maintenance"]:
                    item["state"] = "maintenance"
                elif item["health"] in ("down", "degraded") and any(
                        by_id.get(d, {}).get("health") == "down" for d in item["depends_on"]):
                    item["state"] = "unreachable"
            item["state_vi"] = STATE_VI.get(item["state"], item["state"])
        targets_out.sort(key=lambda i: (not i["uplink"], STATE_ORDER.get(i["state"], 9), i["system_name"], i["id"]))

        summary = {k: 0 for k in STATE_VI}
        for item in targets_out:
            summary[item["state"]] = summary.get(item["state"], 0) + 1

        # incidents
        units = {u.id: u for u in config.alerting.units}
        incidents_out = []
        for inc in incidents:
            target_item = by_id.get(inc.get("target"))
            told = []
            for u in inc.get("units", []):
                unit = units.get(u.get("unit_id"))
                told.append({"unit": u.get("unit_id"), "unit_name": unit.name if unit else u.get("unit_id"),
                             "level": u.get("level", 0), "first_at": u.get("first_at"),
                             "first_at_local": local_text(u.get("first_at"), tz),
                             "last_at": u.get("last_at"), "last_at_local": local_text(u.get("last_at"), tz)})
            incidents_out.append({
                "id": inc["id"], "target": inc.get("target"),
                "target_name": target_item["name"] if target_item else inc.get("target"),
                "system": inc.get("system"), "cause": inc.get("cause"),
                "cause_vi": "do đường truyền của xã" if inc.get("cause") == "local_link" else "do hệ thống",
                "current": inc.get("current"), "current_vi": STATE_VI.get(inc.get("current") or "", inc.get("current")),
                "severity_level": inc.get("level", 0),
                "escalation_level": max((u["level"] or 0 for u in told), default=0),
                "flapping": bool(inc.get("flapping")),
                "opened_at": inc.get("opened_at"), "opened_at_local": local_text(inc.get("opened_at"), tz),
                "open_for": duration_vi(now - inc["opened_at"]) if inc.get("opened_at") else "",
                "last_reason": inc.get("last_reason"), "last_reason_vi": REASON_VI.get(inc.get("last_reason") or "", ""),
                "last_detail": inc.get("last_detail"),
                "announced_at": inc.get("announced_at"), "announced_at_local": local_text(inc.get("announced_at"), tz),
                "told": told,
                "acked": inc.get("acked_at") is not None, "acked_by": inc.get("acked_by"),
                "acked_at": inc.get("acked_at"), "acked_at_local": local_text(inc.get("acked_at"), tz),
                "ack_note": inc.get("ack_note"),
            })

        data: dict[str, Any] = {
            "generated_at": now,
            "generated_at_local": local_text(now, tz),
            "timezone": config.agent.timezone,
            "agent": {"id": config.agent.id, "commune": {"code": config.agent.commune.code,
                                                        "name": config.agent.commune.name,
                                                        "type": config.agent.commune.type}},
            "uplink": uplink_verdict(targets_out),
            "summary": summary,
            "timeline": {"start": start, "end": end, "bucket_seconds": BUCKET_SECONDS, "buckets": BUCKETS,
                         "labels": [{"index": i, "text": local_text(start + i * BUCKET_SECONDS, tz, with_date=False)}
                                    for i in range(0, BUCKETS + 1, 16)]},
            "targets": targets_out,
            "incidents": incidents_out,
            "maintenance": windows_out,
            "active_maintenance": sorted(active_names),
            "silences": silences_out,
            "ack": {"enabled": self.ack_configured(), "why": "" if self.ack_configured() else ACK_DISABLED},
        }
        return self.scrubber()(data)

    def render(self, data: dict[str, Any], message: str | None = None, status_class: str = "",
               refresh: int = REFRESH_SECONDS) -> str:
        """The HTML page (jinja2 template ``status.html.j2``, autoescaped); ``refresh`` is the
        self-refresh period in seconds."""
        tz = ZoneInfo(data["timezone"])
        start = data["timeline"]["start"]
        width = data["timeline"]["bucket_seconds"]

        def bucket_title(i: int, cell: dict[str, Any]) -> str:
            a = local_text(start + i * width, tz, with_date=False)
            b = local_text(start + (i + 1) * width, tz, with_date=False)
            n = cell["ok"] + cell["slow"] + cell["error"] + cell["hang"]
            if not n:
                return f"{a}–{b}: không có dữ liệu"
            parts = [f"{cell[k]} {Outcome(k).vietnamese}" for k in ("ok", "slow", "error", "hang") if cell[k]]
            return f"{a}–{b}: " + ", ".join(parts)

        html = self.env.get_template("status.html.j2").render(
            d=data, message=message, status_class=status_class, refresh=refresh,
            bucket_title=bucket_title, state_vi=STATE_VI)
        return self.scrubber()(html)


def _matchers_text(m: Any) -> str:
    """``"system=motcua; target~=motcua-.*"`` or ``"mọi mục tiêu"`` for empty matchers."""
    if m is None:
        return ""
    parts = [f"{k}={'|'.join(v)}" for k, v in getattr(m, "match", {}).items()]
    parts += [f"{k}~={v}" for k, v in getattr(m, "match_re", {}).items()]
    return "; ".join(parts) if parts else "mọi mục tiêu"


def _display(t: dict[str, Any]) -> str:
    """A target's display name: its ``name``, else its id."""
    return str(t.get("name") or t["id"])


def own_scope(targets: list[dict[str, Any]]) -> tuple[set[str], set[str]]:
    """``(systems, owners)`` that are the commune's own: the systems of its uplink targets
    (``uplink: true``) and of its ``host`` targets (the agent's machine), and those systems'
    owners (the commune's IT contact, e.g. ``it-26068``)."""
    own = [t for t in targets if t.get("uplink") or t.get("kind") == "host"]
    systems = {str(t["system"]) for t in own if t.get("system")}
    owners = {str(t["owner"]) for t in own if t.get("owner")}
    return systems, owners


def uplink_verdict(targets: list[dict[str, Any]]) -> dict[str, Any]:
    """Answer "is it our link or the provincial/central system?" from the current states.

    Only targets of shared (provincial/central) systems can be blamed on "them": a ``host``
    target (the agent's own machine) and targets of the commune's own systems or owners
    (:func:`own_scope`) are never listed as failing "ở phía tỉnh/trung ương"; their problems
    get their own lines in ``notes``.  Names are display names (``name``, else the id).

    Returns:
        ``{"state": "local" | "remote" | "ok" | "unknown", "title": Vietnamese headline,
        "text": one Vietnamese sentence, "notes": [extra Vietnamese lines], "uplink_targets":
        [...], "failing": [names of failing shared-system targets], "host_failing": [names],
        "local_failing": [names]}``:
        ``local`` — an uplink target (``uplink: true``) is down or unreachable: the commune's
        own link; ``remote`` — the uplink is fine but targets of shared systems are
        down/degraded: the provincial/central systems; ``ok`` — no shared system is failing;
        ``unknown`` — no uplink target configured or no result yet.
    """
    uplinks = [t for t in targets if t["uplink"]]
    others = [t for t in targets if not t["uplink"]]
    bad_states = ("down", "unreachable")
    own_systems, own_owners = own_scope(targets)
    failing_states = ("down", "unreachable", "degraded")
    host_failing = [_display(t) for t in others if t.get("kind") == "host" and t["state"] in failing_states]
    local_failing = [_display(t) for t in others if t.get("kind") != "host" and t["state"] in failing_states
                     and (t.get("system") in own_systems or t.get("owner") in own_owners)]
    failing = [_display(t) for t in others if t["state"] in failing_states and t.get("kind") != "host"
               and t.get("system") not in own_systems and t.get("owner") not in own_owners]
    notes = []
    if host_failing:
        notes.append(f"Máy chạy agent của xã có vấn đề ({', '.join(host_failing)}): việc của cán bộ CNTT "
                     "của xã (CPU, bộ nhớ, ổ đĩa, đồng hồ), không phải lỗi của hệ thống tỉnh/trung ương.")
    if local_failing:
        notes.append(f"Thiết bị, dịch vụ của xã đang lỗi ({', '.join(local_failing)}): việc của cán bộ CNTT "
                     "của xã, không phải lỗi của hệ thống tỉnh/trung ương.")
    base = {"uplink_targets": [{"id": t["id"], "name": _display(t), "state": t["state"]} for t in uplinks],
            "failing": failing, "host_failing": host_failing, "local_failing": local_failing, "notes": notes}
    if any(t["state"] in bad_states for t in uplinks):
        names = ", ".join(_display(t) for t in uplinks if t["state"] in bad_states)
        return {**base, "state": "local", "title": "Lỗi do đường truyền của xã",
                "text": f"Kiểm tra đường truyền của xã đang lỗi ({names}). Các hệ thống tỉnh/trung ương có thể vẫn "
                        "hoạt động: hãy kiểm tra modem, cáp, nhà mạng trước."}
    if not uplinks or all(t["state"] == "unknown" for t in uplinks):
        return {**base, "state": "unknown", "title": "Chưa xác định được đường truyền",
                "text": "Chưa có kết quả kiểm tra đường truyền của xã (chưa cấu hình mục tiêu uplink hoặc chưa chạy)."}
    if failing:
        return {**base, "state": "remote", "title": "Đường truyền của xã bình thường — lỗi ở phía hệ thống",
                "text": "Đường truyền của xã vẫn tốt; hệ thống sau đây đang lỗi hoặc chậm ở phía tỉnh/trung ương: "
                        + ", ".join(failing) + "."}
    if notes:
        return {**base, "state": "ok", "title": "Đường truyền và các hệ thống tỉnh/trung ương bình thường",
                "text": "Đường truyền của xã và các hệ thống tỉnh/trung ương được giám sát đang hoạt động bình "
                        "thường; lỗi dưới đây ở phía xã."}
    return {**base, "state": "ok", "title": "Đường truyền và các hệ thống đều bình thường",
            "text": "Đường truyền của xã và các hệ thống được giám sát đang hoạt động bình thường."}


# --------------------------------------------------------------------------------------------
# HTTP handlers
# --------------------------------------------------------------------------------------------

PAGE_KEY: web.AppKey[StatusPage] = web.AppKey("status_page", StatusPage)

#: Why the acknowledge button is disabled (shown on the button and in the 403 answer).
ACK_DISABLED = "Chưa cấu hình mã xác nhận (alerting.ack_token): trang chỉ để xem, không xác nhận được sự cố."

_CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
_MESSAGES = {
    "acked": ("Đã xác nhận sự cố. Nhắc lại và leo thang của sự cố này đã dừng.", "ok"),
}


def _headers() -> dict[str, str]:
    return {"Content-Security-Policy": _CSP, "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer"}


async def status_html(request: web.Request) -> web.StreamResponse:
    """``GET /status``: the page (``?refresh=N`` seconds, ``?msg=acked`` shows a notice)."""
    page = request.app[PAGE_KEY]
    data = await page.collect()
    msg = _MESSAGES.get(request.query.get("msg", ""))
    try:
        refresh = min(3600, max(2, int(request.query.get("refresh", REFRESH_SECONDS))))
    except ValueError:
        refresh = REFRESH_SECONDS
    html = page.render(data, message=msg[0] if msg else None, status_class=msg[1] if msg else "", refresh=refresh)
    return web.Response(text=html, content_type="text/html", charset="utf-8", headers=_headers())


async def status_json(request: web.Request) -> web.StreamResponse:
    """``GET /api/status``: :meth:`StatusPage.collect` as JSON (UTF-8)."""
    data = await request.app[PAGE_KEY].collect()
    return web.Response(text=json.dumps(data, ensure_ascii=False, default=str), content_type="application/json",
                        charset="utf-8", headers={"Cache-Control": "no-store"})


async def _do_ack(page: StatusPage, fields: dict[str, str]) -> tuple[int, dict[str, Any]]:
    """Common ack logic: ``(http_status, json_body)``."""
    if not page.ack_configured():
        return 403, {"error": "ack_disabled", "message": ACK_DISABLED}
    if not page.check_token(fields.get("token")):
        return 403, {"error": "bad_token", "message": "Mã xác nhận không đúng."}
    try:
        incident_id = int(fields.get("incident", ""))
    except ValueError:
        return 400, {"error": "bad_request", "message": "Thiếu hoặc sai mã sự cố."}
    by = nfc((fields.get("by") or "").strip())[:80] or "trang trạng thái"
    note = nfc((fields.get("note") or "").strip())[:500] or None
    engine = page.engine()
    if engine is None:
        return 404, {"error": "not_found", "message": "Cảnh báo của agent đang tắt: không có sự cố để xác nhận."}
    try:
        row = engine.ack(incident_id, by, note)
    except KeyError:
        return 404, {"error": "not_found", "message": f"Không có sự cố #{incident_id}."}
    log.info("incident %s acknowledged by %s from the status page", incident_id, by)
    return 200, {"status": "acked", "incident": {"id": row["id"], "acked_by": row["acked_by"],
                                                 "acked_at": row["acked_at"]}}


async def ack_form(request: web.Request) -> web.StreamResponse:
    """``POST /status/ack`` (form ``incident``, ``token``, ``by``, ``note``): 303 to
    ``/status?msg=acked``, or the page with the reason and status 403/404/400."""
    page = request.app[PAGE_KEY]
    form = await request.post()
    fields = {k: str(v) for k, v in form.items() if isinstance(v, str)}
    status, body = await _do_ack(page, fields)
    if status == 200:
        raise web.HTTPSeeOther("/status?msg=acked")
    data = await page.collect()
    html = page.render(data, message=body["message"], status_class="error")
    return web.Response(status=status, text=html, content_type="text/html", charset="utf-8", headers=_headers())


def setup_routes(app: web.Application, runtime: "AgentRuntime") -> None:
    """Add ``/status``, ``/api/status``, ``POST /status/ack`` and ``/static/`` to ``app``."""
    page = StatusPage(runtime)
    app[PAGE_KEY] = page
    app.router.add_get("/status", status_html)
    app.router.add_get("/status/", status_html)
    app.router.add_get("/api/status", status_json)
    app.router.add_post("/status/ack", ack_form)
    app.router.add_static("/static/", STATIC_DIR, show_index=False, append_version=False)

    async def _close(_app: web.Application) -> None:
        page.close()

    app.on_cleanup.append(_close)
