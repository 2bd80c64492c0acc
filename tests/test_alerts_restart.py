"""The real agent (``python -m agent run``) killed with SIGKILL while a message is pending and an
incident is open; after the restart every message is delivered once, the "down" is not repeated,
and the "resolved" goes out because the target recovered meanwhile.  Real SMTP server, real
webhook receiver, real HTTP target, real time (short intervals)."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from test_alerts_support import SmtpSink, TargetServer, WebhookSink, free_port

ROOT = Path(__file__).resolve().parent.parent

CONFIG = """\
agent:
  id: hcc-26068
  commune: {{code: "26068", name: "Phường Biên Hòa", type: phuong}}
  listen: 127.0.0.1:{port}
  data_dir: {data}
  status_url: http://127.0.0.1:{port}/status
  startup_spread: 200ms
defaults: {{interval: 1s, timeout: 900ms, slow_after: 500ms, failure_threshold: 2, success_threshold: 2,
            retry_interval: 900ms}}
systems:
  - {{id: motcua, name: "Hệ thống giải quyết thủ tục hành chính tỉnh (một cửa)", owner: so-khcn}}
targets:
  - id: motcua-home
    name: "Hệ thống một cửa tỉnh"
    system: motcua
    http: {{url: "{url}", first_byte_timeout: 600ms, connect_timeout: 500ms}}
alerting:
  units:
    - id: so-khcn
      name: "Sở Khoa học và Công nghệ"
      urls: ["{mail}", "{hook}"]
  group_wait: 0s
  outbox: {{retry_initial: 300ms, retry_max: 1s, send_timeout: 5s}}
"""


def _db(data: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(str(data / "alerts.db"), timeout=5)
    conn.row_factory = sqlite3.Row
    return conn


async def _wait_for(pred, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if pred():
                return
        except sqlite3.Error:
            pass
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _start(cfg: Path, log: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "agent", "run", "-c", str(cfg), "--log-level", "info"],
                            cwd=ROOT, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT)


async def test_sigkill_with_pending_messages_and_open_incident(tmp_path):
    smtp, hooks, server = SmtpSink(), WebhookSink(), TargetServer()
    await hooks.start()
    await server.start()
    data = tmp_path / "data"
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(CONFIG.format(port=free_port(), data=data, url=server.url("motcua"),
                                 mail=smtp.url("trucban@hcc-sentinel.example"), hook=hooks.url("so-khcn")),
                   encoding="utf-8")
    log = tmp_path / "agent.log"
    proc = None
    try:
        # --- run 1: the system fails; both channels are down (SMTP not listening, webhook 503)
        server.modes["motcua"] = "error"
        hooks.failing = True
        proc = _start(cfg, log)

        def announced_and_pending() -> bool:
            conn = _db(data)
            try:
                inc = conn.execute("SELECT * FROM incidents WHERE resolved_at IS NULL").fetchall()
                dl = conn.execute("SELECT scheme, attempts FROM deliveries WHERE status = 'pending'").fetchall()
            finally:
                conn.close()
            return (len(inc) == 1 and inc[0]["announced_level"] == 2
                    and sorted(d["scheme"] for d in dl) == ["json", "mailto"] and all(d["attempts"] >= 1 for d in dl))

        await _wait_for(announced_and_pending, 30, "an announced incident with failing deliveries")
        assert hooks.attempts >= 1 and smtp.messages == []
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(10) == -signal.SIGKILL
        proc = None

        # --- meanwhile: the system recovers and both channels come back
        server.modes["motcua"] = "ok"
        smtp.start()
        hooks.failing = False

        # --- run 2
        proc = _start(cfg, log)
        await _wait_for(lambda: len(smtp.messages) >= 2 and len(hooks.received.get("so-khcn", [])) >= 2, 30,
                        "the pending 'down' and the 'resolved' on both channels")
        await asyncio.sleep(2.5)                     # room for any duplicate to show up
        subjects = smtp.subjects()
        titles = hooks.titles("so-khcn")
        assert len(subjects) == 2 and len(titles) == 2, (subjects, titles)
        for seq in (subjects, titles):
            assert seq[0].startswith("[SỰ CỐ] Phường Biên Hòa: Hệ thống giải quyết thủ tục hành chính tỉnh (một cửa)")
            assert seq[1].startswith("[ĐÃ KHÔI PHỤC] Phường Biên Hòa")
        body = smtp.bodies()[0]
        assert "Tình trạng: NGỪNG HOẠT ĐỘNG — lỗi (http_status)" in body
        conn = _db(data)
        try:
            incs = conn.execute("SELECT * FROM incidents").fetchall()
            assert len(incs) == 1 and incs[0]["resolved_at"] and incs[0]["resolved_announced"] == 1
            pending = conn.execute("SELECT COUNT(*) FROM deliveries WHERE status = 'pending'").fetchone()[0]
            assert pending == 0
            kinds = [r[0] for r in conn.execute("SELECT kind FROM messages ORDER BY id")]
            assert kinds == ["problem", "resolved"]
        finally:
            conn.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        proc = None
    finally:
        if proc is not None:
            proc.kill()
            proc.wait(10)
        smtp.stop()
        await hooks.stop()
        await server.stop()
        if log.exists():
            text = log.read_text(encoding="utf-8", errors="replace")
            assert "trucban" not in text and "/hook/so-khcn" not in text, "a channel URL leaked into the log"
