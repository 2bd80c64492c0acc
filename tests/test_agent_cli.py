"""``hcc-sentinel check / probe / run`` as a user runs them (subprocesses, 127.0.0.1 only)."""

from __future__ import annotations

import json
import signal
import sqlite3
import socket
import subprocess
import sys

import pytest

from agent.demo_app import ThreadedServer
from test_agent_lib import ENV, ROOT, agent_config, cli, free_port, http, start_agent, stop_agent, wait_for


@pytest.fixture(scope="module")
def app():
    server = ThreadedServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _reset_modes(app):
    app.set_modes(home="ok", search="ok", login="ok", api="ok")


# -- check ---------------------------------------------------------------------------------------
def test_check_example_config():
    res = cli("check", "-c", "configs/example.yaml")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == ("configs/example.yaml: OK — agent hcc-26068 (Phường Biên Hòa), "
                                  "13 targets in 8 systems")
    assert res.stderr == ""


BAD = """\
agent:
  id: hcc-26068
  commune: {code: "2606", name: "Phường Biên Hòa", type: phuong}
  max_concurrency: 0
defaults: {interval: 30s, timeout: 5s}
targets:
  - id: ok-target
    tcp: {host: 127.0.0.1, port: 9}
  - id: bad-target
    interval: 2s
    tcp:
      host: 127.0.0.1
      port: 99999
      colour: blue
"""


def test_check_bad_config_lines_and_exit_code(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(BAD, encoding="utf-8")
    res = cli("check", "-c", str(path))
    assert res.returncode == 2
    assert res.stdout == ""
    lines = res.stderr.strip().splitlines()
    assert all(line.startswith(f"{path}:") for line in lines), lines
    by_field = {line.split(": ")[1]: line for line in lines}
    assert by_field["agent.commune.code"].startswith(f"{path}:3: agent.commune.code: ")
    assert by_field["agent.max_concurrency"].startswith(f"{path}:4: ")
    assert by_field["targets[1].tcp.port"].startswith(f"{path}:13: ")
    assert by_field["targets[1].tcp.colour"].startswith(f"{path}:14: ")
    assert "unknown field" in by_field["targets[1].tcp.colour"]
    assert "Traceback" not in res.stderr


def test_check_yaml_syntax_error_and_missing_file(tmp_path):
    path = tmp_path / "syntax.yaml"
    path.write_text("agent:\n  id: [unclosed\n  commune: x\n", encoding="utf-8")
    res = cli("check", "-c", str(path))
    assert res.returncode == 2
    assert res.stderr.startswith(f"{path}:") and "(syntax)" in res.stderr
    res = cli("check", "-c", str(tmp_path / "missing.yaml"))
    assert res.returncode == 2 and "cannot read" in res.stderr


# -- probe ---------------------------------------------------------------------------------------
def test_probe_json_shape_and_exit_codes(tmp_path, app):
    config = agent_config(tmp_path, app.port, free_port())
    res = cli("probe", "-c", str(config), "--target", "portal-home", "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["target"] == "portal-home" and out["kind"] == "http"
    assert out["outcome"] == "ok" and out["reason"] == "ok" and out["success"] is True
    assert set(out["phases"]) == {"resolve", "connect", "tls", "processing", "transfer"}
    assert isinstance(out["started_at"], float) and out["duration_seconds"] >= 0
    assert out["http_status_code"] == 200
    assert out["target_info"] == {"id": "portal-home", "kind": "http", "name": "Trang chủ cổng DVC",
                                  "system": "portal", "owner": "so-khcn"}
    # the probe identified itself to the shared system, in ASCII
    headers = app.system.last_headers
    assert headers["User-Agent"] == "hcc-sentinel/0.1.0 (+commune 26068 Phuong Bien Hoa; agent hcc-26068)"
    assert headers["X-Synthetic-Probe"] == "hcc-sentinel; agent=hcc-26068; commune=26068"

    app.set_modes(api="error")
    res = cli("probe", "-c", str(config), "--target", "portal-api", "--json")
    assert res.returncode == 1
    out = json.loads(res.stdout)
    assert (out["outcome"], out["reason"], out["http_status_code"]) == ("error", "http_status", 503)

    app.set_modes(home="hang")
    res = cli("probe", "-c", str(config), "--target", "portal-home")
    assert res.returncode == 1
    assert res.stdout.startswith("portal-home: hang (treo) reason=timeout_first_byte")


def test_probe_unknown_target(tmp_path, app):
    config = agent_config(tmp_path, app.port, free_port())
    res = cli("probe", "-c", str(config), "--target", "nope", "--json")
    assert res.returncode == 2
    assert res.stdout == ""
    assert "no target 'nope'" in res.stderr and "portal-home" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


# -- run -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_run_serves_and_stops_cleanly(tmp_path, app, sig):
    port = free_port()
    config = agent_config(tmp_path, app.port, port)
    proc = start_agent(config)
    try:
        health = wait_for(lambda: json.loads(http(f"http://127.0.0.1:{port}/healthz")[2]), what="healthz")
        assert health["status"] == "ok" and health["agent_id"] == "hcc-26068" and health["targets"] == 3
        assert health["last_reload_ok"] is True
        wait_for(lambda: all(t["runs"] >= 1 for t in json.loads(
            http(f"http://127.0.0.1:{port}/api/targets")[2])["targets"]), what="first probes")
    finally:
        code, err = stop_agent(proc, sig)
    assert code == 0, err
    assert "Traceback" not in err
    assert "stopped" in err
    # the history was flushed on the way out
    con = sqlite3.connect(tmp_path / "data" / "history.db")
    assert con.execute("SELECT count(*) FROM results").fetchone()[0] >= 1


#: Imported by ``run`` only when the config (or an event) needs them: not for plain http/tcp targets.
LAZY_MODULES = ("jinja2", "apprise", "matplotlib", "numpy", "croniter", "aiosmtpd", "psutil", "tenacity",
                "cryptography")

_RUN_AND_LIST_MODULES = """
import asyncio, json, sys
from agent.cli import build_parser
from agent.config import load_config
from agent.runtime import AgentRuntime
build_parser()  # what `hcc-sentinel run` imports before the command runs

async def main():
    runtime = AgentRuntime(sys.argv[1], load_config(sys.argv[1]))
    await runtime.start()
    while not all(st.runs for st in runtime.scheduler.states.values()):
        await asyncio.sleep(0.1)
    await asyncio.sleep(1.2)  # a history flush and alert engine ticks
    await runtime.stop()

asyncio.run(main())
print(json.dumps(sorted(sys.modules)))
"""


def test_run_leaves_heavy_modules_unimported(tmp_path, app):
    """Memory goal (docs/runtime.md): an agent with http/tcp targets and alerting on never imports
    jinja2 (flow templates, messages, status page), apprise, croniter, tenacity, psutil (host
    kind), cryptography (TLS facts), nor the report's numpy/matplotlib."""
    config = agent_config(tmp_path, app.port, free_port())
    res = subprocess.run([sys.executable, "-c", _RUN_AND_LIST_MODULES, str(config)], cwd=ROOT, env=ENV,
                         capture_output=True, text=True, encoding="utf-8", timeout=60)
    assert res.returncode == 0, res.stderr
    modules = {name.split(".")[0] for name in json.loads(res.stdout)}
    assert "aiohttp" in modules and "agent" in modules
    assert sorted(modules & set(LAZY_MODULES)) == []


def test_run_refuses_corrupt_history_db(tmp_path, app):
    config = agent_config(tmp_path, app.port, free_port())
    data = tmp_path / "data"
    data.mkdir()
    (data / "history.db").write_bytes(b"this is not a database, just garbage\n" * 200)
    res = cli("run", "-c", str(config), timeout=30)
    assert res.returncode == 3
    assert "Traceback" not in res.stderr
    errors = [line for line in res.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "not a usable SQLite database" in errors[0] and "history.db" in errors[0]


def test_run_refuses_busy_port_and_bad_config(tmp_path, app):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        config = agent_config(tmp_path, app.port, busy.getsockname()[1])
        res = cli("run", "-c", str(config), timeout=30)
    assert res.returncode == 4
    assert "cannot listen on 127.0.0.1:" in res.stderr and "Traceback" not in res.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD, encoding="utf-8")
    res = cli("run", "-c", str(bad), timeout=30)
    assert res.returncode == 2 and f"{bad}:3: agent.commune.code:" in res.stderr


def test_help_lists_core_commands():
    res = cli("--help")
    assert res.returncode == 0
    for word in ("run", "check", "probe", "demo"):
        assert word in res.stdout
    res = cli("probe", "--help")
    assert "Exit 0 if ok/slow, 1 if error/hang, 2 if" in " ".join(res.stdout.split())
