"""``hcc-sentinel relay``: Alertmanager webhook v4 -> Vietnamese messages -> apprise ``json://``.

A real aiohttp webhook receiver on 127.0.0.1 stands for the units' channels (apprise's
``json://`` posts ``{"title", "message", "type"}`` to it); the relay runs its real HTTP server,
outbox and apprise sender.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from agent.relay import Relay, load_relay_config, parse_time
from tests.ports import free_port as _pick_port

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    return _pick_port()


class Receiver:
    """A webhook receiver: records every POST by path; can fail the first requests."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, dict[str, Any]]] = []
        self.fail_next = 0
        self.port = _free_port()
        self.runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        if self.fail_next > 0:
            self.fail_next -= 1
            return web.Response(status=500, text="try later")
        self.posts.append((request.path, await request.json()))
        return web.Response(text="ok")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{unit}", self._handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self.runner:
            await self.runner.cleanup()

    def to(self, unit: str) -> list[dict[str, Any]]:
        return [p for path, p in self.posts if path == f"/{unit}"]

    async def wait(self, n: int, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.posts) < n:
            if time.monotonic() > deadline:
                raise AssertionError(f"expected {n} messages, got {len(self.posts)}: {self.posts}")
            await asyncio.sleep(0.05)


def write_config(tmp_path: Path, receiver_port: int, relay_port: int) -> Path:
    secrets = tmp_path / "secrets"
    secrets.mkdir(exist_ok=True)
    for unit in ("so-khcn", "vp-ubnd", "it-26068"):
        (secrets / f"{unit}.url").write_text(f"json://127.0.0.1:{receiver_port}/{unit}\n", encoding="utf-8")
    cfg = tmp_path / "relay.yaml"
    cfg.write_text(f"""
listen: 127.0.0.1:{relay_port}
data_dir: data
default_unit: so-khcn
status_url: http://grafana.giamsat.dongnai.gov.vn/d/hcc
systems:
  - {{id: motcua, name: "Hệ thống giải quyết thủ tục hành chính tỉnh (một cửa)", name_en: "Provincial procedure-handling system"}}
  - {{id: uplink, name: "Đường truyền các xã, phường", name_en: "Commune uplink"}}
alerting:
  outbox: {{retry_initial: 0.2s, retry_max: 1s}}
  units:
    - id: so-khcn
      name: "Sở Khoa học và Công nghệ"
      urls: ["${{file:{secrets}/so-khcn.url}}"]
      escalation: [{{after: 1h, units: [vp-ubnd]}}]
    - id: vp-ubnd
      name: "Văn phòng UBND tỉnh"
      urls: ["${{file:{secrets}/vp-ubnd.url}}"]
    - id: it-26068
      name: "Bộ phận CNTT Phường Biên Hoà"
      urls: ["${{file:{secrets}/it-26068.url}}"]
""", encoding="utf-8")
    return cfg


def am_payload(alerts: list[dict[str, Any]], receiver: str = "so-khcn", status: str | None = None) -> dict[str, Any]:
    """An Alertmanager webhook v4 body (as alertmanager 0.25 sends it)."""
    common = dict(alerts[0]["labels"])
    for a in alerts[1:]:
        common = {k: v for k, v in common.items() if a["labels"].get(k) == v}
    return {
        "receiver": receiver, "status": status or ("firing" if any(a["status"] == "firing" for a in alerts) else "resolved"),
        "alerts": alerts, "groupLabels": {"alertname": alerts[0]["labels"]["alertname"]},
        "commonLabels": common, "commonAnnotations": {}, "externalURL": "http://127.0.0.1:9093",
        "version": "4", "groupKey": '{}:{alertname="x"}', "truncatedAlerts": 0,
    }


def alert(labels: dict[str, str], status: str = "firing", starts: str = "2026-11-30T08:00:00.123456789Z",
          ends: str = "0001-01-01T00:00:00Z", summary: str = "tóm tắt", fp: str | None = None) -> dict[str, Any]:
    return {"status": status, "labels": labels, "annotations": {"summary": summary, "summary_en": "summary"},
            "startsAt": starts, "endsAt": ends, "generatorURL": "http://127.0.0.1:9090/graph",
            "fingerprint": fp or str(abs(hash(tuple(sorted(labels.items())))))}


OUTAGE = {"alertname": "SystemOutageCentral", "system": "motcua", "owner": "so-khcn", "severity": "page", "scope": "central"}
LINK = {"alertname": "CommuneLinkDown", "system": "uplink", "owner": "it-26068", "severity": "page", "scope": "commune",
        "commune_code": "26068", "commune_name": "Phường Biên Hoà", "commune_type": "phuong", "agent_id": "hcc-26068",
        "job": "hcc-sentinel", "instance": "10.75.68.10:9470"}


@pytest.fixture
async def relay_env(tmp_path):
    receiver = Receiver()
    await receiver.start()
    port = _free_port()
    config = load_relay_config(write_config(tmp_path, receiver.port, port))
    relay = Relay(config)
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.ensure_future(relay.serve(ready=ready, stop=stop))
    await asyncio.wait_for(ready.wait(), 10)
    session = aiohttp.ClientSession()

    async def post(unit: str, payload: Any) -> tuple[int, Any]:
        async with session.post(f"http://127.0.0.1:{port}/alertmanager/{unit}", json=payload) as r:
            return r.status, await r.json()

    yield relay, receiver, post, session, port
    await session.close()
    stop.set()
    await asyncio.wait_for(task, 20)
    await receiver.stop()


async def test_central_outage_message_in_vietnamese_then_english(relay_env):
    relay, receiver, post, _s, _p = relay_env
    status, body = await post("so-khcn", am_payload([alert(OUTAGE, summary="Sự cố tập trung: ... lỗi từ 41/95 xã, phường")]))
    assert status == 200 and len(body["enqueued"]) == 1
    await receiver.wait(1)
    msg = receiver.to("so-khcn")[0]
    assert msg["type"] == "failure"
    assert msg["title"].startswith("[SỰ CỐ] Giám sát tập trung tỉnh Đồng Nai: Hệ thống giải quyết thủ tục hành chính tỉnh (một cửa)")
    text = msg["message"]
    assert "41/95 xã, phường" in text
    assert text.index("Tình trạng: NGỪNG HOẠT ĐỘNG") < text.index("--- English ---") < text.index("State: DOWN")
    assert "15:00:00 ngày 30/11/2026" in text  # 08:00 UTC in Asia/Ho_Chi_Minh
    assert "Trang trạng thái: http://grafana.giamsat.dongnai.gov.vn/d/hcc" in text


async def test_retry_is_idempotent_reminder_and_resolved(relay_env):
    relay, receiver, post, _s, _p = relay_env
    a = alert(OUTAGE, fp="f1")
    other = alert({**OUTAGE, "system": "qlvb"}, fp="f2")
    assert len((await post("so-khcn", am_payload([a])))[1]["enqueued"]) == 1
    # Alertmanager retrying the same notification (answer lost): nothing new
    assert (await post("so-khcn", am_payload([a])))[1]["enqueued"] == []
    # the group grows: a message for the group, once
    assert len((await post("so-khcn", am_payload([a, other])))[1]["enqueued"]) == 1
    assert (await post("so-khcn", am_payload([a, other])))[1]["enqueued"] == []
    # Alertmanager's repeat_interval re-send two hours later: one reminder, not two
    real_clock = relay.clock
    relay.clock = lambda: real_clock() + 7200
    assert len((await post("so-khcn", am_payload([a, other])))[1]["enqueued"]) == 1
    assert (await post("so-khcn", am_payload([a, other])))[1]["enqueued"] == []
    # one alert resolves (the other still open): a resolved message, no reminder for the other
    resolved = alert(OUTAGE, status="resolved", fp="f1", ends="2026-11-30T09:30:00Z")
    assert len((await post("so-khcn", am_payload([resolved, other])))[1]["enqueued"]) == 1
    assert (await post("so-khcn", am_payload([resolved, other])))[1]["enqueued"] == []
    await receiver.wait(4)
    await asyncio.sleep(0.5)
    titles = [m["title"] for m in receiver.to("so-khcn")]
    assert [t.split("]")[0] + "]" for t in titles] == ["[SỰ CỐ]", "[SỰ CỐ]", "[NHẮC LẠI]", "[ĐÃ KHÔI PHỤC]"], titles
    assert "kéo dài 1 giờ 30 phút" in receiver.to("so-khcn")[-1]["message"]


async def test_commune_link_message_names_the_commune(relay_env):
    relay, receiver, post, _s, _p = relay_env
    assert (await post("it-26068", am_payload([alert(LINK)], receiver="it-26068")))[0] == 200
    await receiver.wait(1)
    msg = receiver.to("it-26068")[0]
    assert msg["title"] == "[MẤT KẾT NỐI] Phường Biên Hoà: mất kết nối đường truyền của xã / commune link lost"
    assert "Phường Biên Hoà (mã 26068)" in msg["message"]
    assert "Kiểm tra modem/router" in msg["message"]
    assert receiver.to("so-khcn") == []


async def test_escalation_and_unknown_unit(relay_env):
    relay, receiver, post, _s, _p = relay_env
    esc = {**OUTAGE, "alertname": "Escalation", "escalated_alertname": "SystemOutageCentral", "escalate_to": "vp-ubnd",
           "escalated_from": "so-khcn", "escalation_step": "1"}
    assert (await post("vp-ubnd", am_payload([alert(esc)], receiver="vp-ubnd")))[0] == 200
    # a receiver the relay does not know (config drift) goes to the default unit, not nowhere
    assert (await post("no-such-unit", am_payload([alert(OUTAGE, fp="other")])))[0] == 200
    await receiver.wait(2)
    assert receiver.to("vp-ubnd")[0]["title"].startswith("[CHUYỂN CẤP 1]")
    assert len(receiver.to("so-khcn")) == 1


async def test_bad_requests(relay_env):
    relay, receiver, post, session, port = relay_env
    assert (await post("so-khcn", {"version": "3", "alerts": []}))[0] == 400
    assert (await post("so-khcn", [1, 2]))[0] == 400
    async with session.post(f"http://127.0.0.1:{port}/alertmanager/so-khcn", data=b"not json") as r:
        assert r.status == 400
    async with session.get(f"http://127.0.0.1:{port}/healthz") as r:
        assert r.status == 200


async def test_channel_failure_is_retried_and_metrics_hide_urls(relay_env):
    relay, receiver, post, session, port = relay_env
    receiver.fail_next = 2
    assert (await post("so-khcn", am_payload([alert(OUTAGE, fp="retry")])))[0] == 200
    await receiver.wait(1, timeout=30)
    deadline = time.monotonic() + 10  # the outbox records the delivery just after the channel answered
    while True:
        async with session.get(f"http://127.0.0.1:{port}/metrics") as r:
            text = await r.text()
        if "hcc_sentinel_outbox_messages 0.0" in text or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    assert 'hcc_sentinel_notifications_total{channel="json",result="failed",unit="so-khcn"} 2.0' in text
    assert 'hcc_sentinel_notifications_total{channel="json",result="sent",unit="so-khcn"} 1.0' in text
    assert "hcc_sentinel_outbox_messages 0.0" in text
    assert str(receiver.port) not in text  # no channel URL in metrics


async def test_message_survives_a_relay_restart(tmp_path):
    """Accepted = durable: a message enqueued while the channel is down is delivered by the
    next relay process."""
    receiver = Receiver()
    port = _free_port()
    config = load_relay_config(write_config(tmp_path, receiver.port, port))
    relay = Relay(config)
    assert len(relay.handle("so-khcn", am_payload([alert(OUTAGE, fp="durable")]))) == 1
    relay.conn.close()  # crash before any delivery attempt (the receiver is not even up)
    await receiver.start()
    relay2 = Relay(config)
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.ensure_future(relay2.serve(ready=ready, stop=stop))
    try:
        await receiver.wait(1)
        assert receiver.to("so-khcn")[0]["title"].startswith("[SỰ CỐ]")
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)
        await receiver.stop()


def test_parse_time():
    assert parse_time("0001-01-01T00:00:00Z") is None
    assert parse_time("2026-11-30T08:00:00.123456789Z") == pytest.approx(1796025600.123456)
    assert parse_time("2026-11-30T15:00:00+07:00") == 1796025600.0


def test_relay_cli_refuses_a_bad_config(tmp_path):
    bad = tmp_path / "relay.yaml"
    bad.write_text("default_unit: nobody\nalerting: {units: []}\nlisten: nowhere\n", encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "agent", "relay", "-c", str(bad)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "relay.yaml:3: listen: must be HOST:PORT" in proc.stdout + proc.stderr
