"""Helpers shared by the tests/test_agent_*.py files and tests/test_prometheus_scrape.py (no
tests here): a local simulated HTTP system, config writing, running ``hcc-sentinel`` as a
subprocess, waiting for HTTP endpoints.  Everything on 127.0.0.1."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable
from tests.ports import free_port as _pick_port

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONIOENCODING": "utf-8", "PYTHONPATH": str(ROOT)}


def free_port() -> int:
    return _pick_port()


def agent_config(tmp: Path, app_port: int, agent_port: int, targets: str | None = None,
                 interval: str = "2s", extra_agent: str = "", name: str = "Phường Biên Hòa") -> Path:
    """Write an agent config probing the simulated system on ``app_port``; returns its path."""
    if targets is None:
        targets = f"""
          - id: portal-home
            name: "Trang chủ cổng DVC"
            system: portal
            http: {{url: "http://127.0.0.1:{app_port}/", first_byte_timeout: 1s}}
          - id: portal-api
            name: "API hồ sơ"
            system: portal
            http: {{url: "http://127.0.0.1:{app_port}/api/ho-so/1", first_byte_timeout: 1s}}
          - id: portal-tcp
            system: portal
            tcp: {{host: 127.0.0.1, port: {app_port}}}
        """
    lines = [
        "agent:",
        "  id: hcc-26068",
        f'  commune: {{code: "26068", name: "{name}", type: phuong}}',
        f"  listen: 127.0.0.1:{agent_port}",
        f"  data_dir: {tmp / 'data'}",
        "  startup_spread: 200ms",
    ]
    lines += ["  " + line for line in textwrap.dedent(extra_agent).strip("\n").splitlines() if line.strip()]
    lines += [
        f"defaults: {{interval: {interval}, timeout: 1500ms, slow_after: 800ms}}",
        "systems:",
        '  - {id: portal, name: "Cổng dịch vụ công", owner: so-khcn}',
        "targets:",
    ]
    text = "\n".join(lines) + "\n" + textwrap.indent(textwrap.dedent(targets).strip("\n"), "  ") + "\n"
    path = tmp / "agent.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def cli(*args: str, timeout: float = 60, **kw: Any) -> subprocess.CompletedProcess[str]:
    """Run ``python -m agent ARGS`` and wait."""
    return subprocess.run([sys.executable, "-m", "agent", *args], cwd=ROOT, env=ENV, capture_output=True,
                          text=True, encoding="utf-8", timeout=timeout, **kw)


def start_agent(config: Path, *extra: str) -> subprocess.Popen[str]:
    """Start ``hcc-sentinel run -c CONFIG`` in the background (stderr captured)."""
    return subprocess.Popen([sys.executable, "-m", "agent", "run", "-c", str(config), *extra], cwd=ROOT, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8")


def http(url: str, method: str = "GET", headers: dict[str, str] | None = None,
         timeout: float = 10) -> tuple[int, dict[str, str], bytes]:
    """A request to 127.0.0.1; returns (status, headers, body) also for 4xx/5xx."""
    req = urllib.request.Request(url, method=method, headers=headers or {}, data=b"" if method == "POST" else None)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def get_json(url: str, **kw: Any) -> Any:
    status, _, body = http(url, **kw)
    assert status == 200, (status, body)
    return json.loads(body)


def wait_for(predicate: Callable[[], Any], timeout: float = 30, interval: float = 0.2, what: str = "") -> Any:
    """Poll ``predicate`` until it returns a truthy value (exceptions count as false)."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            last = None
            if value:
                return value
        except Exception as exc:  # noqa: BLE001
            last = exc
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what or predicate}: {last!r}")


def metrics_text(port: int) -> str:
    return http(f"http://127.0.0.1:{port}/metrics")[2].decode("utf-8")


def stop_agent(proc: subprocess.Popen[str], sig: int | None = None, timeout: float = 20) -> tuple[int, str]:
    """Send SIGTERM (or ``sig``), wait, return (exit code, stderr)."""
    import signal
    if proc.poll() is None:
        proc.send_signal(sig or signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        raise AssertionError(f"agent did not stop: {err}")
    return proc.returncode, err
