"""The metric contract the central rules are built on, checked against a REAL agent.

A real ``hcc-sentinel run`` probes two targets on 127.0.0.1 (an uplink TCP check and an HTTP
"one-stop system" that answers 503); its /metrics must carry every family and label the rules
in configs/prometheus/rules/ use (docs/central.md "metric contract").  This is what lets the
end-to-end test simulate agents: the simulation serves the same contract.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from tests.ports import free_port as _pick_port

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "configs" / "prometheus" / "rules" / "hcc-sentinel.rules.yml"

#: family -> labels the central rules rely on (besides the file_sd target labels)
CONTRACT: dict[str, set[str]] = {
    "probe_success": {"target"},
    "probe_duration_seconds": {"target"},
    "probe_outcomes": {"target", "outcome", "reason"},          # counter: probe_outcomes_total
    "probe_latency_seconds": {"target"},                        # histogram (+ le)
    "probe_target_info": {"target", "kind", "system", "owner", "name"},
    "hcc_sentinel_target_state": {"target", "state"},
    "hcc_sentinel_agent_info": {"agent_id", "commune_code", "commune_name", "commune_type"},
    "hcc_sentinel_build_info": {"version"},
    "hcc_sentinel_config_last_reload_successful": set(),
    "hcc_sentinel_outbox_messages": set(),
    "hcc_sentinel_outbox_oldest_age_seconds": set(),
    "hcc_sentinel_scheduler_lag_seconds": set(),
}


def _free_port() -> int:
    return _pick_port()


def test_rules_use_only_contract_metrics():
    """Every raw (non-recorded) metric name in the rules is in the contract."""
    text = RULES.read_text(encoding="utf-8")
    exprs = " ".join(r["expr"] for g in yaml.safe_load(text)["groups"] for r in g["rules"])
    names = set(re.findall(r"\b((?:probe|hcc_sentinel)_[a-z_]+)\b", exprs))
    # probe_ssl_earliest_cert_expiry{target} is in the contract too, exported for TLS targets
    # only (blackbox_exporter's meaning); the agent below has none
    allowed = {"probe_ssl_earliest_cert_expiry"}
    for family in CONTRACT:
        allowed |= {family, f"{family}_total", f"{family}_bucket"}
    assert names - allowed == set(), names - allowed
    assert {"probe_outcomes_total", "probe_target_info", "probe_success", "probe_latency_seconds_bucket",
            "hcc_sentinel_target_state", "probe_ssl_earliest_cert_expiry", "hcc_sentinel_outbox_messages",
            "hcc_sentinel_outbox_oldest_age_seconds", "hcc_sentinel_config_last_reload_successful"} <= names


def test_real_agent_exposes_the_contract(tmp_path):
    listen, http_port = _free_port(), _free_port()
    # an always-listening TCP socket for the uplink check, and a tiny HTTP server answering 503
    uplink = socket.socket()
    uplink.bind(("127.0.0.1", 0))
    uplink.listen(16)
    server = subprocess.Popen([sys.executable, "-c", (
        "import http.server,sys\n"
        "class H(http.server.BaseHTTPRequestHandler):\n"
        "    def do_GET(self):\n"
        "        self.send_response(503); self.send_header('Content-Length','4'); self.end_headers(); self.wfile.write(b'down')\n"
        "    def log_message(self,*a): pass\n"
        f"http.server.HTTPServer(('127.0.0.1',{http_port}),H).serve_forever()\n")])
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(f"""
agent:
  id: hcc-26068
  commune: {{code: "26068", name: "Phường Biên Hoà", type: phuong}}
  listen: 127.0.0.1:{listen}
  data_dir: data
  startup_spread: 100ms
defaults: {{interval: 1s, timeout: 900ms, slow_after: 500ms, failure_threshold: 1}}
systems:
  - {{id: uplink, name: "Đường truyền của phường", owner: it-26068}}
  - {{id: motcua, name: "Hệ thống một cửa tỉnh", owner: so-khcn}}
targets:
  - {{id: uplink-tcp, system: uplink, uplink: true, tcp: {{host: 127.0.0.1, port: {uplink.getsockname()[1]}}}}}
  - {{id: motcua-home, system: motcua, depends_on: [uplink-tcp], http: {{url: "http://127.0.0.1:{http_port}/"}}}}
alerting:
  units:
    - {{id: it-26068, name: "Bộ phận CNTT Phường Biên Hoà"}}
    - {{id: so-khcn, name: "Sở Khoa học và Công nghệ"}}
""", encoding="utf-8")
    agent = subprocess.Popen([sys.executable, "-m", "agent", "run", "-c", str(cfg), "--log-level", "warning"],
                             cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        text = ""
        while time.monotonic() < deadline:
            if agent.poll() is not None:
                pytest.fail("agent exited: " + agent.stdout.read().decode(errors="replace"))
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{listen}/metrics", timeout=5) as r:
                    text = r.read().decode("utf-8")
            except OSError:
                time.sleep(0.3)
                continue
            counters = [line for line in text.splitlines() if line.startswith("probe_outcomes_total{")]
            if (any('target="motcua-home"' in c and 'outcome="error"' in c for c in counters)
                    and any('target="uplink-tcp"' in c and 'outcome="ok"' in c for c in counters)
                    and "hcc_sentinel_target_state{" in text):
                break
            time.sleep(0.3)
        families = {f.name: f for f in text_string_to_metric_families(text)}
        for family, labels in CONTRACT.items():
            assert family in families, f"{family} missing from the agent's /metrics"
            samples = families[family].samples
            assert samples, f"{family} has no sample"
            have = set().union(*(set(s.labels) for s in samples)) - {"le"}
            assert labels <= have, f"{family}: labels {sorted(have)}, the rules need {sorted(labels)}"
        info = {s.labels["target"]: s.labels for s in families["probe_target_info"].samples}
        assert info["uplink-tcp"]["system"] == "uplink" and info["motcua-home"]["owner"] == "so-khcn"
        outcomes = {(s.labels["target"], s.labels["outcome"]) for s in families["probe_outcomes"].samples
                    if s.name == "probe_outcomes_total"}
        assert ("uplink-tcp", "ok") in outcomes and ("motcua-home", "error") in outcomes
        states = {s.labels["state"] for s in families["hcc_sentinel_target_state"].samples}
        assert {"up", "down", "maintenance"} <= states
        agent_info = families["hcc_sentinel_agent_info"].samples[0].labels
        assert agent_info["commune_name"] == "Phường Biên Hoà"
    finally:
        agent.terminate()
        server.terminate()
        for p in (agent, server):
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
        uplink.close()
