"""One agent per data_dir: ``<data_dir>/agent.lock`` (fcntl.flock), exit 3 for a second ``run``;
the CLI tools keep working while the daemon holds the lock."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from agent.demo_app import ThreadedServer
from agent.runtime import AgentRuntime
from agent.store import StoreError
from test_agent_lib import agent_config, cli, free_port, get_json, start_agent, stop_agent, wait_for


@pytest.fixture(scope="module")
def app():
    s = ThreadedServer()
    s.start()
    yield s
    s.stop()


def _relisten(text: str, port: int) -> str:
    lines = [f"  listen: 127.0.0.1:{port}" if line.startswith("  listen: ") else line for line in text.splitlines()]
    return "\n".join(lines) + "\n"


def test_second_run_on_the_same_data_dir_exits_3(tmp_path, app):
    port1, port2 = free_port(), free_port()
    config = agent_config(tmp_path, app.port, port1)
    second = tmp_path / "second.yaml"
    second.write_text(_relisten(config.read_text(encoding="utf-8"), port2), encoding="utf-8")
    data = tmp_path / "data"

    first = start_agent(config)
    try:
        wait_for(lambda: get_json(f"http://127.0.0.1:{port1}/healthz")["status"] == "ok", what="first agent up")
        assert (data / "agent.lock").read_text().strip() == str(first.pid)

        other = start_agent(second)
        try:
            _, err = other.communicate(timeout=60)
        finally:
            if other.poll() is None:
                other.kill()
                other.communicate()
        assert other.returncode == 3, err
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1, err
        assert lines[0].endswith(f"data_dir {data} is used by another hcc-sentinel process (pid {first.pid})"), err
        assert "Traceback" not in err
        assert first.poll() is None  # the first one keeps running

        # the CLI tools act on the databases directly and never take the lock
        res = cli("incidents", "-c", str(config), "--all")
        assert res.returncode == 0, res.stderr
        res = cli("outbox", "-c", str(config))
        assert res.returncode == 0, res.stderr
        res = cli("silence", "add", "-c", str(config), "--author", "test", "--reason", "khóa", "--duration", "1h",
                  "--target", "portal-api")
        assert res.returncode == 0, res.stderr
        res = cli("silence", "list", "-c", str(config), "--json")
        assert res.returncode == 0 and len(json.loads(res.stdout)) == 1, res.stderr
        res = cli("ack", "999", "-c", str(config))
        assert "used by another" not in res.stderr
        today = dt.date.today().isoformat()
        res = cli("report", "sla", "--local", "-c", str(config), "--from", today, "--to", today,
                  "--out", str(tmp_path / "report"), "--format", "json", timeout=120)
        assert res.returncode == 0, res.stderr
        assert first.poll() is None
    finally:
        code, err = stop_agent(first)
    assert code == 0, err

    # released at exit: the second config can run now
    proc = start_agent(second)
    try:
        wait_for(lambda: get_json(f"http://127.0.0.1:{port2}/healthz")["status"] == "ok", what="second agent up")
        assert (data / "agent.lock").read_text().strip() == str(proc.pid)
    finally:
        code, err = stop_agent(proc)
    assert code == 0, err


async def test_runtime_releases_the_lock_at_stop(tmp_path, app):
    """In one process too: a second runtime on the same data_dir is refused while the first
    runs, and starts once the first has stopped (tests and the demo start runtimes in-process)."""
    config = agent_config(tmp_path, app.port, free_port())
    first = AgentRuntime(str(config))
    await first.start()
    try:
        with pytest.raises(StoreError, match=r"is used by another hcc-sentinel process \(pid \d+\)"):
            await AgentRuntime(str(config), serve=False).start()
        assert first.lock is not None and first.lock.held
    finally:
        await first.stop()
    again = AgentRuntime(str(config), serve=False)
    await again.start()
    await again.stop()
    from agent.runtime import DataDirLock

    lock = DataDirLock(tmp_path / "data")
    lock.acquire()
    lock.release()
