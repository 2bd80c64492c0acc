"""Alerts building blocks: state machine, Nagios flap maths, maintenance windows (croniter, local
time, midnight), routing tree, config validation, templates, backoff, secrets, outbox."""

from __future__ import annotations

import dataclasses
import logging
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from alerts import db as adb
from alerts.config import AlertingConfig, MaintenanceWindow, Route
from alerts.delivery import fingerprint, redact, register_secret, scheme_of
from alerts.maintenance import MaintenanceSchedule
from alerts.model import Site
from alerts.outbox import Outbox, backoff
from alerts.routing import Router
from alerts.state import State, TargetState, flap_percent
from alerts.templates import Notice, NoticeItem, Renderer, fmt_duration
from probes.base import ProbeResult

TZ = "Asia/Ho_Chi_Minh"
ROOT = Path(__file__).resolve().parent.parent


def local(*args: int) -> float:
    return datetime(*args, tzinfo=ZoneInfo(TZ)).timestamp()


def result(outcome: str, at: float = 0.0) -> ProbeResult:
    reason = {"ok": "ok", "slow": "slow", "error": "refused", "hang": "timeout_total"}[outcome]
    return ProbeResult("t", "http", outcome, reason, outcome, at, 0.1)


def feed(ts: TargetState, outcomes: str, f: int = 3, s: int = 2, d: int = 3) -> list[State]:
    codes = {"o": "ok", "s": "slow", "e": "error", "h": "hang"}
    out = []
    for i, c in enumerate(outcomes):
        ts.observe(result(codes[c], float(ts.results)), f, s, d)
        out.append(ts.health)
    return out


# -- state machine ------------------------------------------------------------------------------


def test_thresholds_blip_down_recovery():
    ts = TargetState("t")
    assert feed(ts, "oeo")[-1] == State.UP                        # a blip changes nothing
    states = feed(ts, "eeh")
    assert states == [State.UP, State.UP, State.DOWN]             # hang counts as failure
    assert ts.bad_since == 3.0                                    # since the first failure
    assert feed(ts, "o") == [State.DOWN]                          # one success is not recovery
    assert feed(ts, "o") == [State.UP]
    assert ts.bad_since is None


def test_degraded_and_recovery_through_degraded():
    ts = TargetState("t")
    assert feed(ts, "sss") == [State.UP, State.UP, State.DEGRADED]
    assert feed(ts, "os") == [State.DEGRADED, State.DEGRADED]     # ok streak broken by slow
    assert feed(ts, "oo") == [State.DEGRADED, State.UP]
    ts = TargetState("t")
    feed(ts, "eee")
    assert feed(ts, "ss") == [State.DOWN, State.DEGRADED]         # answering again, but slowly
    assert feed(ts, "oo")[-1] == State.UP


def test_state_round_trips_through_json():
    ts = TargetState("t")
    feed(ts, "oeeeo")
    again = TargetState.from_json({**ts.to_json(), "unknown_future_field": 1})
    assert again == ts


def test_nagios_flap_percent():
    assert flap_percent([0] * 21) == 0.0
    # all 20 transitions change: weights 0.75..1.25 average 1 -> 100 %
    assert flap_percent([0, 2] * 10 + [0]) == pytest.approx(100.0)
    # the newest transition weighs 1.25, the oldest 0.75 (out of 20)
    assert flap_percent([0] * 20 + [2]) == pytest.approx(1.25 / 20 * 100)
    assert flap_percent([2] + [0] * 20) == pytest.approx(0.75 / 20 * 100)
    # short history is padded at the front: the newest change still weighs 1.25
    assert flap_percent([0, 2]) == pytest.approx(6.25)


def test_flapping_hysteresis():
    ts = TargetState("t")
    for c in "oeoeoe":
        ts.observe(result({"o": "ok", "e": "error"}[c]), 3, 2, 3)
    assert ts.flapping and ts.flap_percent > 20
    # the changes age out of the 21-result window: flapping continues while the percentage is
    # between 5 and 20 (hysteresis) and stops at the first result below 5 %
    seen_between = False
    for _ in range(25):
        before = ts.flapping
        ts.observe(result("ok"), 3, 2, 3)
        if before and 5 <= ts.flap_percent <= 20:
            assert ts.flapping
            seen_between = True
        if ts.flap_percent < 5:
            assert not ts.flapping
    assert seen_between and not ts.flapping and ts.flap_percent == 0.0


# -- maintenance windows --------------------------------------------------------------------------


def test_recurring_window_crosses_midnight_in_local_time():
    w = MaintenanceWindow(name="đêm", cron="30 23 * * 6", duration=7200)       # Sat 23:30 -> Sun 01:30
    sched = MaintenanceSchedule([w], TZ)
    assert sched.occurrence_at(w, local(2026, 5, 2, 23, 29, 59)) is None
    occ = sched.occurrence_at(w, local(2026, 5, 2, 23, 30, 0))                # start exactly on a probe
    assert occ is not None and occ.start == local(2026, 5, 2, 23, 30)
    assert sched.occurrence_at(w, local(2026, 5, 3, 0, 45)) is not None      # after midnight
    assert sched.occurrence_at(w, local(2026, 5, 3, 1, 29, 59)) is not None
    assert sched.occurrence_at(w, local(2026, 5, 3, 1, 30, 0)) is None       # end is exclusive
    assert sched.occurrence_at(w, local(2026, 5, 9, 23, 59)) is not None     # next Saturday
    # the window is local time: 23:30 +07:00 is 16:30 UTC
    assert datetime.utcfromtimestamp(occ.start).strftime("%H:%M") == "16:30"


def test_one_off_window_naive_is_local_and_occurrences_for_sla():
    w = MaintenanceWindow(name="nâng cấp", start=datetime(2026, 6, 6, 21), end=datetime(2026, 6, 7, 1),
                          match={"target": "dvc"})
    sched = MaintenanceSchedule([w], TZ)
    assert sched.occurrence_at(w, local(2026, 6, 6, 22)) is not None
    assert sched.occurrence_at(w, local(2026, 6, 7, 1)) is None
    nightly = MaintenanceWindow(name="đêm", cron="0 23 * * *", duration=3600)
    s2 = MaintenanceSchedule([w, nightly], TZ)
    occ = s2.occurrences(local(2026, 6, 6, 0), local(2026, 6, 8, 0))
    assert [(o.name, datetime.fromtimestamp(o.start, ZoneInfo(TZ)).strftime("%d %H:%M")) for o in occ] == [
        ("nâng cấp", "06 21:00"), ("đêm", "06 23:00"), ("đêm", "07 23:00")]
    only_dvc = s2.occurrences(local(2026, 6, 6, 0), local(2026, 6, 8, 0), {"target": "motcua"})
    assert [o.name for o in only_dvc] == ["đêm", "đêm"]


def test_window_validation():
    with pytest.raises(ValidationError, match="invalid cron"):
        MaintenanceWindow(name="x", cron="61 * * * *", duration=60)
    with pytest.raises(ValidationError, match="end must be after start"):
        MaintenanceWindow(name="x", start=datetime(2026, 1, 2), end=datetime(2026, 1, 1))
    with pytest.raises(ValidationError, match="either start/end"):
        MaintenanceWindow(name="x", start=datetime(2026, 1, 1), end=datetime(2026, 1, 2), cron="* * * * *",
                          duration=60)


# -- routing --------------------------------------------------------------------------------------


def _cfg(route: dict) -> AlertingConfig:
    units = [{"id": u, "name": u} for u in ("a", "b", "c", "owner-x", "it")]
    return AlertingConfig.model_validate({"units": units, "route": route})


def test_routing_tree_first_match_continue_nested_and_owner():
    cfg = _cfg({
        "units": ["a"],
        "routes": [
            {"match": {"cause": "local_link"}, "units": ["it"]},
            {"match": {"system": ["motcua", "dvc"]}, "units": ["b"], "continue": True,
             "routes": [{"match": {"severity": "warning"}, "units": ["c"]}]},
            {"match_re": {"target": "motcua-.*"}, "to_owner": True},
            {"match": {"system": "motcua"}, "units": ["c"]},
        ]})
    r = Router(cfg.route, cfg.units)
    base = {"commune": "26068", "owner": "owner-x", "cause": "system", "severity": "critical"}
    assert r.units_for({**base, "cause": "local_link", "system": "motcua"}) == ["it"]
    # continue: b, then the regex route (owner); the 4th is not reached (regex route stops)
    assert r.units_for({**base, "system": "motcua", "target": "motcua-home"}) == ["b", "owner-x"]
    # nested child matches: c instead of b; continue on the parent lets the 4th match too
    assert r.units_for({**base, "system": "motcua", "target": "x", "severity": "warning"}) == ["c"]
    # nothing matches: the root
    assert r.units_for({**base, "system": "hotich", "target": "hotich-home"}) == ["a"]
    # an owner that is not a configured unit is dropped
    assert r.units_for({**base, "system": "x", "target": "motcua-1", "owner": "vpcp"}) == []


def test_config_rejects_unknown_units_and_bad_urls_without_leaking_them():
    with pytest.raises(ValidationError, match="unknown unit 'nope'"):
        _cfg({"units": ["nope"]})
    with pytest.raises(ValidationError, match="escalation"):
        AlertingConfig.model_validate({"units": [{"id": "a", "name": "A", "escalation": [{"after": "5m", "units": ["zz"]}]}]})
    with pytest.raises(ValidationError) as err:
        AlertingConfig.model_validate({"units": [{"id": "a", "name": "A", "urls": ["zalo://TOPSECRET-no-chat"]}]})
    assert "TOPSECRET" not in str(err.value) and "zalo://" in str(err.value)
    cfg = AlertingConfig.model_validate({"units": [{"id": "a", "name": "A", "urls": ["json://127.0.0.1:9/tok3n-abcdef"]}],
                                         "ack_token": "xyz-ack"})
    assert "tok3n" not in repr(cfg) and "xyz-ack" not in repr(cfg)


def test_example_config_passes_check():
    env = {k: v for k, v in os.environ.items() if not k.endswith("_URL")}
    out = subprocess.run([sys.executable, "-m", "agent", "check", "-c", str(ROOT / "configs/units.example.yaml")],
                         cwd=ROOT, capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "OK" in out.stdout


# -- templates ------------------------------------------------------------------------------------

SITE = Site("hcc-26068", "26068", "Phường Biên Hòa", "phuong", TZ, "http://127.0.0.1/status")


def _item(**kw) -> NoticeItem:
    base = dict(incident_id=7, target_id="motcua-home", target_name="Hệ thống một cửa tỉnh", system_id="motcua",
                system_name="Hệ thống giải quyết thủ tục hành chính tỉnh (một cửa)", system_name_en="One-stop system",
                state="down", outcome="hang", reason="timeout_first_byte", detail="no answer in 30 s",
                since=local(2026, 5, 2, 8, 5, 10))
    base.update(kw)
    return NoticeItem(**base)


def test_default_templates_vietnamese_first_nfc_and_local_time():
    subject, body = Renderer().render(Notice("problem", SITE, "so-khcn", "Sở Khoa học và Công nghệ", [_item()],
                                             other_units=["Cán bộ CNTT Phường Biên Hòa"], now=local(2026, 5, 2, 9, 10)))
    assert subject == ("[SỰ CỐ] Phường Biên Hòa: Hệ thống giải quyết thủ tục hành chính tỉnh (một cửa) ngừng hoạt động "
                       "(treo) / One-stop system down")
    assert "Từ lúc: 08:05:10 ngày 02/05/2026 (giờ Việt Nam), đã 1 giờ 4 phút" in body
    assert "treo (timeout_first_byte)" in body and "hcc-sentinel ack 7" in body
    assert body.index("Việc cần làm trước") < body.index("--- English ---")
    import unicodedata
    assert unicodedata.is_normalized("NFC", body) and unicodedata.is_normalized("NFC", subject)


def test_unit_can_override_a_template(tmp_path):
    (tmp_path / "it-26068").mkdir()
    (tmp_path / "it-26068" / "problem.j2").write_text(
        "{% block subject %}Xã {{ site.commune_name }}: {{ items|length }} lỗi{% endblock %}"
        "{% block body %}{% for i in items %}{{ i.target_name }} {{ i.outcome_vi }}{% endfor %}{% endblock %}",
        encoding="utf-8")
    r = Renderer(tmp_path)
    assert r.check() == []
    s, b = r.render(Notice("problem", SITE, "it-26068", "IT", [_item()]))
    assert s == "Xã Phường Biên Hòa: 1 lỗi" and b == "Hệ thống một cửa tỉnh treo\n"
    s2, _ = r.render(Notice("problem", SITE, "so-khcn", "Sở", [_item()]))
    assert s2.startswith("[SỰ CỐ]")                          # other units keep the default
    (tmp_path / "resolved.j2").write_text("{% block subject %}{{ nope.x }", encoding="utf-8")
    assert any("resolved.j2" in p for p in Renderer(tmp_path).check())


def test_fmt_duration():
    assert fmt_duration(42) == "42 giây"
    assert fmt_duration(3900) == "1 giờ 5 phút"
    assert fmt_duration(90000, "en") == "1 d 1 h"


# -- delivery helpers and outbox ------------------------------------------------------------------


def test_backoff_grows_with_jitter_and_is_capped():
    d = backoff(5, 60)
    assert 5 <= d(1) <= 10 and 10 <= d(2) <= 15 and 20 <= d(3) <= 25
    assert d(10) == 60


def test_scheme_fingerprint_and_redaction(caplog):
    url = "tgram://123456789:AAE-very-secret-token/-1001234567"
    assert scheme_of(url) == "tgram" and scheme_of("not a url") == "unknown"
    assert len(fingerprint(url)) == 12 and url not in fingerprint(url)
    register_secret(url)
    assert "AAE-very-secret-token" not in redact(f"failed to post to {url}")
    assert "very-secret" not in redact("token AAE-very-secret-token rejected")
    from alerts.delivery import install_log_filter
    install_log_filter()
    with caplog.at_level(logging.WARNING, logger="apprise"):
        logging.getLogger("apprise").warning("Unparseable URL %s", url)
    assert "AAE-very-secret-token" not in caplog.text and "***" in caplog.text


def test_outbox_enqueue_is_idempotent_and_per_channel(tmp_path):
    cfg = AlertingConfig.model_validate({"units": [
        {"id": "a", "name": "A", "urls": ["json://127.0.0.1:9/x1", "json://127.0.0.1:9/x2"]},
        {"id": "b", "name": "B", "urls": ["json://127.0.0.1:9/x3"]}]})
    conn = adb.connect(tmp_path / "alerts.db")
    ob = Outbox(conn, cfg, clock=lambda: 1000.0)
    ids = ob.enqueue(["a", "b"], "Tiêu đề", "Nội dung có dấu", key="relay:abc")
    assert len(ids) == 2
    assert ob.enqueue(["a", "b"], "Tiêu đề", "again", key="relay:abc") == []
    rows = conn.execute("SELECT unit_id, scheme, channel, status FROM deliveries ORDER BY id").fetchall()
    assert [(r["unit_id"], r["scheme"], r["status"]) for r in rows] == [
        ("a", "json", "pending"), ("a", "json", "pending"), ("b", "json", "pending")]
    assert all("127.0.0.1" not in r["channel"] for r in rows)
    assert ob.depth == 2
    with pytest.raises(KeyError):
        ob.enqueue(["zz"], "s", "b", key="k")
    # nothing of a secret in the database
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("alerts.db*"))
    assert b"json://" not in raw and b"127.0.0.1:9/x1" not in raw
    conn.close()


def test_schema_is_wal_and_versioned(tmp_path):
    conn = adb.connect(tmp_path / "alerts.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == adb.SCHEMA_VERSION
    conn.close()
    with pytest.raises(FileNotFoundError):
        adb.connect(tmp_path / "missing.db", create=False)


def test_route_model_accepts_continue_keyword():
    r = Route.model_validate({"match": {"system": "x"}, "continue": True})
    assert r.continue_ is True and r.match == {"system": ["x"]}


# -- review fixes: titles count systems, a working ack command, apprise URLs without recipients ---


def _check(k: int, target: str, system: str | None = "motcua", state: str = "down", **kw) -> NoticeItem:
    return _item(incident_id=k, target_id=target, target_name=f"Kiểm tra {target}", system_id=system,
                 system_name="Hệ thống một cửa tỉnh" if system == "motcua" else None,
                 system_name_en="One-stop system" if system == "motcua" else None, state=state, **kw)


def test_titles_count_systems_not_checks():
    r = Renderer()
    now = local(2026, 5, 2, 9, 10)
    six = [_check(k, f"motcua-{k}") for k in range(1, 7)]
    subject, _ = r.render(Notice("problem", SITE, "so-khcn", "Sở", six, now=now))
    assert subject == ("[SỰ CỐ] Phường Biên Hòa: Hệ thống một cửa tỉnh ngừng hoạt động (6 mục kiểm tra) / "
                       "One-stop system down (6 checks)")
    mixed = six[:2] + [_check(7, "motcua-7", state="degraded")]
    subject, _ = r.render(Notice("problem", SITE, "so-khcn", "Sở", mixed, now=now))
    assert subject.endswith("Hệ thống một cửa tỉnh gặp sự cố (3 mục kiểm tra) / One-stop system failing (3 checks)")
    two = six[:3] + [_check(8, "dvc-home", system=None)]
    subject, _ = r.render(Notice("problem", SITE, "so-khcn", "Sở", two, now=now))
    assert subject == "[SỰ CỐ] Phường Biên Hòa: 2 hệ thống gặp sự cố (4 mục kiểm tra) / 2 systems failing (4 checks)"
    subject, _ = r.render(Notice("problem", SITE, "so-khcn", "Sở", [six[0], two[-1]], now=now))
    assert subject == "[SỰ CỐ] Phường Biên Hòa: 2 hệ thống gặp sự cố / 2 systems failing"
    done = [_check(k, f"motcua-{k}", state="up", resolved_at=now) for k in range(1, 7)]
    subject, _ = r.render(Notice("resolved", SITE, "so-khcn", "Sở", done, now=now))
    assert subject == ("[ĐÃ KHÔI PHỤC] Phường Biên Hòa: Hệ thống một cửa tỉnh hoạt động lại (6 mục kiểm tra) / "
                       "One-stop system recovered (6 checks)")
    # the link-lost message counts the checks that cannot run, in both languages
    link = _check(9, "uplink", system="uplink", state="link", link=True)
    _, body = r.render(Notice("problem", SITE, "it-26068", "IT", [link], now=now,
                              affected=[f"Kiểm tra motcua-{k}" for k in range(1, 6)]))
    assert "không thực hiện được 5 mục kiểm tra: Kiểm tra motcua-1" in body
    assert "5 checks cannot run" in body and "5 hệ thống" not in body


def test_ack_hint_is_a_working_command_sorted_numerically_and_short():
    items = [_check(k, f"motcua-{k}") for k in (1, 10, 2, 8, 4, 3)]
    site = Site("hcc-26068", "26068", "Phường Biên Hòa", "phuong", TZ, None, "/etc/hcc-sentinel/agent.yaml")
    _, body = Renderer().render(Notice("problem", site, "so-khcn", "Sở", items, now=local(2026, 5, 2, 9)))
    assert "(dừng nhắc lại và chuyển cấp): hcc-sentinel ack 1-4 8 10 -c /etc/hcc-sentinel/agent.yaml\n" in body
    assert ("hcc-sentinel ack 1-4 8 10 -c /etc/hcc-sentinel/agent.yaml — or POST /api/incidents/1/ack") in body
    _, body = Renderer().render(Notice("reminder", dataclasses.replace(site, config_path="/srv/hcc sentinel/a.yaml"),
                                       "so-khcn", "Sở", items[:2], now=local(2026, 5, 2, 9)))
    assert "hcc-sentinel ack 1 10 -c '/srv/hcc sentinel/a.yaml'" in body
    many = [_check(k, f"t{k}") for k in range(100, 140)]
    _, body = Renderer().render(Notice("escalation", site, "vp", "VP", many, now=local(2026, 5, 2, 9), escalation_step=1))
    assert "hcc-sentinel ack 100-139 -c /etc/hcc-sentinel/agent.yaml" in body
    # resolved notices carry no ack hint
    _, body = Renderer().render(Notice("resolved", site, "so-khcn", "Sở", [_check(1, "m", state="up",
                                resolved_at=local(2026, 5, 2, 9))], now=local(2026, 5, 2, 9), ack_hint=False))
    assert "hcc-sentinel ack" not in body


def test_cli_ack_accepts_the_ranges_messages_print(tmp_path, capsys):
    from agent.cli import main as cli

    conn = adb.connect(adb.db_path(tmp_path))
    for k in range(1, 6):
        conn.execute("INSERT INTO incidents (target, cause, level, current, flapping, was_flapping, opened_at,"
                     " confirmed_at) VALUES (?, 'system', 2, 'down', 0, 0, 1, 1)", (f"t{k}",))
    conn.commit()
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(f"agent: {{id: x, data_dir: {tmp_path}}}\n", encoding="utf-8")
    assert cli(["ack", "1-3", "5", "-c", str(cfg), "--by", "An"]) == 0
    out = capsys.readouterr().out
    assert [line.split()[1] for line in out.splitlines()] == ["1", "2", "3", "5"]
    assert [r[0] for r in conn.execute("SELECT id FROM incidents WHERE acked_by = 'An' ORDER BY id")] == [1, 2, 3, 5]
    with pytest.raises(SystemExit) as exc:
        cli(["ack", "3-x", "-c", str(cfg)])
    assert exc.value.code == 2
    conn.close()


@pytest.mark.parametrize("url, ok", [
    ("mailto://127.0.0.1:2525?smtp=127.0.0.1&from=canhbao@hcc-sentinel.example&to=trucban-no-domain&mode=insecure", False),
    ("mailtos://canhbao:S3cret-pass@mail.example.vn?to=not an address&from=canhbao@mail.example.vn", False),
    ("tgram://123456789:AAE-very-secret-token-abcdefghij/?detect=no", False),
    ("mailto://127.0.0.1:2525?smtp=127.0.0.1&from=canhbao@hcc-sentinel.example&to=trucban@hcc-sentinel.example&mode=insecure", True),
    ("mailto://canhbao:S3cret-pass@hcc-sentinel.example", True),   # no to=: apprise mails the sender's own address
    ("tgram://123456789:AAE-very-secret-token-abcdefghij/", True),  # apprise finds the bot's owner itself
    ("zalo://1234567890:CHANGE-ME/so-khcn-truc-ban", True),
    ("json://127.0.0.1:9/hook/x", True),
])
def test_config_refuses_apprise_urls_without_recipients(url, ok):
    data = {"units": [{"id": "so-khcn", "name": "Sở Khoa học và Công nghệ", "urls": ["json://127.0.0.1:9/a", url]}]}
    if ok:
        AlertingConfig.model_validate(data)
        return
    with pytest.raises(ValidationError) as err:
        AlertingConfig.model_validate(data)
    text = str(err.value)
    scheme = url.split("://")[0]
    assert "unit 'so-khcn' urls[1]" in text and f"{scheme}://" in text and "no recipient" in text
    assert "S3cret" not in text and "very-secret" not in text and "trucban" not in text and "127.0.0.1" not in text


def test_check_command_refuses_a_mailto_whose_recipient_apprise_drops(tmp_path):
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(
        "agent: {id: hcc-26068, commune: {code: \"26068\", name: \"Phường Biên Hòa\", type: phuong}, "
        f"data_dir: {tmp_path}}}\n"
        "targets: []\n"
        "alerting:\n  units:\n    - id: it-26068\n      name: \"Cán bộ CNTT\"\n      urls: [\"${IT_MAIL}\"]\n",
        encoding="utf-8")
    env = dict(os.environ, IT_MAIL="mailto://canhbao:S3cret@mail.example.vn?to=cntt.bienhoa&from=canhbao@mail.example.vn")
    out = subprocess.run([sys.executable, "-m", "agent", "check", "-c", str(cfg)], cwd=ROOT,
                         capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode != 0
    assert "unit 'it-26068'" in out.stderr and "mailto://" in out.stderr and "no recipient" in out.stderr
    assert "S3cret" not in out.stderr + out.stdout and "cntt.bienhoa" not in out.stderr + out.stdout
