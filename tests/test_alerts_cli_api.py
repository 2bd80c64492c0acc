"""CLI (ack, silence, incidents, outbox — on the SQLite file while the agent runs) and HTTP API
(POST /api/incidents/{id}/ack with a token, GET /api/incidents, /api/silences) against a real
in-process agent runtime probing a real HTTP server; /metrics exposes the states without secrets."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from agent.cli import main as cli
from agent.runtime import AgentRuntime
from alerts.state import State
from test_alerts_support import SmtpSink, TargetServer, WebhookSink, free_port

CONFIG = """\
agent:
  id: hcc-26068
  commune: {{code: "26068", name: "Phường Biên Hòa", type: phuong}}
  listen: 127.0.0.1:{port}
  data_dir: {data}
  startup_spread: 100ms
defaults: {{interval: 500ms, timeout: 400ms, slow_after: 300ms, failure_threshold: 2, success_threshold: 2}}
systems:
  - {{id: motcua, name: "Hệ thống một cửa tỉnh", owner: so-khcn}}
targets:
  - id: motcua-home
    system: motcua
    http: {{url: "{url}", first_byte_timeout: 300ms, connect_timeout: 300ms}}
alerting:
  units:
    - id: so-khcn
      name: "Sở Khoa học và Công nghệ"
      urls: ["{hook}", "{mail}"]
      escalation: [{{after: 1h, units: [vp-ubnd]}}]
    - id: vp-ubnd
      name: "Văn phòng UBND tỉnh"
      urls: ["{hook2}"]
  group_wait: 0s
  ack_token: "${{TEST_ACK_TOKEN}}"
"""

TOKEN = "tok-Đồng-Nai-12345"


@pytest.fixture
async def agent(tmp_path, monkeypatch):
    monkeypatch.setenv("TEST_ACK_TOKEN", TOKEN)
    hooks, server, smtp = WebhookSink(), TargetServer(), SmtpSink()
    smtp.start()
    await hooks.start()
    await server.start()
    port = free_port()
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(CONFIG.format(port=port, data=tmp_path / "data", url=server.url("motcua"),
                                 hook=hooks.url("so-khcn"), hook2=hooks.url("vp-ubnd"),
                                 mail=smtp.url("trucban@hcc-sentinel.example")), encoding="utf-8")
    server.modes["motcua"] = "error"
    rt = AgentRuntime(str(cfg), process_metrics=False)
    await rt.start()
    try:
        yield rt, cfg, f"http://127.0.0.1:{port}", hooks, server
    finally:
        await rt.stop()
        await hooks.stop()
        await server.stop()
        smtp.stop()


async def _until(pred, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        await asyncio.sleep(0.1)
    raise AssertionError("condition not reached")


async def test_api_ack_incidents_silences_and_metrics(agent):
    rt, cfg, base, hooks, server = agent
    await _until(lambda: len(hooks.received.get("so-khcn", [])) == 1)
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/api/incidents?open=1") as r:
            assert r.status == 200
            incs = (await r.json())["incidents"]
        assert len(incs) == 1 and incs[0]["target"] == "motcua-home" and incs[0]["cause"] == "system"
        iid = incs[0]["id"]
        async with http.post(f"{base}/api/incidents/{iid}/ack", json={"by": "Lê Văn Cường"}) as r:
            assert r.status == 403
        async with http.post(f"{base}/api/incidents/{iid}/ack", json={"by": "x"},
                             headers={"Authorization": "Bearer wrong"}) as r:
            assert r.status == 403
        async with http.post(f"{base}/api/incidents/{iid}/ack", json={"by": "Lê Văn Cường", "note": "đang xử lý"},
                             headers={"Authorization": f"Bearer {TOKEN}"}) as r:
            assert r.status == 200
            body = await r.json()
        assert body["incident"]["acked_by"] == "Lê Văn Cường"
        assert rt.alerts.open["motcua-home"].acked_by == "Lê Văn Cường"
        async with http.post(f"{base}/api/incidents/999/ack", headers={"Authorization": f"Bearer {TOKEN}"}) as r:
            assert r.status == 404

        # silences: token needed; add, list, expire
        payload = {"author": "Phạm Thị Dung", "reason": "Nâng cấp máy chủ", "duration": "2h",
                   "match": {"target": "motcua-home"}, "maintenance": True}
        async with http.post(f"{base}/api/silences", json=payload) as r:
            assert r.status == 403
        async with http.post(f"{base}/api/silences", json=payload, headers={"Authorization": f"Bearer {TOKEN}"}) as r:
            assert r.status == 201
            sil = (await r.json())["silence"]
        assert sil["author"] == "Phạm Thị Dung" and sil["maintenance"] is True
        assert rt.alerts.state_of("motcua-home") == State.MAINTENANCE
        async with http.get(f"{base}/api/silences") as r:
            assert [s["id"] for s in (await r.json())["silences"]] == [sil["id"]]
        async with http.post(f"{base}/api/silences", json={"author": "a", "reason": "r"},
                             headers={"Authorization": f"Bearer {TOKEN}"}) as r:
            assert r.status == 400
        async with http.delete(f"{base}/api/silences/{sil['id']}?by=dung",
                               headers={"Authorization": f"Bearer {TOKEN}"}) as r:
            assert r.status == 200 and (await r.json())["expired"] is True
        async with http.get(f"{base}/api/silences") as r:
            assert (await r.json())["silences"] == []

        async with http.get(f"{base}/metrics") as r:
            text = await r.text()
    assert 'hcc_sentinel_target_state{state="down",target="motcua-home"} 1.0' in text
    assert 'hcc_sentinel_notifications_total{channel="json",result="sent",unit="so-khcn"} 1.0' in text
    assert "hcc_sentinel_outbox_messages" in text and "hcc_sentinel_outbox_oldest_age_seconds" in text
    assert "hook/so-khcn" not in text and TOKEN not in text and "trucban" not in text


async def test_cli_on_the_database_while_the_agent_runs(agent, capsys):
    rt, cfg, base, hooks, server = agent
    await _until(lambda: len(hooks.received.get("so-khcn", [])) == 1)
    assert cli(["incidents", "-c", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "#1 [open] motcua-home down cause=system" in out and "told: Sở Khoa học và Công nghệ" in out

    assert cli(["ack", "1", "-c", str(cfg), "--by", "Võ Thị Em", "--note", "đã gọi nhà mạng"]) == 0
    assert "incident 1 (motcua-home) acknowledged by Võ Thị Em" in capsys.readouterr().out
    await _until(lambda: rt.alerts.open["motcua-home"].acked_by == "Võ Thị Em", 5)   # picked up at the next tick
    assert cli(["ack", "42", "-c", str(cfg)]) == 1

    assert cli(["silence", "add", "-c", str(cfg), "--author", "Võ Thị Em", "--reason", "bảo trì đột xuất",
                "--duration", "30m", "--target", "motcua-home", "--maintenance"]) == 0
    assert "silence 1 added: target=motcua-home" in capsys.readouterr().out
    await _until(lambda: rt.alerts.state_of("motcua-home") == State.MAINTENANCE, 5)
    assert cli(["silence", "list", "-c", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "#1 [active]" in out and "Võ Thị Em: bảo trì đột xuất" in out
    assert cli(["silence", "expire", "1", "-c", str(cfg), "--by", "em"]) == 0
    await _until(lambda: rt.alerts.state_of("motcua-home") == State.DOWN, 5)
    assert cli(["silence", "expire", "1", "-c", str(cfg)]) == 1
    assert cli(["silence", "add", "-c", str(cfg), "--author", "a", "--reason", "r"]) == 2   # no duration
    capsys.readouterr()

    assert cli(["outbox", "-c", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "outbox empty" in out

    # the system recovers: resolved goes out; incidents --all shows it resolved
    server.modes["motcua"] = "ok"
    await _until(lambda: len(hooks.received.get("so-khcn", [])) == 2)
    assert cli(["incidents", "-c", str(cfg), "--all"]) == 0
    assert "#1 [resolved]" in capsys.readouterr().out


def test_cli_without_database(tmp_path, capsys):
    cfg = tmp_path / "a.yaml"
    cfg.write_text("agent: {id: x, data_dir: nowhere}\n", encoding="utf-8")
    with pytest.raises(SystemExit) as exc:
        cli(["incidents", "-c", str(cfg)])
    assert exc.value.code == 3


async def test_reload_applies_new_alerting_config(agent):
    rt, cfg, base, hooks, server = agent
    await _until(lambda: rt.alerts.state_of("motcua-home") == State.DOWN)
    text = cfg.read_text(encoding="utf-8").replace(
        "  group_wait: 0s\n",
        "  group_wait: 0s\n  maintenance:\n    - {name: \"Bảo trì\", match: {target: motcua-home}, "
        "cron: \"* * * * *\", duration: 2m}\n")
    cfg.write_text(text, encoding="utf-8")
    result = await rt.reload()
    assert result.ok, result.problems
    assert rt.alerts.state_of("motcua-home") == State.MAINTENANCE
    assert len(rt.alerts.config.maintenance) == 1


async def test_ack_command_printed_in_the_alert_works_as_is(agent, capsys):
    """The hint in every alert is a complete command: the agent's own config path (absolute)
    with -c; run exactly as printed, it acknowledges the incident."""
    import shlex

    rt, cfg, base, hooks, server = agent
    await _until(lambda: len(hooks.received.get("so-khcn", [])) == 1)
    body = hooks.received["so-khcn"][0]["message"]
    line = next(x for x in body.splitlines() if x.startswith("Xác nhận đang xử lý"))
    command = line.split(": ", 1)[1]
    assert command == f"hcc-sentinel ack 1 -c {cfg.resolve()}"
    argv = shlex.split(command)
    assert argv[0] == "hcc-sentinel" and cli([*argv[1:], "--by", "Đặng Văn Phúc"]) == 0
    assert "incident 1 (motcua-home) acknowledged by Đặng Văn Phúc" in capsys.readouterr().out
    await _until(lambda: rt.alerts.open["motcua-home"].acked_by == "Đặng Văn Phúc", 5)
