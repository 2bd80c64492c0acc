"""HTTP API of the agent: /healthz, /api/targets, /api/results, route modules, helpers."""

from __future__ import annotations

import asyncio
import sys
import time
import types

import aiohttp
import pytest
from aiohttp import web

import agent.server as server
from agent.demo_app import ThreadedServer
from agent.runtime import AgentRuntime, ascii_safe
from test_agent_lib import agent_config, free_port


@pytest.fixture(scope="module")
def app():
    s = ThreadedServer()
    s.start()
    yield s
    s.stop()


async def get(port: int, path: str) -> tuple[int, object]:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{port}{path}") as resp:
            if resp.content_type == "application/json":
                return resp.status, await resp.json()
            return resp.status, await resp.text()


async def test_api_endpoints_and_route_modules(tmp_path, app, monkeypatch):
    extra = types.ModuleType("agent_test_extra_routes")

    def setup_routes(application: web.Application, runtime: AgentRuntime) -> None:
        async def hello(_request: web.Request) -> web.Response:
            return web.Response(text=f"xin chào {runtime.agent_id}")
        application.router.add_get("/extra", hello)

    extra.setup_routes = setup_routes
    monkeypatch.setitem(sys.modules, "agent_test_extra_routes", extra)
    monkeypatch.setattr(server, "ROUTE_MODULES", ("agent_test_extra_routes", "agent.no_such_module_yet"))
    app.set_modes(home="ok", api="error")
    port = free_port()
    rt = AgentRuntime(str(agent_config(tmp_path, app.port, port)))
    await rt.start()
    try:
        deadline = time.monotonic() + 20
        while not all(st.runs >= 2 for st in rt.scheduler.states.values()):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
        status, body = await get(port, "/healthz")
        assert status == 200 and body["status"] == "ok" and body["agent_id"] == "hcc-26068"
        assert body["targets"] == 3 and body["last_reload_ok"] is True

        status, body = await get(port, "/api/targets")
        assert status == 200
        targets = {t["id"]: t for t in body["targets"]}
        assert set(targets) == {"portal-home", "portal-api", "portal-tcp"}
        api = targets["portal-api"]
        assert api["name"] == "API hồ sơ" and api["system"] == "portal" and api["owner"] == "so-khcn"
        assert api["last"]["outcome"] == "error" and api["last"]["http_status_code"] == 503
        assert api["runs"] >= 2 and api["counts_since_start"]["error"] >= 2 and api["interval"] == 2.0

        status, body = await get(port, "/api/results?target=portal-api&since=10m")
        assert status == 200 and len(body["results"]) >= 2
        assert all(r["reason"] == "http_status" for r in body["results"])
        times = [r["started_at"] for r in body["results"]]
        assert times == sorted(times)
        status, body = await get(port, f"/api/results?target=portal-api&since={time.time() + 60:.0f}")
        assert status == 200 and body["results"] == []
        status, body = await get(port, "/api/results?target=portal-api&since=2020-01-01T00:00:00Z&limit=1")
        assert status == 200 and len(body["results"]) == 1
        assert (await get(port, "/api/results"))[0] == 400
        assert (await get(port, "/api/results?target=portal-api&since=yesterday"))[0] == 400
        assert (await get(port, "/api/results?target=nope"))[0] == 404
        assert await get(port, "/extra") == (200, "xin chào hcc-26068")
    finally:
        await rt.stop()


def test_parse_time_and_ascii_safe():
    now = 1_800_000_000.0
    assert server.parse_time("1700000000", now) == 1_700_000_000
    assert server.parse_time("15m", now) == now - 900
    assert server.parse_time("2026-05-01T08:00:00+07:00", now) == server.parse_time("2026-05-01T01:00:00Z", now)
    with pytest.raises(ValueError):
        server.parse_time("yesterday", now)
    assert ascii_safe("Xã Đắk Ơ") == "Xa Dak O"
    assert ascii_safe("Phường Biên Hòa") == "Phuong Bien Hoa"
    assert ascii_safe("Tân Uyên 東").isascii()


async def get_full(port: int, path: str) -> tuple[int, str, object]:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{port}{path}") as resp:
            body = await resp.json() if resp.content_type == "application/json" else await resp.text()
            return resp.status, resp.content_type, body


async def test_api_results_naive_times_limits_and_json_errors(tmp_path, app):
    """A time without offset is in agent.timezone (Asia/Ho_Chi_Minh, +07:00), like
    `silence --start`; limit outside 1..10000 is a 400; every error body is JSON."""
    from probes.base import ProbeResult

    port = free_port()
    rt = AgentRuntime(str(agent_config(tmp_path, app.port, port, interval="1h")))
    await rt.start()
    try:
        # long before the runtime's own probes: 2025-06-30T16:30:00Z = 23:30 in Hà Nội / TP.HCM
        at = 1751301000.0
        await rt.store.observe(ProbeResult(target="portal-api", kind="http", outcome="error", reason="http_status",
                                           detail="HTTP 503", started_at=at, duration_seconds=0.1))
        status, ctype, body = await get_full(
            port, "/api/results?target=portal-api&since=2025-06-30T23:00:00&until=2025-07-01T00:00:00")
        assert status == 200 and [r["started_at"] for r in body["results"]] == [at]
        assert body["since"] == 1751299200.0  # 23:00 +07:00, not 23:00 UTC
        status, _, body = await get_full(port, "/api/results?target=portal-api&since=2025-06-30 23:31&until=2025-07-01")
        assert status == 200 and body["results"] == []

        for bad in ("-1", "0", "999999", "10001", "abc", "1.5"):
            status, ctype, body = await get_full(port, f"/api/results?target=portal-api&since=2025-06-01&limit={bad}")
            assert (status, ctype) == (400, "application/json"), (bad, body)
            assert body["error"] == "bad_request" and body["message"].startswith("limit:"), body
        status, _, body = await get_full(port, "/api/results?target=portal-api&since=2025-06-01&until=2025-07-01&limit=10000")
        assert status == 200 and len(body["results"]) == 1

        for path, code, error in (("/api/results", 400, "bad_request"),
                                  ("/api/results?target=portal-api&since=yesterday", 400, "bad_request"),
                                  ("/api/results?target=portal-api&until=soon", 400, "bad_request"),
                                  ("/api/results?target=nope", 404, "not_found")):
            status, ctype, body = await get_full(port, path)
            assert (status, ctype) == (code, "application/json"), (path, body)
            assert body["error"] == error and body["message"], body
    finally:
        await rt.stop()


def test_parse_time_naive_is_the_given_timezone():
    assert server.parse_time("2026-11-30T23:00:00", tz="Asia/Ho_Chi_Minh") == \
        server.parse_time("2026-11-30T16:00:00Z")
    assert server.parse_time("2026-11-30T23:00:00+07:00", tz="UTC") == server.parse_time("2026-11-30T16:00:00Z")
