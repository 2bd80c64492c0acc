"""A synthetic month of probe data for a small fleet, with KNOWN outages.

Used by the tests of the dashboards and of the SLA report (and by anyone who wants to try the
report without a fleet): the same ground truth is written

* as OpenMetrics text for ``promtool tsdb create-blocks-from openmetrics`` (what the central
  Prometheus would hold after scraping the agents: target labels ``commune_code``,
  ``commune_name``, ``commune_type``, ``agent_id``, ``instance``, ``job="hcc-sentinel"`` added),
  see :meth:`Month.write_openmetrics`;
* as one agent's SQLite history (``agent.store.HistoryDB``), see :meth:`Month.write_history`.

The fleet: :data:`COMMUNES` (six real Đồng Nai communes) × :data:`SYSTEMS` (four shared systems,
one HTTP target each) plus each commune's uplink check (``uplink-gateway``, ICMP, every 30 s,
``system="uplink"``) and the agent host (``agent-host``).  Other targets are probed once a minute.

The report period is ``days`` whole local days (Asia/Ho_Chi_Minh) starting at local midnight
``days + 1`` days before ``now``; data continues up to ``now`` so that dashboards have a present.
Known events (minute offsets from the period start, local time):

=============  =====================================================================================
``central``    ``motcua`` fails from every commune on day 8, 09:13–10:00 (47 min: 30 min HTTP 503
               ``http_status`` then 17 min ``timeout_first_byte``) — a central outage.
``local``      ``hotich`` fails from 26041 only on day 5, 10:00–10:25 (25 min, ``tls``) — local.
``link``       26491's uplink is down on day 13, 14:00–16:00 (120 min); its system probes hang
               (``timeout_connect``) meanwhile and their state is ``unreachable``.
``maintenance`` ``dvcqg`` in a declared maintenance window day 19 22:00 – day 20 02:00 (240 min);
               probes see the maintenance page (``content``), state ``maintenance``.
``gap``        26227's agent is off on day 24, 03:00–06:00 (180 min): no samples, ``up`` 0, and the
               counters restart from zero afterwards (a process restart).
``current``    (after the period) ``hotich`` fails from every commune for the last 20 minutes
               before ``now`` and 26503's uplink is down for the last 10 minutes.
=============  =====================================================================================

Background noise (seeded, deterministic): 3 % of successful probes are ``slow``; isolated
one-minute failures (``reset``) at no more than one commune per system and minute, never within
10 minutes of an event or of the end of the period (there a failure would be an ongoing incident,
which the report always lists), so that they never reach a quorum.

Series volume is kept small enough to backfill in seconds: counters
(``probe_outcomes_total``), ``hcc_sentinel_target_state{state="maintenance"}`` and ``up`` are
written every minute for the whole month; info series (``probe_target_info``,
``hcc_sentinel_agent_info``, ``hcc_sentinel_build_info``) every 5 minutes before the last day;
everything else (``probe_success``, durations, the latency histogram, phases, the other states,
certificates, host and agent self-metrics) every minute for the last day only.
Samples sit at second 30 of each minute; a probe of minute ``m`` is counted in that sample.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import os
import time
from pathlib import Path
from typing import Iterable, TextIO
from zoneinfo import ZoneInfo

import numpy as np

LOCAL_TZ = ZoneInfo("Asia/Ho_Chi_Minh")

#: (code, name, type) of the synthetic fleet: real Đồng Nai commune codes and names.
COMMUNES: tuple[tuple[str, str, str], ...] = (
    ("26068", "Phường Biên Hòa", "phuong"),
    ("26041", "Phường Trấn Biên", "phuong"),
    ("26491", "Xã Đại Phước", "xa"),
    ("26503", "Xã Phước An", "xa"),
    ("26227", "Xã La Ngà", "xa"),
    ("25432", "Phường Chơn Thành", "phuong"),
)


@dataclasses.dataclass(frozen=True)
class SystemSpec:
    """A shared system of the synthetic fleet and its one HTTP target."""

    id: str
    name: str
    name_en: str
    owner: str
    objective: float
    target: str
    target_name: str


SYSTEMS: tuple[SystemSpec, ...] = (
    SystemSpec("dvcqg", "Cổng Dịch vụ công quốc gia", "National Public Service Portal", "vpcp", 0.995,
               "dvcqg-home", "Trang chủ Cổng DVC quốc gia"),
    SystemSpec("vneid-sso", "Đăng nhập VNeID (SSO)", "VNeID single sign-on", "cong-an", 0.995,
               "vneid-sso", "Trang đăng nhập VNeID"),
    SystemSpec("motcua", "Hệ thống giải quyết TTHC tỉnh (một cửa)", "Provincial procedure-handling system",
               "so-khcn", 0.995, "motcua-home", "Hệ thống một cửa tỉnh"),
    SystemSpec("hotich", "Phần mềm đăng ký, quản lý hộ tịch", "Civil-status registration", "bo-tu-phap", 0.99,
               "hotich-home", "Hộ tịch điện tử"),
)
UPLINK_TARGET = "uplink-gateway"
HOST_TARGET = "agent-host"
#: ``hcc_sentinel_target_state`` states, in the agent's order.
STATES: tuple[str, ...] = ("up", "degraded", "down", "maintenance", "unreachable")

OK, SLOW, ERROR, HANG = 1, 2, 3, 4
_OUTCOME_NAME = {OK: "ok", SLOW: "slow", ERROR: "error", HANG: "hang"}
#: Reason code per outcome value used in :attr:`Month.reason` (index into this tuple).
REASONS: tuple[str, ...] = ("ok", "slow", "http_status", "timeout_first_byte", "timeout_connect", "content",
                            "tls", "reset", "unreachable")
_R = {r: i for i, r in enumerate(REASONS)}
_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 15.0, 30.0, 60.0)
_LAG_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
RECENT_MINUTES = 1440


@dataclasses.dataclass(frozen=True)
class Event:
    """A known event: ``kind`` (central/local/link/maintenance/gap/current-central/current-link),
    the system (or ``uplink``), the commune codes concerned, start (Unix seconds, UTC) and
    length in minutes."""

    kind: str
    system: str
    communes: tuple[str, ...]
    start: int
    minutes: int

    @property
    def end(self) -> int:
        return self.start + 60 * self.minutes


class Month:
    """Ground truth of the synthetic month, minute by minute.

    Args:
        now: Unix seconds of the last data (default: the current time); floored to the minute.
        days: whole local days in the report period (>= 25, the events need them).
        seed: RNG seed of the background noise.

    Attributes:
        period_start, period_end: the report period, Unix seconds (local midnights).
        data_start, data_end: first minute of data (= ``period_start``) and the end of the last
            minute of data (Unix seconds).
        minutes: number of minutes of data.
        outcome: ``{(commune, target): int8[minutes]}`` — 1 ok, 2 slow, 3 error, 4 hang
            (the outcome of every probe of that target in that minute).
        reason: ``{(commune, target): int8[minutes]}`` — index into :data:`REASONS`.
        present: ``{commune: bool[minutes]}`` — the agent ran (False during the ``gap``).
        maintenance: ``{(commune, target): bool[minutes]}``.
        link_down: ``{commune: bool[minutes]}``.
        events: the known :class:`Event` list.

    Raises:
        ValueError: ``days`` < 25.
    """

    def __init__(self, now: float | None = None, days: int = 30, seed: int = 7):
        if days < 25:
            raise ValueError("days must be >= 25 (the known events are placed up to day 24)")
        now = time.time() if now is None else now
        self.data_end = int(now // 60) * 60
        today = dt.datetime.fromtimestamp(self.data_end, LOCAL_TZ).replace(hour=0, minute=0, second=0,
                                                                           microsecond=0)
        start_local = today - dt.timedelta(days=days + 1)
        self.period_start = int(start_local.timestamp())
        self.period_end = int((start_local + dt.timedelta(days=days)).timestamp())
        self.data_start = self.period_start - 3600  # an hour of history before the period
        self.minutes = (self.data_end - self.data_start) // 60
        self.days = days
        self.communes = [c[0] for c in COMMUNES]
        self.commune_info = {c[0]: c for c in COMMUNES}
        self.system_targets = [s.target for s in SYSTEMS]
        self.targets = [UPLINK_TARGET] + self.system_targets
        self.target_system = {s.target: s.id for s in SYSTEMS} | {UPLINK_TARGET: "uplink", HOST_TARGET: "host"}
        self.events = self._events()
        self._build(seed)

    # -- events ----------------------------------------------------------------------------
    def at(self, day: int, hour: int, minute: int) -> int:
        """Unix seconds of local ``day`` (0 = first day of the period) ``hour:minute``."""
        local = dt.datetime.fromtimestamp(self.period_start, LOCAL_TZ) + dt.timedelta(days=day)
        return int(local.replace(hour=hour, minute=minute).timestamp())

    def _events(self) -> list[Event]:
        all_c = tuple(self.communes)
        return [
            Event("central", "motcua", all_c, self.at(8, 9, 13), 47),
            Event("local", "hotich", ("26041",), self.at(5, 10, 0), 25),
            Event("link", "uplink", ("26491",), self.at(13, 14, 0), 120),
            Event("maintenance", "dvcqg", all_c, self.at(19, 22, 0), 240),
            Event("gap", "*", ("26227",), self.at(24, 3, 0), 180),
            Event("current-central", "hotich", all_c, self.data_end - 20 * 60, 20),
            Event("current-link", "uplink", ("26503",), self.data_end - 10 * 60, 10),
        ]

    def event(self, kind: str) -> Event:
        """The first event of ``kind``.

        Raises:
            KeyError: no such event.
        """
        for e in self.events:
            if e.kind == kind:
                return e
        raise KeyError(kind)

    def minute_index(self, ts: int) -> int:
        return (ts - self.data_start) // 60

    def _slice(self, e: Event) -> slice:
        return slice(self.minute_index(e.start), self.minute_index(e.end))

    def _build(self, seed: int) -> None:
        rng = np.random.default_rng(seed)
        n = self.minutes
        self.outcome: dict[tuple[str, str], np.ndarray] = {}
        self.reason: dict[tuple[str, str], np.ndarray] = {}
        self.maintenance: dict[tuple[str, str], np.ndarray] = {}
        self.present = {c: np.ones(n, bool) for c in self.communes}
        self.link_down = {c: np.zeros(n, bool) for c in self.communes}
        quiet = np.zeros(n, bool)  # no noise near events
        for e in self.events:
            s = self._slice(e)
            quiet[max(0, s.start - 10):s.stop + 10] = True
        # nor at the end of the period: a failure there would be an ongoing incident (always listed)
        pe = self.minute_index(self.period_end)
        quiet[max(0, pe - 10):pe + 10] = True
        for c in self.communes:
            for t in self.targets:
                slow = (rng.random(n) < (0.01 if t == UPLINK_TARGET else 0.03)) & ~quiet
                out = np.where(slow, SLOW, OK).astype(np.int8)
                self.outcome[(c, t)] = out
                self.reason[(c, t)] = np.where(slow, _R["slow"], _R["ok"]).astype(np.int8)
                self.maintenance[(c, t)] = np.zeros(n, bool)
        # isolated one-minute failures: at most one commune per system and minute
        for t in self.system_targets:
            hit = (rng.random(n) < 0.002) & ~quiet
            who = rng.integers(0, len(self.communes), n)
            for i in np.flatnonzero(hit):
                key = (self.communes[who[i]], t)
                self.outcome[key][i] = ERROR
                self.reason[key][i] = _R["reset"]
        for e in self.events:
            s = self._slice(e)
            if e.kind in ("central", "current-central"):
                t = self._target_of(e.system)
                for c in e.communes:
                    self.outcome[(c, t)][s] = ERROR
                    self.reason[(c, t)][s] = _R["http_status"]
                    if e.kind == "central":
                        hang = slice(s.start + 30, s.stop)
                        self.outcome[(c, t)][hang] = HANG
                        self.reason[(c, t)][hang] = _R["timeout_first_byte"]
            elif e.kind == "local":
                t = self._target_of(e.system)
                for c in e.communes:
                    self.outcome[(c, t)][s] = ERROR
                    self.reason[(c, t)][s] = _R["tls"]
            elif e.kind in ("link", "current-link"):
                for c in e.communes:
                    self.link_down[c][s] = True
                    self.outcome[(c, UPLINK_TARGET)][s] = ERROR
                    self.reason[(c, UPLINK_TARGET)][s] = _R["unreachable"]
                    for t in self.system_targets:
                        self.outcome[(c, t)][s] = HANG
                        self.reason[(c, t)][s] = _R["timeout_connect"]
            elif e.kind == "maintenance":
                t = self._target_of(e.system)
                for c in e.communes:
                    self.maintenance[(c, t)][s] = True
                    self.outcome[(c, t)][s] = ERROR
                    self.reason[(c, t)][s] = _R["content"]
            elif e.kind == "gap":
                for c in e.communes:
                    self.present[c][s] = False

    def _target_of(self, system: str) -> str:
        return next(s.target for s in SYSTEMS if s.id == system)

    # -- derived series --------------------------------------------------------------------
    def probes_per_minute(self, target: str) -> int:
        return 2 if target == UPLINK_TARGET else 1

    def state(self, c: str, t: str) -> np.ndarray:
        """``int8[minutes]`` index into :data:`STATES` (a simplified state machine: down after 3
        consecutive failing minutes, degraded while slow or failing less long, unreachable while
        the commune's link is down, maintenance during the window)."""
        out = self.outcome[(c, t)]
        failing = out >= ERROR
        run = np.zeros(len(out), np.int32)
        acc = 0
        for i, f in enumerate(failing.tolist()):
            acc = acc + 1 if f else 0
            run[i] = acc
        st = np.zeros(len(out), np.int8)
        st[(out == SLOW) | (failing & (run < 3))] = 1
        st[failing & (run >= 3)] = 2
        if t != UPLINK_TARGET:
            st[self.link_down[c]] = 4
        st[self.maintenance[(c, t)]] = 3
        return st

    def duration(self, c: str, t: str) -> np.ndarray:
        """Seconds each minute's probe took (deterministic from the outcome)."""
        out = self.outcome[(c, t)]
        idx = np.arange(len(out))
        base = 0.25 + 0.5 * (0.5 + 0.5 * np.sin(idx / 37.0 + len(c) + len(t) + int(c) % 7))
        dur = np.where(out == SLOW, 3.5 + base * 3, base)
        dur = np.where(out == ERROR, 0.08 + base / 5, dur)
        dur = np.where(out == HANG, 15.0, dur)
        if t == UPLINK_TARGET:
            dur = np.where(out == ERROR, 5.0, dur / 20)
        return dur

    # -- OpenMetrics -----------------------------------------------------------------------
    def target_labels(self, c: str) -> str:
        code, name, ctype = self.commune_info[c]
        return (f'agent_id="hcc-{code}",commune_code="{code}",commune_name="{name}",commune_type="{ctype}",'
                f'instance="hcc-{code}:9470",job="hcc-sentinel"')

    def write_openmetrics(self, out: TextIO, part: str = "all") -> int:
        """Write the fleet's month as OpenMetrics text ending in ``# EOF``; returns the number of
        samples.  Timestamps are in seconds (what ``promtool`` expects).

        Args:
            part: ``"month"`` (series kept for the whole month: counters, the maintenance state,
                ``up``, info series), ``"recent"`` (the last day's detail series) or ``"all"``.

        Raises:
            ValueError: unknown ``part``.
        """
        if part not in ("all", "month", "recent"):
            raise ValueError(f"unknown part {part!r}")
        w = _Writer(out, self)
        if part in ("all", "month"):
            self._om_counters(w)
            self._om_states(w, month=True)
            self._om_info(w)
        if part in ("all", "recent"):
            self._om_states(w, month=False)
            self._om_recent(w)
        out.write("# EOF\n")
        return w.samples

    def _om_counters(self, w: "_Writer") -> None:
        w.family("probe_outcomes", "counter")
        for c in self.communes:
            present = self.present[c]
            # the agent restarts after a gap: counters start from zero again
            epoch = np.cumsum(np.r_[False, present[1:] & ~present[:-1]])
            for t in self.targets:
                out, rea = self.outcome[(c, t)], self.reason[(c, t)]
                per = self.probes_per_minute(t)
                key = out.astype(np.int32) * 64 + rea
                for k in np.unique(key):
                    hits = (key == k) & present
                    counts = np.zeros(self.minutes, np.int64)
                    for e in np.unique(epoch):
                        sel = epoch == e
                        counts[sel] = np.cumsum(hits[sel]) * per
                    # a series exists from its first increment (prometheus-client behaviour)
                    born = np.zeros(self.minutes, bool)
                    for e in np.unique(epoch):
                        sel = np.flatnonzero(epoch == e)
                        first = sel[hits[sel]]
                        if len(first):
                            born[first[0]:sel[-1] + 1] = True
                    mask = born & present
                    labels = (f'target="{t}",outcome="{_OUTCOME_NAME[k // 64]}",reason="{REASONS[k % 64]}",'
                              + self.target_labels(c))
                    w.series("probe_outcomes_total", labels, counts, mask)

    def _om_states(self, w: "_Writer", month: bool) -> None:
        w.family("hcc_sentinel_target_state", "gauge")
        recent = np.zeros(self.minutes, bool)
        recent[-RECENT_MINUTES:] = True
        for c in self.communes:
            for t in self.targets:
                st = self.state(c, t)
                for i, name in enumerate(STATES):
                    if (name == "maintenance") != month:
                        continue
                    mask = self.present[c] if month else (self.present[c] & recent)
                    w.series("hcc_sentinel_target_state", f'target="{t}",state="{name}",' + self.target_labels(c),
                             (st == i).astype(np.int64), mask)
        if not month:
            return
        w.family("up", "gauge")
        for c in self.communes:
            w.series("up", self.target_labels(c), self.present[c].astype(np.int64), np.ones(self.minutes, bool))

    def _info_mask(self, c: str) -> np.ndarray:
        idx = np.arange(self.minutes)
        mask = (idx % 5 == 0) | (idx >= self.minutes - RECENT_MINUTES)
        return mask & self.present[c]

    def _om_info(self, w: "_Writer") -> None:
        ones = np.ones(self.minutes, np.int64)
        w.family("probe_target_info", "gauge")
        for c in self.communes:
            for s in SYSTEMS:
                w.series("probe_target_info", f'target="{s.target}",kind="http",system="{s.id}",owner="{s.owner}",'
                         f'name="{s.target_name}",' + self.target_labels(c), ones, self._info_mask(c))
            w.series("probe_target_info", f'target="{UPLINK_TARGET}",kind="icmp",system="uplink",'
                     f'owner="it-{c}",name="Cổng mạng (gateway) của xã",' + self.target_labels(c), ones,
                     self._info_mask(c))
            w.series("probe_target_info", f'target="{HOST_TARGET}",kind="host",system="host",'
                     f'owner="it-{c}",name="Máy chạy agent",' + self.target_labels(c), ones, self._info_mask(c))
        w.family("hcc_sentinel_agent_info", "gauge")
        for c in self.communes:
            w.series("hcc_sentinel_agent_info", self.target_labels(c), ones, self._info_mask(c))
        w.family("hcc_sentinel_build_info", "gauge")
        for c in self.communes:
            version = "0.0.9" if c == "25432" else "0.1.0"
            w.series("hcc_sentinel_build_info", f'version="{version}",python_version="3.11.2",'
                     + self.target_labels(c), ones, self._info_mask(c))

    def _om_recent(self, w: "_Writer") -> None:  # noqa: C901 - one family after another
        n = self.minutes
        recent = np.zeros(n, bool)
        recent[-RECENT_MINUTES:] = True
        idx = np.arange(n)
        w.family("probe_success", "gauge")
        for c in self.communes:
            for t in self.targets:
                w.series("probe_success", f'target="{t}",' + self.target_labels(c),
                         (self.outcome[(c, t)] <= SLOW).astype(np.int64), recent & self.present[c])
        w.family("probe_duration_seconds", "gauge")
        for c in self.communes:
            for t in self.targets:
                w.series("probe_duration_seconds", f'target="{t}",' + self.target_labels(c),
                         self.duration(c, t), recent & self.present[c])
        w.family("probe_latency_seconds", "histogram")
        for c in self.communes:
            present = self.present[c]
            epoch = np.cumsum(np.r_[False, present[1:] & ~present[:-1]])
            for t in self.system_targets:
                dur = self.duration(c, t)
                mask = recent & present
                lab = f'target="{t}",' + self.target_labels(c)

                def cum(x: np.ndarray) -> np.ndarray:
                    y = np.zeros(n, x.dtype)
                    for e in np.unique(epoch):
                        sel = epoch == e
                        y[sel] = np.cumsum(x[sel] * present[sel])
                    return y
                for b in _LATENCY_BUCKETS:
                    w.series("probe_latency_seconds_bucket", lab + f',le="{b!r}"', cum((dur <= b).astype(np.int64)), mask)
                w.series("probe_latency_seconds_bucket", lab + ',le="+Inf"', cum(np.ones(n, np.int64)), mask)
                w.series("probe_latency_seconds_sum", lab, cum(dur), mask)
                w.series("probe_latency_seconds_count", lab, cum(np.ones(n, np.int64)), mask)
        w.family("probe_http_duration_seconds", "gauge")
        shares = {"resolve": 0.05, "connect": 0.1, "tls": 0.15, "processing": 0.6, "transfer": 0.1}
        for c in self.communes:
            for t in self.system_targets:
                dur = self.duration(c, t)
                for phase, share in shares.items():
                    w.series("probe_http_duration_seconds", f'target="{t}",phase="{phase}",' + self.target_labels(c),
                             dur * share, recent & self.present[c])
        w.family("probe_ssl_earliest_cert_expiry", "gauge")
        for c in self.communes:
            for k, s in enumerate(SYSTEMS):
                # hotich's certificate expires 12 days after the end of the data; others 40-130 days
                days_left = 12 if s.id == "hotich" else 40 + 30 * k
                w.series("probe_ssl_earliest_cert_expiry", f'target="{s.target}",' + self.target_labels(c),
                         np.full(n, float(self.data_end + days_left * 86400)), recent & self.present[c])
        for name, fn in (("hcc_sentinel_host_cpu_usage_ratio", lambda k: 0.2 + 0.1 * np.sin(idx / 50 + k)),
                         ("hcc_sentinel_host_memory_used_ratio", lambda k: np.full(n, 0.45 + 0.05 * k))):
            w.family(name, "gauge")
            for k, c in enumerate(self.communes):
                w.series(name, f'target="{HOST_TARGET}",' + self.target_labels(c), fn(k), recent & self.present[c])
        w.family("hcc_sentinel_host_disk_used_ratio", "gauge")
        for k, c in enumerate(self.communes):
            for path, base in (("/", 0.3), ("/var/lib/hcc-sentinel", 0.5)):
                # 26227's data disk is almost full
                value = 0.93 if (c == "26227" and path != "/") else base + 0.02 * k
                w.series("hcc_sentinel_host_disk_used_ratio", f'target="{HOST_TARGET}",path="{path}",'
                         + self.target_labels(c), np.full(n, value), recent & self.present[c])
        w.family("hcc_sentinel_config_last_reload_successful", "gauge")
        for c in self.communes:
            ok = np.ones(n, np.int64)
            if c == "26041":  # a failed reload during the last 90 minutes
                ok[-90:] = 0
            w.series("hcc_sentinel_config_last_reload_successful", self.target_labels(c), ok,
                     recent & self.present[c])
        w.family("hcc_sentinel_outbox_messages", "gauge")
        for c in self.communes:
            depth = np.zeros(n, np.int64)
            if c == "26503":  # messages queue while its link is down
                depth[-10:] = np.arange(1, 11)
            w.series("hcc_sentinel_outbox_messages", self.target_labels(c), depth, recent & self.present[c])
        w.family("hcc_sentinel_scheduler_lag_seconds", "histogram")
        for k, c in enumerate(self.communes):
            lag = np.full(n, 0.004 + 0.01 * k)
            per = len(self.targets)
            lab = self.target_labels(c)
            for b in _LAG_BUCKETS:
                w.series("hcc_sentinel_scheduler_lag_seconds_bucket", lab + f',le="{b!r}"',
                         np.cumsum((lag <= b) * per), recent & self.present[c])
            w.series("hcc_sentinel_scheduler_lag_seconds_bucket", lab + ',le="+Inf"',
                     np.cumsum(np.full(n, per)), recent & self.present[c])
            w.series("hcc_sentinel_scheduler_lag_seconds_sum", lab, np.cumsum(lag * per), recent & self.present[c])
            w.series("hcc_sentinel_scheduler_lag_seconds_count", lab, np.cumsum(np.full(n, per)),
                     recent & self.present[c])

    # -- agent history ---------------------------------------------------------------------
    def write_history(self, commune: str, path: str | os.PathLike[str]) -> int:
        """Write ``commune``'s probe results into an agent history database
        (:class:`agent.store.HistoryDB`, table ``results``); returns the number of rows.
        Probes start at second 5 of each minute (uplink also at second 35)."""
        from agent.store import HistoryDB
        from probes.base import Outcome, ProbeResult

        db = HistoryDB(path)
        rows = 0
        try:
            present = self.present[commune]
            for t in self.targets:
                out, rea, dur = self.outcome[(commune, t)], self.reason[(commune, t)], self.duration(commune, t)
                batch = []
                for i in np.flatnonzero(present).tolist():
                    for k in range(self.probes_per_minute(t)):
                        reason = REASONS[rea[i]]
                        batch.append(ProbeResult(
                            target=t, kind="icmp" if t == UPLINK_TARGET else "http",
                            outcome=Outcome(_OUTCOME_NAME[int(out[i])]), reason=reason,
                            detail="synthetic", started_at=float(self.data_start + 60 * i + 5 + 30 * k),
                            duration_seconds=float(dur[i]), phases={}, facts={}))
                rows += db.write(batch)
        finally:
            db.close()
        return rows

    def agent_config(self, commune: str, data_dir: str | os.PathLike[str]) -> str:
        """YAML text of an agent config for ``commune`` matching the synthetic targets (for
        ``report sla --local -c FILE``); maintenance windows are not part of it."""
        code, name, ctype = self.commune_info[commune]
        lines = ["agent:", f"  id: hcc-{code}", "  commune:", f'    code: "{code}"', f'    name: "{name}"',
                 f"    type: {ctype}", f"  data_dir: {data_dir}", "systems:",
                 '  - {id: uplink, name: "Đường truyền của xã", objective: 0.99}']
        for s in SYSTEMS:
            lines.append(f'  - {{id: {s.id}, name: "{s.name}", name_en: "{s.name_en}", owner: {s.owner}, '
                         f'objective: {s.objective}}}')
        lines += ["targets:", f"  - {{id: {UPLINK_TARGET}, system: uplink, uplink: true, interval: 30s, "
                  "timeout: 5s, slow_after: 1s, tcp: {host: 127.0.0.1, port: 9}}"]
        for s in SYSTEMS:
            lines.append(f"  - {{id: {s.target}, system: {s.id}, depends_on: [{UPLINK_TARGET}], "
                         "tcp: {host: 127.0.0.1, port: 9}}")
        return "\n".join(lines) + "\n"


class _Writer:
    """Streams series as OpenMetrics lines (one series' samples contiguous)."""

    def __init__(self, out: TextIO, month: Month):
        self.out = out
        self.samples = 0
        ts = month.data_start + 60 * np.arange(month.minutes) + 30
        self.ts = [" " + str(x) + "\n" for x in ts.tolist()]

    def family(self, name: str, mtype: str) -> None:
        self.out.write(f"# TYPE {name} {mtype}\n")

    def series(self, name: str, labels: str, values: np.ndarray, mask: np.ndarray) -> None:
        sel = np.flatnonzero(mask)
        if not len(sel):
            return
        prefix = f"{name}{{{labels}}} "
        vals = values[sel]
        if vals.dtype.kind == "f":
            text = [_fmt(v) for v in vals.tolist()]
        else:
            text = [str(v) for v in vals.tolist()]
        ts = self.ts
        self.out.write("".join([prefix + v + ts[i] for v, i in zip(text, sel.tolist())]))
        self.samples += len(sel)


def _fmt(v: float) -> str:
    if math.isnan(v):
        return "NaN"
    return repr(round(v, 6))


class Day:
    """A small hand-written fleet over ONE local day, for focused tests of the accounting.

    Unlike :class:`Month`, systems may have several targets and every event is set explicitly
    with :meth:`set` (no noise).  Data run from an hour before local midnight to the end of the
    day; every target is probed once a minute (uplink checks twice) and every series has a
    sample at second 30 of each minute.

    Args:
        day: the local date.
        communes: commune codes (names are taken from :data:`COMMUNES` when known).
        targets: ``{target id: system id}`` of each commune (the uplink check is added).

    Attributes:
        period_start, period_end: the local day, Unix seconds.
        outcome / reason / maintenance: as in :class:`Month`, keyed ``(commune, target)``.
    """

    def __init__(self, day: dt.date, communes: Iterable[str], targets: dict[str, str]):
        start = dt.datetime(day.year, day.month, day.day, tzinfo=LOCAL_TZ)
        self.period_start = int(start.timestamp())
        self.period_end = int((start + dt.timedelta(days=1)).timestamp())
        self.data_start = self.period_start - 3600
        self.data_end = self.period_end
        self.minutes = (self.data_end - self.data_start) // 60
        self.communes = list(communes)
        info = {c[0]: c for c in COMMUNES}
        self.commune_info = {c: info.get(c, (c, f"Xã {c}", "xa")) for c in self.communes}
        self.target_system = {UPLINK_TARGET: "uplink", **targets}
        self.targets = list(self.target_system)
        n = self.minutes
        self.outcome = {(c, t): np.full(n, OK, np.int8) for c in self.communes for t in self.targets}
        self.reason = {(c, t): np.full(n, _R["ok"], np.int8) for c in self.communes for t in self.targets}
        self.maintenance = {(c, t): np.zeros(n, bool) for c in self.communes for t in self.targets}

    def at(self, hour: int, minute: int) -> int:
        """Unix seconds of ``hour:minute`` local time on the day."""
        return self.period_start + 3600 * hour + 60 * minute

    def set(self, start: int, minutes: int, targets: Iterable[str], communes: Iterable[str] | None = None,
            outcome: int | None = None, reason: str = "http_status", maintenance: bool | None = None) -> None:
        """From ``start`` (Unix seconds) for ``minutes``: set the outcome (with ``reason``) and/or
        the maintenance state of ``targets`` at ``communes`` (default: all)."""
        sl = slice((start - self.data_start) // 60, (start - self.data_start) // 60 + minutes)
        for c in (self.communes if communes is None else communes):
            for t in targets:
                if outcome is not None:
                    self.outcome[(c, t)][sl] = outcome
                    self.reason[(c, t)][sl] = _R[reason]
                if maintenance is not None:
                    self.maintenance[(c, t)][sl] = maintenance

    def target_labels(self, c: str) -> str:
        code, name, ctype = self.commune_info[c]
        return (f'agent_id="hcc-{code}",commune_code="{code}",commune_name="{name}",commune_type="{ctype}",'
                f'instance="hcc-{code}:9470",job="hcc-sentinel"')

    def write_openmetrics(self, out: TextIO) -> int:
        """The day as OpenMetrics text for ``promtool`` (counters, the states ``up`` / ``down``
        (failing, at once) / ``maintenance``, ``up``, info series); returns the number of samples."""
        w = _Writer(out, self)  # type: ignore[arg-type]
        n = self.minutes
        ones = np.ones(n, bool)
        w.family("probe_outcomes", "counter")
        for c in self.communes:
            for t in self.targets:
                per = 2 if t == UPLINK_TARGET else 1
                key = self.outcome[(c, t)].astype(np.int32) * 64 + self.reason[(c, t)]
                for k in np.unique(key):
                    if k // 64 not in _OUTCOME_NAME:
                        continue  # not probed
                    hits = key == k
                    counts = np.cumsum(hits) * per
                    born = np.cumsum(hits) > 0
                    w.series("probe_outcomes_total", f'target="{t}",outcome="{_OUTCOME_NAME[k // 64]}",'
                             f'reason="{REASONS[k % 64]}",' + self.target_labels(c), counts, born)
        w.family("hcc_sentinel_target_state", "gauge")
        for c in self.communes:
            for t in self.targets:
                maint = self.maintenance[(c, t)]
                down = (self.outcome[(c, t)] >= ERROR) & ~maint
                for state, on in (("up", ~maint & ~down), ("down", down), ("maintenance", maint)):
                    w.series("hcc_sentinel_target_state", f'target="{t}",state="{state}",' + self.target_labels(c),
                             on.astype(np.int64), ones)
        w.family("up", "gauge")
        for c in self.communes:
            w.series("up", self.target_labels(c), np.ones(n, np.int64), ones)
        w.family("probe_target_info", "gauge")
        for c in self.communes:
            for t, s in self.target_system.items():
                kind = "icmp" if t == UPLINK_TARGET else "http"
                w.series("probe_target_info", f'target="{t}",kind="{kind}",system="{s}",owner="o",name="{t}",'
                         + self.target_labels(c), np.ones(n, np.int64), ones)
        w.family("hcc_sentinel_agent_info", "gauge")
        for c in self.communes:
            w.series("hcc_sentinel_agent_info", self.target_labels(c), np.ones(n, np.int64), ones)
        out.write("# EOF\n")
        return w.samples

    def write_history(self, commune: str, path: str | os.PathLike[str], until: int | None = None) -> int:
        """Write ``commune``'s results up to ``until`` (Unix seconds, default: the end of the
        day) into an agent history database; minutes whose outcome is 0 have no probe."""
        from agent.store import HistoryDB
        from probes.base import Outcome, ProbeResult

        stop = self.minutes if until is None else (until - self.data_start) // 60
        db = HistoryDB(path)
        rows = 0
        try:
            for t in self.targets:
                out, rea = self.outcome[(commune, t)], self.reason[(commune, t)]
                batch = []
                for i in np.flatnonzero(out[:stop] > 0).tolist():
                    for k in range(2 if t == UPLINK_TARGET else 1):
                        batch.append(ProbeResult(
                            target=t, kind="icmp" if t == UPLINK_TARGET else "http",
                            outcome=Outcome(_OUTCOME_NAME[int(out[i])]), reason=REASONS[rea[i]], detail="synthetic",
                            started_at=float(self.data_start + 60 * i + 5 + 30 * k), duration_seconds=0.2))
                rows += db.write(batch)
        finally:
            db.close()
        return rows

    def agent_config(self, commune: str, data_dir: str | os.PathLike[str]) -> str:
        """YAML text of an agent config for ``commune`` with the day's targets."""
        code, name, ctype = self.commune_info[commune]
        known = {s.id: s for s in SYSTEMS}
        lines = ["agent:", f"  id: hcc-{code}", "  commune:", f'    code: "{code}"', f'    name: "{name}"',
                 f"    type: {ctype}", f"  data_dir: {data_dir}", "systems:",
                 '  - {id: uplink, name: "Đường truyền của xã", objective: 0.99}']
        for sid in sorted({s for s in self.target_system.values() if s != "uplink"}):
            spec = known.get(sid)
            lines.append(f'  - {{id: {sid}, name: "{spec.name if spec else sid}", objective: 0.995}}')
        lines += ["targets:", f"  - {{id: {UPLINK_TARGET}, system: uplink, uplink: true, interval: 30s, "
                  "timeout: 5s, slow_after: 1s, tcp: {host: 127.0.0.1, port: 9}}"]
        for t, sid in self.target_system.items():
            if t != UPLINK_TARGET:
                lines.append(f"  - {{id: {t}, system: {sid}, depends_on: [{UPLINK_TARGET}], "
                             "tcp: {host: 127.0.0.1, port: 9}}")
        return "\n".join(lines) + "\n"


def write_openmetrics_file(month: Month, path: str | os.PathLike[str], part: str = "all") -> int:
    """Write :meth:`Month.write_openmetrics` (``part``) to ``path``; returns the number of samples."""
    with open(path, "w", encoding="utf-8", buffering=1 << 20) as fh:
        return month.write_openmetrics(fh, part)


def events_table(month: Month) -> Iterable[tuple[str, str, str, str, int]]:
    """(kind, system, communes, local start, minutes) of the known events, for humans."""
    for e in month.events:
        local = dt.datetime.fromtimestamp(e.start, LOCAL_TZ).strftime("%Y-%m-%d %H:%M")
        yield e.kind, e.system, ",".join(e.communes), local, e.minutes


__all__ = ["COMMUNES", "SYSTEMS", "Month", "Day", "Event", "write_openmetrics_file", "events_table", "LOCAL_TZ",
           "UPLINK_TARGET", "HOST_TARGET", "STATES", "REASONS", "Path"]
