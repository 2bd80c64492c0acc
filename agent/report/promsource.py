"""Observations for the SLA report from the central Prometheus.

Everything is computed per minute on the Prometheus side with ``query_range`` (``step=60s``),
so only small, mostly sparse, answers travel:

* per commune and system, the minutes with a failing / slow / probe-less observation, from the
  **counter** ``probe_outcomes_total{target,outcome,reason}`` (not the scrape-time gauge
  ``probe_success``, which misses what happened between scrapes).  The number of probes of a
  target in the minute ``(T−60 s, T]`` is ``last_over_time(c[1m]) − last_over_time(c[1m] offset
  1m)`` summed over the class's series, padded with zero series so that a class whose first
  series is born in the minute still counts (prometheus-client creates a labelled child at its
  first increment); a negative difference is a counter reset (agent restart) and the current
  value is taken, as ``increase()`` does.  Targets are joined to their system and commune with
  ``probe_target_info`` on ``(agent_id, target)``.
* per commune, the minutes in which the agent reported (the difference could be computed):
  this is the only dense answer (one series per commune).  A minute whose counter difference
  cannot be computed — no sample in it, or none in the minute before — is **unknown**: a counter
  difference across a scrape gap cannot be split into minutes, so a gap of *N* minutes gives
  *N* + 1 unknown minutes here (the agent's own history, ``--local``, gives *N*).
* maintenance per commune and system from ``hcc_sentinel_target_state{state="maintenance"}``:
  a target in maintenance is left out of the minute (its failures do not count); the minute is
  maintenance only when every target of the system probed in it is in maintenance.
* firing intervals of alerts from ``ALERTS{alertstate="firing"}``.  Who was notified and when is
  Alertmanager's business and is not in Prometheus: the report says so.

Queries are split in chunks of at most 10 000 steps (Prometheus refuses more than 11 000 points
per series) and run concurrently (aiohttp).

Sources: Prometheus HTTP API (``/api/v1/query_range``, ``/api/v1/query``), PromQL docs
(``last_over_time``, ``offset``, set operators), prometheus-client counter semantics.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

import aiohttp
import numpy as np

from agent.report.accounting import (DEFAULT_SYSTEMS, FAIL, NOPROBE, OK, SLOW, UNKNOWN, UPLINK, AlertRecord,
                                     CommuneMeta, Observations, SystemMeta)

STEP = 60
CHUNK_STEPS = 10_000


class PrometheusError(RuntimeError):
    """The Prometheus API answered with an error or could not be reached (message says which)."""


_INFO = 'max by (agent_id, target, system) (probe_target_info{kind!="host"})'
_C = "probe_outcomes_total"


def presence_query() -> str:
    """PromQL: per ``commune_code`` and minute ``(T−60 s, T]``, the number of targets whose counters
    have a sample in that minute and in the minute before and did not reset; no point otherwise
    (the minute is then unknown).  ``last_over_time`` so that a scrape gap is not bridged by the
    5-minute lookback."""
    now = f"sum by (commune_code, agent_id, target) (last_over_time({_C}[1m]))"
    prev = f"sum by (commune_code, agent_id, target) (last_over_time({_C}[1m] offset 1m))"
    return f"count by (commune_code) (({now}) - ({prev}) >= 0)"


#: targets in maintenance in the minute ``(T−60 s, T]`` (one series per agent and target)
_MAINT_T = 'last_over_time(hcc_sentinel_target_state{state="maintenance"}[1m]) == 1'


def failures_query() -> str:
    """PromQL: per ``(commune_code, system, outcome)`` and minute, the number of ``error`` and
    ``hang`` probes of the targets NOT in maintenance in that minute, only where > 0 (sparse).
    A series born in the minute counts from zero; a reset counts as zero (such a minute is
    unknown by :func:`presence_query`).  Plain selectors (cheap): minutes without fresh samples
    are masked by the presence."""
    sel = f'{_C}{{outcome=~"error|hang"}}'
    delta = f"(({sel} - ({sel} offset 1m or {sel} * 0) > 0) unless on (agent_id, target) ({_MAINT_T}))"
    return f"sum by (commune_code, system, outcome) ({delta} * on (agent_id, target) group_left (system) {_INFO})"


def noprobe_query() -> str:
    """PromQL: 0 per ``(commune_code, system)`` and minute in which none of the system's targets
    was probed (sparse; such minutes carry the previous observation forward)."""
    d = f"sum by (agent_id, commune_code, target) ({_C}) - sum by (agent_id, commune_code, target) ({_C} offset 1m)"
    return f"min by (commune_code, system) (({d} == 0) * on (agent_id, target) group_left (system) {_INFO})" \
           " unless on (commune_code, system) " \
           f"max by (commune_code, system) (({d} > 0) * on (agent_id, target) group_left (system) {_INFO})"


def configured_query() -> str:
    """PromQL: the ``(commune_code, system)`` pairs with targets, sampled hourly."""
    return 'group by (commune_code, system) (last_over_time(probe_target_info{kind!="host"}[1h]))'


def maintenance_query() -> str:
    """PromQL: 1 per ``(commune_code, system)`` and minute that is maintenance (sparse): every
    target of the system probed in the minute (its counters moved) is in maintenance, or, when
    none was probed, every target of the system is.  A minute with a probed target not in
    maintenance is not maintenance: :func:`failures_query` judges it on those targets."""
    by_t = "sum by (commune_code, agent_id, target)"
    now = f"{by_t} (last_over_time({_C}[1m]))"
    probed = f"(({now}) - (({by_t} (last_over_time({_C}[1m] offset 1m))) or ({now}) * 0) > 0)"
    join = f"* on (agent_id, target) group_left (system) {_INFO}"
    cs = "on (commune_code, system)"
    in_maint = f"group by (commune_code, system) ((({_MAINT_T}) and on (agent_id, target) {probed}) {join})"
    active = f"group by (commune_code, system) (({probed} unless on (agent_id, target) ({_MAINT_T})) {join})"
    all_maint = (f"(min by (commune_code, system) (last_over_time(hcc_sentinel_target_state"
                 f'{{state="maintenance"}}[1m]) {join}) == 1)')
    any_probed = f"group by (commune_code, system) ({probed} {join})"
    return f"(({in_maint}) unless {cs} ({active})) or (({all_maint}) unless {cs} ({any_probed}))"


ALERTS_QUERY = 'ALERTS{alertstate="firing"}'
_INFO_1H = 'max by (agent_id, target, system) (last_over_time(probe_target_info{kind!="host"}[1h]))'


def _hour_delta(sel: str) -> str:
    now, prev = f"last_over_time({sel}[1h])", f"last_over_time({sel}[1h] offset 1h)"
    return f"({now} - ({prev} or {now} * 0))"


def hourly_failures_query() -> str:
    """PromQL at ``step=1h``: ``(commune_code, system)`` pairs whose ``error``/``hang`` counters
    changed in the hour ``(T−1h, T]`` (a reset also counts): the hours worth a per-minute look."""
    d = _hour_delta(f'{_C}{{outcome=~"error|hang"}}')
    return f"max by (commune_code, system) (({d} != 0) * on (agent_id, target) group_left (system) {_INFO_1H})"


def hourly_maintenance_query() -> str:
    """PromQL at ``step=1h``: ``(commune_code, system)`` pairs in maintenance at some time of the hour."""
    return ('max by (commune_code, system) (max_over_time(hcc_sentinel_target_state{state="maintenance"}[1h]) '
            f'* on (agent_id, target) group_left (system) {_INFO_1H}) == 1')


def hourly_up_query() -> str:
    """PromQL at ``step=1h``: per ``commune_code``, ``min_over_time(up)`` (0: a scrape failed)."""
    return 'min by (commune_code) (min_over_time(up{commune_code!=""}[1h]))'


def hourly_scrapes_query() -> str:
    """PromQL at ``step=1h``: per ``commune_code``, the number of scrapes (``up`` samples)."""
    return 'min by (commune_code) (count_over_time(up{commune_code!=""}[1h]))'


def hourly_resets_query() -> str:
    """PromQL at ``step=1h``: per ``commune_code``, whether a counter was reset (agent restart)."""
    return f"max by (commune_code) (resets({_C}[1h]))"


def hourly_success_query() -> str:
    """PromQL at ``step=1h``: ``ok`` and ``slow`` probes per system and hour (for the slow share)."""
    d = _hour_delta(f'{_C}{{outcome=~"ok|slow"}}')
    return f"sum by (system, outcome) (({d} >= 0) * on (agent_id, target) group_left (system) {_INFO_1H})"


class PromClient:
    """Minimal async client of the Prometheus HTTP API.

    Args:
        url: base URL, e.g. ``http://prometheus:9090``.
        timeout: seconds per request.
        concurrency: requests in flight at once.
    """

    def __init__(self, url: str, timeout: float = 300.0, concurrency: int = 4):
        self.url = url.rstrip("/")
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.sem = asyncio.Semaphore(concurrency)
        self.session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> "PromClient":
        self.session = aiohttp.ClientSession(timeout=self.timeout)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.session:
            await self.session.close()

    async def _get(self, path: str, params: dict[str, Any]) -> Any:
        assert self.session is not None
        async with self.sem:
            try:
                async with self.session.post(self.url + path, data=params) as resp:
                    body = await resp.json(content_type=None)
            except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
                raise PrometheusError(f"{self.url}{path}: {exc.__class__.__name__}: {exc}") from None
        if body.get("status") != "success":
            raise PrometheusError(f"{self.url}{path}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    async def query(self, expr: str, at: float) -> list[dict[str, Any]]:
        """Instant query; returns the ``result`` list.

        Raises:
            PrometheusError: API error or unreachable.
        """
        return (await self._get("/api/v1/query", {"query": expr, "time": f"{at:.3f}"}))["result"]

    async def query_range(self, expr: str, start: float, end: float, step: int = STEP) -> list[dict[str, Any]]:
        """Range query split into chunks of at most :data:`CHUNK_STEPS` steps; the series of the
        chunks are merged by label set.

        Raises:
            PrometheusError: API error or unreachable.
        """
        bounds = []
        t = start
        while t <= end:
            hi = min(end, t + (CHUNK_STEPS - 1) * step)
            bounds.append((t, hi))
            t = hi + step
        parts = await asyncio.gather(*(self._get("/api/v1/query_range", {
            "query": expr, "start": f"{a:.3f}", "end": f"{b:.3f}", "step": str(step)}) for a, b in bounds))
        merged: dict[tuple[tuple[str, str], ...], dict[str, Any]] = {}
        for part in parts:
            for s in part["result"]:
                key = tuple(sorted(s["metric"].items()))
                merged.setdefault(key, {"metric": s["metric"], "values": []})["values"].extend(s["values"])
        return list(merged.values())


def _spans(hours: set[int], start: int, n: int) -> list[tuple[int, int]]:
    """Contiguous ranges of minute-end timestamps covering the flagged hours (hour index k covers
    the points ``start + 60 * (60k + 1) .. start + 60 * (60k + 60)``)."""
    out: list[tuple[int, int]] = []
    for k in sorted(hours):
        a = start + 60 * (60 * k + 1)
        b = min(start + 60 * n, start + 60 * (60 * k + 60))
        if a > b:
            continue
        if out and a - out[-1][1] <= 60:
            out[-1] = (out[-1][0], b)
        else:
            out.append((a, b))
    return out


async def fetch(url: str, start: int, end: int, systems: dict[str, SystemMeta] | None = None,
                timeout: float = 300.0, carry_minutes: int = 5) -> Observations:
    """Observations of every commune and system for ``[start, end)`` (Unix seconds, multiples
    of 60) from the Prometheus at ``url``.

    Per-minute queries are expensive on a month (Prometheus evaluates every step), so they run
    in passes: hourly queries find the hours in which some error/hang counter moved, a
    maintenance state was set, or an agent may have missed minutes (a failed scrape — ``up`` 0 —,
    fewer scrapes than its usual number, a counter reset); the per-minute queries then run over
    those hours only, and the no-probe query only over the ``carry_minutes`` after a failing
    minute (elsewhere carrying an ``ok`` forward changes nothing).  Without ``up`` series every
    hour gets the per-minute presence query (slower, same result).

    Args:
        systems: display names and objectives by system id (from an agent config); systems seen
            in Prometheus but not listed get their id as name and the default objective.

    Raises:
        PrometheusError: API error, unreachable, or no hcc-sentinel data in the period.
        ValueError: ``start``/``end`` not minute-aligned or empty period.
    """
    if start % 60 or end % 60 or end <= start:
        raise ValueError("start and end must be multiples of 60 s with end > start")
    n = (end - start) // 60
    first, last = start + STEP, end  # the point at T describes the minute (T-60, T]
    hours = (n + 59) // 60
    h0, h1 = start + 3600, start + 3600 * hours

    def flagged(result: list[dict[str, Any]], after: int = 0, pred: Any = None) -> set[int]:
        out: set[int] = set()
        for s in result:
            for ts, v in s["values"]:
                if pred is not None and not pred(s, float(v)):
                    continue
                k = int(round((float(ts) - start) / 3600)) - 1
                out.update(range(max(0, k), min(hours, k + 1 + after)))
        return out

    async with PromClient(url, timeout=timeout) as pc:
        (hfail_r, hmaint_r, hsucc_r, conf_r, hup_r, hscr_r, hres_r, alerts_r, agents_r) = await asyncio.gather(
            pc.query_range(hourly_failures_query(), h0, h1, step=3600),
            pc.query_range(hourly_maintenance_query(), h0, h1, step=3600),
            pc.query_range(hourly_success_query(), h0, h1, step=3600),
            pc.query_range(configured_query(), h0, h1, step=3600),
            pc.query_range(hourly_up_query(), h0, h1, step=3600),
            pc.query_range(hourly_scrapes_query(), h0, h1, step=3600),
            pc.query_range(hourly_resets_query(), h0, h1, step=3600),
            pc.query_range(ALERTS_QUERY, first, last),
            pc.query(f"max by (commune_code, commune_name, commune_type) "
                     f"(last_over_time(hcc_sentinel_agent_info[{(end - start) // 60 + 60}m]))", end))
        # hours in which some agent may have missed a minute: a failed scrape, fewer scrapes than
        # its usual number, a counter reset, or no up series at all (then every hour is checked)
        usual: dict[str, float] = {}
        for s in hscr_r:
            vals = [float(v) for _, v in s["values"]]
            usual[s["metric"].get("commune_code", "")] = max(set(vals), key=vals.count) if vals else 0
        full_hours: dict[str, set[int]] = {}
        for s in hscr_r:
            c = s["metric"].get("commune_code", "")
            full_hours[c] = flagged([s], pred=lambda _s, v, c=c: v >= usual[c])
        for s in hup_r:
            c = s["metric"].get("commune_code", "")
            full_hours[c] = full_hours.get(c, set()) - flagged([s], after=1, pred=lambda _s, v: v < 1)
        for s in hres_r:
            c = s["metric"].get("commune_code", "")
            full_hours[c] = full_hours.get(c, set()) - flagged([s], pred=lambda _s, v: v > 0)
        # an hour is fully present only if the hour before is too (the first minute needs it)
        for c, hs in full_hours.items():
            full_hours[c] = {k for k in hs if k - 1 in hs}
        all_hours = set(range(hours))
        check = set().union(*(all_hours - hs for hs in full_hours.values())) if full_hours else all_hours
        pres_spans = _spans(check, start, n)
        fail_spans = _spans(flagged(hfail_r), start, n)
        maint_spans = _spans(flagged(hmaint_r), start, n)
        fine = await asyncio.gather(
            *(pc.query_range(presence_query(), a, b) for a, b in pres_spans),
            *(pc.query_range(failures_query(), a, b) for a, b in fail_spans),
            *(pc.query_range(maintenance_query(), a, b) for a, b in maint_spans))
        k1, k2 = len(pres_spans), len(pres_spans) + len(fail_spans)
        pres_r = [s for part in fine[:k1] for s in part]
        fail_r = [s for part in fine[k1:k2] for s in part]
        maint_r = [s for part in fine[k2:] for s in part]
        # minutes without a probe matter only right after a failing minute (carry-forward)
        after: set[int] = set()
        for s in fail_r:
            for ts, _ in s["values"]:
                i = int(round((float(ts) - first) / STEP))
                after.update(range(i + 1, min(n, i + 1 + carry_minutes)))
        np_spans: list[tuple[int, int]] = []
        for i in sorted(after):
            t = first + STEP * i
            if np_spans and t - np_spans[-1][1] <= STEP:
                np_spans[-1] = (np_spans[-1][0], t)
            else:
                np_spans.append((t, t))
        noprobe_parts = await asyncio.gather(*(pc.query_range(noprobe_query(), a, b) for a, b in np_spans))
        noprobe_r = [s for part in noprobe_parts for s in part]

    def idx(ts: float) -> int:
        return int(round((ts - first) / STEP))

    present: dict[str, np.ndarray] = {}
    for c, hs in full_hours.items():
        arr = present.setdefault(c, np.zeros(n, bool))
        for k in hs:
            arr[60 * k:60 * k + 60] = True
    for s in pres_r:
        arr = present.setdefault(s["metric"].get("commune_code", ""), np.zeros(n, bool))
        for ts, _ in s["values"]:
            i = idx(ts)
            if 0 <= i < n:
                arr[i] = True
    if not present:
        raise PrometheusError(f"{url}: no probe_outcomes_total data of hcc-sentinel agents in the period")
    configured: dict[tuple[str, str], np.ndarray] = {}
    for s in conf_r:
        key = (s["metric"].get("commune_code", ""), s["metric"].get("system", ""))
        arr = configured.setdefault(key, np.zeros(n, bool))
        for ts, _ in s["values"]:
            a = int((float(ts) - 3600 - start) // 60)
            arr[max(0, a):max(0, a + 60)] = True
    codes: dict[tuple[str, str], np.ndarray] = {}
    for key, conf in configured.items():
        c, _s = key
        if c not in present:
            continue
        arr = np.full(n, UNKNOWN, np.int8)
        arr[present[c] & conf] = OK
        codes[key] = arr
    for result, code in ((noprobe_r, NOPROBE), (fail_r, FAIL)):  # FAIL last: it wins
        for s in result:
            m = s["metric"]
            arr = codes.get((m.get("commune_code", ""), m.get("system", "")))
            if arr is None:
                continue
            for ts, _ in s["values"]:
                i = idx(ts)
                if 0 <= i < n and arr[i] != UNKNOWN:
                    arr[i] = code
    maint: dict[tuple[str, str], np.ndarray] = {}
    for s in maint_r:
        key = (s["metric"].get("commune_code", ""), s["metric"].get("system", ""))
        arr = maint.setdefault(key, np.zeros(n, bool))
        for ts, _ in s["values"]:
            i = idx(ts)
            if 0 <= i < n:
                arr[i] = True
    success: dict[str, dict[str, int]] = {}
    for s in hsucc_r:
        m = s["metric"]
        d = success.setdefault(m.get("system", ""), {"ok": 0, "slow": 0})
        d[m.get("outcome", "ok")] = d.get(m.get("outcome", "ok"), 0) + int(sum(float(v) for _, v in s["values"]))
    communes: dict[str, CommuneMeta] = {}
    for s in agents_r:
        m = s["metric"]
        if m.get("commune_code"):
            communes[m["commune_code"]] = CommuneMeta(m["commune_code"], m.get("commune_name", m["commune_code"]),
                                                      m.get("commune_type", ""))
    for c in present:
        communes.setdefault(c, CommuneMeta(c, c))
    systems = dict(systems or {})
    seen = sorted({s for (_c, s) in codes} - {UPLINK})
    out_systems = {s: systems.get(s) or DEFAULT_SYSTEMS.get(s) or SystemMeta(id=s, name=s) for s in seen}
    alerts = _alert_records(alerts_r, first)
    notes = [
        "Nguồn dữ liệu: Prometheus trung tâm (bộ đếm probe_outcomes_total, trạng thái "
        "hcc_sentinel_target_state). Một khoảng không có mẫu N phút cho N + 1 phút KHÔNG RÕ, vì hiệu của bộ "
        "đếm qua khoảng trống không chia được theo phút.",
        "Thông báo đã gửi cho ai, lúc nào: Prometheus không lưu (do Alertmanager gửi). Báo cáo chỉ nêu thời "
        "gian cảnh báo (ALERTS) bắt đầu/kết thúc; xem nhật ký Alertmanager hoặc dùng --local để có danh sách "
        "người nhận." if alerts else
        "Không có chuỗi ALERTS trong kỳ: Prometheus không ghi nhận cảnh báo nào; ai được thông báo và lúc nào "
        "không có trong Prometheus (xem Alertmanager hoặc dùng --local).",
    ]
    return Observations(start=start, minutes=n, communes=communes, systems=out_systems, codes=codes, maint=maint,
                        source="prometheus", notes=notes, alerts=alerts, notifications_available=False,
                        success_counts=success)


def _alert_records(result: list[dict[str, Any]], first: float) -> list[AlertRecord]:
    out: list[AlertRecord] = []
    for s in result:
        labels = {k: v for k, v in s["metric"].items() if k not in ("__name__", "alertstate")}
        times = sorted(float(ts) for ts, _ in s["values"])
        if not times:
            continue
        a = prev = times[0]
        for ts in times[1:] + [math.inf]:
            if ts - prev > STEP * 1.5:
                out.append(AlertRecord(name=labels.get("alertname", "?"), start=a - STEP,
                                       end=prev,
                                       labels=labels, source="prometheus"))
                a = ts
            prev = ts
    return out
