#!/usr/bin/env python3
"""Generate the promtool unit tests of the central rules from readable scenarios.

    python3 configs/prometheus/tests/generate.py          # rewrite the *.test.yml files
    promtool test rules configs/prometheus/tests/*.test.yml

The scenarios below describe communes (real codes and names from configs/communes.csv) and what
their agents' metrics do minute by minute; this script turns them into promtool input series
(the agent metric contract of docs/central.md: probe_outcomes_total counters created lazily at
the first probe of an outcome, probe_target_info, up, ...) and writes the expected alerts with
their labels and annotations.  The expectations are written by hand per scenario (they are the
specification); only the series are computed.  ``fleet.rules.yml`` here is rendered from the
real inventory/template/overrides with the pinned thresholds of ``central.settings.yaml``.

tests/test_central_rules.py checks that the committed files equal this script's output and runs
promtool on them.
"""

from __future__ import annotations

import dataclasses
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

from agent.fleet import Commune, load_inventory, render_fleet  # noqa: E402

INVENTORY = ROOT / "configs" / "communes.csv"
TEMPLATE = ROOT / "configs" / "fleet" / "agent.template.yaml"
OVERRIDES = ROOT / "configs" / "fleet" / "overrides.yaml"
CENTRAL = HERE / "central.settings.yaml"
RULES = ["../rules/hcc-sentinel.rules.yml", "fleet.rules.yml"]
#: Five-commune fleet (the first five rows) for the long burn-rate scenarios: the 90 other
#: communes of the inventory would each raise AgentMissing and make promtool slow.
RULES5 = ["../rules/hcc-sentinel.rules.yml", "fleet5.rules.yml"]

COMMUNES: list[Commune] = load_inventory(INVENTORY)
JOB = "hcc-sentinel"

#: target id -> (system, kind, display name, owner or None for the commune's own unit)
TARGETS: dict[str, tuple[str, str, str, str | None]] = {
    "uplink-dns": ("uplink", "dns", "Phân giải tên miền", None),
    "motcua-home": ("motcua", "http", "Hệ thống một cửa tỉnh", "so-khcn"),
    "dvcqg-home": ("dvcqg", "http", "Trang chủ Cổng DVC quốc gia", "so-khcn"),
}
SYSTEM_NAMES = {
    "uplink": "Đường truyền các xã, phường",  # central.settings.yaml system_names
    "motcua": "Hệ thống giải quyết thủ tục hành chính tỉnh (một cửa)",
    "dvcqg": "Cổng Dịch vụ công quốc gia",
}
BUCKETS = ("0.5", "1", "3", "5", "10", "+Inf")

Interval = tuple[float, float]  # [start, end) in minutes
FOREVER = 10**9


def within(m: float, intervals: list[Interval]) -> bool:
    return any(a <= m < b for a, b in intervals)


@dataclasses.dataclass
class Sim:
    """One simulated agent.  Minutes are test minutes (input interval 1m)."""

    commune: Commune
    index: int
    present: bool = True                               # False: no series at all
    scrape_down: list[Interval] = dataclasses.field(default_factory=list)
    fail: dict[str, list[Interval]] = dataclasses.field(default_factory=dict)   # 100 % errors
    error_share: dict[str, list[tuple[float, float, float]]] = dataclasses.field(default_factory=dict)
    probes_per_min: int = 2
    latency: dict[str, list[tuple[float, float, float]]] = dataclasses.field(default_factory=dict)
    cert_days: dict[str, float] = dataclasses.field(default_factory=dict)
    reload_failed: list[Interval] = dataclasses.field(default_factory=list)
    outbox_age: list[tuple[float, float, float]] = dataclasses.field(default_factory=list)
    targets: tuple[str, ...] = ("uplink-dns", "motcua-home", "dvcqg-home")
    extra_metrics: bool = False                        # reload / outbox gauges

    @property
    def labels(self) -> dict[str, str]:
        """Target labels as file_sd sets them (commune_type and agent_id left out to keep the
        files small: no rule uses them; the end-to-end test has the full set)."""
        c = self.commune
        return {"job": JOB, "instance": f"10.75.{self.index // 200}.{self.index % 200 + 10}:9470",
                "commune_code": c.code, "commune_name": c.name}

    def share(self, target: str, m: float) -> float:
        if within(m, self.fail.get(target, [])):
            return 1.0
        for a, b, s in self.error_share.get(target, []):
            if a <= m < b:
                return s
        return 0.0


def sims(n: int = 95, **kw: Any) -> list[Sim]:
    return [Sim(c, i, **kw) for i, c in enumerate(COMMUNES[:n])]


# ---------------------------------------------------------------------------------------------
# series
# ---------------------------------------------------------------------------------------------


def fmt_num(v: float) -> str:
    if float(v).is_integer():
        return str(int(v))
    return repr(round(v, 6))


def compress(values: list[float | str | None]) -> str:
    """promtool expanding notation: runs of an arithmetic sequence become ``a+bxn`` (n+1
    values), runs of missing samples ``_xn`` (n values); 'stale' stays."""
    out: list[str] = []
    i = 0
    while i < len(values):
        v = values[i]
        if v is None:
            j = i
            while j < len(values) and values[j] is None:
                j += 1
            out.append("_" if j - i == 1 else f"_x{j - i}")
            i = j
            continue
        if v == "stale":
            out.append("stale")
            i += 1
            continue
        j = i + 1
        step = None
        while j < len(values) and isinstance(values[j], (int, float)) and not isinstance(values[j], bool):
            d = values[j] - values[j - 1]  # type: ignore[operator]
            if step is None:
                step = d
            elif abs(d - step) > 1e-9:
                break
            j += 1
        n = j - i - 1
        if n == 0:
            out.append(fmt_num(v))  # type: ignore[arg-type]
        elif step == 0:
            out.append(f"{fmt_num(v)}x{n}")  # type: ignore[arg-type]
        else:
            sign = "+" if step >= 0 else "-"  # type: ignore[operator]
            out.append(f"{fmt_num(v)}{sign}{fmt_num(abs(step))}x{n}")  # type: ignore[arg-type, arg-type]
        i = j
    return " ".join(out)


def series_name(name: str, labels: dict[str, str]) -> str:
    inner = ", ".join(f'{k}="{v}"' for k, v in labels.items())
    return f"{name}{{{inner}}}"


def build_series(all_sims: list[Sim], minutes: int, step: int = 1) -> list[dict[str, str]]:
    """Input series sampled every ``step`` minutes from 0 to ``minutes``."""
    out: list[dict[str, str]] = []
    times = list(range(0, minutes + 1, step))
    for s in all_sims:
        if not s.present:
            continue
        base = s.labels
        up_vals: list[float | str | None] = []
        scraped: list[bool] = []
        for m in times:
            down = within(m, s.scrape_down)
            scraped.append(not down)
            up_vals.append(0 if down else 1)
        out.append({"series": series_name("up", base), "values": compress(up_vals)})

        def visible(vals: list[float | None]) -> list[float | str | None]:
            res: list[float | str | None] = []
            for k, v in enumerate(vals):
                if not scraped[k] or v is None:
                    res.append("stale" if (k > 0 and res[-1] not in (None, "stale") and scraped[k - 1]) else None)
                else:
                    res.append(v)
            return res

        for t in s.targets:
            system, kind, name, owner = TARGETS[t]
            info = {**base, "target": t, "kind": kind, "system": system,
                    "owner": owner or s.commune.unit_id, "name": name}
            out.append({"series": series_name("probe_target_info", info),
                        "values": compress(visible([1.0] * len(times)))})
            ok_total, err_total = 0.0, 0.0
            ok_vals: list[float | None] = []
            err_vals: list[float | None] = []
            err_seen = False
            for m in times:
                if m > 0:
                    share = s.share(t, m - step)
                    err = s.probes_per_min * step * share
                    ok_total += s.probes_per_min * step - err
                    err_total += err
                ok_vals.append(ok_total)
                err_seen = err_seen or err_total > 0
                err_vals.append(err_total if err_seen else None)
            if system == "uplink":  # the rules read probe_success of uplink checks only
                success = [0.0 if s.share(t, m - step if m > 0 else 0) >= 0.5 else 1.0 for m in times]
                out.append({"series": series_name("probe_success", {**base, "target": t}),
                            "values": compress(visible(success))})
            out.append({"series": series_name("probe_outcomes_total", {**base, "target": t, "outcome": "ok", "reason": "ok"}),
                        "values": compress(visible(ok_vals))})
            if err_seen:
                out.append({"series": series_name("probe_outcomes_total", {**base, "target": t, "outcome": "error", "reason": "refused"}),
                            "values": compress(visible(err_vals))})
            if t in s.latency:
                out.extend(_histogram(s, t, base, times, visible))
            if t in s.cert_days:
                out.append({"series": series_name("probe_ssl_earliest_cert_expiry", {**base, "target": t}),
                            "values": compress(visible([s.cert_days[t] * 86400.0] * len(times)))})
        if s.extra_metrics:
            reload = [0.0 if within(m, s.reload_failed) else 1.0 for m in times]
            out.append({"series": series_name("hcc_sentinel_config_last_reload_successful", base),
                        "values": compress(visible(reload))})
            ages = []
            for m in times:
                age = 0.0
                for a, b, v in s.outbox_age:
                    if a <= m < b:
                        age = v
                ages.append(age)
            out.append({"series": series_name("hcc_sentinel_outbox_oldest_age_seconds", base),
                        "values": compress(visible(ages))})
            out.append({"series": series_name("hcc_sentinel_outbox_messages", base),
                        "values": compress(visible([0.0] * len(times)))})
    return out


def _histogram(s: Sim, t: str, base: dict[str, str], times: list[int],
               visible: Callable[[list[float | None]], list[float | str | None]]) -> list[dict[str, str]]:
    counts = {le: 0.0 for le in BUCKETS}
    total_sum = 0.0
    per_le: dict[str, list[float | None]] = {le: [] for le in BUCKETS}
    sums: list[float | None] = []
    cnts: list[float | None] = []
    for m in times:
        if m > 0:
            lat = 0.2
            for a, b, v in s.latency[t]:
                if a <= m - 1 < b:
                    lat = v
            for le in BUCKETS:
                if le == "+Inf" or lat <= float(le):
                    counts[le] += s.probes_per_min
            total_sum += lat * s.probes_per_min
        for le in BUCKETS:
            per_le[le].append(counts[le])
        sums.append(total_sum)
        cnts.append(counts["+Inf"])
    out = [{"series": series_name("probe_latency_seconds_bucket", {**base, "target": t, "le": le}),
            "values": compress(visible(per_le[le]))} for le in BUCKETS]
    out.append({"series": series_name("probe_latency_seconds_sum", {**base, "target": t}), "values": compress(visible(sums))})
    out.append({"series": series_name("probe_latency_seconds_count", {**base, "target": t}), "values": compress(visible(cnts))})
    return out


# ---------------------------------------------------------------------------------------------
# expected alerts (labels + annotations, mirroring the rule templates)
# ---------------------------------------------------------------------------------------------


def go_num(v: float) -> str:
    """Go's %v of a float64 (what {{ value }} prints)."""
    if float(v).is_integer() and abs(v) < 1e21:
        return str(int(v))
    return repr(v)


def pct(v: float) -> str:
    """Prometheus' humanizePercentage: %.4g of v*100, then %."""
    return f"{v * 100:.4g}%"


def commune_labels(s: Sim, with_target: bool = True) -> dict[str, str]:
    return dict(s.labels)


def outage_central(system: str, failing: int, quorum: int) -> dict[str, Any]:
    share = failing / quorum
    return {
        "exp_labels": {"system": system, "owner": "so-khcn", "severity": "page", "scope": "central"},
        "exp_annotations": {
            "summary": (f"Sự cố tập trung: {SYSTEM_NAMES[system]} lỗi từ {failing}/{quorum} xã, phường có "
                        f"đường truyền tốt ({pct(share)})."),
            "summary_en": (f"Central outage: system {system} failing from {pct(share)} of the communes "
                           "whose own link is healthy."),
        },
    }


def link_down(s: Sim, ratio: float = 1.0) -> dict[str, Any]:
    c = s.commune
    return {
        "exp_labels": {**s.labels, "system": "uplink", "owner": c.unit_id, "severity": "page", "scope": "commune"},
        "exp_annotations": {
            "summary": (f"Mất kết nối tại {c.name} ({c.code}): {pct(ratio)} số lần kiểm tra từ xã thất bại "
                        "trong 5 phút; lỗi tại chỗ (đường truyền, mạng nội bộ), không phải sự cố của hệ thống dùng chung."),
            "summary_en": (f"Commune link down at {c.code}: {pct(ratio)} of the checks from the commune failed "
                           "over 5 minutes; a local fault (link, LAN), not a shared-system outage."),
        },
    }


def system_down(s: Sim, system: str, ratio: float = 1.0) -> dict[str, Any]:
    c = s.commune
    return {
        "exp_labels": {**s.labels, "system": system, "owner": c.unit_id, "severity": "ticket", "scope": "commune"},
        "exp_annotations": {
            "summary": (f"{SYSTEM_NAMES[system]} lỗi từ {c.name} ({c.code}) nhưng không phải sự cố tập trung: "
                        "kiểm tra mạng nội bộ, proxy, tường lửa của xã."),
            "summary_en": (f"System {system} failing from commune {c.code} ({pct(ratio)} of probes) but not "
                           "centrally: check the commune's LAN, proxy, firewall."),
        },
    }


def agent_missing(s: Sim, from_inventory: bool = False) -> dict[str, Any]:
    c = s.commune
    labels = ({"commune_code": c.code, "commune_name": c.name, "commune_type": c.type, "agent_id": c.agent_id}
              if from_inventory else dict(s.labels))
    labels.update({"owner": c.unit_id, "severity": "page", "scope": "commune"})
    return {
        "exp_labels": labels,
        "exp_annotations": {
            "summary": (f"Không nhận được dữ liệu từ agent của {c.name} ({c.code}): máy agent tắt hoặc đường "
                        "truyền của xã tới tỉnh bị gián đoạn."),
            "summary_en": (f"No data from the agent of commune {c.code}: agent down or the commune's link to the "
                           "province interrupted."),
        },
    }


def burn(system: str, value: float, slow: bool = False) -> dict[str, Any]:
    name = SYSTEM_NAMES[system]
    word, word_en = ("đang bị tiêu dần", "burning") if slow else ("đang bị tiêu nhanh", "burning fast")
    return {
        "exp_labels": {"system": system, "owner": "so-khcn", "severity": "ticket" if slow else "page",
                       "scope": "central", "slo": "availability"},
        "exp_annotations": {
            "summary": f"Ngân sách lỗi của {name} {word}: tốc độ {value:.1f} lần mức cho phép.",
            "summary_en": f"Error budget of {system} {word_en}: {value:.1f}x the sustainable rate.",
        },
    }


def alert_test(eval_time: str, alertname: str, alerts: list[dict[str, Any]]) -> dict[str, Any]:
    return {"eval_time": eval_time, "alertname": alertname, "exp_alerts": alerts}


def expr_test(eval_time: str, expr: str, samples: list[tuple[str, float]]) -> dict[str, Any]:
    """Expect ``samples`` ((series, value)) from the instant query ``expr``; a bare selector
    keeps its metric name, so the expected series are written as the selector."""
    return {"eval_time": eval_time, "expr": expr,
            "exp_samples": [{"labels": lab, "value": val} for lab, val in samples]}


def case(name: str, all_sims: list[Sim], minutes: int, alerts: list[dict[str, Any]],
         exprs: list[dict[str, Any]] | None = None, step: int = 1) -> dict[str, Any]:
    t: dict[str, Any] = {"name": name, "interval": f"{step}m",
                         "input_series": build_series(all_sims, minutes, step)}
    if alerts:
        t["alert_rule_test"] = alerts
    if exprs:
        t["promql_expr_test"] = exprs
    return t


# ---------------------------------------------------------------------------------------------
# scenarios
# ---------------------------------------------------------------------------------------------


def central_cases() -> list[dict[str, Any]]:
    cases = []

    # 1. One commune cannot reach the one-stop system; 94 can: a local alert to that commune,
    #    no central outage, no link alert.
    s = sims()
    s[7].fail["motcua-home"] = [(10, FOREVER)]
    cases.append(case("one commune down is local, not central", s, 40, [
        alert_test("30m", "SystemOutageCentral", []),
        alert_test("30m", "CommuneLinkDown", []),
        alert_test("30m", "CommuneSystemDown", [system_down(s[7], "motcua")]),
    ], [expr_test("30m", 'hcc:system:failing_share{system="motcua"}', [('hcc:system:failing_share{system="motcua"}', 1 / 95)])]))

    # 2. The one-stop system fails from 60 of 95 communes: one central alert to Sở KH&CN and not
    #    one per commune.
    s = sims()
    for x in s[:60]:
        x.fail["motcua-home"] = [(10, FOREVER)]
    cases.append(case("central outage: one alert to the owner, no per-commune alerts", s, 40, [
        alert_test("12m", "SystemOutageCentral", []),  # pending (for: 2m)
        alert_test("30m", "SystemOutageCentral", [outage_central("motcua", 60, 95)]),
        alert_test("30m", "CommuneSystemDown", []),
        alert_test("30m", "CommuneLinkDown", []),
    ]))

    # 3. Unknown communes are not counted: 88 agents unreachable (no data), 7 report, 4 of them
    #    fail: below the minimum count, so no central outage — the 88 are unknown, not down.
    s = sims()
    for x in s[7:]:
        x.scrape_down = [(0, FOREVER)]
    for x in s[:4]:
        x.fail["motcua-home"] = [(10, FOREVER)]
    cases.append(case("unknown communes are neither up nor down (below the count)", s, 40, [
        alert_test("30m", "SystemOutageCentral", []),
    ], [
        expr_test("30m", 'hcc:system:communes_quorum{system="motcua"}', [('hcc:system:communes_quorum{system="motcua"}', 7)]),
        expr_test("30m", 'hcc:system:communes_failing{system="motcua"}', [('hcc:system:communes_failing{system="motcua"}', 4)]),
        expr_test("30m", 'hcc:system:communes_unknown{system="motcua"}', [('hcc:system:communes_unknown{system="motcua"}', 88)]),
    ]))

    # 4. Same, 5 of the 7 reporting communes fail: share 5/7 and count 5 -> central outage,
    #    measured over the 7 known communes only.
    s = sims()
    for x in s[7:]:
        x.scrape_down = [(0, FOREVER)]
    for x in s[:5]:
        x.fail["motcua-home"] = [(10, FOREVER)]
    cases.append(case("central outage measured over the known communes only", s, 40, [
        alert_test("30m", "SystemOutageCentral", [outage_central("motcua", 5, 7)]),
    ]))

    # 5. Share below threshold: 20 of 95 (21 %) fail -> 20 local alerts, no central outage.
    s = sims()
    for x in s[:20]:
        x.fail["dvcqg-home"] = [(10, FOREVER)]
    cases.append(case("below the share threshold: local alerts", s, 40, [
        alert_test("30m", "SystemOutageCentral", []),
        alert_test("30m", "CommuneSystemDown", [system_down(x, "dvcqg") for x in s[:20]]),
    ]))

    # 6. Three communes lose their own link (everything fails from them): three link alerts to
    #    the three communes; they are excluded from the quorum, so no system is "down".
    s = sims()
    for x in s[10:13]:
        for t in x.targets:
            x.fail[t] = [(10, FOREVER)]
    cases.append(case("a commune's own link down is not the system's downtime", s, 40, [
        alert_test("30m", "CommuneLinkDown", [link_down(x) for x in s[10:13]]),
        alert_test("30m", "SystemOutageCentral", []),
        alert_test("30m", "CommuneSystemDown", []),
    ], [
        expr_test("30m", 'hcc:system:communes_failing{system="motcua"}', [('hcc:system:communes_failing{system="motcua"}', 0)]),
        expr_test("30m", 'hcc:system:communes_quorum{system="motcua"}', [('hcc:system:communes_quorum{system="motcua"}', 92)]),
        expr_test("30m", 'hcc:system:error_ratio:rate5m{system="motcua"}', [('hcc:system:error_ratio:rate5m{system="motcua"}', 0)]),
    ]))

    # 6b. A flaky link (20 % of its uplink checks fail) makes the commune unknown: out of the
    #     quorum, no link alert (below 50 %), its failures are not counted against the system.
    s = sims()
    s[20].error_share["uplink-dns"] = [(10, FOREVER, 0.2)]
    s[20].probes_per_min = 10
    s[20].fail["motcua-home"] = [(10, FOREVER)]
    cases.append(case("a flaky commune link is unknown, not down", s, 40, [
        alert_test("30m", "CommuneLinkDown", []),
        alert_test("30m", "CommuneSystemDown", []),
        alert_test("30m", "SystemOutageCentral", []),
    ], [
        expr_test("30m", 'hcc:system:communes_quorum{system="motcua"}', [('hcc:system:communes_quorum{system="motcua"}', 94)]),
        expr_test("30m", 'hcc:system:communes_failing{system="motcua"}', [('hcc:system:communes_failing{system="motcua"}', 0)]),
    ]))

    # 7. The shared DNS / provincial WAN fails: the uplink check fails at 80 communes.  One
    #    central alert (system uplink, owner Sở KH&CN), not 80 CommuneLinkDown.
    s = sims()
    for x in s[:80]:
        x.fail["uplink-dns"] = [(10, FOREVER)]
    cases.append(case("central uplink outage does not raise 80 link alerts", s, 40, [
        alert_test("30m", "SystemOutageCentral", [outage_central("uplink", 80, 95)]),
        alert_test("30m", "CommuneLinkDown", []),
    ]))

    # 8. The provincial data centre is down: every shared system fails from every commune (their
    #    uplinks are fine).  Central alerts per system; no 95 CommuneLinkDown.
    s = sims()
    for x in s:
        x.fail["motcua-home"] = [(10, FOREVER)]
        x.fail["dvcqg-home"] = [(10, FOREVER)]
    cases.append(case("everything down centrally: no per-commune link alerts", s, 40, [
        alert_test("30m", "SystemOutageCentral", [outage_central("dvcqg", 95, 95), outage_central("motcua", 95, 95)]),
        alert_test("30m", "CommuneLinkDown", []),
        alert_test("30m", "CommuneSystemDown", []),
    ]))

    # 9. One commune fails every shared system although its uplink checks pass (its proxy):
    #    that is its link alert ("all of its targets").
    s = sims()
    s[3].fail["motcua-home"] = [(10, FOREVER)]
    s[3].fail["dvcqg-home"] = [(10, FOREVER)]
    cases.append(case("one commune failing all its targets is a link alert", s, 40, [
        alert_test("30m", "CommuneLinkDown", [link_down(s[3])]),
        alert_test("30m", "SystemOutageCentral", []),
    ]))

    # 10. Hold-down: a central outage (60 communes, 10..30 min) recovers, but 3 of those
    #     communes keep failing (agents catching up / residual).  No per-commune alert during the
    #     15-minute hold-down after the outage ends; a fault that persists beyond it is reported.
    s = sims()
    for x in s[:60]:
        x.fail["motcua-home"] = [(10, 30)]
    for x in s[:3]:
        x.fail["motcua-home"] = [(10, FOREVER)]
    cases.append(case("hold-down after a central outage", s, 80, [
        alert_test("25m", "SystemOutageCentral", [outage_central("motcua", 60, 95)]),
        alert_test("40m", "SystemOutageCentral", []),
        alert_test("40m", "CommuneSystemDown", []),
        alert_test("55m", "CommuneSystemDown", []),
        alert_test("70m", "CommuneSystemDown", [system_down(x, "motcua") for x in s[:3]]),
    ]))
    return cases


def escalation_cases() -> list[dict[str, Any]]:
    s = sims()
    for x in s[:60]:
        x.fail["motcua-home"] = [(10, FOREVER)]

    def esc(alertname: str, extra: dict[str, str]) -> dict[str, Any]:
        return {
            "exp_labels": {"system": "motcua", "owner": "so-khcn", "severity": "page", "scope": "central",
                           "escalated_alertname": alertname, "escalate_to": "vp-ubnd", "escalated_from": "so-khcn",
                           "escalation_step": "1", "escalation_after": "1h", **extra},
            "exp_annotations": {
                "summary": f"Chuyển cấp: {alertname} của so-khcn chưa được xử lý sau 1h",
                "summary_en": f"Escalated: {alertname} owned by so-khcn still firing after 1h",
            },
        }
    # The outage escalates; the budget burn it causes raises no page of its own meanwhile.
    return [case("a central outage unattended for 1h escalates to Văn phòng UBND tỉnh", s, 90, [
        alert_test("60m", "Escalation", []),
        alert_test("85m", "Escalation", [esc("SystemOutageCentral", {})]),
        alert_test("85m", "SLOErrorBudgetBurn", []),
        alert_test("85m", "SLOErrorBudgetBurnSlow", []),
    ])]


def agent_cases() -> list[dict[str, Any]]:
    cases = []
    # One agent unreachable: AgentMissing to its commune's unit; its stale data are unknown.
    s = sims()
    s[5].scrape_down = [(10, FOREVER)]
    s[6].present = False  # in the inventory, never scraped at all (no file_sd target)
    cases.append(case("one agent missing, one never configured", s, 30, [
        alert_test("12m", "AgentMissing", [agent_missing(s[6], from_inventory=True)]),
        alert_test("20m", "AgentMissing", [agent_missing(s[5]), agent_missing(s[6], from_inventory=True)]),
        alert_test("20m", "FleetScrapeOutage", []),
        alert_test("20m", "AgentsAbsent", []),
        alert_test("20m", "HccSentinelRulesIncomplete", []),  # the constants are loaded here
    ]))
    # Prometheus loses the provincial network: 70 agents at once -> one FleetScrapeOutage, no
    # AgentMissing storm.
    s = sims()
    for x in s[:70]:
        x.scrape_down = [(10, FOREVER)]
    cases.append(case("many agents missing at once: one fleet alert", s, 30, [
        alert_test("20m", "FleetScrapeOutage", [{
            "exp_labels": {"owner": "so-khcn", "severity": "page", "scope": "central"},
            "exp_annotations": {
                "summary": ("Mất kết nối tới 70 agent cùng lúc: sự cố phía tỉnh (mạng truyền số liệu, máy chủ "
                            "giám sát), không phải từng xã."),
                "summary_en": "70 agents unreachable at once: a central network or monitoring-server fault, not the communes.",
            }}]),
        alert_test("20m", "AgentMissing", []),
    ]))
    # The job has no target at all (file_sd broken): the dead man's switch, not 95 alerts.
    cases.append(case("no agent at all: AgentsAbsent", [], 20, [
        alert_test("3m", "AgentsAbsent", []),
        alert_test("10m", "AgentsAbsent", [{
            "exp_labels": {"job": "hcc-sentinel", "severity": "page", "scope": "central"},
            "exp_annotations": {
                "summary": "Prometheus không có agent hcc-sentinel nào để thu thập (file_sd trống hoặc lỗi).",
                "summary_en": "Prometheus has no hcc-sentinel agent to scrape (file_sd empty or broken).",
            }}]),
        alert_test("10m", "AgentMissing", []),
    ]))
    # Config reload failed at one agent; outbox backlog at one agent vs at 50 agents.
    s = sims(extra_metrics=True)
    s[2].reload_failed = [(5, FOREVER)]
    s[4].outbox_age = [(5, FOREVER, 7200.0)]
    c2, c4 = s[2].commune, s[4].commune
    cases.append(case("config reload failed, outbox backlog at one agent", s, 40, [
        alert_test("10m", "AgentConfigReloadFailed", []),
        alert_test("20m", "AgentConfigReloadFailed", [{
            "exp_labels": {**s[2].labels, "owner": c2.unit_id, "severity": "ticket", "scope": "commune"},
            "exp_annotations": {
                "summary": f"Agent của {c2.name} ({c2.code}) không nạp được cấu hình mới; vẫn chạy cấu hình cũ.",
                "summary_en": f"The agent of commune {c2.code} failed to reload its config; it still runs the previous one.",
            }}]),
        alert_test("15m", "AgentOutboxBacklog", []),
        alert_test("25m", "AgentOutboxBacklog", [{
            "exp_labels": {**s[4].labels, "owner": c4.unit_id, "severity": "ticket", "scope": "commune"},
            "exp_annotations": {
                "summary": f"Thông báo của agent {c4.name} ({c4.code}) đang bị dồn, chưa gửi được.",
                "summary_en": f"Notifications of the agent of commune {c4.code} are queued and not delivered.",
            }}]),
        alert_test("25m", "AgentOutboxBacklogFleet", []),
    ]))
    s = sims(extra_metrics=True)
    for x in s[:50]:
        x.outbox_age = [(5, FOREVER, 7200.0)]
    cases.append(case("outbox backlog at 50 agents: one fleet alert", s, 40, [
        alert_test("25m", "AgentOutboxBacklog", []),
        alert_test("25m", "AgentOutboxBacklogFleet", [{
            "exp_labels": {"severity": "ticket", "scope": "central"},
            "exp_annotations": {
                "summary": f"Thông báo bị dồn ở {pct(50 / 95)} số agent: kênh gửi tin (Zalo, thư điện tử, SMS) có thể đang lỗi.",
                "summary_en": f"Notifications queued at {pct(50 / 95)} of agents: a delivery channel may be down.",
            }}]),
    ]))
    return cases


def slow_cert_cases() -> list[dict[str, Any]]:
    cases = []
    # motcua-home answers in 5 s (objective: slow_after 3 s) from 40 communes.
    s = sims()
    for x in s[:40]:
        x.latency["motcua-home"] = [(5, FOREVER, 5.0)]
    for x in s[40:]:
        x.latency["motcua-home"] = []
    cases.append(case("fleet-wide slowness", s, 30, [
        alert_test("25m", "SystemSlow", [{
            "exp_labels": {"target": "motcua-home", "system": "motcua", "owner": "so-khcn",
                           "severity": "ticket", "scope": "central"},
            "exp_annotations": {
                # p90 of 40 x 5 s and 55 x 0.2 s, interpolated in the (3, 5] bucket: 3 + 2 * 30.5/40
                "summary": "Chậm trên diện rộng: motcua-home (motcua) có độ trễ p90 4.525s, vượt mục tiêu.",
                "summary_en": "Fleet-wide slowness: motcua-home (motcua) p90 latency 4.525s is above its objective.",
            }}]),
    ]))
    # One commune is slow (its own link): no fleet alert.
    s = sims()
    s[0].latency["motcua-home"] = [(5, FOREVER, 9.0)]
    for x in s[1:]:
        x.latency["motcua-home"] = []
    cases.append(case("one slow commune is not fleet-wide slowness", s, 30, [
        alert_test("25m", "SystemSlow", []),
    ]))
    # Certificates: 20 days -> ticket, 5 days -> page, 60 days -> nothing.
    s = sims(3)
    s[0].targets = s[1].targets = s[2].targets = ("uplink-dns", "motcua-home", "dvcqg-home")
    for x in s:
        x.cert_days = {"motcua-home": 20.0, "dvcqg-home": 5.0, "uplink-dns": 60.0}

    def cert(target: str, days: int, severity: str) -> dict[str, Any]:
        return {"exp_labels": {"target": target, "system": TARGETS[target][0], "owner": "so-khcn",
                               "severity": severity, "scope": "central"},
                "exp_annotations": {
                    "summary": f"Chứng thư số của {target} hết hạn sau {days} ngày.",
                    "summary_en": f"The certificate of {target} expires in {days} days."}}
    cases.append(case("certificates expiring", s, 30, [
        alert_test("5m", "CertificateExpiring", []),
        alert_test("20m", "CertificateExpiring", [cert("motcua-home", 20, "ticket"), cert("dvcqg-home", 5, "page")]),
    ]))
    return cases


def burn_cases() -> list[dict[str, Any]]:
    """SLO burn rates, objective 99.5 % (budget 0.5 %).  Five communes, 50 probes a minute each
    (the error share per minute is then exact); 6 h of clean history first so that the 6 h
    window is full."""
    cases = []
    H = 60

    def fleet(share: float, start: float = 6 * H) -> list[Sim]:
        s = sims(5, probes_per_min=50)
        for x in s:
            x.error_share["motcua-home"] = [(start, FOREVER, share)]
        return s

    # 10 % errors: burn 20.  Page via 14.4x (1h and 5m) once the 1h window holds > 43 min of it.
    cases.append(case("burn 20x: page on 1h and 5m", fleet(0.10), 6 * H + 60, step=2, alerts=[
        alert_test("6h30m", "SLOErrorBudgetBurn", []),
        alert_test("6h54m", "SLOErrorBudgetBurn", [burn("motcua", 20.0)]),
    ]))
    # 4 % errors: burn 8.  Never 14.4x; page via 6x (6h and 30m) once the 6h window holds
    # > 270 min of it.
    cases.append(case("burn 8x: page on 6h and 30m", fleet(0.04), 6 * H + 310, step=2, alerts=[
        alert_test("10h", "SLOErrorBudgetBurn", []),
        alert_test("11h10m", "SLOErrorBudgetBurn", [burn("motcua", 8.0)]),
    ]))
    # 1.5 % errors: burn 3.  No page ever; ticket via 1x (3d and 6h) once the 3d window (here:
    # all the history, 6h clean + the errors) exceeds 0.5 %, i.e. after 180 min of errors.
    # Checked when the 6h window holds only errors, so the value (6h burn rate) is exactly 3.
    cases.append(case("burn 3x: ticket on 3d and 6h, no page", fleet(0.015), 12 * H + 20, step=2, alerts=[
        alert_test("8h30m", "SLOErrorBudgetBurnSlow", []),
        alert_test("12h10m", "SLOErrorBudgetBurnSlow", [burn("motcua", 3.0, slow=True)]),
        alert_test("12h10m", "SLOErrorBudgetBurn", []),
    ]))
    # Two of five communes lose their link for hours: every probe from them fails, yet the
    # central SLI (quorum) sees no error at all -> no burn alert.
    s = sims(5, probes_per_min=50)
    for x in s[:2]:
        for t in x.targets:
            x.fail[t] = [(6 * H, FOREVER)]
    cases.append(case("a broken commune link does not burn the system's budget", s, 6 * H + 120, step=2, alerts=[
        alert_test("7h54m", "SLOErrorBudgetBurn", []),
        alert_test("7h54m", "SLOErrorBudgetBurnSlow", []),
    ], exprs=[expr_test("7h54m", 'hcc:system:error_ratio:rate1h{system="motcua"}', [('hcc:system:error_ratio:rate1h{system="motcua"}', 0)])]))
    return cases


def rules_incomplete_cases() -> list[dict[str, Any]]:
    s = sims(3)
    return [case("the generated constants are missing", s, 20, [
        alert_test("5m", "HccSentinelRulesIncomplete", []),
        alert_test("15m", "HccSentinelRulesIncomplete", [{
            "exp_labels": {"severity": "ticket", "scope": "central"},
            "exp_annotations": {
                "summary": "Thiếu tệp luật sinh tự động fleet.rules.yml (chạy lại hcc-sentinel fleet render).",
                "summary_en": "The generated rule file fleet.rules.yml is not loaded (run hcc-sentinel fleet render).",
            }}]),
    ])]


#: file -> (scenarios, rule files, evaluation interval, what it tests)
FILES: dict[str, tuple[Callable[[], list[dict[str, Any]]], list[str], str, str]] = {
    "central.test.yml": (central_cases, RULES, "1m", "central vs local outages, quorum, unknown, hold-down"),
    "escalation.test.yml": (escalation_cases, RULES, "1m", "escalation to Văn phòng UBND tỉnh"),
    "agents.test.yml": (agent_cases, RULES, "1m", "agents missing / absent, config reload, outbox backlog"),
    "slow_cert.test.yml": (slow_cert_cases, RULES, "1m", "fleet-wide slowness, certificate expiry"),
    "burn.test.yml": (burn_cases, RULES5, "2m", "SLO multiwindow multi-burn-rate alerts"),
    "incomplete.test.yml": (rules_incomplete_cases, RULES[:1], "1m", "the generated constants are missing"),
}


def generate() -> dict[str, str]:
    """Every generated file name (relative to this directory) -> text."""
    out: dict[str, str] = {}
    render = render_fleet(INVENTORY, TEMPLATE, OVERRIDES, CENTRAL)
    out["fleet.rules.yml"] = render.files["prometheus/rules/fleet.rules.yml"]
    with tempfile.TemporaryDirectory() as tmp:
        lines = INVENTORY.read_text(encoding="utf-8").splitlines(keepends=True)
        small = Path(tmp) / "communes.csv"
        small.write_text("".join(lines[:6]), encoding="utf-8")
        overrides = Path(tmp) / "overrides.yaml"  # the real overrides name communes not in the five
        overrides.write_text(OVERRIDES.read_text(encoding="utf-8").split("\ncommunes:")[0] + "\n", encoding="utf-8")
        out["fleet5.rules.yml"] = render_fleet(small, TEMPLATE, overrides, CENTRAL).files["prometheus/rules/fleet.rules.yml"]
    for name, (fn, rules, every, what) in FILES.items():
        doc = {"rule_files": rules, "evaluation_interval": every, "tests": fn()}
        text = yaml.safe_dump(doc, allow_unicode=True, sort_keys=False, width=200)
        out[name] = (f"# GENERATED by configs/prometheus/tests/generate.py -- {what}.\n"
                     f"# Run: promtool test rules {name}\n" + text)
    return out


def main() -> int:
    for name, text in generate().items():
        (HERE / name).write_text(text, encoding="utf-8")
        print(f"wrote {HERE / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
