"""Every dashboard panel's PromQL, evaluated on a REAL Prometheus holding a backfilled month.

The month (agent.report.synthetic) has known events: motcua down from every commune for 47 min,
26491's link down 2 h, dvcqg maintenance 4 h, 26227 without data 3 h; and "now" (the end of the
data): hotich down from every commune for 20 min and 26503's link down for 10 min.  Template
variables are replaced by real values; queries are evaluated at the end of the data.
"""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from conftest import require_binary

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.prometheus


@pytest.fixture(scope="module")
def month_prom():
    prometheus, promtool = require_binary("prometheus"), require_binary("promtool")
    from agent.report.promlocal import shared_month

    return shared_month(prometheus, promtool)


_CACHE: dict = {}


def api(server, path, **params):
    key = (server.url, path, tuple(sorted(params.items())))
    if key in _CACHE:
        return _CACHE[key]
    data = urllib.parse.urlencode(params).encode()
    with urllib.request.urlopen(server.url + path, data, timeout=120) as r:
        body = json.loads(r.read())
    assert body["status"] == "success", body
    _CACHE[key] = body["data"]["result"]
    return _CACHE[key]


def panels(name):
    d = json.loads((ROOT / "grafana" / "dashboards" / f"{name}.json").read_text(encoding="utf-8"))
    return {p["title"]: p for p in d["panels"]}


def subst(expr, **vars):
    for k, v in sorted(vars.items(), key=lambda kv: -len(kv[0])):
        expr = expr.replace("$" + k, str(v))
    assert "$" not in expr, expr
    return expr


def run_panel(month, server, panel, window=6 * 3600, step=60, **vars):
    """Evaluate all targets of a panel; returns {refId: result list}."""
    vars = {"__rate_interval": f"{max(4 * 60, 2 * step)}s", "__range": f"{window}s", **vars}
    out = {}
    for t in panel["targets"]:
        expr = subst(t["expr"], **vars)
        if t.get("instant"):
            out[t["refId"]] = api(server, "/api/v1/query", query=expr, time=month.data_end)
        else:
            out[t["refId"]] = api(server, "/api/v1/query_range", query=expr, start=month.data_end - window,
                                  end=month.data_end, step=step)
    return out


def by(result, *labels):
    return {tuple(s["metric"].get(l, "") for l in labels): float(s["value"][1] if "value" in s else s["values"][-1][1])
            for s in result}


def test_every_panel_query_returns_data(month_prom):
    """No panel errors and every panel except the ones documented as possibly empty has series."""
    month, server = month_prom
    may_be_empty = {"Agent không thu thập được (agents down)", "Cảnh báo đang/đã kích hoạt (ALERTS)"}
    vars = {"system": "hotich", "commune": "26503", "objective": "0.995"}
    seen = 0
    for name in ("overview", "system", "commune", "sla", "fleet"):
        for title, panel in panels(name).items():
            window = 30 * 86400 if name == "sla" and any(t.get("instant") for t in panel["targets"]) else 6 * 3600
            res = run_panel(month, server, panel, window=window, step=600 if name == "sla" else 60, **vars)
            seen += 1
            if title in may_be_empty:
                continue
            for ref, r in res.items():
                assert r, f"{name}: {title} [{ref}] returned no series"
    assert seen >= 30


def test_overview(month_prom):
    month, server = month_prom
    p = panels("overview")
    grid = by(run_panel(month, server, p["Trạng thái hiện tại: xã × hệ thống (status grid)"])["A"],
              "commune_code", "system")
    assert len(grid) == 6 * 5  # 6 communes x (4 systems + uplink)
    for c in month.communes:
        assert grid[(c, "motcua")] == (3 if c == "26503" else 0)  # up, or unreachable behind a lost link
    assert grid[("26068", "hotich")] == 4  # down: central outage now
    assert grid[("26503", "hotich")] == 3  # unreachable: its link is down
    assert grid[("26503", "uplink")] == 4
    central = run_panel(month, server, p["Sự cố trung tâm đang diễn ra (central outages now)"])["A"]
    assert [(s["metric"]["system"], float(s["value"][1])) for s in central] == [("hotich", 1.0)]
    links = run_panel(month, server, p["Xã đang mất đường truyền (communes with link down)"])["A"]
    assert [s["metric"]["commune_code"] for s in links] == ["26503"]
    worst = by(run_panel(month, server, p["Xã có khả dụng thấp nhất trong 24 giờ (worst communes, last 24 h)"])["A"],
               "commune_code")
    assert min(worst, key=worst.get) == ("26503",) and len(worst) == 6
    assert all(v < 1 for v in worst.values())  # hotich is down everywhere
    agents = run_panel(month, server, p["Số agent đang gửi dữ liệu (agents reporting)"])["A"]
    assert float(agents[0]["value"][1]) == 6
    timeline = run_panel(month, server, p["Diễn biến trạng thái hệ thống $system theo xã (state timeline)"],
                         system="motcua")["A"]
    assert {s["metric"]["commune_code"] for s in timeline} == set(month.communes)


def test_system_dashboard(month_prom):
    month, server = month_prom
    p = panels("system")
    heat = run_panel(month, server, p["Phân bố thời gian phản hồi — $system (latency heatmap)"], system="motcua")["A"]
    assert {s["metric"]["le"] for s in heat} >= {"0.25", "0.5", "1.0", "+Inf"}
    q = run_panel(month, server, p["Thời gian phản hồi p50 / p90 / p99 (latency quantiles)"], system="motcua")
    p50, p99 = float(q["A"][0]["values"][-1][1]), float(q["C"][0]["values"][-1][1])
    assert 0 < p50 <= p99 <= 60
    # the 47-minute central outage of motcua: 30 min HTTP errors then 17 min hangs
    ev = month.event("central")
    reasons = run_panel(month, server, p["Lượt đo không đạt theo nguyên nhân: lỗi / chậm / treo (outcomes by reason)"],
                        window=ev.end + 600 - (ev.start - 600), system="motcua", __rate_interval="120s")
    # window ends at data_end: evaluate the event's window explicitly
    expr = subst(p["Lượt đo không đạt theo nguyên nhân: lỗi / chậm / treo (outcomes by reason)"]["targets"][1]["expr"],
                 system="motcua", __rate_interval="120s")
    hang = api(server, "/api/v1/query_range", query=expr, start=ev.start, end=ev.end + 300, step=60)
    assert [s["metric"]["reason"] for s in hang] == ["timeout_first_byte"]
    assert reasons["A"] is not None
    now = run_panel(month, server, p["Lượt đo không đạt theo nguyên nhân: lỗi / chậm / treo (outcomes by reason)"],
                    system="hotich")
    assert "http_status" in {s["metric"]["reason"] for s in now["A"]}
    assert now["C"] and {s["metric"]["reason"] for s in now["C"]} == {"slow"}
    quorum = run_panel(month, server, p["Tỷ lệ xã có đường truyền tốt thấy $system gián đoạn (quorum signal)"],
                       system="hotich")["A"]
    assert float(quorum[0]["values"][-1][1]) == 1.0
    per = by(run_panel(month, server, p["Khả dụng theo xã trong khoảng thời gian đang xem (availability per commune)"],
                       window=30 * 86400, system="motcua")["A"], "commune_code")
    assert set(per) == {(c,) for c in month.communes}
    assert all(0.99 < v < 1 for v in per.values())
    certs = by(run_panel(month, server, p["Số ngày còn lại của chứng thư số (certificate days left)"],
                         system="hotich")["A"], "target")
    assert certs == {("hotich-home",): pytest.approx(12.0)}


def test_commune_dashboard(month_prom):
    month, server = month_prom
    p = panels("commune")
    tg = run_panel(month, server, p["Các mục tiêu đo của xã (targets)"], commune="26503")["A"]
    assert {s["metric"]["target"] for s in tg} == {"uplink-gateway", "dvcqg-home", "vneid-sso", "motcua-home",
                                                  "hotich-home", "agent-host"}
    up = run_panel(month, server, p["Đường truyền của xã (uplink)"], commune="26503")
    assert float(up["A"][0]["values"][-1][1]) == 0 and float(up["A"][0]["values"][-20][1]) == 1
    host = run_panel(month, server, p["Máy chạy agent: CPU, bộ nhớ, ổ đĩa (host health)"], commune="26227")
    assert {s["metric"]["path"] for s in host["C"]} == {"/", "/var/lib/hcc-sentinel"}
    inc = by(run_panel(month, server, p["Sự cố gần đây: số phút gián đoạn theo mục tiêu (recent incidents)"],
                       commune="26503")["A"], "target", "state")
    assert inc[("uplink-gateway", "down")] == 8  # 10 failing minutes, down after 3 consecutive failures
    assert inc[("hotich-home", "unreachable")] == 10


def test_sla_dashboard(month_prom):
    month, server = month_prom
    p = panels("sla")
    av = by(run_panel(month, server, p["Khả dụng 30 ngày theo hệ thống (30-day availability, quorum)"],
                      window=30 * 86400, objective="0.995")["A"], "system")
    assert set(av) == {("dvcqg",), ("vneid-sso",), ("motcua",), ("hotich",)}
    assert av[("dvcqg",)] == 1.0  # 4 h maintenance excluded
    assert av[("vneid-sso",)] == 1.0
    assert 0.998 < av[("motcua",)] < 0.9995  # 47 min of 30 days, at 15-minute resolution
    down = by(run_panel(month, server, p["Phút gián đoạn 30 ngày theo hệ thống (downtime minutes, 15-minute resolution)"],
                        window=30 * 86400)["A"], "system")
    assert 40 <= down[("motcua",)] <= 55
    assert down[("dvcqg",)] == 0 and down[("vneid-sso",)] == 0
    burn = run_panel(month, server, p["Tốc độ tiêu hao ngân sách lỗi (burn rate)"], objective="0.995")
    hot1h = by(burn["A"], "system")
    assert hot1h[("hotich",)] > 14.4  # 20 of the last 60 minutes failing: page
    assert hot1h[("vneid-sso",)] < 14.4  # isolated one-commune failures only: no page


def test_fleet_dashboard(month_prom):
    month, server = month_prom
    p = panels("fleet")
    versions = by(run_panel(month, server, p["Phiên bản agent (versions)"])["A"], "version")
    assert versions == {("0.1.0",): 5, ("0.0.9",): 1}
    reload = run_panel(month, server, p["Nạp lại cấu hình thất bại (config reload failures)"])["A"]
    assert [s["metric"]["commune_code"] for s in reload] == ["26041"]
    disks = run_panel(month, server, p["Ổ đĩa gần đầy (disks > 80 %)"])["A"]
    assert [(s["metric"]["commune_code"], s["metric"]["path"]) for s in disks] == [("26227", "/var/lib/hcc-sentinel")]
    outbox = by(run_panel(month, server, p["Tin nhắn chờ gửi (outbox depth)"])["A"], "commune_name")
    assert outbox[("Xã Phước An",)] == 10 and outbox[("Phường Biên Hòa",)] == 0


def test_maintenance_of_one_target_does_not_hide_downtime():
    """A day where motcua has 3 targets (tests/test_report_sla.py::partial_maintenance_day): one
    target in maintenance must neither hide the others' failure (SLA downtime) nor turn a cell of
    the status grid into "maintenance" while the other targets are up."""
    prometheus, promtool = require_binary("prometheus"), require_binary("promtool")
    from agent.report.promlocal import shared_server
    from test_report_sla import partial_maintenance_day

    day = partial_maintenance_day()
    server = shared_server("partial-maintenance", day.write_openmetrics, prometheus, promtool)
    sla = panels("sla")
    expr = subst(sla["Phút gián đoạn 30 ngày theo hệ thống (downtime minutes, 15-minute resolution)"]["targets"][0]
                 ["expr"])
    down = by(api(server, "/api/v1/query", query=expr, time=day.period_end), "system")
    # A (10:00-10:20, http-404 alone in maintenance) and D (18:00-18:10, 26068 all in maintenance):
    # one 15-minute window each; B (every target in maintenance) is excluded
    assert down[("motcua",)] == 30
    grid_expr = panels("overview")["Trạng thái hiện tại: xã × hệ thống (status grid)"]["targets"][0]["expr"]
    for at, want in ((day.at(16, 5), 0), (day.at(14, 10), 1), (day.at(10, 5), 4)):
        grid = by(api(server, "/api/v1/query", query=grid_expr, time=at), "commune_code", "system")
        assert {grid[(c, "motcua")] for c in day.communes} == {want}, (at, grid)
