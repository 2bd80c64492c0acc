"""The monthly SLA report, checked to the minute against a backfilled month with known outages.

Known events (agent.report.synthetic): motcua down from every commune 47 min (central); hotich
failing from 26041 only 25 min (local); 26491's link down 120 min; dvcqg maintenance 240 min;
26227 without data 180 min.  Expected numbers are derived from the generator's ground truth by
plain counting, independently of agent.report.accounting.
"""

from __future__ import annotations

import csv
import json
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from agent.cli import main as cli
from agent.report import accounting
from agent.report.accounting import FAIL, NOPROBE, OK, UNKNOWN, Method, Observations, SystemMeta, CommuneMeta
from conftest import require_binary

ROOT = Path(__file__).resolve().parents[1]


def local_date(ts):
    return accounting.local_time(ts, "%Y-%m-%d")


@pytest.fixture(scope="module")
def month_prom():
    prometheus, promtool = require_binary("prometheus"), require_binary("promtool")
    from agent.report.promlocal import shared_month

    return shared_month(prometheus, promtool)


@pytest.fixture(scope="module")
def prom_report(month_prom, tmp_path_factory):
    month, server = month_prom
    out = tmp_path_factory.mktemp("prom-report")
    rc = cli(["report", "sla", "--from", local_date(month.period_start), "--to", local_date(month.period_end - 1),
              "--prometheus", server.url, "--out", str(out), "--format", "html,csv,json"])
    assert rc == 0
    return month, out, json.loads((out / "report.json").read_text(encoding="utf-8"))


def period_slice(month):
    return slice(month.minute_index(month.period_start), month.minute_index(month.period_end))


def expected_experienced(month, c, system, prometheus):
    """Plain counting of the ground truth: categories of (commune, system) minutes in the period."""
    t = next(s.target for s in __import__("agent.report.synthetic", fromlist=["SYSTEMS"]).SYSTEMS if s.id == system)
    sl = period_slice(month)
    present = month.present[c][sl].copy()
    if prometheus:  # the first minute after a gap is unknown too (counter difference across the gap)
        after = np.flatnonzero(~month.present[c][:-1] & month.present[c][1:]) + 1
        for i in after:
            if sl.start <= i < sl.stop:
                present[i - sl.start] = False
    maint = np.zeros(len(present), bool)
    for cc in month.communes:  # maintenance is declared for the system everywhere
        maint |= month.maintenance[(cc, t)][sl]
    link = month.link_down[c][sl]
    failed = month.outcome[(c, t)][sl] >= 3
    unknown = ~present
    m = ~unknown & maint
    lk = ~unknown & ~m & link
    dn = ~unknown & ~m & ~lk & failed
    up = ~unknown & ~m & ~lk & ~dn
    return {"unknown": int(unknown.sum()), "maintenance": int(m.sum()), "link": int(lk.sum()),
            "down": int(dn.sum()), "up": int(up.sum())}


def test_prometheus_system_availability_to_the_minute(prom_report):
    month, out, rep = prom_report
    s = rep["systems"]
    minutes = 30 * 1440
    assert s["motcua"]["downtime_minutes"] == 47
    assert s["motcua"]["incidents"] == 1 and s["motcua"]["mttr_minutes"] == 47
    assert s["motcua"]["availability"] == pytest.approx((minutes - 47) / minutes)
    assert s["motcua"]["error_budget_used"] == pytest.approx(47 / (0.005 * minutes))
    assert s["motcua"]["burn_rate"] == pytest.approx((47 / minutes) / 0.005)
    # maintenance is its own category, never down
    assert s["dvcqg"]["minutes"] == {"up": minutes - 240, "down": 0, "maintenance": 240, "unknown": 0}
    # the local hotich failure at one commune and the commune link outage are not system downtime
    for sid in ("hotich", "vneid-sso", "dvcqg"):
        assert s[sid]["downtime_minutes"] == 0 and s[sid]["availability"] == 1.0
    for sid in s:
        assert s[sid]["link_excluded_commune_minutes"] == 120  # 26491's link, excluded from the quorum
        assert s[sid]["minutes"]["unknown"] == 0  # 5 of 6 communes are enough for the quorum
        assert 0.02 < s[sid]["slow_share"] < 0.04
    assert s["hotich"]["local_failure_commune_minutes"] >= 25


def test_prometheus_commune_experienced_availability(prom_report):
    month, out, rep = prom_report
    for c in month.communes:
        for sid in ("dvcqg", "vneid-sso", "motcua", "hotich"):
            got = rep["communes"][c]["systems"][sid]["minutes"]
            assert got == expected_experienced(month, c, sid, prometheus=True), (c, sid)
            avail = rep["communes"][c]["systems"][sid]["availability"]
            assert avail == pytest.approx(got["up"] / (got["up"] + got["down"] + got["link"]))
    assert rep["communes"]["26491"]["link"]["down"] == 120 and rep["communes"]["26491"]["link"]["outages"] == 1
    assert rep["communes"]["26491"]["systems"]["motcua"]["minutes"]["link"] == 120
    assert rep["communes"]["26227"]["systems"]["motcua"]["minutes"]["unknown"] == 181  # 180 + 1 (see promsource)
    assert rep["communes"]["26491"]["rank"] == 1  # the worst: its own link
    assert sorted(r["rank"] for r in rep["communes"].values()) == list(range(1, 7))


def test_prometheus_incidents_table(prom_report):
    month, out, rep = prom_report
    got = [(i["cause"], i["systems"], i["communes"], i["start"], i["end"]) for i in rep["incidents"]]
    ev, loc, link = month.event("central"), month.event("local"), month.event("link")
    assert got == sorted([
        ("central", ["motcua"], sorted(month.communes), ev.start, ev.end),
        ("local", ["hotich"], ["26041"], loc.start, loc.end),
        ("local-link", ["dvcqg", "hotich", "motcua", "vneid-sso"], ["26491"], link.start, link.end),
    ], key=lambda x: x[3])
    central = next(i for i in rep["incidents"] if i["cause"] == "central")
    assert central["start_local"].endswith("09:13+07:00") and central["end_local"].endswith("10:00+07:00")
    with open(out / "incidents.csv", encoding="utf-8-sig") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["cause"] for r in rows] == [i["cause"] for i in rep["incidents"]]
    with open(out / "systems.csv", encoding="utf-8-sig") as fh:
        systems = {r["system"]: r for r in csv.DictReader(fh)}
    assert systems["motcua"]["down_minutes"] == "47" and systems["dvcqg"]["maintenance_minutes"] == "240"
    assert systems["motcua"]["name"] == "Hệ thống giải quyết thủ tục hành chính tỉnh (một cửa)"


def test_html_report_in_chromium(prom_report, tmp_path):
    """Open the HTML in headless Chromium (Playwright driving /usr/bin/chromium, no download),
    check its tables, charts and first page, print it to PDF and save the README screenshot."""
    chromium = require_binary("chromium")
    month, out, rep = prom_report
    html = (out / "sla-report.html").read_text(encoding="utf-8")
    # self-contained: no external asset, script or stylesheet
    assert not re.search(r'(src|href)="(https?:)?//', html) and "<link" not in html and "<script" not in html
    assert "@page" in html and "size: A4" in html
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=[
            "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        try:
            page = browser.new_page(viewport={"width": 900, "height": 1270})
            page.goto((out / "sla-report.html").as_uri())
            assert page.locator("#systems-table tbody tr").count() == 4
            assert page.locator("#communes-table tbody tr").count() == 6
            assert page.locator("#incidents-table tbody tr").count() == 3
            assert page.locator("figure.chart svg").count() == 4
            assert page.locator("section.incident").count() == 3
            text = page.inner_text("body")
            for phrase in ("Phương pháp tính", "Khả dụng của từng hệ thống", "Khả dụng thực tế tại từng xã",
                           "Sự cố trong kỳ", "Hạn thông báo ban đầu (24 giờ)", "Hạn báo cáo đầy đủ (72 giờ)",
                           "Trung tâm (hệ thống dùng chung)", "Tại xã — đường truyền", "Xã Đại Phước"):
                assert phrase in text, phrase
            # the method is stated on the first A4 page when printed
            method_top = page.evaluate("document.querySelector('#method').getBoundingClientRect().top")
            assert method_top < 700
            row = page.locator('#systems-table tr[data-system="motcua"]').inner_text()
            assert "47 phút" in row and "99,891 %" in row
            pdf = tmp_path / "sla-report.pdf"
            page.pdf(path=str(pdf), format="A4", print_background=True)
            # HCC_SCREENSHOT_DIR=docs/img refreshes the README's screenshot
            shot = Path(os.environ.get("HCC_SCREENSHOT_DIR") or tmp_path) / "sla-report.png"
            shot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(shot))
        finally:
            browser.close()
    data = pdf.read_bytes()
    assert data.startswith(b"%PDF")
    pages = len(re.findall(rb"/Type\s*/Page[^s]", data))
    assert pages >= 2 + 3, pages  # summary pages + one page per incident
    assert shot.stat().st_size > 10_000


def write_local(month, commune, tmp_path, maintenance=True, alerts=True):
    data = tmp_path / f"data-{commune}"
    month.write_history(commune, data / "history.db")
    cfg = month.agent_config(commune, data)
    if maintenance:
        ev = month.event("maintenance")
        a, b = accounting.local_time(ev.start, "%Y-%m-%dT%H:%M:%S"), accounting.local_time(ev.end, "%Y-%m-%dT%H:%M:%S")
        cfg += f'alerting:\n  maintenance:\n    - {{name: "Bảo trì DVC", match: {{system: dvcqg}}, start: "{a}", end: "{b}"}}\n'
    path = tmp_path / f"agent-{commune}.yaml"
    path.write_text(cfg, encoding="utf-8")
    if alerts:
        from alerts import db as adb

        ev = month.event("central")
        conn = adb.connect(adb.db_path(data))
        conn.execute("INSERT INTO incidents (id, target, system, owner, commune, cause, current, opened_at, "
                     "confirmed_at, resolved_at) VALUES (1, 'motcua-home', 'motcua', 'so-khcn', ?, 'system', 'down', "
                     "?, ?, ?)", (commune, ev.start + 120, ev.start + 180, ev.end + 60))
        conn.execute("INSERT INTO incident_units VALUES (1, 'so-khcn', 0, ?, ?)", (ev.start + 180, ev.start + 180))
        conn.execute("INSERT INTO messages (id, key, unit_id, kind, subject, body, created_at, incident_ids) "
                     "VALUES (1, 'k1', 'so-khcn', 'firing', 'Hệ thống một cửa gián đoạn', 'b', ?, '[1]')",
                     (ev.start + 181,))
        conn.execute("INSERT INTO deliveries (message_id, unit_id, channel, scheme, status, attempts, "
                     "next_attempt_at, sent_at) VALUES (1, 'so-khcn', 'a1b2c3d4e5f6', 'mailto', 'sent', 1, 0, ?)",
                     (ev.start + 185,))
        conn.close()
    return path


def test_local_report_single_commune(month_prom, tmp_path):
    month, _server = month_prom
    cfg = write_local(month, "26491", tmp_path)
    out = tmp_path / "out"
    rc = cli(["report", "sla", "--from", local_date(month.period_start), "--to", local_date(month.period_end - 1),
              "--local", "-c", str(cfg), "--out", str(out), "--format", "json,html"])
    assert rc == 0
    rep = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert rep["source"] == "local" and rep["method"]["single_vantage"] is True
    c = rep["communes"]["26491"]
    for sid in ("dvcqg", "vneid-sso", "motcua", "hotich"):
        assert c["systems"][sid]["minutes"] == expected_experienced(month, "26491", sid, prometheus=False), sid
    assert c["link"]["down"] == 120
    # single vantage point: system minutes = this commune's view, its link outage excluded
    sl = period_slice(month)
    own_failures = int(((month.outcome[("26491", "motcua-home")][sl] >= 3) & ~month.link_down["26491"][sl]).sum())
    assert rep["systems"]["motcua"]["downtime_minutes"] == own_failures >= 47
    assert rep["systems"]["dvcqg"]["minutes"]["maintenance"] == 240
    assert rep["systems"]["motcua"]["link_excluded_commune_minutes"] == 120
    # one vantage point cannot classify: the 47-min failure is listed as undetermined, blips are not
    assert {i["cause"] for i in rep["incidents"]} == {"single", "local-link"}
    assert all(i["minutes"] >= 5 for i in rep["incidents"])
    central = [i for i in rep["incidents"] if i["systems"] == ["motcua"] and i["cause"] == "single"]
    assert len(central) == 1 and central[0]["down_minutes"] == 47
    notes = central[0]["alerts"][0]["notifications"]
    assert [(n["unit"], n["status"], n["channel"][:6]) for n in notes] == [("so-khcn", "sent", "mailto")]
    html = (out / "sla-report.html").read_text(encoding="utf-8")
    assert "so-khcn" in html and "mailto" in html and "MỘT agent" in html


def test_local_report_no_data_gap_is_unknown(month_prom, tmp_path):
    month, _server = month_prom
    cfg = write_local(month, "26227", tmp_path, maintenance=False, alerts=False)
    out = tmp_path / "out"
    assert cli(["report", "sla", "--from", local_date(month.period_start), "--to", local_date(month.period_end - 1),
                "--local", "-c", str(cfg), "--out", str(out), "--format", "json"]) == 0
    rep = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert rep["communes"]["26227"]["systems"]["motcua"]["minutes"]["unknown"] == 180
    assert rep["systems"]["motcua"]["minutes"]["unknown"] == 180
    assert rep["communes"]["26227"]["link"]["unknown"] == 180


def test_cli_errors(tmp_path):
    assert cli(["report", "sla", "--from", "2026-13-01", "--to", "2026-11-30", "--prometheus", "http://x"]) == 2
    assert cli(["report", "sla", "--from", "2026-11-02", "--to", "2026-11-01", "--prometheus", "http://x"]) == 2
    with pytest.raises(SystemExit):
        cli(["report", "sla", "--from", "2026-11-01", "--to", "2026-11-30"])  # a source is required
    assert cli(["report", "sla", "--from", "2026-11-01", "--to", "2026-11-30", "--local"]) == 2
    assert cli(["report", "sla", "--from", "2026-11-01", "--to", "2026-11-30", "--prometheus",
                "http://127.0.0.1:9", "--out", str(tmp_path), "--timeout", "5"]) == 3
    assert cli(["report", "sla", "--from", "2026-11-01", "--to", "2026-11-30", "--prometheus", "http://127.0.0.1:9",
                "--format", "pdf"]) == 2


# -- the method on small hand-made observations --------------------------------------------------

def obs(codes, maint=None, n=10):
    communes = sorted({c for c, _ in codes})
    return Observations(start=0, minutes=n, communes={c: CommuneMeta(c, c) for c in communes},
                        systems={"s": SystemMeta("s", "S", objective=0.99)},
                        codes={k: np.array(v, np.int8) for k, v in codes.items()},
                        maint={k: np.array(v, bool) for k, v in (maint or {}).items()}, source="test")


def test_quorum_rule_and_link_exclusion():
    up, f = [OK] * 10, [OK] * 3 + [FAIL] * 2 + [OK] * 5
    codes = {("a", "s"): f, ("b", "s"): f, ("c", "s"): up, ("d", "s"): up,
             **{(c, "uplink"): up for c in "abcd"}}
    r = accounting.compute(obs(codes), Method(quorum=0.5, min_vantage=3))
    assert r.systems["s"].downtime_minutes == 2  # 2 of 4 healthy communes failing = 50 %
    r = accounting.compute(obs(codes), Method(quorum=0.6, min_vantage=3))
    assert r.systems["s"].downtime_minutes == 0
    # a and b failing because their own link is down: excluded, counted as link for them
    codes2 = {**codes, ("a", "uplink"): f, ("b", "uplink"): f}
    r = accounting.compute(obs(codes2), Method(min_vantage=2))
    assert r.systems["s"].downtime_minutes == 0 and r.systems["s"].link_excluded_commune_minutes == 4
    assert r.communes["a"].systems["s"]["minutes"]["link"] == 2
    # too few healthy vantage points: unknown, not up
    r = accounting.compute(obs(codes2), Method(min_vantage=3))
    assert r.systems["s"].minutes["unknown"] == 2


def test_carry_forward_maintenance_and_unknown():
    assert accounting.carry_forward(np.array([FAIL, NOPROBE, NOPROBE, OK, NOPROBE], np.int8), 1).tolist() == \
        [FAIL, FAIL, UNKNOWN, OK, OK]
    codes = {("a", "s"): [UNKNOWN] * 2 + [FAIL] * 8, ("a", "uplink"): [UNKNOWN] * 2 + [OK] * 8}
    r = accounting.compute(obs(codes, maint={("a", "s"): [False] * 5 + [True] * 5}), Method())
    m = r.systems["s"].minutes
    assert m == {"unknown": 2, "up": 0, "down": 3, "maintenance": 5}
    assert r.single_vantage and r.systems["s"].availability == 0.0


def test_help_runs_as_console_command():
    proc = subprocess.run([sys.executable, "-m", "agent", "report", "sla", "--help"], capture_output=True, text=True,
                          cwd=ROOT)
    assert proc.returncode == 0 and "--prometheus" in proc.stdout and "--local" in proc.stdout


# -- maintenance of some targets of a system (several targets per system) -------------------------

MOTCUA3 = {"motcua-home": "motcua", "motcua-api": "motcua", "http-404": "motcua"}
FOUR = ["26068", "26041", "26491", "26503"]


def partial_maintenance_day():
    """One day, 4 communes, motcua with 3 targets.  Ground truth for motcua (system, by quorum):
    A 10:00-10:20 every target fails everywhere while http-404 alone is in maintenance 09:50-10:30:
      down 20 (the other targets are not in maintenance);
    B 14:00-14:30 every target in maintenance (maintenance page): maintenance 30;
    C 16:00-16:15 http-404 fails in maintenance, the other targets are fine: up;
    D 18:00-18:10 every target fails everywhere; at 26068 all of them are in maintenance: down 10
      (26068's minutes are maintenance, the 3 other communes are the quorum)."""
    import datetime as dt

    from agent.report.synthetic import ERROR, Day

    today = dt.datetime.now(accounting.LOCAL_TZ).date()
    day = Day(today - dt.timedelta(days=3), FOUR, MOTCUA3)
    day.set(day.at(10, 0), 20, MOTCUA3, outcome=ERROR)
    day.set(day.at(9, 50), 40, ["http-404"], maintenance=True)
    day.set(day.at(14, 0), 30, MOTCUA3, outcome=ERROR, reason="content", maintenance=True)
    day.set(day.at(16, 0), 15, ["http-404"], outcome=ERROR, maintenance=True)
    day.set(day.at(18, 0), 10, MOTCUA3, outcome=ERROR)
    day.set(day.at(18, 0), 10, MOTCUA3, communes=["26068"], maintenance=True)
    return day


@pytest.fixture(scope="module")
def partial_day_prom():
    prometheus, promtool = require_binary("prometheus"), require_binary("promtool")
    from agent.report.promlocal import shared_server

    day = partial_maintenance_day()
    return day, shared_server("partial-maintenance", day.write_openmetrics, prometheus, promtool)


def test_prometheus_maintenance_of_one_target_does_not_hide_downtime(partial_day_prom, tmp_path):
    day, server = partial_day_prom
    out = tmp_path / "out"
    d = local_date(day.period_start)
    assert cli(["report", "sla", "--from", d, "--to", d, "--prometheus", server.url, "--out", str(out),
                "--format", "json"]) == 0
    rep = json.loads((out / "report.json").read_text(encoding="utf-8"))
    m = rep["systems"]["motcua"]
    assert m["minutes"] == {"up": 1440 - 60, "down": 30, "maintenance": 30, "unknown": 0}
    assert [(i["cause"], i["start"], i["minutes"]) for i in rep["incidents"]] == [
        ("central", day.at(10, 0), 20), ("central", day.at(18, 0), 10)]
    for c in FOUR:
        got = rep["communes"][c]["systems"]["motcua"]["minutes"]
        assert (got["down"], got["maintenance"]) == ((20, 40) if c == "26068" else (30, 30)), c


def write_day_local(day, commune, tmp_path, silences=(), until=None):
    """History of ``commune`` for ``day`` and its config; ``silences``: (start, end, matchers) of
    maintenance silences written to alerts.db."""
    data = tmp_path / f"data-{commune}"
    day.write_history(commune, data / "history.db", until=until)
    path = tmp_path / f"agent-{commune}.yaml"
    path.write_text(day.agent_config(commune, data), encoding="utf-8")
    if silences:
        from alerts import db as adb

        conn = adb.connect(adb.db_path(data))
        for a, b, match in silences:
            conn.execute("INSERT INTO silences (created_at, author, reason, starts_at, ends_at, matchers, maintenance) "
                         "VALUES (?, 'test', 'bảo trì', ?, ?, ?, 1)", (a, a, b, json.dumps({"match": match})))
        conn.close()
    return path


def test_local_maintenance_silence_on_one_target_does_not_hide_downtime(tmp_path):
    day = partial_maintenance_day()
    cfg = write_day_local(day, "26041", tmp_path, silences=[
        (day.at(9, 50), day.at(10, 30), {"target": "http-404"}),
        (day.at(14, 0), day.at(14, 30), {"system": "motcua"}),
        (day.at(16, 0), day.at(16, 15), {"target": "http-404"})])
    out = tmp_path / "out"
    d = local_date(day.period_start)
    assert cli(["report", "sla", "--from", d, "--to", d, "--local", "-c", str(cfg), "--out", str(out),
                "--format", "json,html"]) == 0
    rep = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert rep["systems"]["motcua"]["minutes"] == {"up": 1440 - 60, "down": 30, "maintenance": 30, "unknown": 0}
    assert rep["communes"]["26041"]["systems"]["motcua"]["minutes"]["maintenance"] == 30
    # the rule is stated in the report and in the docs
    rule = "chỉ khi mọi mục tiêu"
    assert any(rule in p for p in rep["method"]["text_vi"])
    assert rule in (out / "sla-report.html").read_text(encoding="utf-8")
    assert "only when all of its targets" in (ROOT / "docs" / "sla.md").read_text(encoding="utf-8")


def test_maintenance_rule_on_hand_made_observations(tmp_path):
    """localsource: the (commune, system) minute is maintenance only when every target observed in
    it is in maintenance; otherwise the targets in maintenance are left out of the minute."""
    import datetime as dt

    from agent.report import localsource
    from agent.report.synthetic import ERROR, Day

    day = Day(dt.date(2026, 11, 2), ["26041"], {"a": "motcua", "b": "motcua"})
    day.set(day.at(1, 0), 10, ["a"], outcome=ERROR)           # a fails, a in maintenance, b ok -> up
    day.set(day.at(2, 0), 10, ["a", "b"], outcome=ERROR)      # both fail, a in maintenance -> down (b)
    day.set(day.at(3, 0), 10, ["b"], outcome=0)               # only a probed, in maintenance -> maintenance
    cfg = write_day_local(day, "26041", tmp_path, silences=[
        (day.at(1, 0), day.at(4, 0), {"target": "a"})])
    from agent.config import load_config

    o = localsource.load(load_config(str(cfg)), day.period_start, day.period_end)
    i = lambda h: (day.at(h, 0) - day.period_start) // 60  # noqa: E731
    maint, codes = o.maint[("26041", "motcua")], o.codes[("26041", "motcua")]
    assert not maint[i(1):i(3)].any() and codes[i(1):i(1) + 10].tolist() == [OK] * 10
    assert codes[i(2):i(2) + 10].tolist() == [FAIL] * 10
    assert maint[i(3):i(3) + 10].all() and int(maint.sum()) == 10  # only a, in maintenance, was probed


# -- a one-day period whose last incident is still open ------------------------------------------

def open_incident_day():
    """One past day at 26491, data up to 23:24 (the report is cut while the day runs):
    motcua fails 10:00-10:10 (recovered), 12:00-12:02 (a blip, too short to list) and from 23:20
    (4 min so far, still failing: ongoing);
    hotich is probed only 03:00-03:20 and fails (carried 5 min, then no data): 0 % experienced."""
    import datetime as dt

    from agent.report.synthetic import ERROR, Day

    day = Day(dt.date(2026, 11, 3), ["26491"], {"motcua-home": "motcua", "hotich-home": "hotich"})
    day.set(day.at(10, 0), 10, ["motcua-home"], outcome=ERROR)
    day.set(day.at(12, 0), 2, ["motcua-home"], outcome=ERROR)  # a 2-minute blip: downtime, not an incident
    day.set(day.at(23, 20), 40, ["motcua-home"], outcome=ERROR)
    day.set(day.data_start, day.minutes, ["hotich-home"], outcome=0)
    day.set(day.at(3, 0), 20, ["hotich-home"], outcome=ERROR)
    return day


def test_one_day_report_with_an_open_incident(tmp_path, capsys):
    import warnings

    day = open_incident_day()
    cfg = write_day_local(day, "26491", tmp_path, until=day.at(23, 24))
    out = tmp_path / "out"
    d = local_date(day.period_start)
    d2 = local_date(day.period_end)  # the next day: no data at all
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rc = cli(["report", "sla", "--from", d, "--to", d, "--local", "-c", str(cfg), "--out", str(out),
                  "--format", "json,html,csv"])
        rc2 = cli(["report", "sla", "--from", d2, "--to", d2, "--local", "-c", str(cfg), "--out",
                   str(tmp_path / "out2"), "--format", "html"])
    assert rc == rc2 == 0
    assert [str(w.message) for w in caught] == []
    assert capsys.readouterr().err == ""
    assert "không có dữ liệu" in (tmp_path / "out2" / "sla-report.html").read_text(encoding="utf-8")
    rep = json.loads((out / "report.json").read_text(encoding="utf-8"))
    m, h = rep["systems"]["motcua"], rep["systems"]["hotich"]
    assert m["downtime_minutes"] == 16 and h["downtime_minutes"] == 25
    # one incident list: the table's counts and MTTR come from it; an open incident has no recovery
    got = [(i["systems"], i["start"], i["minutes"], i["ongoing"]) for i in rep["incidents"]]
    assert got == [(["hotich"], day.at(3, 0), 25, True), (["motcua"], day.at(10, 0), 10, False),
                   (["motcua"], day.at(23, 20), 4, True)]
    assert (m["incidents"], m["incidents_ongoing"], m["mttr_minutes"]) == (2, 1, 10)
    assert (h["incidents"], h["incidents_ongoing"], h["mttr_minutes"]) == (1, 1, None)
    assert h["availability"] == 0.0 and rep["communes"]["26491"]["systems"]["hotich"]["availability"] == 0.0
    html = (out / "sla-report.html").read_text(encoding="utf-8")
    assert "Không có sự cố trong kỳ" not in html
    rows = re.findall(r'<tr data-incident="[^"]+" data-cause="single" data-ongoing="(\d)">(.*?)</tr>', html, re.S)
    assert [o for o, _ in rows] == ["1", "0", "1"]
    assert all(("đang diễn ra" in r) == (o == "1") for o, r in rows)
    assert "4 phút" in rows[2][1]
    motcua_row = re.search(r'<tr data-system="motcua">(.*?)</tr>', html, re.S).group(1)
    assert "10 phút" in motcua_row and "1 đang diễn ra" in motcua_row
    with open(out / "incidents.csv", encoding="utf-8-sig") as fh:
        assert [r["ongoing"] for r in csv.DictReader(fh)] == ["1", "0", "1"]


def test_one_day_charts(tmp_path):
    """Short periods: the daily charts span the period's days, not years; figure 4 draws a 0 %
    cell; with no availability at all it says so instead of an empty chart; no numpy warning."""
    import warnings

    import matplotlib.dates as mdates

    from agent.config import load_config
    from agent.report import localsource, render

    day = open_incident_day()
    cfg = load_config(str(write_day_local(day, "26491", tmp_path, until=day.at(23, 24))))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rep = accounting.compute(localsource.load(cfg, day.period_start, day.period_end))
        for fig in (render.daily_figure(rep), render.budget_figure(rep)):
            lo, hi = (mdates.num2date(x) for x in fig.axes[0].get_xlim())
            assert lo.date() >= local_date_obj(day.period_start - 86400)
            assert hi.date() <= local_date_obj(day.period_end + 86400)
        communes, systems, grid = render.commune_grid(rep)
        assert grid[0][systems.index("hotich")] == 0.0
        assert "chart-communes" in render.render_html(rep)
        # the next day: no data at all
        empty = accounting.compute(localsource.load(cfg, day.period_end, day.period_end + 86400))
        html = render.render_html(empty)
        assert 'id="chart-communes"' not in html and "không có dữ liệu" in html
    assert [str(w.message) for w in caught] == []


def local_date_obj(ts):
    import datetime as dt

    return dt.datetime.fromtimestamp(ts, accounting.LOCAL_TZ).date()


def test_out_is_not_a_usable_directory(tmp_path, capsys):
    afile = tmp_path / "a-file"
    afile.write_text("x")
    for out in (afile, afile / "sub", "/proc/nope"):
        rc = cli(["report", "sla", "--from", "2026-11-01", "--to", "2026-11-30", "--prometheus",
                  "http://127.0.0.1:9", "--out", str(out)])
        err = capsys.readouterr().err
        assert rc == 2, out
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err and str(out) in err, err
    # a file cannot be written once the data are in: one line too
    day = open_incident_day()
    cfg = write_day_local(day, "26491", tmp_path)
    out = tmp_path / "out"
    (out / "sla-report.html").mkdir(parents=True)
    d = local_date(day.period_start)
    assert cli(["report", "sla", "--from", d, "--to", d, "--local", "-c", str(cfg), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "sla-report.html" in err, err
