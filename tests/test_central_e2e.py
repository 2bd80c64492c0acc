"""End to end, all real processes on 127.0.0.1 except the agents:

    simulated agents (5 communes, one /metrics port each)  --scrape-->  prometheus (Debian)
      --alerts-->  prometheus-alertmanager (Debian)  --webhook-->  hcc-sentinel relay (subprocess)
      --apprise json://-->  a webhook receiver standing for the units' channels

SIMULATION: the agents are simulated by one process (this test) that serves the agent metric
contract of docs/central.md (probe_outcomes_total, probe_success, probe_target_info,
probe_latency_seconds, hcc_sentinel_* ...) for five communes on five ports, each commune's
probes succeeding or failing as the scenario says.  Everything downstream is the real thing:
the configs come from ``fleet render`` of the real template for the first five communes of the
inventory, and the committed rules run with their windows scaled down (5m -> 10s, hold-down
15m -> 20s, ``for:`` minutes -> seconds, evaluation every second; the SLO burn-rate group is
left out, see :func:`scale_rules`).

Scenario (about a minute):
1. one commune's uplink is cut (every probe from it fails): exactly one message, to that
   commune's IT unit, none to anyone else;
2. the one-stop system (motcua) fails from every commune: exactly one message, to its owner
   (Sở Khoa học và Công nghệ), no per-commune message.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web

from agent.fleet import render_fleet
from conftest import require_binary
from tests.ports import free_port as _pick_port

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "configs" / "prometheus" / "rules" / "hcc-sentinel.rules.yml"

pytestmark = [pytest.mark.prometheus, pytest.mark.alertmanager, pytest.mark.timeout(300)]

TARGETS = {  # target -> (system, kind, owner or None = the commune's unit)
    "uplink-dns": ("uplink", "dns", None),
    "motcua-home": ("motcua", "http", "so-khcn"),
    "dvcqg-home": ("dvcqg", "http", "so-khcn"),
}
#: scaled rule parameters for the test
RANGES = {"5m": "10s", "15m": "20s"}
FORS = {"2m": "2s", "3m": "3s", "5m": "5s", "10m": "10s", "15m": "15s"}


def _free_port() -> int:
    return _pick_port()


# ---------------------------------------------------------------------------------------------
# simulated agents
# ---------------------------------------------------------------------------------------------


class SimAgent:
    """One commune's agent as Prometheus sees it: counters that grow with every (simulated)
    probe, every 0.25 s per target."""

    def __init__(self, code: str, name: str, ctype: str, port: int) -> None:
        self.code, self.name, self.ctype, self.port = code, name, ctype, port
        self.failing: set[str] = set()
        self.ok = {t: 0 for t in TARGETS}
        self.err = {t: 0 for t in TARGETS}
        self.last_ok = {t: True for t in TARGETS}
        self.buckets = {t: {le: 0 for le in ("0.25", "1", "3", "5", "+Inf")} for t in TARGETS}
        self.lat_sum = {t: 0.0 for t in TARGETS}

    def tick(self) -> None:
        for t in TARGETS:
            bad = t in self.failing
            if bad:
                self.err[t] += 1
            else:
                self.ok[t] += 1
            self.last_ok[t] = not bad
            latency = 5.0 if bad else 0.1
            for le in self.buckets[t]:
                if le == "+Inf" or latency <= float(le):
                    self.buckets[t][le] += 1
            self.lat_sum[t] += latency

    def metrics(self) -> str:
        out = ["# TYPE hcc_sentinel_agent_info gauge",
               f'hcc_sentinel_agent_info{{agent_id="hcc-{self.code}",commune_code="{self.code}",'
               f'commune_name="{self.name}",commune_type="{self.ctype}"}} 1',
               "# TYPE hcc_sentinel_build_info gauge", 'hcc_sentinel_build_info{version="0.1.0"} 1',
               "# TYPE hcc_sentinel_config_last_reload_successful gauge", "hcc_sentinel_config_last_reload_successful 1",
               "# TYPE hcc_sentinel_outbox_messages gauge", "hcc_sentinel_outbox_messages 0",
               "# TYPE hcc_sentinel_outbox_oldest_age_seconds gauge", "hcc_sentinel_outbox_oldest_age_seconds 0",
               "# TYPE hcc_sentinel_scheduler_lag_seconds gauge", "hcc_sentinel_scheduler_lag_seconds 0.01",
               "# TYPE probe_target_info gauge"]
        for t, (system, kind, owner) in TARGETS.items():
            out.append(f'probe_target_info{{target="{t}",kind="{kind}",system="{system}",'
                       f'owner="{owner or "it-" + self.code}",name="{t}"}} 1')
        out.append("# TYPE probe_success gauge")
        out += [f'probe_success{{target="{t}"}} {int(self.last_ok[t])}' for t in TARGETS]
        out.append("# TYPE probe_duration_seconds gauge")
        out += [f'probe_duration_seconds{{target="{t}"}} {0.1 if self.last_ok[t] else 5.0}' for t in TARGETS]
        out.append("# TYPE hcc_sentinel_target_state gauge")
        for t in TARGETS:
            for state in ("up", "degraded", "down", "maintenance", "unreachable"):
                on = (state == "up") == self.last_ok[t] if state in ("up", "down") else False
                out.append(f'hcc_sentinel_target_state{{target="{t}",state="{state}"}} {int(on)}')
        out.append("# TYPE probe_outcomes_total counter")
        for t in TARGETS:
            out.append(f'probe_outcomes_total{{target="{t}",outcome="ok",reason="ok"}} {self.ok[t]}')
            if self.err[t]:  # created at the first failure, like the real agent's counters
                out.append(f'probe_outcomes_total{{target="{t}",outcome="error",reason="refused"}} {self.err[t]}')
        out.append("# TYPE probe_latency_seconds histogram")
        for t in TARGETS:
            for le, n in self.buckets[t].items():
                out.append(f'probe_latency_seconds_bucket{{target="{t}",le="{le}"}} {n}')
            out.append(f'probe_latency_seconds_sum{{target="{t}"}} {self.lat_sum[t]}')
            out.append(f'probe_latency_seconds_count{{target="{t}"}} {self.buckets[t]["+Inf"]}')
        return "\n".join(out) + "\n"


class Receiver:
    """The units' channels: apprise json:// posts, recorded by path (= unit id)."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.posts: list[tuple[float, str, dict[str, Any]]] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.posts.append((time.monotonic(), request.path.strip("/"), await request.json()))
        return web.Response(text="ok")

    def problems(self, unit: str | None = None, since: float = 0.0) -> list[dict[str, Any]]:
        """Problem messages (not 'resolved') received after ``since``, for ``unit`` or all."""
        return [p for t, u, p in self.posts
                if t >= since and (unit is None or u == unit) and not p["title"].startswith("[ĐÃ KHÔI PHỤC]")]


# ---------------------------------------------------------------------------------------------
# configs
# ---------------------------------------------------------------------------------------------


def scale_rules(data: dict[str, Any]) -> dict[str, Any]:
    """The committed rules with short windows: group intervals 1s, ranges and ``for`` scaled.

    The SLO group is left out: its 30m..30d windows hold only a minute of history here, so
    "3 days" would mean "since the test started" and the budget alerts would fire at the first
    failed probe.  They are covered by configs/prometheus/tests/burn.test.yml with full windows.
    """
    data["groups"] = [g for g in data["groups"] if g["name"] != "hcc-sentinel-slo"]
    for group in data["groups"]:
        group["interval"] = "1s"
        for rule in group["rules"]:
            expr = rule["expr"]
            for a, b in RANGES.items():
                expr = expr.replace(f"[{a}]", f"[{b}]")
            rule["expr"] = expr
            if "for" in rule:
                rule["for"] = FORS.get(rule["for"], rule["for"])
    return data


def build(tmp: Path, receiver_port: int) -> dict[str, Any]:
    communes = (ROOT / "configs" / "communes.csv").read_text(encoding="utf-8").splitlines()[:6]
    inv = tmp / "communes.csv"
    inv.write_text("\n".join(communes) + "\n", encoding="utf-8")
    rows = [line.split(",") for line in communes[1:]]
    ports = {r[0]: _free_port() for r in rows}
    relay_port = _free_port()
    secrets = tmp / "secrets"
    secrets.mkdir()
    overrides = {"defaults": {"contacts": [f"${{file:{secrets}/it-{{{{ commune.code }}}}.url}}"]},
                 "communes": {code: {"scrape_address": f"127.0.0.1:{port}"} for code, port in ports.items()}}
    (tmp / "overrides.yaml").write_text(yaml.safe_dump(overrides, allow_unicode=True), encoding="utf-8")
    central = {
        "default_unit": "so-khcn", "relay_url": f"http://127.0.0.1:{relay_port}",
        "outage_min_share": 0.3, "outage_min_communes": 3,
        "system_owners": {"uplink": "so-khcn", "host": "so-khcn"},
        "system_names": {"uplink": "Đường truyền các xã, phường"},
        "alertmanager": {"group_wait": "1s", "group_interval": "5s", "repeat_interval": "1h"},
        "relay": {"listen": f"127.0.0.1:{relay_port}", "data_dir": str(tmp / "relay-data")},
    }
    (tmp / "central.yaml").write_text(yaml.safe_dump(central, allow_unicode=True), encoding="utf-8")
    render = render_fleet(inv, ROOT / "configs" / "fleet" / "agent.template.yaml", tmp / "overrides.yaml",
                          tmp / "central.yaml")
    out = tmp / "fleet"
    render.write(out)
    # the units' channels: every unit's apprise URL is the receiver, path = unit id
    relay_text = (out / "relay" / "relay.yaml").read_text(encoding="utf-8").replace(
        "/etc/hcc-sentinel/secrets/", f"{secrets}/")
    (out / "relay" / "relay.yaml").write_text(relay_text, encoding="utf-8")
    for ref in set(re.findall(r"\$\{file:([^}]+)\}", relay_text)):
        Path(ref).write_text(f"json://127.0.0.1:{receiver_port}/{Path(ref).stem}\n", encoding="utf-8")
    # Prometheus: the committed rules (scaled) + the rendered constants (scaled) + file_sd
    prom = tmp / "prometheus"
    (prom / "rules").mkdir(parents=True)
    for src in (RULES, out / "prometheus" / "rules" / "fleet.rules.yml"):
        data = scale_rules(yaml.safe_load(src.read_text(encoding="utf-8")))
        (prom / "rules" / src.name).write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    shutil.copytree(out / "prometheus" / "file_sd", prom / "file_sd")
    am_port, prom_port = _free_port(), _free_port()
    (prom / "prometheus.yml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "scrape_timeout": "900ms", "evaluation_interval": "1s"},
        "rule_files": ["rules/*.yml"],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{am_port}"]}]}]},
        "scrape_configs": [{"job_name": "hcc-sentinel", "file_sd_configs": [{"files": ["file_sd/*.json"]}]}],
    }), encoding="utf-8")
    return {"rows": rows, "ports": ports, "relay_port": relay_port, "am_port": am_port, "prom_port": prom_port,
            "prom_dir": prom, "am_config": out / "alertmanager" / "alertmanager.yml",
            "relay_config": out / "relay" / "relay.yaml"}


# ---------------------------------------------------------------------------------------------
# processes
# ---------------------------------------------------------------------------------------------


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


async def _wait_http(url: str, procs: list[subprocess.Popen[bytes]], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            await asyncio.to_thread(urllib.request.urlopen, url, None, 2)
            return
        except OSError:
            pass
        for p in procs:
            if p.poll() is not None:
                raise RuntimeError(f"{p.args[0]} exited with {p.returncode}")
        if time.monotonic() > deadline:
            raise TimeoutError(url)
        await asyncio.sleep(0.2)


def _query(prom_port: int, expr: str) -> list[dict[str, Any]]:
    q = urllib.parse.urlencode({"query": expr})
    return _get(f"http://127.0.0.1:{prom_port}/api/v1/query?{q}")["data"]["result"]


async def _until(pred, timeout: float, what: str, every: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(pred):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(every)


async def test_end_to_end_one_message_per_incident(tmp_path):
    prometheus = require_binary("prometheus")
    alertmanager = require_binary("prometheus-alertmanager")
    receiver = Receiver()
    cfg = build(tmp_path, receiver.port)
    agents = [SimAgent(r[0], r[5] or r[1], r[4] or r[2], cfg["ports"][r[0]]) for r in cfg["rows"]]

    runners: list[web.AppRunner] = []
    for agent in agents:
        app = web.Application()
        async def metrics(_request: web.Request, a: SimAgent = agent) -> web.Response:
            return web.Response(text=a.metrics(), content_type="text/plain")
        app.router.add_get("/metrics", metrics)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", agent.port).start()
        runners.append(runner)
    rapp = web.Application()
    rapp.router.add_post("/{unit}", receiver.handle)
    rrunner = web.AppRunner(rapp, access_log=None)
    await rrunner.setup()
    await web.TCPSite(rrunner, "127.0.0.1", receiver.port).start()
    runners.append(rrunner)

    async def ticker() -> None:
        while True:
            for a in agents:
                a.tick()
            await asyncio.sleep(0.25)
    tick_task = asyncio.ensure_future(ticker())

    logs = {name: open(tmp_path / f"{name}.log", "wb") for name in ("prometheus", "alertmanager", "relay")}
    procs = [
        subprocess.Popen([alertmanager, f"--config.file={cfg['am_config']}", f"--storage.path={tmp_path / 'am'}",
                          f"--web.listen-address=127.0.0.1:{cfg['am_port']}", "--cluster.listen-address=",
                          "--log.level=info"], stdout=logs["alertmanager"], stderr=subprocess.STDOUT),
        subprocess.Popen([sys.executable, "-m", "agent", "relay", "-c", str(cfg["relay_config"]), "--log-level", "debug"],
                         cwd=ROOT, stdout=logs["relay"], stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"}),
        subprocess.Popen([prometheus, f"--config.file={cfg['prom_dir'] / 'prometheus.yml'}",
                          f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{cfg['prom_port']}",
                          "--rules.alert.resend-delay=1s", "--log.level=warn"],
                         stdout=logs["prometheus"], stderr=subprocess.STDOUT),
    ]
    prom_port = cfg["prom_port"]
    try:
        await _wait_http(f"http://127.0.0.1:{cfg['am_port']}/-/ready", procs)
        await _wait_http(f"http://127.0.0.1:{cfg['relay_port']}/healthz", procs)
        await _wait_http(f"http://127.0.0.1:{prom_port}/-/ready", procs)
        # all five communes in the quorum, the constants loaded
        await _until(lambda: len(_query(prom_port, "hcc:commune:uplink_ok == 1")) == 5, 60, "a full quorum")
        await _until(lambda: bool(_query(prom_port, "hcc:config:outage_min_communes")), 30, "the fleet constants")
        assert _query(prom_port, 'hcc:system:communes_quorum{system="motcua"}')[0]["value"][1] == "5"
        assert receiver.posts == []

        # --- 1. one commune's uplink is cut ------------------------------------------------
        cut = agents[1]
        t1 = time.monotonic()
        cut.failing = set(TARGETS)
        await _until(lambda: len(receiver.problems(since=t1)) >= 1, 60, "the link-down message")
        await asyncio.sleep(8)  # anything else would arrive by now (for: 2-10 s, group_wait 1 s)
        got = receiver.problems(since=t1)
        assert [(p["title"]) for p in got] == [
            f"[MẤT KẾT NỐI] {cut.name}: mất kết nối đường truyền của xã / commune link lost"], got
        assert [u for _t, u, p in receiver.posts if _t >= t1 and p in got] == [f"it-{cut.code}"]
        assert f"(mã {cut.code})" in got[0]["message"]
        # the commune is out of the quorum: the system is not counted down
        assert _query(prom_port, 'hcc:system:communes_quorum{system="motcua"}')[0]["value"][1] == "4"
        assert _query(prom_port, 'hcc:system:communes_failing{system="motcua"}')[0]["value"][1] == "0"
        cut.failing = set()

        # --- 2. the one-stop system fails from every commune -------------------------------
        await _until(lambda: len(_query(prom_port, "hcc:commune:uplink_ok == 1")) == 5, 60, "the quorum back")
        t2 = time.monotonic()
        for a in agents:
            a.failing = {"motcua-home"}
        await _until(lambda: len(receiver.problems(since=t2)) >= 1, 60, "the central-outage message")
        await asyncio.sleep(10)
        got = receiver.problems(since=t2)
        assert len(got) == 1, json.dumps([(p["title"], p["message"][:1500]) for p in got], ensure_ascii=False, indent=1)
        assert [u for _t, u, p in receiver.posts if _t >= t2 and p in got] == ["so-khcn"]
        msg = got[0]
        assert msg["title"].startswith("[SỰ CỐ] Giám sát tập trung tỉnh Đồng Nai: "
                                       "Hệ thống giải quyết thủ tục hành chính tỉnh (một cửa)")
        assert "lỗi từ 5/5 xã, phường có đường truyền tốt" in msg["message"]
        # the per-commune alerts were held down, not merely unsent
        alerts = _get(f"http://127.0.0.1:{prom_port}/api/v1/alerts")["data"]["alerts"]
        firing = sorted(a["labels"]["alertname"] for a in alerts if a["state"] == "firing")
        assert "CommuneSystemDown" not in firing and "SystemOutageCentral" in firing, firing
    finally:
        tick_task.cancel()
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
        for f in logs.values():
            f.close()
        for r in runners:
            await r.cleanup()
