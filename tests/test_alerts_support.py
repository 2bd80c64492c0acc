"""Shared helpers of the alerts tests (no tests here): real servers on 127.0.0.1.

* :class:`SmtpSink` — a real SMTP server (aiosmtpd ``Controller``) that apprise's ``mailto://``
  delivers to; it can be stopped and restarted on the same port ("mail server down").
* :class:`WebhookSink` — a real aiohttp HTTP server receiving apprise's ``json://`` posts, one
  path per unit; it can answer 503 for a while ("webhook down").
* :class:`TargetServer` — a real aiohttp server whose paths answer ok / slow / error / hang.
* :func:`probe` — runs the real ``http`` probe against it and stamps the result with the fake
  clock's time, so the engine's timers run on the injected clock while the results are real.
"""

from __future__ import annotations

import asyncio
import dataclasses
import email
import email.policy
import socket
import time
from pathlib import Path
from typing import Any

from aiohttp import web
from aiosmtpd.controller import Controller

from alerts.config import AlertingConfig
from alerts.engine import AlertEngine
from alerts.model import AlertTarget, Site
from probes import http as http_probe
from probes.base import ProbeContext, ProbeResult, TargetSpec
from tests.ports import free_port as _pick_port

#: 2026-05-02 10:00:00 +07:00 (a Saturday)
T0 = 1777690800.0

SITE = Site(agent_id="hcc-26068", commune_code="26068", commune_name="Phường Biên Hòa",
            commune_type="phuong", timezone="Asia/Ho_Chi_Minh", status_url="http://127.0.0.1:9470/status")


def free_port() -> int:
    return _pick_port()


class FakeClock:
    """Injectable wall clock (Unix seconds) that only moves when told."""

    def __init__(self, start: float = T0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class _SmtpHandler:
    def __init__(self, sink: "SmtpSink") -> None:
        self.sink = sink

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        msg = email.message_from_bytes(envelope.original_content or envelope.content, policy=email.policy.default)
        self.sink.messages.append(msg)
        return "250 OK"


class SmtpSink:
    """Real SMTP server on 127.0.0.1 (aiosmtpd), collecting parsed messages."""

    def __init__(self) -> None:
        self.port = free_port()
        self.messages: list[email.message.EmailMessage] = []
        self._controller: Controller | None = None

    def start(self) -> None:
        self._controller = Controller(_SmtpHandler(self), hostname="127.0.0.1", port=self.port)
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def url(self, to: str) -> str:
        """apprise URL: plain SMTP on our port, no TLS, no auth."""
        return (f"mailto://127.0.0.1:{self.port}?smtp=127.0.0.1&from=canhbao@hcc-sentinel.example"
                f"&to={to}&mode=insecure")

    def subjects(self) -> list[str]:
        return [str(m["Subject"]) for m in self.messages]

    def bodies(self) -> list[str]:
        out = []
        for m in self.messages:
            part = m.get_body(preferencelist=("plain",))
            out.append(part.get_content() if part is not None else "")
        return out


class WebhookSink:
    """Real HTTP server on 127.0.0.1 receiving apprise ``json://`` posts per path."""

    def __init__(self) -> None:
        self.port = free_port()
        self.received: dict[str, list[dict[str, Any]]] = {}
        self.failing = False
        self.attempts = 0
        self._runner: web.AppRunner | None = None
        self.arrived = asyncio.Event()

    async def _handle(self, request: web.Request) -> web.Response:
        self.attempts += 1
        if self.failing:
            return web.Response(status=503, text="down")
        body = await request.json()
        body["_received_at"] = time.time()
        self.received.setdefault(request.match_info["unit"], []).append(body)
        self.arrived.set()
        return web.Response(text="ok")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook/{unit}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def url(self, unit: str) -> str:
        return f"json://127.0.0.1:{self.port}/hook/{unit}"

    def titles(self, unit: str) -> list[str]:
        return [m["title"] for m in self.received.get(unit, [])]

    def count(self) -> int:
        return sum(len(v) for v in self.received.values())


class TargetServer:
    """Real HTTP server on 127.0.0.1; each path answers per its mode: ok / slow / error / hang."""

    def __init__(self, slow_delay: float = 0.35, hang_delay: float = 30.0) -> None:
        self.port = free_port()
        self.modes: dict[str, str] = {}
        self.slow_delay = slow_delay
        self.hang_delay = hang_delay
        self.hits: dict[str, int] = {}
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        self.hits[name] = self.hits.get(name, 0) + 1
        mode = self.modes.get(name, "ok")
        if mode == "error":
            return web.Response(status=503, text="Service Unavailable")
        if mode == "hang":
            await asyncio.sleep(self.hang_delay)
        if mode == "slow":
            await asyncio.sleep(self.slow_delay)
        return web.Response(text="<html>Hệ thống một cửa — đang hoạt động</html>", content_type="text/html")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/{name}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def spec(self, name: str) -> TargetSpec:
        opts = http_probe.Options(url=self.url(name), first_byte_timeout=0.6, connect_timeout=0.5)
        return TargetSpec(id=name, kind="http", timeout=0.9, slow_after=0.2, options=opts, interval=30.0)


async def probe(server: TargetServer, name: str, clock: FakeClock) -> ProbeResult:
    """One real http probe of ``name``; ``started_at`` replaced by the fake clock's now."""
    result = await http_probe.probe(server.spec(name), ProbeContext(agent_id="hcc-26068"))
    return dataclasses.replace(result, started_at=clock())


def make_config(smtp: SmtpSink, hooks: WebhookSink, **extra: Any) -> AlertingConfig:
    """Three units: so-khcn (e-mail + webhook, escalates to vp-ubnd after 30 min), the commune IT
    contact it-26068 (webhook) and vp-ubnd (webhook).  Link incidents go to it-26068 only."""
    data: dict[str, Any] = {
        "units": [
            {"id": "so-khcn", "name": "Sở Khoa học và Công nghệ",
             "urls": [smtp.url("trucban.sokhcn@hcc-sentinel.example"), hooks.url("so-khcn")],
             "escalation": [{"after": "30m", "units": ["vp-ubnd"]}]},
            {"id": "it-26068", "name": "Cán bộ CNTT Phường Biên Hòa", "urls": [hooks.url("it-26068")]},
            {"id": "vp-ubnd", "name": "Văn phòng UBND tỉnh", "urls": [hooks.url("vp-ubnd")]},
        ],
        "route": {"units": ["so-khcn", "it-26068"],
                  "routes": [{"match": {"cause": "local_link"}, "units": ["it-26068"]}]},
        "group_wait": "20s",
        "repeat_interval": "4h",
        "outbox": {"retry_initial": "2s", "retry_max": "20s", "send_timeout": "10s"},
        "ack_token": "s3cret-ack-token",
    }
    data.update(extra)
    return AlertingConfig.model_validate(data)


def make_targets(with_uplink: bool = True) -> list[AlertTarget]:
    """uplink (the commune link), motcua and dvc (both depend on the uplink)."""
    deps = ("uplink",) if with_uplink else ()
    out = [
        AlertTarget(id="motcua", name="Hệ thống một cửa tỉnh", system="motcua",
                    system_name="Hệ thống giải quyết thủ tục hành chính tỉnh (một cửa)",
                    system_name_en="Provincial procedure-handling system", owner="so-khcn",
                    depends_on=deps, interval=30, retry_interval=10),
        AlertTarget(id="dvc", name="Cổng DVC tỉnh", system="dvc-tinh", system_name="Cổng Dịch vụ công tỉnh Đồng Nai",
                    system_name_en="Provincial public-service portal", owner="so-khcn",
                    depends_on=deps, interval=30, retry_interval=10),
    ]
    if with_uplink:
        out.insert(0, AlertTarget(id="uplink", name="Cổng mạng của xã", system="uplink",
                                  system_name="Đường truyền của xã", system_name_en="Commune uplink",
                                  owner="it-26068", uplink=True, interval=30, retry_interval=10))
    return out


class Harness:
    """Engine + fake clock + real servers, with a step function that probes, ticks and delivers."""

    def __init__(self, engine: AlertEngine, clock: FakeClock, server: TargetServer,
                 smtp: SmtpSink, hooks: WebhookSink) -> None:
        self.engine, self.clock, self.server, self.smtp, self.hooks = engine, clock, server, smtp, hooks

    def mode(self, **modes: str) -> None:
        self.server.modes.update(modes)

    async def step(self, names: list[str] | tuple[str, ...] = (), dt: float = 10.0) -> None:
        """Probe ``names`` now (real probes, concurrently), then move the clock by ``dt`` seconds
        and run the timers and one outbox pass."""
        results = await asyncio.gather(*(probe(self.server, n, self.clock) for n in names))
        for r in results:
            await self.engine.observe(r)
        self.clock.advance(dt)
        await self.engine.tick()
        await self.engine.outbox.deliver_due()

    async def idle(self, seconds: float, dt: float = 5.0) -> None:
        """Let fake time pass (timers and deliveries run) without probing."""
        left = seconds
        while left > 0:
            await self.step((), min(dt, left))
            left -= dt

    def messages_to(self, unit: str) -> list[str]:
        return self.hooks.titles(unit)


def build(tmp: Path, clock: FakeClock, smtp: SmtpSink, hooks: WebhookSink, targets: list[AlertTarget] | None = None,
          site: Site = SITE, **extra: Any) -> AlertEngine:
    return AlertEngine(make_config(smtp, hooks, **extra), targets or make_targets(), site, tmp / "alerts.db",
                       clock=clock)
