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
