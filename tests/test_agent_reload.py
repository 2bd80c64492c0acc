"""Config reload on a real ``hcc-sentinel run``: SIGHUP and POST /-/reload, good and bad files."""

from __future__ import annotations

import json
import signal

import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent.demo_app import ThreadedServer
from test_agent_lib import agent_config, cli, free_port, http, metrics_text, start_agent, stop_agent, wait_for

NEW_TARGETS = """
  - id: portal-home
    name: "Trang chủ cổng DVC"
    system: portal
    http: {{url: "http://127.0.0.1:{port}/", first_byte_timeout: 800ms}}
  - id: portal-login
    name: "Đăng nhập"
    system: portal
    http: {{url: "http://127.0.0.1:{port}/dang-nhap", first_byte_timeout: 800ms}}
"""


def samples(text: str, name: str) -> dict[str, float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name:
                out[s.labels.get("target", "")] = s.value
    return out


@pytest.fixture(scope="module")
def app():
    server = ThreadedServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def agent(tmp_path, app):
    port = free_port()
    config = agent_config(tmp_path, app.port, port, interval="1s", extra_agent="")
    # 1 s interval needs a shorter timeout than the helper's default
    config.write_text(config.read_text().replace("timeout: 1500ms", "timeout: 900ms").replace(
        "slow_after: 800ms", "slow_after: 500ms").replace("first_byte_timeout: 1s", "first_byte_timeout: 800ms"))
    proc = start_agent(config)
    wait_for(lambda: len(samples(metrics_text(port), "probe_success")) == 3, what="3 targets probed")
    yield proc, port, config
    if proc.poll() is None:
        stop_agent(proc)


def rewrite(config, app_port, bad=False):
    text = config.read_text(encoding="utf-8")
    head = text[: text.index("targets:")] + "targets:\n"
    body = NEW_TARGETS.format(port=app_port).strip("\n") + "\n"
    if bad:
        body += "  - id: Broken Id\n    tcp: {host: 127.0.0.1, port: 0}\n"
    config.write_text(head + body, encoding="utf-8")


def test_sighup_good_then_bad(agent, app):
    proc, port, config = agent
    before = samples(metrics_text(port), "probe_outcomes_total")
    assert before.get("portal-home", 0) >= 1
    rewrite(config, app.port)
    proc.send_signal(signal.SIGHUP)
    wait_for(lambda: set(samples(metrics_text(port), "probe_success")) == {"portal-home", "portal-login"},
             what="reloaded target set")
    text = metrics_text(port)
    assert "portal-tcp" not in text and "portal-api" not in text  # removed targets vanish entirely
    assert samples(text, "hcc_sentinel_config_last_reload_successful")[""] == 1
    # counters of a target that stayed survive the reload
    assert samples(text, "probe_outcomes_total")["portal-home"] >= before["portal-home"]

    rewrite(config, app.port, bad=True)
    proc.send_signal(signal.SIGHUP)
    wait_for(lambda: samples(metrics_text(port), "hcc_sentinel_config_last_reload_successful")[""] == 0,
             what="reload refused")
    # the running config stays
    assert set(samples(metrics_text(port), "probe_success")) == {"portal-home", "portal-login"}
    health = json.loads(http(f"http://127.0.0.1:{port}/healthz")[2])
    assert health["last_reload_ok"] is False and health["targets"] == 2
    code, err = stop_agent(proc)
    assert code == 0
    check = cli("check", "-c", str(config))
    assert check.returncode == 2
    for line in check.stderr.strip().splitlines():  # logged with the same words as `check`
        assert line in err
    assert "config reload refused" in err and "Traceback" not in err


def test_post_reload(agent, app):
    proc, port, config = agent
    rewrite(config, app.port, bad=True)
    status, _, body = http(f"http://127.0.0.1:{port}/-/reload", method="POST")
    assert status == 400
    answer = json.loads(body)
    check = cli("check", "-c", str(config))
    assert answer["status"] == "error"
    assert answer["problems"] == check.stderr.strip().splitlines()
    assert samples(metrics_text(port), "hcc_sentinel_config_last_reload_successful")[""] == 0

    rewrite(config, app.port)
    status, _, body = http(f"http://127.0.0.1:{port}/-/reload", method="POST")
    assert status == 200, body
    answer = json.loads(body)
    assert answer == {"status": "ok", "added": ["portal-login"], "removed": ["portal-api", "portal-tcp"],
                      "changed": []}
    text = metrics_text(port)
    assert samples(text, "hcc_sentinel_config_last_reload_successful")[""] == 1
    assert samples(text, "hcc_sentinel_config_last_reload_success_timestamp_seconds")[""] > 0
    assert "portal-tcp" not in text
    wait_for(lambda: "portal-login" in samples(metrics_text(port), "probe_success"), what="new target probed")
    targets = json.loads(http(f"http://127.0.0.1:{port}/api/targets")[2])["targets"]
    assert [t["id"] for t in targets] == ["portal-home", "portal-login"]


def _mocked_reload_request(runtime, remote: str, headers: dict[str, str] | None = None):
    """A POST /-/reload as the handler sees it from a client at ``remote`` (no socket: the test
    never talks to an address other than 127.0.0.1)."""
    from unittest import mock

    from aiohttp import web
    from aiohttp.test_utils import make_mocked_request

    import agent.server as server

    app = web.Application()
    app[server.RUNTIME_KEY] = runtime
    transport = mock.Mock()
    transport.get_extra_info.side_effect = lambda name, default=None: (remote, 40000) if name == "peername" else default
    return make_mocked_request("POST", "/-/reload", headers=headers or {}, app=app, transport=transport)


async def test_reload_needs_loopback_or_the_ack_token(tmp_path, app):
    """The example config listens on 0.0.0.0: a reload from another machine needs
    `Authorization: Bearer <alerting.ack_token>`; without a token configured only loopback."""
    import agent.server as server
    from agent.runtime import AgentRuntime

    config = agent_config(tmp_path, app.port, free_port())
    runtime = AgentRuntime(str(config), serve=False)
    # no token configured: loopback only
    for remote, code in (("192.0.2.10", 403), ("10.75.68.20", 403), ("127.0.0.1", 200), ("::1", 200)):
        resp = await server.reload(_mocked_reload_request(runtime, remote, {"Authorization": "Bearer x"}))
        assert resp.status == code, (remote, resp.text)
        if code == 403:
            body = json.loads(resp.text)
            assert resp.content_type == "application/json"
            assert body["status"] == "error" and body["error"] == "forbidden" and "ack_token" in body["message"]

    config.write_text(config.read_text(encoding="utf-8") + "alerting:\n  ack_token: s3cret-token\n", encoding="utf-8")
    runtime = AgentRuntime(str(config), serve=False)
    for headers, code in (({}, 403), ({"Authorization": "Bearer wrong"}, 403), ({"Authorization": "s3cret-token"}, 403),
                          ({"Authorization": "Bearer s3cret-token"}, 200)):
        resp = await server.reload(_mocked_reload_request(runtime, "192.0.2.10", headers))
        assert resp.status == code, (headers, resp.text)
    assert (await server.reload(_mocked_reload_request(runtime, "127.0.0.1"))).status == 200


def test_post_reload_from_loopback_with_a_token_configured(tmp_path, app):
    """A real agent with alerting.ack_token: POST /-/reload from 127.0.0.1 needs no token."""
    port = free_port()
    config = agent_config(tmp_path, app.port, port)
    config.write_text(config.read_text(encoding="utf-8") + "alerting:\n  ack_token: s3cret-token\n", encoding="utf-8")
    proc = start_agent(config)
    try:
        wait_for(lambda: http(f"http://127.0.0.1:{port}/healthz")[0] == 200, what="agent up")
        status, _, body = http(f"http://127.0.0.1:{port}/-/reload", method="POST")
        assert status == 200, body
        assert json.loads(body)["status"] == "ok"
    finally:
        code, err = stop_agent(proc)
    assert code == 0, err
