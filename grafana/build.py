"""Generate the hcc-sentinel Grafana dashboards (JSON) with grafanalib.

Run ``python3 grafana/build.py`` after changing this file; it rewrites ``grafana/dashboards/*.json``
(committed).  ``tests/test_grafana_build.py`` fails when the committed JSON differs from what this
file generates, and ``tests/test_grafana_queries.py`` evaluates every panel's PromQL against a real
Prometheus holding a backfilled month.

Five dashboards (Vietnamese titles and descriptions, English in parentheses):

* ``hcc-overview`` — province overview: status grid communes × systems, central outages now,
  communes that lost their link, worst communes of the last 24 h.
* ``hcc-system`` — one system (``$system``): latency heatmap from ``probe_latency_seconds``,
  p50/p90/p99, outcomes by reason (lỗi / chậm / treo), quorum signal, availability per commune,
  certificate days left.
* ``hcc-commune`` — one commune (``$commune``): its targets, their states, its uplink, host health
  (CPU, memory, disk), recent incidents (minutes down per target, firing ALERTS).
* ``hcc-sla`` — 30-day availability per system from a quorum of healthy-link communes, error
  budget left, burn rates over 1 h / 6 h / 1 d / 3 d (SRE workbook ch. 5).
* ``hcc-fleet`` — agents up, versions, config reload failures, outbox depth, scheduler lag, disks.

PromQL is written against the agents' raw metrics (the metric contract in docs/central.md), so
the dashboards work on any Prometheus scraping the agents, with or without the central recording
rules; panel descriptions name the recording rule of ``configs/prometheus/rules`` that computes the
same thing for alerting.  The accounting of the monthly report (minute-exact quorum, maintenance,
unknown) is in ``agent/report``; the SLA dashboard is its live, 5-minute-resolution estimate.

Template variables: ``datasource`` (Prometheus), ``system``, ``commune`` (code; shown with the
name), ``objective`` (SLO used by the SLA dashboard).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from grafanalib import core as g
from grafanalib._gen import DashboardEncoder

HERE = Path(__file__).resolve().parent
OUT = HERE / "dashboards"
DS = {"type": "prometheus", "uid": "${datasource}"}
TZ = "Asia/Ho_Chi_Minh"

# -- PromQL building blocks ------------------------------------------------------------------

#: target -> system join (one series per agent and target)
SYS = "max by (agent_id, target, system) (probe_target_info)"
SYS_SEL = 'max by (agent_id, target) (probe_target_info{system="$system"})'
SERVICES = 'max by (agent_id, target, system) (probe_target_info{system!~"uplink|host"})'
UPLINK_JOIN = 'max by (agent_id, target, system) (probe_target_info{system="uplink"})'
SYS_ONE = 'max by (agent_id, target, system) (probe_target_info{system="$system"})'
C = "probe_outcomes_total"

#: 0 up, 1 maintenance, 2 degraded, 3 unreachable, 4 down (worst wins with max)
STATE_CODE = (
    '((hcc_sentinel_target_state{state="up"} == 1) * 0'
    ' or (hcc_sentinel_target_state{state="maintenance"} == 1) * 0 + 1'
    ' or (hcc_sentinel_target_state{state="degraded"} == 1) * 0 + 2'
    ' or (hcc_sentinel_target_state{state="unreachable"} == 1) * 0 + 3'
    ' or (hcc_sentinel_target_state{state="down"} == 1) * 0 + 4)'
)
STATE_MAPPINGS = [
    {"type": "value", "options": {
        "0": {"text": "Bình thường (up)", "color": "green", "index": 0},
        "1": {"text": "Bảo trì (maintenance)", "color": "blue", "index": 1},
        "2": {"text": "Suy giảm (degraded)", "color": "yellow", "index": 2},
        "3": {"text": "Mất kết nối (unreachable)", "color": "purple", "index": 3},
        "4": {"text": "Gián đoạn (down)", "color": "red", "index": 4}}},
]
#: communes whose uplink is healthy now (state up or degraded)
UPLINK_OK = ('max by (commune_code) ((hcc_sentinel_target_state{state=~"up|degraded"} == 1) '
             '* on (agent_id, target) group_left () max by (agent_id, target) (probe_target_info{system="uplink"}))')


#: targets in maintenance now (one series per agent and target)
MAINT_NOW = 'hcc_sentinel_target_state{state="maintenance"} == 1'


def commune_system_state(extra: str = "") -> str:
    """Worst state of the (commune, system)'s targets NOT in maintenance; maintenance (1) only
    when every target of the system at the commune is in maintenance (as the SLA report)."""
    join = (f"* on (agent_id, target) group_left (system) max by (agent_id, target, system) "
            f"(probe_target_info{{system!=\"host\"{extra}}})")
    return (f"max by (commune_code, commune_name, system) (({STATE_CODE} unless on (agent_id, target) ({MAINT_NOW})) "
            f"{join}) or max by (commune_code, commune_name, system) ({STATE_CODE} {join})")


def observed(state: str, system: str = "") -> str:
    """(commune, system) pairs with a service target in ``state`` (regex) now, healthy link only."""
    sel = f'system="{system}"' if system else 'system!~"uplink|host"'
    return (f'max by (commune_code, system) ((hcc_sentinel_target_state{{state=~"{state}"}} == 1) '
            f"* on (agent_id, target) group_left (system) max by (agent_id, target, system) (probe_target_info{{{sel}}}))"
            f" and on (commune_code) {UPLINK_OK}")


def failing_share(system: str = "") -> str:
    """Share of healthy-link communes seeing the system down now (the quorum signal)."""
    return (f"sum by (system) ({observed('down', system)}) / count by (system) ({observed('up|degraded|down', system)})")


def ratio_over(window: str, by: str, join: str, bad: str = 'outcome=~"error|hang"') -> str:
    """Share of failed probes over ``window`` grouped ``by``, targets joined with ``join``."""
    num = f"sum by ({by}) (increase({C}{{{bad}}}[{window}]) * on (agent_id, target) group_left (system) {join})"
    den = f"sum by ({by}) (increase({C}[{window}]) * on (agent_id, target) group_left (system) {join})"
    return f"(({num}) or ({den}) * 0) / ({den})"


def quorum_failed_ratio(window: str) -> str:
    """Failed share of probes per system over ``window`` from communes whose link was healthy over
    the same window (uplink failed share < 50 %), maintenance excluded (SRE workbook ch. 5 error ratio)."""
    uplink_ok = f"({ratio_over(window, 'commune_code', UPLINK_JOIN)}) < 0.5"
    not_maint = f'unless on (agent_id, target) (max_over_time(hcc_sentinel_target_state{{state="maintenance"}}[{window}]) == 1)'
    inc_bad = f'(increase({C}{{outcome=~"error|hang"}}[{window}]) {not_maint})'
    inc_all = f"(increase({C}[{window}]) {not_maint})"
    num = (f"sum by (system) (({inc_bad} * on (agent_id, target) group_left (system) {SERVICES}) "
           f"and on (commune_code) ({uplink_ok}))")
    den = (f"sum by (system) (({inc_all} * on (agent_id, target) group_left (system) {SERVICES}) "
           f"and on (commune_code) ({uplink_ok}))")
    return f"(({num}) or ({den}) * 0) / ({den})"


def central_down(w: str = "15m") -> str:
    """1 per system and window ``w`` when >= 50 % of healthy-link communes failed it (>= half
    their probes in the window failed), 0 otherwise.  Maintenance is per target, as in the SLA
    report: a target in maintenance during the window is left out, a commune whose targets of the
    system are all in maintenance is not a witness, and a window with no witness at all gives no
    value (excluded).  One target in maintenance never hides the failure of the others.
    Evaluated every ``w`` over 30 days by the SLA panels (``[30d:15m]``): a live estimate at
    15-minute resolution; the report counts minutes."""
    not_maint = f'unless on (agent_id, target) (max_over_time(hcc_sentinel_target_state{{state="maintenance"}}[{w}]) == 1)'
    per_cs = (f'sum by (commune_code, system) ((increase({C}{{outcome=~"error|hang"}}[{w}]) {not_maint}) '
              f"* on (agent_id, target) group_left (system) {SERVICES})")
    all_cs = (f"sum by (commune_code, system) ((increase({C}[{w}]) {not_maint}) * on (agent_id, target) "
              f"group_left (system) {SERVICES})")
    uplink_ok = f"(({ratio_over(w, 'commune_code', UPLINK_JOIN)}) < 0.5)"
    failing = f"((({per_cs}) or ({all_cs}) * 0) / ({all_cs}) >= bool 0.5) and on (commune_code) {uplink_ok}"
    return f"(sum by (system) ({failing}) / count by (system) ({failing})) >= bool 0.5"


# -- panel helpers ---------------------------------------------------------------------------

def T(expr: str, legend: str = "", ref: str = "A", instant: bool = False, fmt: str = "time_series") -> g.Target:
    return g.Target(expr=expr, legendFormat=legend, refId=ref, instant=instant, format=fmt, datasource=DS)


def pos(x: int, y: int, w: int, h: int) -> g.GridPos:
    return g.GridPos(h=h, w=w, x=x, y=y)


def template_vars(system: bool = False, commune: bool = False, objective: bool = False) -> g.Templating:
    items: list[Any] = [g.Template(name="datasource", query="prometheus", type="datasource",
                                   label="Nguồn dữ liệu", default="Prometheus", hide=0)]
    if system:
        items.append(g.Template(name="system", label="Hệ thống", dataSource=DS,
                                query='label_values(probe_target_info{system!~"uplink|host"}, system)',
                                default="motcua", refresh=2, sort=1))
    if commune:
        items.append(g.Template(name="commune", label="Xã/phường (mã)", dataSource=DS,
                                query="label_values(hcc_sentinel_agent_info, commune_code)", default="26068",
                                refresh=2, sort=1))
    if objective:
        items.append(g.Template(name="objective", label="Mục tiêu SLO", type="custom", query="0.995,0.99,0.999",
                                default="0.995"))
    return g.Templating(list=items)


def dashboard(uid: str, title: str, description: str, panels: list[Any], templating: g.Templating,
              time_from: str = "now-6h") -> g.Dashboard:
    return g.Dashboard(
        title=title, uid=uid, description=description, tags=["hcc-sentinel"], timezone=TZ, refresh="1m",
        schemaVersion=38, editable=True, time=g.Time(time_from, "now"), panels=panels, templating=templating,
        sharedCrosshair=True)


# -- the dashboards --------------------------------------------------------------------------

def overview() -> g.Dashboard:
    grid = g.Table(
        title="Trạng thái hiện tại: xã × hệ thống (status grid)",
        description="Mỗi ô là trạng thái xấu nhất của các mục tiêu thuộc hệ thống tại xã đó "
                    "(hcc_sentinel_target_state): bình thường, suy giảm, gián đoạn, mất kết nối (đường truyền "
                    "của xã hỏng nên không đo được), bảo trì. Mục tiêu đang bảo trì không được tính; ô là bảo trì "
                    "chỉ khi mọi mục tiêu của hệ thống tại xã đều đang bảo trì. Dòng: xã; cột: hệ thống.",
        dataSource=DS, targets=[T(commune_system_state(), instant=True, fmt="table")],
        gridPos=pos(0, 0, 16, 14), mappings=STATE_MAPPINGS,
        transformations=[{"id": "groupingToMatrix", "options": {"columnField": "system", "rowField": "commune_name",
                                                                "valueField": "Value"}}],
        overrides=[{"matcher": {"id": "byType", "options": "number"},
                    "properties": [{"id": "custom.cellOptions", "value": {"type": "color-background"}}]}])
    central = g.Table(
        title="Sự cố trung tâm đang diễn ra (central outages now)",
        description="Hệ thống mà ít nhất 50 % số xã có đường truyền tốt đang thấy gián đoạn (quorum). "
                    "Giá trị: tỷ lệ xã thấy lỗi. Tương ứng quy tắc hcc:system:central_outage.",
        dataSource=DS, targets=[T(f"({failing_share()}) >= 0.5", instant=True, fmt="table")],
        gridPos=pos(16, 0, 8, 7), unit="percentunit")
    links = g.Table(
        title="Xã đang mất đường truyền (communes with link down)",
        description="Kiểm tra đường truyền của xã (mục tiêu system=\"uplink\") đang ở trạng thái gián đoạn: "
                    "lỗi tại xã, không phải của hệ thống dùng chung.",
        dataSource=DS, targets=[T('max by (commune_code, commune_name) ((hcc_sentinel_target_state{state="down"} == 1) '
                                  '* on (agent_id, target) group_left () max by (agent_id, target) '
                                  '(probe_target_info{system="uplink"}))', instant=True, fmt="table")],
        gridPos=pos(16, 7, 8, 7))
    worst = g.BarGauge(
        title="Xã có khả dụng thấp nhất trong 24 giờ (worst communes, last 24 h)",
        description="Tỷ lệ lượt đo thành công của mọi hệ thống tại xã trong 24 giờ, gồm cả thời gian mất "
                    "đường truyền của xã (khả dụng thực tế tại xã). 10 xã thấp nhất.",
        dataSource=DS, targets=[T(f"bottomk(10, 1 - {ratio_over('1d', 'commune_code, commune_name', SERVICES)})",
                                  legend="{{commune_name}}", instant=True)],
        gridPos=pos(0, 14, 12, 10), format="percentunit", min=0.9, max=1, orientation="horizontal",
        thresholds=[g.Threshold("red", 0, 0.0), g.Threshold("yellow", 1, 0.99), g.Threshold("green", 2, 0.999)])
    agents = g.Stat(
        title="Số agent đang gửi dữ liệu (agents reporting)",
        description="Số agent mà Prometheus trung tâm thu thập được ở lần gần nhất (up == 1).",
        dataSource=DS, targets=[T('count(up{job="hcc-sentinel"} == 1)', instant=True)], gridPos=pos(12, 14, 6, 5),
        reduceCalc="lastNotNull")
    share = g.TimeSeries(
        title="Tỷ lệ xã có đường truyền tốt thấy hệ thống gián đoạn (quorum signal)",
        description="Theo từng hệ thống: số xã thấy gián đoạn / số xã có đường truyền tốt đang đo. ≥ 50 % là sự cố "
                    "trung tâm (hcc:system:failing_share).",
        dataSource=DS, targets=[T(failing_share(), legend="{{system}}")], gridPos=pos(12, 19, 12, 5),
        unit="percentunit", valueMin=0, valueMax=1)
    timeline = g.StateTimeline(
        title="Diễn biến trạng thái hệ thống $system theo xã (state timeline)",
        description="Trạng thái xấu nhất của hệ thống đã chọn tại từng xã theo thời gian.",
        dataSource=DS, targets=[T(commune_system_state(',system="$system"'), legend="{{commune_name}}")],
        gridPos=pos(0, 24, 24, 10), mappings=STATE_MAPPINGS)
    return dashboard("hcc-overview", "hcc-sentinel — Toàn tỉnh (province overview)",
                     "95 xã × các hệ thống dùng chung: trạng thái hiện tại, sự cố trung tâm, xã mất đường truyền.",
                     [grid, central, links, worst, agents, share, timeline], template_vars(system=True))


def system() -> g.Dashboard:
    join = SYS_SEL
    heat = g.Heatmap(
        title="Phân bố thời gian phản hồi — $system (latency heatmap)",
        description="Histogram probe_latency_seconds của mọi mục tiêu thuộc hệ thống, mọi xã.",
        dataSource=DS, dataFormat="tsbuckets", gridPos=pos(0, 0, 12, 9),
        targets=[T(f"sum by (le) (increase(probe_latency_seconds_bucket[$__rate_interval]) "
                   f"* on (agent_id, target) group_left () {join})", legend="{{le}}", fmt="heatmap")])
    quant = g.TimeSeries(
        title="Thời gian phản hồi p50 / p90 / p99 (latency quantiles)",
        description="histogram_quantile trên probe_latency_seconds (hcc:target:latency_seconds:p50_5m…).",
        dataSource=DS, gridPos=pos(12, 0, 12, 9), unit="s",
        targets=[T(f"histogram_quantile({q}, sum by (le) (rate(probe_latency_seconds_bucket[$__rate_interval]) "
                   f"* on (agent_id, target) group_left () {join}))", legend=name, ref=ref)
                 for q, name, ref in ((0.5, "p50", "A"), (0.9, "p90", "B"), (0.99, "p99", "C"))])
    reasons = g.TimeSeries(
        title="Lượt đo không đạt theo nguyên nhân: lỗi / chậm / treo (outcomes by reason)",
        description="lỗi = error (DNS, từ chối kết nối, TLS, mã HTTP, nội dung); treo = hang (không trả lời "
                    "trong thời hạn); chậm = slow (thành công nhưng chậm hơn slow_after).",
        dataSource=DS, gridPos=pos(0, 9, 12, 9), stacking={"mode": "normal"}, drawStyle="bars", fillOpacity=80,
        targets=[T(f'sum by (reason) (increase({C}{{outcome="{o}"}}[$__rate_interval]) '
                   f"* on (agent_id, target) group_left () {join})", legend=f"{vi}: {{{{reason}}}}", ref=ref)
                 for o, vi, ref in (("error", "lỗi", "A"), ("hang", "treo", "B"), ("slow", "chậm", "C"))])
    quorum = g.TimeSeries(
        title="Tỷ lệ xã có đường truyền tốt thấy $system gián đoạn (quorum signal)",
        description="≥ 50 %: sự cố trung tâm; dưới: lỗi cục bộ tại một số xã.",
        dataSource=DS, gridPos=pos(12, 9, 12, 9), unit="percentunit", valueMin=0, valueMax=1,
        targets=[T(failing_share("$system"), legend="{{system}}")])
    per_commune = g.BarGauge(
        title="Khả dụng theo xã trong khoảng thời gian đang xem (availability per commune)",
        description="Tỷ lệ lượt đo thành công của hệ thống tại từng xã (gồm cả lúc đường truyền của xã hỏng: "
                    "khả dụng thực tế tại xã).",
        dataSource=DS, gridPos=pos(0, 18, 12, 12), format="percentunit", min=0.95, max=1, orientation="horizontal",
        thresholds=[g.Threshold("red", 0, 0.0), g.Threshold("yellow", 1, 0.99), g.Threshold("green", 2, 0.999)],
        targets=[T(f"1 - {ratio_over('$__range', 'commune_code, commune_name', SYS_ONE)}",
                   legend="{{commune_name}}", instant=True)])
    certs = g.Table(
        title="Số ngày còn lại của chứng thư số (certificate days left)",
        description="probe_ssl_earliest_cert_expiry − now, theo mục tiêu (nhỏ nhất giữa các xã). Cảnh báo ở 21/14/7 ngày.",
        dataSource=DS, gridPos=pos(12, 18, 12, 12), unit="d",
        targets=[T(f"min by (target) ((probe_ssl_earliest_cert_expiry - time()) / 86400 "
                   f"* on (agent_id, target) group_left () {join})", instant=True, fmt="table")])
    return dashboard("hcc-system", "hcc-sentinel — Hệ thống $system (system)",
                     "Một hệ thống dùng chung nhìn từ mọi xã: thời gian phản hồi, nguyên nhân lỗi, quorum, khả dụng, "
                     "chứng thư số.", [heat, quant, reasons, quorum, per_commune, certs], template_vars(system=True))


def commune() -> g.Dashboard:
    cc = 'commune_code="$commune"'
    targets = g.Table(
        title="Các mục tiêu đo của xã (targets)",
        description="probe_target_info: mục tiêu, loại đo, hệ thống, đơn vị chịu trách nhiệm.",
        dataSource=DS, gridPos=pos(0, 0, 12, 8),
        targets=[T(f"max by (target, kind, system, owner, name) (probe_target_info{{{cc}}})", instant=True, fmt="table")])
    states = g.StateTimeline(
        title="Trạng thái các mục tiêu (target states)", description="hcc_sentinel_target_state của từng mục tiêu.",
        dataSource=DS, gridPos=pos(12, 0, 12, 8), mappings=STATE_MAPPINGS,
        targets=[T(f"max by (target) ({STATE_CODE.replace('state=', cc + ',state=')})", legend="{{target}}")])
    uplink = g.TimeSeries(
        title="Đường truyền của xã (uplink)",
        description="Kết quả và thời gian của các kiểm tra đường truyền (system=\"uplink\"): 1 = thông, 0 = mất.",
        dataSource=DS, gridPos=pos(0, 8, 12, 8),
        targets=[T(f"probe_success{{{cc}}} * on (agent_id, target) group_left () "
                   f'max by (agent_id, target) (probe_target_info{{{cc},system="uplink"}})', legend="{{target}}"),
                 T(f"probe_duration_seconds{{{cc}}} * on (agent_id, target) group_left () "
                   f'max by (agent_id, target) (probe_target_info{{{cc},system="uplink"}})',
                   legend="{{target}} (giây)", ref="B")])
    host = g.TimeSeries(
        title="Máy chạy agent: CPU, bộ nhớ, ổ đĩa (host health)",
        description="Tỷ lệ sử dụng CPU, bộ nhớ và từng ổ đĩa của máy chạy agent (hcc_sentinel_host_*_ratio).",
        dataSource=DS, gridPos=pos(12, 8, 12, 8), unit="percentunit", valueMin=0, valueMax=1,
        targets=[T(f"max by (commune_code) (hcc_sentinel_host_cpu_usage_ratio{{{cc}}})", legend="CPU"),
                 T(f"max by (commune_code) (hcc_sentinel_host_memory_used_ratio{{{cc}}})", legend="Bộ nhớ (memory)",
                   ref="B"),
                 T(f"max by (path) (hcc_sentinel_host_disk_used_ratio{{{cc}}})", legend="Ổ đĩa {{path}}", ref="C")])
    incidents = g.Table(
        title="Sự cố gần đây: số phút gián đoạn theo mục tiêu (recent incidents)",
        description="Số phút mỗi mục tiêu ở trạng thái gián đoạn (down) hoặc mất kết nối (unreachable: đường "
                    "truyền của xã hỏng) trong khoảng thời gian đang xem.",
        dataSource=DS, gridPos=pos(0, 16, 12, 9),
        targets=[T(f'count_over_time((max by (target, state) (hcc_sentinel_target_state{{{cc},state=~"down|unreachable"}}) '
                   "== 1)[$__range:1m])", instant=True, fmt="table")])
    alerts = g.Table(
        title="Cảnh báo đang/đã kích hoạt (ALERTS)",
        description="Chuỗi ALERTS của Prometheus trung tâm cho xã này (có khi quy tắc cảnh báo trung tâm đã nạp).",
        dataSource=DS, gridPos=pos(12, 16, 12, 9),
        targets=[T(f'max by (alertname, severity, system, target) (max_over_time(ALERTS{{{cc},alertstate="firing"}}[$__range]))',
                   instant=True, fmt="table")])
    return dashboard("hcc-commune", "hcc-sentinel — Xã $commune (commune)",
                     "Một xã: mục tiêu, đường truyền, máy chạy agent, sự cố gần đây.",
                     [targets, states, uplink, host, incidents, alerts], template_vars(commune=True))


def sla() -> g.Dashboard:
    avail = g.BarGauge(
        title="Khả dụng 30 ngày theo hệ thống (30-day availability, quorum)",
        description="Tỷ lệ các khoảng 15 phút mà hệ thống KHÔNG gián đoạn theo quorum (≥ 50 % xã có đường truyền tốt "
                    "thấy lỗi), không tính bảo trì (theo từng mục tiêu: mục tiêu đang bảo trì bị loại, các mục tiêu "
                    "khác của hệ thống vẫn được tính). Ước tính trực tiếp; số chính thức theo phút nằm trong báo cáo "
                    "SLA hằng tháng (hcc-sentinel report sla).",
        dataSource=DS, gridPos=pos(0, 0, 12, 9), format="percentunit", min=0.98, max=1, orientation="horizontal",
        thresholds=[g.Threshold("red", 0, 0.0), g.Threshold("green", 1, 0.995)],
        targets=[T(f"1 - avg_over_time(({central_down()})[30d:15m])", legend="{{system}}", instant=True)])
    budget = g.BarGauge(
        title="Ngân sách lỗi còn lại (error budget left, 30 d)",
        description="1 − (1 − khả dụng) / (1 − mục tiêu $objective). SRE workbook ch. 2.",
        dataSource=DS, gridPos=pos(12, 0, 12, 9), format="percentunit", min=-1, max=1, orientation="horizontal",
        thresholds=[g.Threshold("red", 0, -100.0), g.Threshold("yellow", 1, 0.0), g.Threshold("green", 2, 0.5)],
        targets=[T(f"1 - avg_over_time(({central_down()})[30d:15m]) / (1 - $objective)", legend="{{system}}",
                   instant=True)])
    burn = g.TimeSeries(
        title="Tốc độ tiêu hao ngân sách lỗi (burn rate)",
        description="Tỷ lệ lượt đo lỗi từ các xã có đường truyền tốt / (1 − mục tiêu), trên 1 h, 6 h, 1 d, 3 d. "
                    "Ngưỡng cảnh báo 14,4 (1 h), 6 (6 h), 3 (1 d), 1 (3 d) — SRE workbook ch. 5, bảng 5-8 "
                    "(hcc:system:burn_rate:*).",
        dataSource=DS, gridPos=pos(0, 9, 24, 9),
        targets=[T(f"({quorum_failed_ratio(w)}) / (1 - $objective)", legend=f"{{{{system}}}} {w}", ref=ref)
                 for w, ref in (("1h", "A"), ("6h", "B"), ("1d", "C"), ("3d", "D"))])
    down = g.Table(
        title="Phút gián đoạn 30 ngày theo hệ thống (downtime minutes, 15-minute resolution)",
        description="Số khoảng 15 phút gián đoạn theo quorum × 15 (ước tính; số chính xác theo phút trong báo cáo SLA).",
        dataSource=DS, gridPos=pos(0, 18, 24, 7),
        targets=[T(f"sum_over_time(({central_down()})[30d:15m]) * 15", instant=True, fmt="table")])
    return dashboard("hcc-sla", "hcc-sentinel — SLA 30 ngày (SLO and error budget)",
                     "Khả dụng 30 ngày so với mục tiêu, ngân sách lỗi còn lại, tốc độ tiêu hao.",
                     [avail, budget, burn, down], template_vars(objective=True), time_from="now-7d")


def fleet() -> g.Dashboard:
    up = g.Stat(title="Agent đang hoạt động (agents up)", description="Số agent thu thập được ở lần gần nhất: count(up == 1) của job hcc-sentinel.",
                dataSource=DS, gridPos=pos(0, 0, 6, 5), reduceCalc="lastNotNull",
                targets=[T('count(up{job="hcc-sentinel"} == 1)', instant=True)])
    down = g.Table(title="Agent không thu thập được (agents down)", description="Agent mà Prometheus trung tâm không thu thập được (up == 0): mất điện, mất mạng hoặc agent dừng.",
                   dataSource=DS, gridPos=pos(6, 0, 9, 5),
                   targets=[T('max by (commune_code, commune_name, instance) (up{job="hcc-sentinel"} == 0)', instant=True,
                              fmt="table")])
    versions = g.Table(title="Phiên bản agent (versions)", description="Số agent theo phiên bản (hcc_sentinel_build_info): phát hiện agent chưa cập nhật.",
                       dataSource=DS, gridPos=pos(15, 0, 9, 5),
                       targets=[T("count by (version) (hcc_sentinel_build_info)", instant=True, fmt="table")])
    reload = g.Table(title="Nạp lại cấu hình thất bại (config reload failures)",
                     description="hcc_sentinel_config_last_reload_successful == 0: agent đang chạy cấu hình cũ.",
                     dataSource=DS, gridPos=pos(0, 5, 12, 6),
                     targets=[T("max by (commune_code, commune_name) (hcc_sentinel_config_last_reload_successful == 0)",
                                instant=True, fmt="table")])
    disks = g.Table(title="Ổ đĩa gần đầy (disks > 80 %)", description="Ổ đĩa dùng trên 80 % (hcc_sentinel_host_disk_used_ratio): lịch sử đo và hàng đợi sẽ không ghi được.",
                    dataSource=DS, gridPos=pos(12, 5, 12, 6), unit="percentunit",
                    targets=[T("max by (commune_code, commune_name, path) (hcc_sentinel_host_disk_used_ratio > 0.8)",
                               instant=True, fmt="table")])
    outbox = g.TimeSeries(title="Tin nhắn chờ gửi (outbox depth)",
                          description="hcc_sentinel_outbox_messages: thông báo đang xếp hàng chờ gửi (tăng khi xã mất đường truyền).",
                          dataSource=DS, gridPos=pos(0, 11, 12, 8),
                          targets=[T("max by (commune_name) (hcc_sentinel_outbox_messages)", legend="{{commune_name}}")])
    lag = g.TimeSeries(title="Độ trễ bộ lập lịch p99 (scheduler lag)",
                       description="histogram_quantile(0.99) của hcc_sentinel_scheduler_lag_seconds: độ trễ so với lịch đo.",
                       dataSource=DS, gridPos=pos(12, 11, 12, 8), unit="s",
                       targets=[T("histogram_quantile(0.99, sum by (commune_name, le) "
                                  "(rate(hcc_sentinel_scheduler_lag_seconds_bucket[$__rate_interval])))",
                                  legend="{{commune_name}}")])
    return dashboard("hcc-fleet", "hcc-sentinel — Đội agent (agent fleet)",
                     "Tình trạng các agent tại xã: hoạt động, phiên bản, cấu hình, hàng đợi thông báo, độ trễ.",
                     [up, down, versions, reload, disks, outbox, lag], template_vars())


DASHBOARDS = {"overview": overview, "system": system, "commune": commune, "sla": sla, "fleet": fleet}


def render(name: str) -> str:
    """The JSON text of dashboard ``name`` (deterministic: sorted keys, 2-space indent, UTF-8).

    Raises:
        KeyError: unknown name.
    """
    data = DASHBOARDS[name]().auto_panel_ids().to_json_data()
    return json.dumps(data, cls=DashboardEncoder, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write every dashboard to ``grafana/dashboards/<name>.json``; with ``--check`` only compare
    and return 1 when a file differs."""
    argv = sys.argv[1:] if argv is None else argv
    check = "--check" in argv
    OUT.mkdir(parents=True, exist_ok=True)
    differ = []
    for name in DASHBOARDS:
        text = render(name)
        path = OUT / f"{name}.json"
        if check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                differ.append(str(path))
        else:
            path.write_text(text, encoding="utf-8")
            print(path)
    if differ:
        print("out of date (run python3 grafana/build.py): " + ", ".join(differ), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
