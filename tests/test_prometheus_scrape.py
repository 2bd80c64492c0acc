"""A real Prometheus (Debian's /usr/bin/prometheus) scrapes a running agent: every target's
probe_success arrives, Vietnamese labels intact.  Skips only when prometheus is absent (fails
under CI=true, see conftest.require_binary)."""

from __future__ import annotations

import json
import subprocess
import urllib.parse

import pytest

from agent.demo_app import ThreadedServer
from conftest import require_binary
from test_agent_lib import agent_config, free_port, http, start_agent, stop_agent, wait_for

pytestmark = pytest.mark.prometheus


def test_prometheus_scrapes_the_agent(tmp_path):
    prometheus = require_binary("prometheus")
    app = ThreadedServer()
    app.start()
    agent_port, prom_port = free_port(), free_port()
    targets = f"""
      - id: portal-home
        name: "Trang chủ"
        system: portal
        http: {{url: "http://127.0.0.1:{app.port}/", first_byte_timeout: 1s}}
      - id: portal-search
        system: portal
        http: {{url: "http://127.0.0.1:{app.port}/tra-cuu?q=khai+sinh", first_byte_timeout: 1s}}
      - id: portal-api
        system: portal
        http: {{url: "http://127.0.0.1:{app.port}/api/ho-so/7", first_byte_timeout: 1s}}
      - id: portal-tcp
        system: portal
        tcp: {{host: 127.0.0.1, port: {app.port}}}
      - id: nothing-listens
        system: portal
        tcp: {{host: 127.0.0.1, port: {free_port()}}}
    """
    config = agent_config(tmp_path, app.port, agent_port, targets=targets)
    prom_config = tmp_path / "prometheus.yml"
    prom_config.write_text(
        "global: {scrape_interval: 1s, scrape_timeout: 900ms, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        "  - job_name: hcc-sentinel\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{agent_port}'], labels: {{commune: '26068'}}}}]\n",
        encoding="utf-8")
    agent = start_agent(config)
    prom = subprocess.Popen(
        [prometheus, f"--config.file={prom_config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{prom_port}", "--log.level=warn"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        def query(expr: str) -> list:
            url = f"http://127.0.0.1:{prom_port}/api/v1/query?query=" + urllib.parse.quote(expr)
            status, _, body = http(url)
            assert status == 200, body
            return json.loads(body)["data"]["result"]

        expected = {"portal-home", "portal-search", "portal-api", "portal-tcp", "nothing-listens"}
        found = wait_for(lambda: (lambda r: r if {x["metric"]["target"] for x in r} == expected else None)(
            query('probe_success{job="hcc-sentinel"}')), timeout=60, interval=0.5, what="probe_success in Prometheus")
        values = {x["metric"]["target"]: float(x["value"][1]) for x in found}
        assert values["nothing-listens"] == 0 and values["portal-home"] == 1
        assert all(x["metric"]["commune"] == "26068" for x in found)
        up = query('up{job="hcc-sentinel"}')
        assert up and up[0]["value"][1] == "1"
        info = query("hcc_sentinel_agent_info")
        assert info[0]["metric"]["commune_name"] == "Phường Biên Hòa"
        names = query('probe_target_info{target="portal-home"}')
        assert names[0]["metric"]["name"] == "Trang chủ"
        wait_for(lambda: query('sum(rate(probe_outcomes_total{outcome="error"}[30s])) > 0'), timeout=30,
                 what="rate over counters")
    finally:
        prom.terminate()
        try:
            prom.wait(20)
        except subprocess.TimeoutExpired:
            prom.kill()
        code, err = stop_agent(agent)
        app.stop()
    assert code == 0, err
