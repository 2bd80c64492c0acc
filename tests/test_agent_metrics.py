"""/metrics: exposition parses in both formats, blackbox_exporter names, UTF-8 NFC labels,
counters and histogram, targets removed on reload vanish, extra collectors."""

from __future__ import annotations

import asyncio
import time
import unicodedata

import aiohttp
import pytest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.openmetrics.parser import text_string_to_metric_families as om_parse
from prometheus_client.parser import text_string_to_metric_families

from agent.demo_app import ThreadedServer
from agent.metrics import MetricsState, RuntimeCollector, TargetMeta, exposition, fnv1a32, make_registry
from agent.runtime import AgentRuntime
from probes.base import Outcome, ProbeResult
from test_agent_lib import agent_config, free_port

NAME_NFD = unicodedata.normalize("NFD", "Phường Biên Hòa")


@pytest.fixture(scope="module")
def app():
    server = ThreadedServer()
    server.start()
    yield server
    server.stop()


def parse(text: str) -> dict[str, list]:
    out: dict[str, list] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, []).append(s)
    return out


def value(samples: dict, metric: str, **labels) -> float:
    found = [s.value for s in samples.get(metric, []) if all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(found) == 1, (metric, labels, samples.get(metric))
    return found[0]


async def scrape(port: int, accept: str | None = None) -> tuple[str, str]:
    headers = {"Accept": accept} if accept else {}
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{port}/metrics", headers=headers) as resp:
            assert resp.status == 200
            return await resp.text(encoding="utf-8"), resp.headers["Content-Type"]


async def wait_probed(rt: AgentRuntime, n: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while sum(1 for c in rt.metrics.counters.values() if c.last is not None) < n:
        assert time.monotonic() < deadline, "targets not probed in time"
        await asyncio.sleep(0.1)


async def test_exposition_bbe_names_utf8_and_counters(tmp_path, app):
    app.set_modes(home="ok", api="error")
    port = free_port()
    config_path = agent_config(tmp_path, app.port, port, name=NAME_NFD)
    rt = AgentRuntime(str(config_path))
    await rt.start()
    try:
        await wait_probed(rt, 3)
        text, ctype = await scrape(port)
        assert ctype.startswith("text/plain; version=0.0.4")
        m = parse(text)
        assert value(m, "probe_success", target="portal-home") == 1
        assert value(m, "probe_success", target="portal-api") == 0
        assert value(m, "probe_http_status_code", target="portal-api") == 503
        assert value(m, "probe_http_status_code", target="portal-home") == 200
        for phase in ("resolve", "connect", "tls", "processing", "transfer"):
            assert value(m, "probe_http_duration_seconds", target="portal-home", phase=phase) >= 0
        assert value(m, "probe_http_ssl", target="portal-home") == 0
        assert value(m, "probe_http_uncompressed_body_length", target="portal-home") > 100
        assert value(m, "probe_duration_seconds", target="portal-tcp") >= 0
        assert value(m, "probe_ip_protocol", target="portal-tcp") == 4
        assert value(m, "probe_ip_addr_hash", target="portal-tcp") == fnv1a32("127.0.0.1")
        assert value(m, "probe_outcome", target="portal-api", outcome="error") == 1
        assert value(m, "probe_outcome", target="portal-api", outcome="ok") == 0
        assert value(m, "probe_outcomes_total", target="portal-api", outcome="error", reason="http_status") >= 1
        assert value(m, "probe_latency_seconds_count", target="portal-home") >= 1
        assert value(m, "probe_latency_seconds_bucket", target="portal-home", le="60.0") >= 1
        assert value(m, "probe_target_info", target="portal-home", kind="http", system="portal",
                     owner="so-khcn", name="Trang chủ cổng DVC") == 1
        assert value(m, "hcc_sentinel_build_info", version="0.1.0") == 1
        assert value(m, "hcc_sentinel_config_last_reload_successful") == 1
        assert value(m, "hcc_sentinel_scheduler_lag_seconds_count") >= 3
        assert "hcc_sentinel_probes_in_flight" in m
        assert value(m, "hcc_sentinel_probe_overruns_total", target="portal-home") == 0
        # Vietnamese label values: UTF-8, NFC even though the config spelled the name in NFD
        info = m["hcc_sentinel_agent_info"][0].labels
        assert info == {"agent_id": "hcc-26068", "commune_code": "26068", "commune_name": "Phường Biên Hòa",
                        "commune_type": "phuong"}
        assert unicodedata.is_normalized("NFC", info["commune_name"])
        assert "Phường Biên Hòa".encode() in text.encode("utf-8")
        assert NAME_NFD.encode() not in text.encode("utf-8")

        om_text, om_type = await scrape(port, "application/openmetrics-text; version=1.0.0; charset=utf-8")
        assert om_type.startswith("application/openmetrics-text")
        assert om_text.endswith("# EOF\n")
        fams = {f.name: f for f in om_parse(om_text)}
        assert fams["probe_outcomes"].type == "counter"
        assert fams["probe_latency_seconds"].type == "histogram"
        assert fams["hcc_sentinel_agent"].type == "info"

        # gzip for Prometheus' Accept-Encoding
        async with aiohttp.ClientSession(auto_decompress=False) as session:
            async with session.get(f"http://127.0.0.1:{port}/metrics",
                                   headers={"Accept-Encoding": "gzip"}) as resp:
                assert resp.headers.get("Content-Encoding") == "gzip"
    finally:
        await rt.stop()


async def test_removed_target_vanishes_and_counters_survive_reload(tmp_path, app):
    app.set_modes(home="ok", api="ok")
    port = free_port()
    config_path = agent_config(tmp_path, app.port, port)
    rt = AgentRuntime(str(config_path))
    await rt.start()
    try:
        await wait_probed(rt, 3)
        before = parse((await scrape(port))[0])
        n_home = value(before, "probe_outcomes_total", target="portal-home", outcome="ok", reason="ok")
        text = config_path.read_text(encoding="utf-8")
        cut = text.index("  - id: portal-tcp")
        config_path.write_text(text[:cut], encoding="utf-8")
        result = await rt.reload()
        assert result.ok and result.removed == ["portal-tcp"] and not result.changed
        after_text = (await scrape(port))[0]
        assert "portal-tcp" not in after_text
        after = parse(after_text)
        assert value(after, "probe_outcomes_total", target="portal-home", outcome="ok", reason="ok") >= n_home
    finally:
        await rt.stop()


async def test_extra_collector_and_listener(tmp_path, app):
    class AlertsCollector:
        def collect(self):
            g = GaugeMetricFamily("hcc_sentinel_alerts_outbox_depth", "test", value=7)
            yield g

    seen: list[ProbeResult] = []

    async def listener(r: ProbeResult) -> None:
        seen.append(r)

    port = free_port()
    rt = AgentRuntime(str(agent_config(tmp_path, app.port, port)))
    rt.add_collector(AlertsCollector())
    rt.add_listener(listener)
    await rt.start()
    try:
        await wait_probed(rt, 3)
        assert {r.target for r in seen} >= {"portal-home", "portal-api", "portal-tcp"}
        m = parse((await scrape(port))[0])
        assert value(m, "hcc_sentinel_alerts_outbox_depth") == 7
    finally:
        await rt.stop()


async def test_facts_of_other_kinds_map_to_bbe_names():
    st = MetricsState()
    st.set_targets({k: TargetMeta(kind=k) for k in ("tls", "dns", "icmp", "host")})
    now = time.time()

    def r(kind: str, facts: dict, phases: dict | None = None) -> ProbeResult:
        return ProbeResult(target=kind, kind=kind, outcome=Outcome.OK, reason="ok", detail="", started_at=now,
                           duration_seconds=0.1, phases=phases or {}, facts=facts)

    await st.observe(r("tls", {"tls_version": "TLSv1.3", "cert_not_after": 1900000000, "ip_address": "::1"}))
    await st.observe(r("dns", {"dns_answer_rrs": 2, "dns_authority_rrs": 0, "dns_additional_rrs": 1},
                       {"resolve": 0.004}))
    await st.observe(r("icmp", {"icmp_loss_ratio": 0.25, "icmp_rtt_avg_seconds": 0.012, "icmp_reply_hop_limit": 64},
                       {"resolve": 0.001}))
    await st.observe(r("host", {"host_cpu_usage_ratio": 0.5, "host_memory_used_ratio": 0.25,
                                "host_disk_used_ratio": {"/": 0.5, "/var/lib/hcc-sentinel": 0.75},
                                "host_network_errors_total": {"eth0": {"rx": 3, "tx": 1}},
                                "host_clock_synchronized": True}))
    body, _ = exposition(make_registry(st, process_metrics=False), None)
    m = parse(body.decode())
    assert value(m, "probe_tls_version_info", target="tls", version="TLSv1.3") == 1
    assert value(m, "probe_ssl_earliest_cert_expiry", target="tls") == 1900000000
    assert value(m, "probe_ip_protocol", target="tls") == 6
    assert value(m, "probe_dns_answer_rrs", target="dns") == 2
    assert value(m, "probe_dns_lookup_time_seconds", target="dns") == 0.004
    assert value(m, "probe_icmp_packet_loss_ratio", target="icmp") == 0.25
    assert value(m, "probe_icmp_duration_seconds", target="icmp", phase="rtt") == 0.012
    assert value(m, "probe_icmp_reply_hop_limit", target="icmp") == 64
    assert value(m, "hcc_sentinel_host_cpu_usage_ratio", target="host") == 0.5
    assert value(m, "hcc_sentinel_host_disk_used_ratio", target="host", path="/var/lib/hcc-sentinel") == 0.75
    assert value(m, "hcc_sentinel_host_network_errors_total", target="host", interface="eth0", direction="rx") == 3
    assert value(m, "hcc_sentinel_host_clock_synchronized", target="host") == 1
    assert "probe_http_status_code" not in m
    # a result of a target no longer configured is ignored
    await st.observe(r("gone", {}))
    assert "gone" not in exposition(make_registry(st, process_metrics=False), None)[0].decode()
    assert list(RuntimeCollector(st).describe()) == []
