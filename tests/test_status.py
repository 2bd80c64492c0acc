"""The status page and its API (agent/status.py) with a real agent runtime probing local servers.

* switchable servers on 127.0.0.1 (each path ok / slow / error / hang), probed by a real
  :class:`agent.runtime.AgentRuntime` (scheduler, SQLite history, /metrics) with the alerts
  engine attached;
* the page driven in real headless Chromium (Playwright, Debian's /usr/bin/chromium): states
  after real results, the acknowledge flow with and without the token, phone width,
  screenshots saved to docs/img/ for the README;
* secrets (a flow login password, the ack token) absent from /status, /api/status and /metrics.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from agent.config import load_config
from agent.runtime import AgentRuntime
from agent.status import STATE_VI, uplink_verdict
from conftest import require_binary

ROOT = Path(__file__).resolve().parent.parent
# screenshots land in a temporary directory; HCC_SCREENSHOT_DIR=docs/img refreshes the README's
IMG = Path(os.environ.get("HCC_SCREENSHOT_DIR") or tempfile.mkdtemp(prefix="hcc-status-shots-"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_flow import PASSWORD, USERNAME, Portal  # noqa: E402  (the portal replica)
from tests.ports import free_port as _pick_port

ACK_TOKEN = "ack-Tok3n-xa-26068-bi-mat"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


def free_port() -> int:
    return _pick_port()


class Switchable:
    """Local HTTP server whose paths answer by mode: ok, slow (0.5 s), error (503), hang."""

    def __init__(self) -> None:
        self.modes: dict[str, str] = {}
        self.app = web.Application()
        self.app.router.add_get("/{name}", self.handle)
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        mode = self.modes.get(request.match_info["name"], "ok")
        if mode == "hang":
            await asyncio.sleep(3600)
        if mode == "slow":
            await asyncio.sleep(0.5)
        if mode == "error":
            return web.Response(status=503, text="Service Unavailable")
        return web.Response(text="<html><title>OK</title><body>Hệ thống hoạt động</body></html>", content_type="text/html")

    async def start(self) -> None:
        self.runner = web.AppRunner(self.app, shutdown_timeout=0.1, handler_cancellation=True)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self.runner:
            await self.runner.cleanup()


def write_config(tmp: Path, srv: Switchable, portal: Portal | None, agent_port: int, ack: bool = True,
                 interval: str = "1s", alerting: bool = True) -> Path:
    flow_target = ""
    if portal is not None:
        flow_target = f"""
  - id: dvc-journey
    name: "Hành trình đăng nhập cổng DVC"
    system: dvc
    depends_on: [uplink-gw]
    interval: 2s
    timeout: 1800ms
    slow_after: 1500ms
    flow:
      base_url: {portal.base}
      variables: {{username: "{USERNAME}"}}
      secrets: {{password: "${{PORTAL_PASSWORD}}"}}
      first_byte_timeout: 1s
      steps:
        - {{name: login-page, title: "Mở trang đăng nhập", url: /dang-nhap,
            extract: [{{name: csrf, from: form_field, field: _csrf, secret: true}}]}}
        - name: login
          title: "Đăng nhập"
          method: POST
          url: /dang-nhap
          form: {{username: "{{{{ username }}}}", password: "{{{{ secrets.password }}}}", _csrf: "{{{{ csrf }}}}"}}
          body_contains: ["Đăng xuất"]
"""
    text = f"""
agent:
  id: hcc-26068
  commune: {{code: "26068", name: "Phường Biên Hòa", type: phuong}}
  listen: 127.0.0.1:{agent_port}
  data_dir: {tmp / 'data'}
  startup_spread: 200ms
defaults: {{interval: {interval}, timeout: 1s, slow_after: 300ms, failure_threshold: 2, success_threshold: 1,
           degraded_threshold: 2}}
systems:
  - {{id: uplink, name: "Đường truyền của xã", owner: it-xa}}
  - {{id: motcua, name: "Hệ thống một cửa tỉnh", owner: so-khcn}}
  - {{id: dvc, name: "Cổng Dịch vụ công quốc gia", owner: vpcp}}
targets:
  - id: uplink-gw
    name: "Cổng mạng của xã"
    system: uplink
    uplink: true
    http: {{url: "http://127.0.0.1:{srv.port}/gw"}}
  - id: motcua-home
    name: "Trang chủ một cửa"
    system: motcua
    depends_on: [uplink-gw]
    http: {{url: "http://127.0.0.1:{srv.port}/motcua", first_byte_timeout: 900ms}}
  - id: motcua-search
    name: "Tra cứu hồ sơ một cửa"
    system: motcua
    depends_on: [uplink-gw]
    http: {{url: "http://127.0.0.1:{srv.port}/search", first_byte_timeout: 900ms}}
{flow_target}
alerting:
  enabled: {"true" if alerting else "false"}
  group_wait: 0s
  units:
    - {{id: so-khcn, name: "Sở Khoa học và Công nghệ", escalation: [{{after: 1h, units: [vp-ubnd]}}]}}
    - {{id: vp-ubnd, name: "Văn phòng UBND"}}
    - {{id: it-xa, name: "Cán bộ CNTT xã"}}
    - {{id: vpcp, name: "Văn phòng Chính phủ"}}
  maintenance:
    - {{name: "Bảo trì tối thứ Bảy", match: {{system: motcua}}, cron: "0 23 * * 6", duration: 3h}}
{"  ack_token: ${HCC_ACK_TOKEN}" if ack else ""}
"""
    path = tmp / "agent.yaml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
async def servers():
    srv = Switchable()
    await srv.start()
    portal = Portal()
    await portal.start()
    yield srv, portal
    await portal.stop()
    await srv.stop()


async def start_runtime(tmp_path: Path, srv: Switchable, portal: Portal | None, ack: bool = True,
                        with_engine: bool = True) -> tuple[AgentRuntime, int]:
    port = free_port()
    path = write_config(tmp_path, srv, portal, port, ack=ack, alerting=with_engine)
    config = load_config(path, env={"PORTAL_PASSWORD": PASSWORD, "HCC_ACK_TOKEN": ACK_TOKEN})
    rt = AgentRuntime(str(path), config=config, process_metrics=False, store_flush_interval=0.2)
    await rt.start()  # the runtime attaches the alerts engine (agent.api_alerts.attach) unless disabled
    assert (rt.alerts is not None) == with_engine
    return rt, port


async def stop_runtime(rt: AgentRuntime) -> None:
    await rt.stop()


async def fetch(port: int, path: str, **kw: Any) -> tuple[int, str, dict[str, str]]:
    async with aiohttp.ClientSession() as s:
        async with s.request(kw.pop("method", "GET"), f"http://127.0.0.1:{port}{path}", allow_redirects=False,
                             **kw) as r:
            return r.status, await r.text(), dict(r.headers)


async def status_json(port: int) -> dict[str, Any]:
    code, text, _ = await fetch(port, "/api/status")
    assert code == 200, text
    return json.loads(text)


async def wait_for(port: int, predicate: Any, timeout: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        data = await status_json(port)
        if predicate(data):
            return data
        if time.monotonic() > deadline:
            raise AssertionError("condition not met; last status: " + json.dumps(
                {t["id"]: (t["state"], (t["last"] or {}).get("reason")) for t in data["targets"]}, ensure_ascii=False))
        await asyncio.sleep(0.3)


def states(data: dict[str, Any]) -> dict[str, str]:
    return {t["id"]: t["state"] for t in data["targets"]}


async def launch_browser(p: Any) -> Any:
    chromium = require_binary("chromium")
    return await p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)


# --------------------------------------------------------------------------------------------
# Unit-level
# --------------------------------------------------------------------------------------------


def _t(tid: str, state: str, uplink: bool = False) -> dict[str, Any]:
    return {"id": tid, "name": tid, "state": state, "uplink": uplink}


def test_uplink_verdict() -> None:
    assert uplink_verdict([_t("gw", "down", True), _t("a", "unreachable")])["state"] == "local"
    remote = uplink_verdict([_t("gw", "up", True), _t("a", "down"), _t("b", "up")])
    assert remote["state"] == "remote" and remote["failing"] == ["a"]
    assert uplink_verdict([_t("gw", "up", True), _t("a", "up")])["state"] == "ok"
    assert uplink_verdict([_t("a", "down")])["state"] == "unknown"


def test_uplink_verdict_never_blames_the_province_for_the_commune_s_own_things() -> None:
    """configs/example.yaml's shape: the agent's machine (kind host, system host, owned by the
    commune's IT contact) and a commune-owned website are the commune's, not "them"."""
    def t(tid: str, state: str, system: str, owner: str, kind: str = "http", uplink: bool = False,
          name: str | None = None) -> dict[str, Any]:
        return {"id": tid, "name": name or tid, "kind": kind, "system": system, "owner": owner, "state": state,
                "uplink": uplink}

    targets = [t("uplink-gateway", "up", "uplink", "it-26068", "icmp", True, "Cổng mạng (gateway) của xã"),
               t("motcua-home", "down", "motcua", "so-khcn", name="Hệ thống một cửa tỉnh"),
               t("motcua-tcp", "degraded", "motcua", "so-khcn", "tcp"),
               t("agent-host", "down", "host", "it-26068", "host", name="Máy chạy agent"),
               t("website", "down", "website", "it-26068", name="Trang thông tin của xã"),
               t("hotich-home", "up", "hotich", "so-tu-phap", name="Hộ tịch điện tử")]
    v = uplink_verdict(targets)
    assert v["state"] == "remote"
    assert v["failing"] == ["Hệ thống một cửa tỉnh", "motcua-tcp"]  # display names: name, else id
    assert "agent-host" not in v["text"] and "Máy chạy agent" not in v["text"] and "Trang thông tin" not in v["text"]
    assert v["host_failing"] == ["Máy chạy agent"] and v["local_failing"] == ["Trang thông tin của xã"]
    assert v["notes"][0].startswith("Máy chạy agent của xã có vấn đề (Máy chạy agent)")
    assert "Trang thông tin của xã" in v["notes"][1]

    # only the commune's own things fail: no "remote" verdict, the host line still shows
    own_only = [x if x["system"] not in ("motcua",) else {**x, "state": "up"} for x in targets]
    v = uplink_verdict(own_only)
    assert v["state"] == "ok" and v["failing"] == [] and "tỉnh/trung ương" in v["title"]
    assert len(v["notes"]) == 2 and v["notes"][0].startswith("Máy chạy agent của xã có vấn đề")
    # nothing failing at all: no notes
    assert uplink_verdict([{**x, "state": "up"} for x in targets])["notes"] == []


async def test_status_page_host_problem_has_its_own_line(tmp_path: Path, servers: Any) -> None:
    """A real `host` probe that fails (memory_max: 0) while a provincial system fails too: only
    the provincial one is "ở phía tỉnh/trung ương"; the machine gets its own line."""
    srv, _ = servers
    port = free_port()
    path = tmp_path / "agent.yaml"
    path.write_text(f"""
agent:
  id: hcc-26068
  commune: {{code: "26068", name: "Phường Biên Hòa", type: phuong}}
  listen: 127.0.0.1:{port}
  data_dir: {tmp_path / 'data'}
  startup_spread: 200ms
defaults: {{interval: 1s, timeout: 900ms, slow_after: 500ms}}
systems:
  - {{id: uplink, name: "Đường truyền của xã", owner: it-xa}}
  - {{id: motcua, name: "Hệ thống một cửa tỉnh", owner: so-khcn}}
  - {{id: host, name: "Máy chạy agent", owner: it-xa}}
targets:
  - id: uplink-gw
    name: "Cổng mạng của xã"
    system: uplink
    uplink: true
    http: {{url: "http://127.0.0.1:{srv.port}/gw"}}
  - id: motcua-home
    name: "Trang chủ một cửa"
    system: motcua
    http: {{url: "http://127.0.0.1:{srv.port}/motcua"}}
  - id: agent-host
    name: "Máy chạy agent"
    system: host
    interval: 2s
    timeout: 1800ms
    slow_after: 1500ms
    host: {{disk_paths: ["{tmp_path}"], memory_max: 0.0}}
alerting:
  enabled: false
""", encoding="utf-8")
    rt = AgentRuntime(str(path), process_metrics=False, store_flush_interval=0.2)
    await rt.start()
    try:
        srv.modes["motcua"] = "error"
        data = await wait_for(port, lambda d: states(d)["motcua-home"] == "down" and states(d)["agent-host"] == "down"
                              and states(d)["uplink-gw"] == "up")
        v = data["uplink"]
        assert v["state"] == "remote" and v["failing"] == ["Trang chủ một cửa"], v
        assert "Máy chạy agent" not in v["text"] and "agent-host" not in v["text"]
        assert v["host_failing"] == ["Máy chạy agent"]
        code, html, _ = await fetch(port, "/status")
        assert code == 200 and "Máy chạy agent của xã có vấn đề" in html

        srv.modes["motcua"] = "ok"
        data = await wait_for(port, lambda d: states(d)["motcua-home"] == "up")
        assert data["uplink"]["state"] == "ok" and data["uplink"]["failing"] == []
        assert data["uplink"]["notes"][0].startswith("Máy chạy agent của xã có vấn đề")
    finally:
        await rt.stop()


# --------------------------------------------------------------------------------------------
# Real runtime, real probes
# --------------------------------------------------------------------------------------------


async def test_api_status_follows_real_probes_and_hides_secrets(tmp_path: Path, servers: Any) -> None:
    srv, portal = servers
    rt, port = await start_runtime(tmp_path, srv, portal)
    try:
        data = await wait_for(port, lambda d: all(s == "up" for s in states(d).values())
                              and all(t["last"] for t in d["targets"]))
        assert data["uplink"]["state"] == "ok"
        assert data["agent"]["commune"]["name"] == "Phường Biên Hòa"
        journey = next(t for t in data["targets"] if t["id"] == "dvc-journey")
        assert [s["name"] for s in journey["last"]["steps"]] == ["login-page", "login"]
        assert data["maintenance"] and data["maintenance"][0]["name"] == "Bảo trì tối thứ Bảy"
        assert len(journey["timeline"]) == 96

        # provincial system fails while the uplink is fine -> "remote"
        srv.modes["motcua"] = "error"
        data = await wait_for(port, lambda d: states(d)["motcua-home"] == "down")
        assert data["uplink"]["state"] == "remote" and "Trang chủ một cửa" in data["uplink"]["text"]
        home = next(t for t in data["targets"] if t["id"] == "motcua-home")
        assert home["last"]["reason"] == "http_status" and home["since"] and home["since_local"]
        assert any(c["outcome"] == "error" for c in home["timeline"])
        assert data["incidents"] and data["incidents"][0]["target"] == "motcua-home"

        # the search hangs -> down with a hang reason
        srv.modes["search"] = "hang"
        data = await wait_for(port, lambda d: states(d)["motcua-search"] == "down")
        search = next(t for t in data["targets"] if t["id"] == "motcua-search")
        assert search["last"]["outcome"] == "hang" and search["last"]["reason"] == "timeout_first_byte"

        # the commune's own link fails -> "local", dependents unreachable
        srv.modes["gw"] = "error"
        data = await wait_for(port, lambda d: states(d)["uplink-gw"] == "down"
                              and states(d)["motcua-home"] == "unreachable")
        assert data["uplink"]["state"] == "local" and data["uplink"]["title"] == "Lỗi do đường truyền của xã"
        assert STATE_VI["unreachable"] == next(t for t in data["targets"] if t["id"] == "motcua-home")["state_vi"]

        # secrets: nowhere in the API, the page or the metrics
        for path in ("/api/status", "/status", "/metrics", "/api/targets"):
            code, text, _ = await fetch(port, path)
            assert code == 200
            for secret in (PASSWORD, ACK_TOKEN):
                assert secret not in text, (path, secret)
                assert json.dumps(secret)[1:-1] not in text
        code, text, _ = await fetch(port, "/metrics")
        assert 'probe_flow_step_success{step="login",target="dvc-journey"} 1.0' in text
        assert 'probe_flow_step_duration_seconds{step="login-page",target="dvc-journey"}' in text
    finally:
        await stop_runtime(rt)


async def test_flow_failure_named_on_page_and_secret_hidden(tmp_path: Path, servers: Any) -> None:
    """A journey whose login fails (the portal echoes the password back) names its step on the
    page, and the password appears in no output."""
    srv, portal = servers
    portal_password_wrong = PASSWORD
    rt, port = await start_runtime(tmp_path, srv, portal)
    try:
        await wait_for(port, lambda d: states(d).get("dvc-journey") == "up"
                       and next(t for t in d["targets"] if t["id"] == "dvc-journey")["last"])
        # the portal now rejects the password: its page echoes the submitted password back
        portal.password = "something-else"
        data = await wait_for(port, lambda d: next(t for t in d["targets"] if t["id"] == "dvc-journey")
                              ["last"]["outcome"] == "error")
        journey = next(t for t in data["targets"] if t["id"] == "dvc-journey")
        assert journey["last"]["failed_step"] == "login" and journey["last"]["reason"] == "step"
        code, html, _ = await fetch(port, "/status")
        assert "← step" in html
        for path in ("/api/status", "/status", "/metrics", "/api/targets",
                     "/api/results?target=dvc-journey&since=10m"):
            code, text, _ = await fetch(port, path)
            assert code == 200
            assert portal_password_wrong not in text, path
        code, text, _ = await fetch(port, "/metrics")
        assert 'probe_flow_step_success{step="login",target="dvc-journey"} 0.0' in text
    finally:
        await stop_runtime(rt)


async def test_ack_form_and_api_require_token(tmp_path: Path, servers: Any) -> None:
    srv, portal = servers
    srv.modes["motcua"] = "error"
    rt, port = await start_runtime(tmp_path, srv, None)
    try:
        data = await wait_for(port, lambda d: bool(d["incidents"]))
        inc = data["incidents"][0]["id"]
        assert data["incidents"][0]["told"][0]["unit_name"] == "Sở Khoa học và Công nghệ"
        # the page's form: wrong or missing token -> 403 and the page says why
        code, text, _ = await fetch(port, "/status/ack", method="POST", data={"incident": str(inc), "by": "An"})
        assert code == 403 and "Mã xác nhận không đúng" in text
        code, text, _ = await fetch(port, "/status/ack", method="POST",
                                    data={"incident": str(inc), "by": "An", "token": "sai"})
        assert code == 403 and ACK_TOKEN not in text
        code, text, _ = await fetch(port, "/status/ack", method="POST",
                                    data={"incident": "x", "by": "An", "token": ACK_TOKEN})
        assert code == 400
        code, text, _ = await fetch(port, "/status/ack", method="POST",
                                    data={"incident": "99999", "by": "An", "token": ACK_TOKEN})
        assert code == 404
        code, text, headers = await fetch(port, "/status/ack", method="POST",
                                          data={"incident": str(inc), "by": "Nguyễn Văn An", "token": ACK_TOKEN})
        assert code == 303 and headers["Location"] == "/status?msg=acked"
        data = await status_json(port)
        acked = next(i for i in data["incidents"] if i["id"] == inc)
        assert acked["acked"] and acked["acked_by"] == "Nguyễn Văn An" and acked["acked_at_local"]
        # the engine knows it too (no more reminders/escalation)
        assert next(i for i in rt.alerts.incidents(open_only=True) if i["id"] == inc)["acked_by"] == "Nguyễn Văn An"

        # a maintenance silence added through the alerts API shows on the page and in the API
        code, text, _ = await fetch(port, "/api/silences", method="POST",
                                    headers={"Authorization": f"Bearer {ACK_TOKEN}"},
                                    json={"author": "Trần Thị Bình", "reason": "Nâng cấp máy chủ một cửa",
                                          "duration": "2h", "match": {"target": ["motcua-search"]},
                                          "maintenance": True})
        assert code == 201, text
        data = await wait_for(port, lambda d: states(d)["motcua-search"] == "maintenance")
        assert data["silences"][0]["reason"] == "Nâng cấp máy chủ một cửa" and data["silences"][0]["active"]
        assert data["silences"][0]["match"] == "target=motcua-search"
        assert data["maintenance"][0]["name"] == "Bảo trì tối thứ Bảy" and not data["maintenance"][0]["active"]
        code, html, _ = await fetch(port, "/status")
        assert "Nâng cấp máy chủ một cửa" in html and "Trần Thị Bình" in html and STATE_VI["maintenance"] in html
    finally:
        await stop_runtime(rt)


async def test_without_alerts_engine_states_come_from_results(tmp_path: Path, servers: Any) -> None:
    srv, _portal = servers
    srv.modes["search"] = "slow"
    rt, port = await start_runtime(tmp_path, srv, None, with_engine=False)
    try:
        data = await wait_for(port, lambda d: states(d)["motcua-search"] == "degraded"
                              and states(d)["motcua-home"] == "up")
        assert data["incidents"] == [] and data["ack"]["enabled"] is True
        search = next(t for t in data["targets"] if t["id"] == "motcua-search")
        assert search["last"]["outcome"] == "slow" and search["since"]
    finally:
        await stop_runtime(rt)


# --------------------------------------------------------------------------------------------
# Real browser
# --------------------------------------------------------------------------------------------


@pytest.mark.chromium
async def test_page_in_chromium_states_ack_and_screenshots(tmp_path: Path, servers: Any) -> None:
    from playwright.async_api import async_playwright

    srv, portal = servers
    rt, port = await start_runtime(tmp_path, srv, portal)
    requests: list[str] = []
    try:
        await wait_for(port, lambda d: all(s == "up" for s in states(d).values())
                       and all(t["last"] for t in d["targets"]))
        async with async_playwright() as p:
            browser = await launch_browser(p)
            page = await browser.new_page(viewport={"width": 1200, "height": 900}, locale="vi-VN")
            page.on("request", lambda r: requests.append(r.url))
            await page.goto(f"http://127.0.0.1:{port}/status")
            assert "Tình trạng hệ thống" in await page.title()
            assert await page.inner_text("#uplink .question") == \
                "Lỗi do đường truyền của xã hay do hệ thống tỉnh/trung ương?"
            assert await page.get_attribute("#target-motcua-home", "data-state") == "up"
            assert STATE_VI["up"] in await page.inner_text("#target-motcua-home .badge")

            # real failures: an error and a hang
            srv.modes["motcua"] = "error"
            srv.modes["search"] = "hang"
            await wait_for(port, lambda d: states(d)["motcua-home"] == "down" and states(d)["motcua-search"] == "down"
                           and len(d["incidents"]) >= 2)
            await page.reload()
            assert await page.get_attribute("#target-motcua-home", "data-state") == "down"
            assert STATE_VI["down"] in await page.inner_text("#target-motcua-home .badge")
            assert "treo" in await page.inner_text("#target-motcua-search .last")
            verdict = await page.inner_text("#uplink .verdict")
            assert "lỗi ở phía hệ thống" in verdict
            assert await page.locator("#target-motcua-home .timeline .o-error").count() >= 1
            assert await page.locator("#target-motcua-home .timeline .cell").count() == 96
            incident_id = (await status_json(port))["incidents"][0]["id"]
            card = page.locator(f"#incident-{incident_id}")
            assert "Sở Khoa học và Công nghệ" in await card.inner_text()
            await page.screenshot(path=str(IMG / "status-page.png"), full_page=True)

            # acknowledge: wrong token -> 403 page saying why; right token -> acknowledged
            await card.locator("summary").click()
            await card.locator("input[name=by]").fill("Nguyễn Văn An")
            await card.locator("input[name=token]").fill("sai-ma")
            async with page.expect_navigation():
                await card.locator("button[type=submit]").click()
            assert "Mã xác nhận không đúng" in await page.inner_text("#flash")
            card = page.locator(f"#incident-{incident_id}")
            await card.locator("summary").click()
            await card.locator("input[name=by]").fill("Nguyễn Văn An")
            await card.locator("input[name=token]").fill(ACK_TOKEN)
            async with page.expect_navigation():
                await card.locator("button[type=submit]").click()
            assert "Đã xác nhận sự cố" in await page.inner_text("#flash")
            assert "Đã xác nhận bởi Nguyễn Văn An" in await page.inner_text(f"#incident-{incident_id}")
            assert ACK_TOKEN not in await page.content()

            # phone width: no horizontal scrolling, the timeline still fits
            phone = await browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=2,
                                           is_mobile=True, has_touch=True)
            phone.on("request", lambda r: requests.append(r.url))
            await phone.goto(f"http://127.0.0.1:{port}/status")
            scroll_width = await phone.evaluate("document.documentElement.scrollWidth")
            assert scroll_width <= 390, scroll_width
            box = await phone.locator("#target-motcua-home .timeline").bounding_box()
            assert box is not None and box["width"] <= 390
            await phone.screenshot(path=str(IMG / "status-page-phone.png"), full_page=False)

            # self-refresh: the page follows the recovery without a reload
            await page.goto(f"http://127.0.0.1:{port}/status?refresh=2")
            assert await page.get_attribute("#target-motcua-home", "data-state") == "down"
            srv.modes["motcua"] = "ok"
            deadline = time.monotonic() + 40
            while await page.get_attribute("#target-motcua-home", "data-state") != "up":
                assert time.monotonic() < deadline, "the page did not refresh itself"
                await asyncio.sleep(0.25)
            assert await page.get_attribute("body", "data-refreshed") is not None
            await browser.close()
        # everything the page loaded came from the agent itself
        assert requests and all(u.startswith(f"http://127.0.0.1:{port}/") for u in requests), requests
    finally:
        await stop_runtime(rt)


@pytest.mark.chromium
async def test_ack_button_without_token_configured(tmp_path: Path, servers: Any) -> None:
    from playwright.async_api import async_playwright

    srv, _portal = servers
    srv.modes["motcua"] = "error"
    rt, port = await start_runtime(tmp_path, srv, None, ack=False)
    try:
        data = await wait_for(port, lambda d: bool(d["incidents"]))
        assert data["ack"]["enabled"] is False
        inc = data["incidents"][0]["id"]
        async with async_playwright() as p:
            browser = await launch_browser(p)
            page = await browser.new_page()
            await page.goto(f"http://127.0.0.1:{port}/status")
            button = page.locator(f"#incident-{inc} button")
            assert await button.is_disabled()
            assert "alerting.ack_token" in await page.inner_text(f"#incident-{inc} .why")
            await browser.close()
        code, text, _ = await fetch(port, "/status/ack", method="POST",
                                    data={"incident": str(inc), "token": ACK_TOKEN, "by": "x"})
        assert code == 403 and "Chưa cấu hình mã xác nhận" in text
        code, text, _ = await fetch(port, f"/api/incidents/{inc}/ack", method="POST", json={"by": "x"},
                                    headers={"Authorization": f"Bearer {ACK_TOKEN}"})
        assert code == 403  # the alerts API refuses too
    finally:
        await stop_runtime(rt)
