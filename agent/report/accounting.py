"""The SLA accounting method: minute categories, two indicators, incidents, error budget.

The method (it is printed on the first page of every report, see :func:`method_text`)
--------------------------------------------------------------------------------------

Time is cut into whole minutes (UTC minutes; the period is given as local dates in
Asia/Ho_Chi_Minh).  For every commune *c*, system *s* and minute *m* the source gives an
**observation** (:class:`Observations`): ``FAIL`` if any probe of any of *s*'s targets at *c*
not in maintenance ended ``error`` or ``hang`` in *m* (worst of), else ``SLOW`` if any was
``slow``, else ``OK``; ``NOPROBE`` if the agent was reporting but none of those targets was probed
in *m* (the previous observation is carried forward for at most ``carry_minutes``, as an uptime
checker holds the last state until the next check); ``UNKNOWN`` if the agent did not report at
all (no data).  Whether *s* was in maintenance at *c* comes with it: maintenance is declared per
target, a target in maintenance is left out of the minute, and the (*c*, *s*) minute is
maintenance only when every target of *s* observed at *c* in *m* is in maintenance (otherwise it
is judged on the others).  The commune's own link is the system ``uplink`` (targets with
``uplink: true``): it is **down** in *m* when its observation is ``FAIL``, **healthy** when
``OK``/``SLOW``.

Two indicators, never mixed:

1. **System availability** (*khả dụng của hệ thống*), measured by a quorum of healthy vantage
   points (ANCHORS §9.1/§9.7; Grafana SM's "reachability" counts any probe, which hides partial
   outages, and "uptime = any location succeeded" hides central outages seen by many).  For *s* and
   *m*: if at least half of the reporting communes report *s* in maintenance, the minute is
   **maintenance**; otherwise let *H* be the communes whose link is healthy and that observed *s*
   (not in maintenance).  If ``|H| < min_vantage`` the minute is **unknown**.  It is **down**
   when ``failing(H) >= quorum × |H|`` (default ``quorum`` 0.5: a simple majority of healthy
   communes, ANCHORS §10.5 q1) and **up** otherwise.  A commune whose link is down is not a
   witness: its minutes are excluded (counted separately as *link-excluded commune-minutes*).
   ``availability = up / (up + down)``; maintenance and unknown minutes are neither.
2. **Availability experienced by each commune** (*khả dụng thực tế tại xã*), its own link
   included: for *c*, *s*, *m* the category is, by priority, **unknown** (no data), **maintenance**
   (declared at *c* or for the system), **link** (the commune's link was down), **down** (*s*
   failed from *c*), **up**.  ``availability = up / (up + down + link)``.

Incidents: maximal runs of *down* minutes of a system, merged when separated by at most
``merge_gap`` minutes, are **central** incidents (runs of different systems that overlap are one
incident listing several systems; from a single agent, ``--local``, such runs of at least
``min_local_minutes`` are listed as *undetermined*: one vantage point cannot tell central from
local); runs of a commune's link down are **local — link** incidents;
runs where one commune failed a system while the system was up (quorum) are **local** incidents
(at least ``min_local_minutes`` long, to keep single failed probes out of the table).  An incident
is **ongoing** when no recovery follows it in the period (no up minute, or no healthy link minute,
after its last failing minute, e.g. the data end while it fails): it is always listed, with its
duration so far.  The systems table counts the listed central incidents of each system, and MTTR is
the mean duration (first failing minute to recovery) of those that recovered — an ongoing incident
has no recovery (SRE book ch. "Monitoring Distributed Systems"; the workbook calls it time to
recover).

Error budget (SRE workbook ch. 2 "Implementing SLOs"): ``budget = (1 − objective) × (up + down)``
minutes; ``used = down / budget``; ``remaining = 1 − used`` (negative when overspent).  Burn rate
(SRE workbook ch. 5 "Alerting on SLOs"): ``(down / (up + down)) / (1 − objective)`` — 1 means the
budget would be exactly used up over the window; given for the whole period and per day.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

LOCAL_TZ = ZoneInfo("Asia/Ho_Chi_Minh")
UPLINK = "uplink"

# observation codes (int8)
UNKNOWN, NOPROBE, OK, SLOW, FAIL = -1, 0, 1, 2, 3
# category codes (int8)
C_UNKNOWN, C_UP, C_DOWN, C_MAINT, C_LINK = 0, 1, 2, 3, 4
CATEGORY_NAMES = {C_UNKNOWN: "unknown", C_UP: "up", C_DOWN: "down", C_MAINT: "maintenance", C_LINK: "link"}


@dataclasses.dataclass(frozen=True)
class Method:
    """Parameters of the accounting method (all printed in the report).

    Attributes:
        quorum: share (0..1] of healthy-link communes that must fail a system in a minute for
            the minute to count as the system down.
        min_vantage: fewest healthy-link communes with an observation for a system minute to be
            known at all.
        carry_minutes: a minute without a probe (agent reporting) takes the previous
            observation for at most this many minutes.
        merge_gap: down runs separated by at most this many minutes are one incident.
        min_local_minutes: local incidents (link or commune-specific) shorter than this are
            counted in the minutes but left out of the incidents table.
    """

    quorum: float = 0.5
    min_vantage: int = 3
    carry_minutes: int = 5
    merge_gap: int = 2
    min_local_minutes: int = 5

    def __post_init__(self) -> None:
        if not 0 < self.quorum <= 1:
            raise ValueError("quorum must be in (0, 1]")
        if self.min_vantage < 1 or self.carry_minutes < 0 or self.merge_gap < 0 or self.min_local_minutes < 1:
            raise ValueError("min_vantage >= 1, carry_minutes >= 0, merge_gap >= 0, min_local_minutes >= 1")


@dataclasses.dataclass
class SystemMeta:
    """A system's display data: id, Vietnamese name, English name, owner, objective (0..1)."""

    id: str
    name: str
    name_en: str = ""
    owner: str = ""
    objective: float = 0.995


#: Names of the shared systems of configs/example.yaml, used when no config is given (--prometheus).
DEFAULT_SYSTEMS: dict[str, SystemMeta] = {m.id: m for m in (
    SystemMeta("dvcqg", "Cổng Dịch vụ công quốc gia", "National Public Service Portal", "vpcp"),
    SystemMeta("vneid-sso", "Đăng nhập VNeID (SSO)", "VNeID single sign-on", "cong-an"),
    SystemMeta("motcua", "Hệ thống giải quyết thủ tục hành chính tỉnh (một cửa)",
               "Provincial procedure-handling system", "so-khcn"),
    SystemMeta("dvc-tinh", "Cổng Dịch vụ công tỉnh Đồng Nai", "Provincial public-service portal", "so-khcn"),
    SystemMeta("qlvb", "Hệ thống quản lý văn bản", "Document management", "so-khcn"),
    SystemMeta("hotich", "Phần mềm đăng ký, quản lý hộ tịch", "Civil-status registration", "bo-tu-phap"),
)}


@dataclasses.dataclass
class CommuneMeta:
    code: str
    name: str
    type: str = ""


@dataclasses.dataclass
class AlertRecord:
    """An alert seen during the period: from Prometheus ``ALERTS`` (firing intervals) or from the
    agent's alerts database (incidents and their notifications).

    ``start``/``end`` are Unix seconds (end ``None`` while open); ``labels`` the alert's labels;
    ``notifications`` a list of ``{"at": unix, "channel": str, "recipient": str, "status": str}``.
    """

    name: str
    start: float
    end: float | None
    labels: dict[str, str] = dataclasses.field(default_factory=dict)
    source: str = "prometheus"
    notifications: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    cause: str = ""


@dataclasses.dataclass
class Observations:
    """Per-minute observations from one source.

    Attributes:
        start: Unix seconds of the first minute (a multiple of 60).
        minutes: number of minutes.
        communes: ``{code: CommuneMeta}``.
        systems: ``{id: SystemMeta}`` of the systems reported (``uplink`` excluded).
        codes: ``{(commune, system): int8[minutes]}`` observation codes (system ``uplink``
            included when the commune has link checks).
        maint: ``{(commune, system): bool[minutes]}`` the minutes in which every target of the
            system observed at that commune was in maintenance (``codes`` then comes from those
            targets; in the other minutes ``codes`` leaves the targets in maintenance out).
        source: ``"prometheus"`` or ``"local"``.
        notes: remarks on the data shown in the report (e.g. what the source cannot tell).
        alerts: :class:`AlertRecord` list.
        notifications_available: whether ``alerts`` carry who was notified and when.
        success_counts: ``{system: {"ok": probes, "slow": probes}}`` over the period, for the slow
            share (share of successful probes that were slow; probes during a link outage fail
            and so do not count).
    """

    start: int
    minutes: int
    communes: dict[str, CommuneMeta]
    systems: dict[str, SystemMeta]
    codes: dict[tuple[str, str], np.ndarray]
    maint: dict[tuple[str, str], np.ndarray]
    source: str
    notes: list[str] = dataclasses.field(default_factory=list)
    alerts: list[AlertRecord] = dataclasses.field(default_factory=list)
    notifications_available: bool = False
    success_counts: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Incident:
    """One incident of the period (times Unix seconds, minute-aligned; ``end`` exclusive)."""

    id: str
    cause: str  # central | local-link | local
    systems: list[str]
    communes: list[str]
    start: int
    end: int
    down_minutes: int
    ongoing: bool = False
    timeline: list[tuple[int, str]] = dataclasses.field(default_factory=list)
    alerts: list[AlertRecord] = dataclasses.field(default_factory=list)
    #: per system of a central (or single-vantage) incident: (start, end, ongoing), Unix seconds
    spans: dict[str, tuple[int, int, bool]] = dataclasses.field(default_factory=dict)

    @property
    def minutes(self) -> int:
        """Duration in minutes; for an ongoing incident, the duration so far (to its last
        failing minute)."""
        return (self.end - self.start) // 60


@dataclasses.dataclass
class SystemResult:
    meta: SystemMeta
    minutes: dict[str, int]
    availability: float | None
    downtime_minutes: int
    incidents: int
    mttr_minutes: float | None
    slow_share: float | None
    budget_minutes: float
    budget_used: float | None
    budget_remaining: float | None
    burn_rate: float | None
    link_excluded_commune_minutes: int
    local_failure_commune_minutes: int
    daily: list[dict[str, Any]]
    incidents_ongoing: int = 0


@dataclasses.dataclass
class CommuneResult:
    meta: CommuneMeta
    systems: dict[str, dict[str, Any]]  # system -> {minutes: {...}, availability}
    link: dict[str, Any]  # {down, up, unknown, outages, availability}
    mean_availability: float | None
    rank: int = 0


@dataclasses.dataclass
class Report:
    """Everything the renderers need."""

    period_start: int
    period_end: int
    method: Method
    source: str
    notes: list[str]
    systems: dict[str, SystemResult]
    communes: dict[str, CommuneResult]
    incidents: list[Incident]
    notifications_available: bool
    generated_at: float
    single_vantage: bool


# -- helpers -----------------------------------------------------------------------------------

def carry_forward(codes: np.ndarray, limit: int) -> np.ndarray:
    """Replace ``NOPROBE`` by the previous observation for at most ``limit`` minutes (then
    ``UNKNOWN``); ``UNKNOWN`` interrupts the carry.  Returns a new int8 array."""
    out = codes.copy()
    last, age = UNKNOWN, 0
    for i, v in enumerate(out.tolist()):
        if v == NOPROBE:
            age += 1
            out[i] = last if (last != UNKNOWN and age <= limit) else UNKNOWN
        else:
            last, age = v, 0
    return out


def runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """Maximal runs of True as ``(start, stop)`` index pairs (stop exclusive)."""
    if not len(mask):
        return []
    m = np.r_[False, mask.astype(bool), False]
    edges = np.flatnonzero(m[1:] != m[:-1])
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2])]


def merge_runs(rs: list[tuple[int, int]], gap: int) -> list[tuple[int, int]]:
    """Merge runs separated by at most ``gap`` indices."""
    out: list[tuple[int, int]] = []
    for a, b in rs:
        if out and a - out[-1][1] <= gap:
            out[-1] = (out[-1][0], b)
        else:
            out.append((a, b))
    return out


def local_time(ts: float, fmt: str = "%d/%m/%Y %H:%M") -> str:
    """Unix seconds as local (Asia/Ho_Chi_Minh) time text."""
    return dt.datetime.fromtimestamp(ts, LOCAL_TZ).strftime(fmt)


def _ratio(num: float, den: float) -> float | None:
    return num / den if den > 0 else None


# -- the computation ---------------------------------------------------------------------------

def compute(obs: Observations, method: Method = Method(), now: float | None = None) -> Report:
    """Apply the accounting method to ``obs``.

    Args:
        obs: per-minute observations (see :class:`Observations`).
        method: the parameters.
        now: wall clock (Unix seconds) for the report's "generated at".

    Returns:
        A :class:`Report`.  With a single commune (``--local``) the quorum cannot be formed;
        ``min_vantage`` is then taken as 1 and :attr:`Report.single_vantage` is True — the
        renderers say that the "system availability" is then the one seen from that commune,
        its link outages excluded.
    """
    import time as _time

    n = obs.minutes
    communes = sorted(obs.communes)
    single = len(communes) == 1
    min_vantage = 1 if single else method.min_vantage
    codes = {k: carry_forward(v, method.carry_minutes) for k, v in obs.codes.items()}
    zeros = np.zeros(n, bool)

    link_down = {c: codes[(c, UPLINK)] == FAIL if (c, UPLINK) in codes else zeros for c in communes}
    link_healthy = {c: np.isin(codes[(c, UPLINK)], (OK, SLOW)) if (c, UPLINK) in codes
                    else np.ones(n, bool) for c in communes}
    link_known = {c: codes[(c, UPLINK)] != UNKNOWN if (c, UPLINK) in codes else zeros for c in communes}

    systems: dict[str, SystemResult] = {}
    sys_cat: dict[str, np.ndarray] = {}
    exp_cat: dict[tuple[str, str], np.ndarray] = {}
    for s, meta in sorted(obs.systems.items()):
        present = [c for c in communes if (c, s) in codes]
        reporting = np.zeros(n, np.int32)
        maint_n = np.zeros(n, np.int32)
        for c in present:
            known = codes[(c, s)] != UNKNOWN
            reporting += known
            maint_n += known & obs.maint.get((c, s), zeros)
        sys_maint = (maint_n > 0) & (2 * maint_n >= reporting)
        h = np.zeros(n, np.int32)
        fail = np.zeros(n, np.int32)
        slow = np.zeros(n, np.int32)
        ok = np.zeros(n, np.int32)
        link_excluded = 0
        for c in present:
            code = codes[(c, s)]
            m = obs.maint.get((c, s), zeros)
            observed = np.isin(code, (OK, SLOW, FAIL)) & ~m
            witness = observed & link_healthy[c]
            link_excluded += int(np.sum(observed & link_down[c] & ~sys_maint))
            h += witness
            fail += witness & (code == FAIL)
            slow += witness & (code == SLOW)
            ok += witness & (code == OK)
        cat = np.full(n, C_UNKNOWN, np.int8)
        known = h >= min_vantage
        down = known & (fail > 0) & (fail >= method.quorum * h)
        cat[known] = C_UP
        cat[down] = C_DOWN
        cat[sys_maint] = C_MAINT
        sys_cat[s] = cat
        local_fail = int(np.sum(np.where(cat == C_UP, fail, 0)))
        for c in present:
            code = codes[(c, s)]
            e = np.full(n, C_UP, np.int8)
            e[code == FAIL] = C_DOWN
            e[link_down[c]] = C_LINK
            e[obs.maint.get((c, s), zeros) | sys_maint] = C_MAINT
            e[code == UNKNOWN] = C_UNKNOWN
            exp_cat[(c, s)] = e
        counts = {name: int(np.sum(cat == k)) for k, name in CATEGORY_NAMES.items() if k != C_LINK}
        up, dn = counts["up"], counts["down"]
        eligible = up + dn
        budget = (1 - meta.objective) * eligible
        sc = obs.success_counts.get(s, {})
        good_obs, slow_obs = sc.get("ok", 0) + sc.get("slow", 0), sc.get("slow", 0)
        daily = _daily(obs.start, cat, meta.objective)
        systems[s] = SystemResult(  # incidents and MTTR: from the incident list, below
            meta=meta, minutes=counts, availability=_ratio(up, eligible), downtime_minutes=dn,
            incidents=0, mttr_minutes=None,
            slow_share=_ratio(slow_obs, good_obs), budget_minutes=budget,
            budget_used=_ratio(dn, budget), budget_remaining=(1 - dn / budget) if budget > 0 else None,
            burn_rate=(_ratio(dn, eligible) or 0.0) / (1 - meta.objective) if eligible else None,
            link_excluded_commune_minutes=link_excluded, local_failure_commune_minutes=local_fail, daily=daily)

    # per commune
    commune_results: dict[str, CommuneResult] = {}
    for c in communes:
        per: dict[str, dict[str, Any]] = {}
        avails = []
        for s in sorted(obs.systems):
            e = exp_cat.get((c, s))
            if e is None:
                continue
            counts = {name: int(np.sum(e == k)) for k, name in CATEGORY_NAMES.items()}
            den = counts["up"] + counts["down"] + counts["link"]
            a = _ratio(counts["up"], den)
            per[s] = {"minutes": counts, "availability": a}
            if a is not None:
                avails.append(a)
        ld = link_down[c]
        link_runs = runs(ld)
        lk = link_known[c]
        link = {"down": int(np.sum(ld)), "unknown": int(np.sum(~lk)) if (c, UPLINK) in codes else None,
                "up": int(np.sum(lk & ~ld)), "outages": len(merge_runs(link_runs, method.merge_gap)),
                "availability": _ratio(int(np.sum(lk & ~ld)), int(np.sum(lk))) if (c, UPLINK) in codes else None,
                "checked": (c, UPLINK) in codes}
        commune_results[c] = CommuneResult(meta=obs.communes[c], systems=per, link=link,
                                           mean_availability=(sum(avails) / len(avails)) if avails else None)
    ranked = sorted(commune_results.values(),
                    key=lambda r: (r.mean_availability if r.mean_availability is not None else 2.0, r.meta.code))
    for i, r in enumerate(ranked, 1):
        r.rank = i

    incidents = _incidents(obs, method, communes, codes, sys_cat, exp_cat, link_down, link_healthy, single)
    # the systems table counts the incidents listed, and MTTR is the mean time to recovery of
    # those that recovered in the period (an ongoing incident has no recovery yet)
    for s, r in systems.items():
        spans = [i.spans[s] for i in incidents if s in i.spans]
        done = [(b - a) / 60 for a, b, ongoing in spans if not ongoing]
        r.incidents = len(spans)
        r.incidents_ongoing = len(spans) - len(done)
        r.mttr_minutes = sum(done) / len(done) if done else None
    return Report(period_start=obs.start, period_end=obs.start + 60 * n, method=method, source=obs.source,
                  notes=list(obs.notes), systems=systems, communes=commune_results, incidents=incidents,
                  notifications_available=obs.notifications_available,
                  generated_at=_time.time() if now is None else now, single_vantage=single)


def _daily(start: int, cat: np.ndarray, objective: float) -> list[dict[str, Any]]:
    """Per local day: date, up, down, maintenance, unknown minutes, availability, burn rate."""
    out: list[dict[str, Any]] = []
    day0 = dt.datetime.fromtimestamp(start, LOCAL_TZ)
    i = 0
    while i < len(cat):
        d = day0 + dt.timedelta(days=len(out))
        nxt = int((d + dt.timedelta(days=1)).timestamp())
        j = min(len(cat), (nxt - start) // 60)
        sl = cat[i:j]
        up, dn = int(np.sum(sl == C_UP)), int(np.sum(sl == C_DOWN))
        out.append({"date": d.strftime("%Y-%m-%d"), "up": up, "down": dn,
                    "maintenance": int(np.sum(sl == C_MAINT)), "unknown": int(np.sum(sl == C_UNKNOWN)),
                    "availability": _ratio(up, up + dn),
                    "burn_rate": (dn / (up + dn)) / (1 - objective) if up + dn else None})
        i = j
    return out


def _incidents(obs: Observations, method: Method, communes: list[str], codes: dict[tuple[str, str], np.ndarray],
               sys_cat: dict[str, np.ndarray], exp_cat: dict[tuple[str, str], np.ndarray],
               link_down: dict[str, np.ndarray], link_healthy: dict[str, np.ndarray],
               single: bool = False) -> list[Incident]:
    """The incidents of the period (see the module docstring).  An incident is **ongoing** when no
    recovery follows it in the period: no minute up (the system, or the commune's view of it) or
    no healthy link minute (link incidents) after its last failing minute.  Ongoing incidents are
    listed whatever their length so far (their length is not known yet)."""
    t = lambda i: obs.start + 60 * i  # noqa: E731
    n = obs.minutes

    def recovered(ok: np.ndarray, b: int) -> bool:
        return bool(np.any(ok[b:]))

    def end_text(b: int, ok: bool, done: str, still: str) -> str:
        if ok:
            return done
        if b >= n:
            return still
        return "chưa thấy hoạt động trở lại trong kỳ (recovery not observed in the period)"

    found: list[Incident] = []
    # central: per system, then merge overlapping ones across systems
    central: list[tuple[int, int, str]] = []
    for s, cat in sys_cat.items():
        for a, b in merge_runs(runs(cat == C_DOWN), method.merge_gap):
            central.append((a, b, s))
    central.sort()
    groups: list[list[tuple[int, int, str]]] = []
    for item in central:
        if groups and item[0] < max(x[1] for x in groups[-1]):
            groups[-1].append(item)
        else:
            groups.append([item])
    for g in groups:
        a, b = min(x[0] for x in g), max(x[1] for x in g)
        systems = sorted({x[2] for x in g})
        spans: dict[str, tuple[int, int, bool]] = {}
        for s in systems:
            sa, sb = min(x[0] for x in g if x[2] == s), max(x[1] for x in g if x[2] == s)
            spans[s] = (t(sa), t(sb), not recovered(sys_cat[s] == C_UP, sb))
        ongoing = any(v[2] for v in spans.values())
        if single and b - a < method.min_local_minutes and not ongoing:
            continue  # one vantage point: a short failure cannot be told from a local blip
        affected = sorted({c for c in communes for s in systems
                           if (c, s) in exp_cat and np.any(exp_cat[(c, s)][a:b] == C_DOWN)})
        down = sum(int(np.sum(sys_cat[s][a:b] == C_DOWN)) for s in systems)
        timeline: list[tuple[int, str]] = []
        for s in systems:
            seen = [c for c in communes if (c, s) in exp_cat]
            first = [c for c in seen if exp_cat[(c, s)][a] == C_DOWN]
            timeline.append((t(a), f"{s}: lỗi từ {len(first)}/{len(seen)} xã có đường truyền tốt "
                                   f"(failing from {len(first)}/{len(seen)} communes)"))
            last_down = max(i for i in range(a, b) if sys_cat[s][i] == C_DOWN)
            timeline.append((t(last_down + 1), end_text(last_down + 1, not spans[s][2],
                                                        f"{s}: hoạt động trở lại (recovered)",
                                                        f"{s}: vẫn gián đoạn ở cuối kỳ (still down at period end)")))
        found.append(Incident(id="", cause="single" if single else "central", systems=systems, communes=affected,
                              start=t(a), end=t(b), down_minutes=down, ongoing=ongoing, timeline=sorted(timeline),
                              spans=spans))
    # local: link
    for c in communes:
        for a, b in merge_runs(runs(link_down[c]), method.merge_gap):
            ongoing = not recovered(link_healthy[c], b)
            if b - a < method.min_local_minutes and not ongoing:
                continue
            systems = sorted(s for s in obs.systems if (c, s) in exp_cat)
            found.append(Incident(id="", cause="local-link", systems=systems, communes=[c], start=t(a), end=t(b),
                                  down_minutes=int(np.sum(link_down[c][a:b])), ongoing=ongoing,
                                  timeline=[(t(a), "đường truyền của xã mất kết nối (commune link down)"),
                                            (t(b), end_text(b, not ongoing,
                                                            "đường truyền hoạt động trở lại (link restored)",
                                                            "vẫn mất kết nối ở cuối kỳ (still down)"))]))
    # local: commune-specific failures while the system was up
    for c in communes:
        spans_c: list[tuple[int, int, str, bool]] = []
        for s in obs.systems:
            e = exp_cat.get((c, s))
            if e is None:
                continue
            mask = (e == C_DOWN) & (sys_cat[s] == C_UP)
            for a, b in merge_runs(runs(mask), method.merge_gap):
                ongoing = not recovered(e == C_UP, b)
                if b - a >= method.min_local_minutes or ongoing:
                    spans_c.append((a, b, s, ongoing))
        spans_c.sort()
        merged: list[list[tuple[int, int, str, bool]]] = []
        for item in spans_c:
            if merged and item[0] < max(x[1] for x in merged[-1]):
                merged[-1].append(item)
            else:
                merged.append([item])
        for g2 in merged:
            a, b = min(x[0] for x in g2), max(x[1] for x in g2)
            systems = sorted({x[2] for x in g2})
            ongoing = any(x[3] for x in g2)
            found.append(Incident(id="", cause="local", systems=systems, communes=[c], start=t(a), end=t(b),
                                  down_minutes=sum(int(np.sum(exp_cat[(c, s)][a:b] == C_DOWN)) for s in systems),
                                  ongoing=ongoing,
                                  timeline=[(t(a), "lỗi chỉ ở xã này, hệ thống vẫn hoạt động ở các xã khác "
                                                   "(failing from this commune only)"),
                                            (t(b), end_text(b, not ongoing, "hết lỗi (recovered)",
                                                            "vẫn lỗi ở cuối kỳ (still failing at period end)"))]))
    found.sort(key=lambda i: (i.start, i.cause, i.systems, i.communes))
    for k, inc in enumerate(found, 1):
        inc.id = f"SC-{dt.datetime.fromtimestamp(obs.start, LOCAL_TZ):%Y%m}-{k:03d}"
        inc.alerts = [a for a in obs.alerts if _overlaps(a, inc)]
    return found


def _overlaps(alert: AlertRecord, inc: Incident) -> bool:
    end = alert.end if alert.end is not None else float("inf")
    if not (alert.start < inc.end + 600 and end > inc.start - 600):
        return False
    sys_label = alert.labels.get("system")
    if sys_label and sys_label not in inc.systems and not (inc.cause == "local-link" and sys_label == UPLINK):
        return False
    commune = alert.labels.get("commune_code")
    if commune and inc.cause != "central" and commune not in inc.communes:
        return False
    return True


CAUSE_VI = {"central": "Trung tâm (hệ thống dùng chung)", "local-link": "Tại xã — đường truyền",
            "local": "Tại xã", "single": "Chưa xác định được (chỉ một điểm đo)"}
CAUSE_EN = {"central": "central", "local-link": "local — commune link", "local": "local",
            "single": "undetermined: single vantage point"}


def method_text(method: Method, single_vantage: bool = False) -> list[str]:
    """The accounting method as Vietnamese paragraphs (English glosses in parentheses)."""
    q = f"{method.quorum:.0%}"
    out = [
        "Thời gian được tính theo từng phút. Mỗi phút, mỗi xã và mỗi hệ thống có một quan sát: "
        "LỖI nếu có lượt đo nào của hệ thống tại xã đó bị lỗi hoặc treo; CHẬM nếu thành công nhưng chậm; "
        "BÌNH THƯỜNG; hoặc KHÔNG RÕ nếu agent không gửi dữ liệu (no data). Phút không có lượt đo giữ kết quả "
        f"lượt đo trước trong tối đa {method.carry_minutes} phút.",
        "Chỉ số 1 — Khả dụng của hệ thống (system availability): chỉ tính từ các xã có đường truyền tốt trong "
        f"phút đó. Một phút là GIÁN ĐOẠN khi ít nhất {q} số xã có đường truyền tốt quan sát thấy lỗi "
        f"(quorum, tối thiểu {1 if single_vantage else method.min_vantage} xã; ít hơn thì phút đó là KHÔNG RÕ). "
        "Xã mất đường truyền không được tính là hệ thống gián đoạn.",
        "Chỉ số 2 — Khả dụng thực tế tại từng xã (experienced availability): gồm cả thời gian mất đường "
        "truyền của chính xã đó. Khả dụng = phút bình thường / (bình thường + gián đoạn + mất đường truyền).",
        "Thời gian bảo trì đã thông báo (maintenance), thời gian không rõ (unknown, không có dữ liệu) và thời "
        "gian mất đường truyền của xã được nêu riêng, không bị tính là hoạt động cũng như không bị tính là "
        "gián đoạn của hệ thống.",
        "Bảo trì được xét theo từng mục tiêu đo: mục tiêu đang bảo trì bị loại khỏi phút đó. Một phút của hệ "
        "thống tại một xã là BẢO TRÌ chỉ khi mọi mục tiêu của hệ thống được đo trong phút đó đều đang bảo trì; "
        "nếu không, phút đó được đánh giá theo các mục tiêu không bảo trì (maintenance is per target: the "
        "minute is maintenance only when all of the system's targets observed in it are in maintenance, "
        "otherwise it is judged on the other targets). Phút của hệ thống là bảo trì khi ít nhất một nửa số "
        "xã có dữ liệu ở trạng thái bảo trì như vậy.",
        "Ngân sách lỗi (error budget, SRE workbook ch. 2) = (1 − mục tiêu) × số phút đã biết; tốc độ tiêu "
        "hao (burn rate, SRE workbook ch. 5) = tỷ lệ phút gián đoạn / (1 − mục tiêu).",
        f"Sự cố: chuỗi phút gián đoạn liên tiếp (gộp khi cách nhau ≤ {method.merge_gap} phút). Sự cố TRUNG TÂM "
        "khi hệ thống gián đoạn theo quorum; TẠI XÃ khi chỉ một xã bị lỗi hoặc mất đường truyền "
        f"(bảng chỉ liệt kê sự cố tại xã từ {method.min_local_minutes} phút). Sự cố ĐANG DIỄN RA (ongoing) khi "
        "trong kỳ không còn phút hoạt động bình thường nào sau nó: thời lượng tính đến phút lỗi cuối cùng, "
        "luôn được liệt kê, và không tính vào MTTR (thời gian khôi phục trung bình của các sự cố đã kết thúc). "
        "Số sự cố và MTTR trong bảng hệ thống lấy từ chính danh sách sự cố ở mục 3.",
    ]
    if single_vantage:
        out.append("Báo cáo này lập từ lịch sử của MỘT agent (--local): không thể lập quorum nhiều xã, nên "
                   "“khả dụng của hệ thống” ở đây là khả dụng nhìn từ xã này, đã trừ thời gian mất đường "
                   "truyền của xã (single vantage point).")
    return out
