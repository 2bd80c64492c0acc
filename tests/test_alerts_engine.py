"""Alert engine end to end: real probes against a real HTTP server, a real SMTP server receiving
apprise's e-mails, a real webhook receiver receiving apprise's json posts; the engine's timers run
on an injected clock (no long sleeps)."""

from __future__ import annotations

import dataclasses
import shlex
import sqlite3
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from agent.cli import main as cli
from alerts.engine import REMOVED_NOTE
from alerts.model import AlertTarget
from alerts.state import State
from test_alerts_support import (
    SITE, FakeClock, Harness, SmtpSink, TargetServer, WebhookSink, build, make_targets,
)

TZ = ZoneInfo("Asia/Ho_Chi_Minh")


@pytest.fixture
async def rig(tmp_path):
    smtp, hooks, server = SmtpSink(), WebhookSink(), TargetServer()
    smtp.start()
    await hooks.start()
    await server.start()
    clock = FakeClock()
    made: list[Harness] = []

    def make(**extra):
        engine = build(tmp_path, clock, smtp, hooks, **extra)
        h = Harness(engine, clock, server, smtp, hooks)
        made.append(h)
        return h

    yield make
    for h in made:
        try:
            await h.engine.stop()
        except sqlite3.ProgrammingError:  # already closed by the test
            pass
    smtp.stop()
    await hooks.stop()
    await server.stop()


ALL = ("uplink", "motcua", "dvc")


async def test_one_blip_alerts_nobody(rig):
    h = rig()
    for _ in range(3):
        await h.step(ALL, 30)
    h.mode(motcua="error")
    await h.step(ALL, 10)                       # one failed probe: a blip
    h.mode(motcua="ok")
    for _ in range(6):
        await h.step(ALL, 10)
    await h.idle(120)
    assert h.hooks.count() == 0 and h.smtp.messages == []
    assert h.engine.state_of("motcua") == State.UP
    assert h.engine.incidents() == []


async def test_sustained_failure_one_alert_then_one_resolved(rig):
    h = rig()
    for _ in range(2):
        await h.step(ALL, 30)
    h.mode(motcua="error")
    for _ in range(6):                          # far more failures than the threshold
        await h.step(ALL, 10)
    await h.idle(60)
    assert h.engine.state_of("motcua") == State.DOWN
    # exactly one message to each routed unit (so-khcn on both channels, it-26068), none to vp-ubnd
    assert len(h.messages_to("so-khcn")) == 1
    assert len(h.messages_to("it-26068")) == 1
    assert h.messages_to("vp-ubnd") == []
    assert len(h.smtp.messages) == 1
    subject = h.smtp.subjects()[0]
    assert subject.startswith("[SỰ CỐ] Phường Biên Hòa: Hệ thống giải quyết thủ tục hành chính tỉnh (một cửa)")
    assert "ngừng hoạt động (lỗi)" in subject
    body = h.smtp.bodies()[0]
    # what, how, since when (local time), who else is told, what to do, status page — Vietnamese first
    assert "Tình trạng: NGỪNG HOẠT ĐỘNG — lỗi (http_status)" in body
    assert "HTTP 503" in body
    assert "(giờ Việt Nam)" in body
    assert "Đơn vị cũng được báo: Cán bộ CNTT Phường Biên Hòa." in body
    assert "Việc cần làm trước:" in body
    assert "Trang trạng thái: http://127.0.0.1:9470/status" in body
    assert body.index("Tình trạng") < body.index("--- English ---") < body.index("State: DOWN")
    first_fail_local = datetime.fromtimestamp(h.engine.incidents()[0]["opened_at"], TZ)
    assert first_fail_local.strftime("%H:%M:%S ngày %d/%m/%Y") in body
    # webhook JSON keeps the diacritics (apprise json:// posts UTF-8)
    hook = h.hooks.received["it-26068"][0]
    assert "Phường Biên Hòa" in hook["title"] and "Văn phòng" not in hook["message"]
    assert hook["type"] == "failure"

    h.mode(motcua="ok")
    for _ in range(4):
        await h.step(ALL, 10)
    await h.idle(60)
    assert h.engine.state_of("motcua") == State.UP
    assert len(h.messages_to("so-khcn")) == 2 and len(h.messages_to("it-26068")) == 2
    assert h.messages_to("so-khcn")[1].startswith("[ĐÃ KHÔI PHỤC] Phường Biên Hòa")
    assert len(h.smtp.messages) == 2 and "kéo dài" in h.smtp.bodies()[1]
    inc = h.engine.incidents()[0]
    assert inc["cause"] == "system" and inc["resolved_at"] is not None and inc["resolved_announced"] == 1

    # metrics: state enum, delivery counters by scheme only, no secrets anywhere
    reg = CollectorRegistry()
    reg.register(h.engine.collector)
    text = generate_latest(reg).decode()
    assert 'hcc_sentinel_target_state{state="up",target="motcua"} 1.0' in text
    assert 'hcc_sentinel_target_state{state="down",target="motcua"} 0.0' in text
    assert 'hcc_sentinel_notifications_total{channel="mailto",result="sent",unit="so-khcn"} 2.0' in text
    assert 'hcc_sentinel_notifications_total{channel="json",result="sent",unit="it-26068"} 2.0' in text
    assert "hcc_sentinel_outbox_messages 0.0" in text
    assert str(h.smtp.port) not in text and "trucban" not in text and "hook/" not in text


async def test_degraded_is_a_separate_threshold(rig):
    h = rig()
    await h.step(ALL, 30)
    h.mode(dvc="slow")
    await h.step(ALL, 30)
    await h.step(ALL, 30)
    assert h.engine.state_of("dvc") == State.UP      # 2 slow < degraded_threshold 3
    await h.step(ALL, 30)
    await h.idle(30)
    assert h.engine.state_of("dvc") == State.DEGRADED
    titles = h.messages_to("so-khcn")
    assert len(titles) == 1 and "chậm" in titles[0].lower()
    assert h.hooks.received["so-khcn"][0]["type"] == "warning"


async def test_flapping_sends_one_notice_instead_of_a_storm(rig):
    h = rig(**{"group_wait": "0s"})
    await h.step(ALL, 30)
    # a confirmed outage and recovery: one down, one resolved
    h.mode(motcua="error")
    for _ in range(3):
        await h.step(ALL, 10)
    h.mode(motcua="ok")
    for _ in range(2):
        await h.step(ALL, 10)
    assert [t.split(":")[0] for t in h.messages_to("so-khcn")] == ["[SỰ CỐ] Phường Biên Hòa", "[ĐÃ KHÔI PHỤC] Phường Biên Hòa"]
    # now it keeps going down and up.  Nagios-style detection needs about four state changes in
    # the last 21 results (weighted > 20 %), so one more down/resolved pair goes out, then ONE
    # flapping notice and nothing more however long the storm lasts
    for _ in range(8):
        h.mode(motcua="error")
        for _ in range(3):
            await h.step(ALL, 10)
        h.mode(motcua="ok")
        for _ in range(2):
            await h.step(ALL, 10)
    titles = h.messages_to("so-khcn")
    flapping = [t for t in titles if "chập chờn" in t]
    assert len(flapping) == 1, titles
    assert len(titles) <= 5, titles                  # instead of 18 without flap detection
    assert titles[-1] == flapping[0]
    assert "CHẬP CHỜN" in h.hooks.received["so-khcn"][-1]["message"]
    assert h.engine.states["motcua"].flapping
    # stable again: flapping stops below 5 % and ONE resolved notice closes it
    for _ in range(22):
        await h.step(ALL, 10)
    assert not h.engine.states["motcua"].flapping
    after = h.messages_to("so-khcn")[len(titles):]
    assert len(after) == 1 and after[0].startswith("[ĐÃ KHÔI PHỤC]")


async def test_uplink_down_one_link_alert_no_per_system_alerts(rig):
    h = rig()
    for _ in range(2):
        await h.step(ALL, 30)
    h.mode(uplink="error", motcua="error", dvc="hang")   # the commune's link is cut
    for _ in range(6):
        await h.step(ALL, 10)
    await h.idle(60)
    assert h.engine.state_of("uplink") == State.DOWN
    assert h.engine.state_of("motcua") == State.UNREACHABLE
    assert h.engine.state_of("dvc") == State.UNREACHABLE
    # ONE message, to the commune's IT contact; nothing to the system owners
    it = h.messages_to("it-26068")
    assert len(it) == 1 and it[0].startswith("[MẤT KẾT NỐI] Phường Biên Hòa: mất kết nối đường truyền của xã")
    body = h.hooks.received["it-26068"][0]["message"]
    assert "không thực hiện được 2 mục kiểm tra" in body and "Cổng DVC tỉnh" in body
    assert "2 checks cannot run" in body
    assert h.messages_to("so-khcn") == [] and h.smtp.messages == []
    # incidents carry the cause, for the SLA report
    incs = {i["target"]: i for i in h.engine.incidents()}
    assert incs["uplink"]["cause"] == "local_link"
    assert incs["motcua"]["cause"] == "local_link" and incs["motcua"]["parent_id"] == incs["uplink"]["id"]
    assert incs["dvc"]["cause"] == "local_link" and incs["dvc"]["units"] == []
    # no probing faster behind a dead link
    assert h.engine.interval_for("motcua") is None and h.engine.interval_for("uplink") == 10
    # the link returns: one "restored" to the IT contact, still nothing to the owners
    h.mode(uplink="ok", motcua="ok", dvc="ok")
    for _ in range(4):
        await h.step(ALL, 10)
    await h.idle(60)
    it = h.messages_to("it-26068")
    assert len(it) == 2 and it[1].startswith("[ĐÃ KHÔI PHỤC] Phường Biên Hòa: đường truyền của xã hoạt động lại")
    assert h.messages_to("so-khcn") == [] and h.smtp.messages == []
    assert all(i["resolved_at"] for i in h.engine.incidents())


async def test_system_fails_while_link_is_up_then_link_returns_with_system_still_down(rig):
    h = rig()
    await h.step(ALL, 30)
    h.mode(uplink="error", motcua="error")
    for _ in range(5):
        await h.step(ALL, 10)
    assert h.messages_to("so-khcn") == []
    # the link is back, but the system still fails on its own: now the owner is told (once)
    h.mode(uplink="ok")
    for _ in range(6):
        await h.step(ALL, 10)
    await h.idle(40)
    assert h.engine.state_of("motcua") == State.DOWN
    so = h.messages_to("so-khcn")
    assert len(so) == 1 and "Hệ thống giải quyết thủ tục hành chính tỉnh" in so[0]
    causes = sorted((i["target"], i["cause"]) for i in h.engine.incidents())
    assert ("motcua", "local_link") in causes and ("motcua", "system") in causes


async def test_grouping_targets_failing_together_are_one_message(rig):
    h = rig(**{"group_wait": "30s"})
    await h.step(ALL, 30)
    h.mode(motcua="error")
    await h.step(ALL, 10)
    h.mode(dvc="hang")                              # starts failing 10 s later: same group
    for _ in range(5):
        await h.step(ALL, 10)
    await h.idle(60)
    so = h.messages_to("so-khcn")
    assert len(so) == 1 and "2 hệ thống gặp sự cố" in so[0]
    body = h.hooks.received["so-khcn"][0]["message"]
    assert "lỗi (http_status)" in body and "treo (timeout_first_byte)" in body


async def test_maintenance_window_across_midnight(rig):
    # every night 23:00 -> 01:00 Asia/Ho_Chi_Minh for the provincial one-stop system
    window = [{"name": "Bảo trì đêm", "match": {"system": "motcua"}, "cron": "0 23 * * *", "duration": "2h"}]
    h = rig(**{"maintenance": window, "group_wait": "10s"})
    start = datetime(2026, 5, 2, 22, 50, 0, tzinfo=TZ).timestamp()
    h.clock.now = start
    await h.step(ALL, 600)                                  # 23:00:00 exactly
    assert h.engine.state_of("motcua") == State.MAINTENANCE  # a probe exactly at the start is inside
    assert h.engine.state_of("dvc") == State.UP
    h.mode(motcua="error")
    for _ in range(10):                                      # fails all through midnight
        await h.step(ALL, 600)
    assert datetime.fromtimestamp(h.clock.now, TZ).strftime("%d %H:%M") == "03 00:40"
    assert h.engine.state_of("motcua") == State.MAINTENANCE
    assert h.hooks.count() == 0 and h.smtp.messages == []
    inc = h.engine.incidents()[0]
    assert inc["target"] == "motcua" and inc["announced_level"] == 0
    await h.step(ALL, 20 * 60)                               # 01:00:00 exactly: the window has ended
    assert h.engine.state_of("motcua") == State.DOWN
    await h.step(ALL, 10)
    await h.step(ALL, 10)
    so = h.messages_to("so-khcn")
    assert len(so) == 1 and "ngừng hoạt động" in so[0]
    sent_at = h.hooks.received["so-khcn"][0]
    assert "Từ lúc: 23:00:00 ngày 02/05/2026" in sent_at["message"]   # since the first failure


async def test_recovery_inside_the_window_sends_nothing(rig):
    window = [{"name": "Bảo trì", "match": {"target": "dvc"},
               "start": "2026-05-02 23:30", "end": "2026-05-03 00:30"}]
    h = rig(**{"maintenance": window})
    h.clock.now = datetime(2026, 5, 2, 23, 29, 0, tzinfo=TZ).timestamp()
    await h.step(ALL, 60)
    h.mode(dvc="error")
    for _ in range(5):
        await h.step(ALL, 300)
    h.mode(dvc="ok")
    for _ in range(3):
        await h.step(ALL, 300)
    await h.idle(3600, dt=600)
    assert h.hooks.count() == 0 and h.smtp.messages == []


async def test_escalation_after_delay_unless_acknowledged(rig):
    h = rig(**{"group_wait": "0s"})
    await h.step(ALL, 30)
    h.mode(motcua="error", dvc="error")
    for _ in range(3):
        await h.step(ALL, 10)
    assert len(h.messages_to("so-khcn")) == 1
    incs = {i["target"]: i["id"] for i in h.engine.incidents(open_only=True)}
    h.engine.ack(incs["dvc"], "Nguyễn Văn An", "đang gọi nhà cung cấp")
    for _ in range(10):
        await h.step(ALL, 170)                       # 28 minutes: not yet
    assert h.messages_to("vp-ubnd") == []
    for _ in range(3):
        await h.step(ALL, 60)                        # past 30 minutes
    vp = h.messages_to("vp-ubnd")
    assert len(vp) == 1 and vp[0].startswith("[CHUYỂN CẤP 1] Phường Biên Hòa")
    body = h.hooks.received["vp-ubnd"][0]["message"]
    assert "Hệ thống một cửa tỉnh" in body and "Cổng DVC tỉnh" not in body   # the acked one is not escalated
    # once only, even if it stays open
    await h.idle(3600, dt=600)
    assert len(h.messages_to("vp-ubnd")) == 1
    # escalated units are told of the resolution too
    h.mode(motcua="ok", dvc="ok")
    for _ in range(3):
        await h.step(ALL, 10)
    assert h.messages_to("vp-ubnd")[-1].startswith("[ĐÃ KHÔI PHỤC]")


async def test_reminder_while_open_and_unacknowledged(rig):
    h = rig(**{"group_wait": "0s", "repeat_interval": "1h"})
    await h.step(ALL, 30)
    h.mode(dvc="error")
    for _ in range(3):
        await h.step(ALL, 10)
    await h.idle(3700, dt=300)
    it = h.messages_to("it-26068")
    assert len(it) == 2 and it[1].startswith("[NHẮC LẠI]")
    h.engine.ack(h.engine.incidents(open_only=True)[0]["id"], "cli")
    await h.idle(7300, dt=600)
    assert len(h.messages_to("it-26068")) == 2


async def test_smtp_down_for_a_while_then_delivered(rig):
    h = rig(**{"group_wait": "0s"})
    h.smtp.stop()                                    # the province's mail server is down
    await h.step(ALL, 30)
    h.mode(motcua="error")
    for _ in range(3):
        await h.step(ALL, 10)
    # the webhook channels are not held back by the dead e-mail channel
    assert len(h.messages_to("so-khcn")) == 1 and len(h.messages_to("it-26068")) == 1
    await h.idle(60, dt=10)
    pending = h.engine.outbox.conn.execute(
        "SELECT scheme, attempts, last_error FROM deliveries WHERE status = 'pending'").fetchall()
    assert [p["scheme"] for p in pending] == ["mailto"] and pending[0]["attempts"] >= 2
    assert pending[0]["last_error"] and "mailto://" not in pending[0]["last_error"]
    assert "trucban" not in pending[0]["last_error"]
    assert h.engine.outbox.depth == 1 and h.engine.outbox.oldest_age() > 0
    h.smtp.start()                                   # back
    await h.idle(120, dt=10)
    assert len(h.smtp.messages) == 1 and "Phường Biên Hòa" in h.smtp.subjects()[0]
    assert h.engine.outbox.depth == 0
    attempts = h.engine.outbox.conn.execute(
        "SELECT COUNT(*) FROM attempts a JOIN deliveries d ON d.id = a.delivery_id WHERE d.scheme = 'mailto'").fetchone()[0]
    assert attempts >= 3
    assert h.engine.outbox.counts[("so-khcn", "mailto", "failed")] >= 2
    assert h.engine.outbox.counts[("so-khcn", "mailto", "sent")] == 1


async def test_outbox_gives_up_after_max_age(rig):
    h = rig(**{"group_wait": "0s", "outbox": {"max_age": "5m", "retry_initial": "2s", "retry_max": "30s"}})
    h.smtp.stop()
    await h.step(ALL, 30)
    h.mode(motcua="error")
    for _ in range(3):
        await h.step(ALL, 10)
    await h.idle(400, dt=20)
    assert h.engine.outbox.expired == {("so-khcn", "mailto"): 1}
    assert h.engine.outbox.depth == 0
    reg = CollectorRegistry()
    reg.register(h.engine.collector)
    text = generate_latest(reg).decode()
    assert 'hcc_sentinel_notifications_expired_total{channel="mailto",unit="so-khcn"} 1.0' in text


async def test_silence_mutes_then_alert_goes_out_when_it_ends(rig):
    h = rig(**{"group_wait": "0s"})
    await h.step(ALL, 30)
    sid = h.engine.add_silence(author="Trần Thị Bình", reason="Nhà mạng báo cắt điện", starts_at=h.clock.now,
                               ends_at=h.clock.now + 600, match={"target": ["dvc"]})
    h.mode(dvc="error")
    for _ in range(5):
        await h.step(ALL, 60)
    assert h.hooks.count() == 0
    assert h.engine.state_of("dvc") == State.DOWN        # a plain silence mutes, it is not maintenance
    for _ in range(6):
        await h.step(ALL, 60)
    assert len(h.messages_to("so-khcn")) == 1
    assert not h.engine.expire_silence(sid, "x")        # already ended


async def test_rate_limit_defers_messages(rig):
    h = rig(**{"group_wait": "0s", "rate_limit": {"count": 1, "per": "1h"}})
    await h.step(ALL, 30)
    h.mode(dvc="error")
    for _ in range(3):
        await h.step(ALL, 10)
    h.mode(dvc="ok")
    for _ in range(3):
        await h.step(ALL, 10)
    assert len(h.messages_to("it-26068")) == 1          # the resolved notice waits
    assert h.engine.outbox.depth >= 1
    await h.idle(3700, dt=300)
    assert len(h.messages_to("it-26068")) == 2


# -- a target dropped from the config and put back (a wrong edit, then reverted) ------------------


async def _motcua_down_announced_and_acked(h):
    for _ in range(2):
        await h.step(ALL, 30)
    h.mode(motcua="error")
    for _ in range(5):
        await h.step(ALL, 10)
    await h.idle(30)
    assert len(h.messages_to("so-khcn")) == 1 and len(h.messages_to("it-26068")) == 1
    inc = next(i for i in h.engine.incidents(open_only=True) if i["target"] == "motcua")
    h.engine.ack(inc["id"], "Nguyễn Văn An")
    return inc


def _without_motcua() -> list[AlertTarget]:
    return [t for t in make_targets() if t.id != "motcua"]


async def test_target_dropped_then_restored_by_reload_keeps_its_incident_and_ack(rig):
    h = rig()
    inc = await _motcua_down_announced_and_acked(h)
    cfg = h.engine.config
    # a wrong edit drops motcua: its incident is closed silently, with the reason (no "resolved")
    h.engine.update(cfg, _without_motcua(), SITE)
    closed = next(i for i in h.engine.incidents() if i["id"] == inc["id"])
    assert closed["resolved_at"] is not None and closed["resolve_note"] == REMOVED_NOTE
    for _ in range(3):
        await h.step(("uplink", "dvc"), 10)
    await h.idle(60)
    assert len(h.messages_to("so-khcn")) == 1 and len(h.messages_to("it-26068")) == 1
    # ... reverted 2 minutes later: the same incident is back, acknowledged, nothing re-announced
    h.engine.update(cfg, make_targets(), SITE)
    for _ in range(4):
        await h.step(ALL, 10)
    await h.idle(60)
    mine = [i for i in h.engine.incidents() if i["target"] == "motcua"]
    assert len(mine) == 1, mine
    assert mine[0]["id"] == inc["id"] and mine[0]["resolved_at"] is None and mine[0]["resolve_note"] is None
    assert mine[0]["acked_by"] == "Nguyễn Văn An" and mine[0]["opened_at"] == inc["opened_at"]
    assert mine[0]["announced_level"] == 2
    assert len(h.messages_to("so-khcn")) == 1 and len(h.messages_to("it-26068")) == 1 and len(h.smtp.messages) == 1
    # the acknowledgement still holds: no escalation to vp-ubnd after its 30 minutes
    await h.idle(1900, dt=60)
    assert h.messages_to("vp-ubnd") == []
    # recovery: ONE "resolved", naming who acknowledged
    h.mode(motcua="ok")
    for _ in range(3):
        await h.step(ALL, 10)
    await h.idle(60)
    so = h.messages_to("so-khcn")
    assert len(so) == 2 and so[1].startswith("[ĐÃ KHÔI PHỤC]")
    assert "Nguyễn Văn An" in h.hooks.received["so-khcn"][1]["message"]


async def test_target_dropped_then_restored_across_restarts_keeps_its_incident(rig):
    h = rig()
    inc = await _motcua_down_announced_and_acked(h)
    await h.engine.stop()
    h2 = rig(targets=_without_motcua())              # restarted with the wrong config
    await h2.step(("uplink", "dvc"), 10)
    assert all(i["resolved_at"] for i in h2.engine.incidents() if i["target"] == "motcua")
    await h2.engine.stop()
    h3 = rig()                                       # restarted with the config fixed
    for _ in range(4):
        await h3.step(ALL, 10)
    await h3.idle(60)
    mine = [i for i in h3.engine.incidents() if i["target"] == "motcua"]
    assert [(i["id"], i["resolved_at"], i["acked_by"]) for i in mine] == [(inc["id"], None, "Nguyễn Văn An")]
    assert len(h3.messages_to("so-khcn")) == 1 and len(h3.smtp.messages) == 1


async def test_target_back_after_the_grace_starts_afresh(rig):
    h = rig()
    inc = await _motcua_down_announced_and_acked(h)
    cfg = h.engine.config
    h.engine.update(cfg, _without_motcua(), SITE)
    h.clock.advance(25 * 3600)                       # back more than a day later
    h.engine.update(cfg, make_targets(), SITE)
    await h.step(("uplink", "dvc"), 10)
    # its day-old "down" is not trusted: up until fresh probes say otherwise; nothing sent
    assert h.engine.state_of("motcua") == State.UP
    assert not [i for i in h.engine.incidents(open_only=True) if i["target"] == "motcua"]
    await h.idle(60)
    assert len(h.messages_to("so-khcn")) == 1
    # still failing: a new incident, announced once
    for _ in range(5):
        await h.step(ALL, 10)
    await h.idle(30)
    mine = [i for i in h.engine.incidents() if i["target"] == "motcua"]
    assert len(mine) == 2 and mine[0]["id"] != inc["id"] and mine[0]["resolved_at"] is None
    assert len(h.messages_to("so-khcn")) == 2


# -- several checks of ONE system; the ack command printed in messages works ----------------------


async def test_checks_of_one_system_are_one_system_and_the_printed_ack_command_works(rig, tmp_path, capsys):
    names = [f"motcua-{k}" for k in range(1, 7)]
    base = make_targets(with_uplink=False)[0]
    targets = [dataclasses.replace(base, id=n, name=f"Một cửa — kiểm tra {n}", depends_on=()) for n in names]
    cfg_file = tmp_path / "agent.yaml"
    cfg_file.write_text(f"agent: {{id: hcc-26068, data_dir: {tmp_path}}}\n", encoding="utf-8")
    h = rig(targets=targets, site=dataclasses.replace(SITE, config_path=str(cfg_file)))
    await h.step(names, 30)
    h.mode(**{n: "error" for n in names})
    for _ in range(4):
        await h.step(names, 10)
    await h.idle(30)
    so = h.messages_to("so-khcn")
    assert len(so) == 1
    assert so[0] == ("[SỰ CỐ] Phường Biên Hòa: Hệ thống giải quyết thủ tục hành chính tỉnh (một cửa) ngừng hoạt động "
                     "(6 mục kiểm tra) / Provincial procedure-handling system down (6 checks)")
    assert "hệ thống gặp sự cố" not in so[0]
    body = h.hooks.received["so-khcn"][0]["message"]
    line = next(x for x in body.splitlines() if x.startswith("Xác nhận đang xử lý"))
    command = line.split(": ", 1)[1]
    assert command == f"hcc-sentinel ack 1-6 -c {cfg_file}"
    argv = shlex.split(command)
    assert cli([*argv[1:], "--by", "Trần Thị Bình"]) == 0
    assert capsys.readouterr().out.count("acknowledged by Trần Thị Bình") == 6
    await h.step((), 1)
    assert all(inc.acked_by == "Trần Thị Bình" for inc in h.engine.open.values()) and len(h.engine.open) == 6
