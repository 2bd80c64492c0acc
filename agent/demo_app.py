"""A simulated commune procedure system for ``hcc-sentinel demo`` (and tests): aiohttp, 127.0.0.1.

Pages (Vietnamese, like the real portals):

* ``/`` — the public-service portal home page;
* ``/tra-cuu?q=...`` — dossier search;
* ``/dang-nhap`` — the login page (VNeID-style);
* ``/api/ho-so/{id}`` — a JSON API returning one dossier's status.

Each page has a *mode*, switched by a script (:data:`SCRIPT`) every ``scene_seconds``:

``ok``           normal answer.
``slow``         normal answer after ``slow_delay`` seconds (the probe reports *chậm*).
``error``        HTTP 503 (*lỗi*, reason ``http_status``).
``maintenance``  HTTP 200 with "Hệ thống đang bảo trì" (*lỗi*, reason ``content`` — the fault
                 a status-code check misses).
``hang``         connection accepted, no response headers for ``hang_seconds`` (*treo*,
                 reason ``timeout_first_byte``).
``stall``        headers and part of the body, then nothing for ``hang_seconds`` (*treo*,
                 reason ``stall``).

The server binds 127.0.0.1 only; nothing here contacts any other address.
"""

from __future__ import annotations

import asyncio
import html
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

PAGES: tuple[str, ...] = ("home", "search", "login", "api")
MODES: tuple[str, ...] = ("ok", "slow", "error", "maintenance", "hang", "stall")

#: The scenes played in a loop: (Vietnamese + English caption, {page: mode}); pages not named are ok.
SCRIPT: tuple[tuple[str, dict[str, str]], ...] = (
    ("Mọi thứ bình thường / everything normal", {}),
    ("Tra cứu chậm, API trả lỗi 503 / search slow, API returns 503", {"search": "slow", "api": "error"}),
    ("Trang chủ báo bảo trì (HTTP 200), đăng nhập treo / home shows a maintenance page, login hangs",
     {"home": "maintenance", "login": "hang"}),
    ("API treo giữa chừng, tra cứu chậm / API body stalls, search slow", {"api": "stall", "search": "slow"}),
    ("Đã khôi phục / recovered", {}),
)

MAINTENANCE = "Hệ thống đang bảo trì"


@dataclass
class DemoSystem:
    """State of the simulated system.

    Attributes:
        scene_seconds: how long each scene of :data:`SCRIPT` lasts (seconds).
        slow_delay: delay of a ``slow`` answer (seconds).
        hang_seconds: how long ``hang``/``stall`` keep the client waiting (seconds).
        modes: current mode of each page.
        scene: index of the current scene.
    """

    scene_seconds: float = 12.0
    slow_delay: float = 1.3
    hang_seconds: float = 20.0
    modes: dict[str, str] = field(default_factory=lambda: {p: "ok" for p in PAGES})
    scene: int = -1
    scene_started: float = 0.0
    requests: int = 0
    last_headers: dict[str, str] = field(default_factory=dict)
    listeners: list[Any] = field(default_factory=list)

    def set_scene(self, index: int) -> None:
        """Switch to scene ``index`` (modulo the script length) and tell the listeners."""
        self.scene = index % len(SCRIPT)
        caption, modes = SCRIPT[self.scene]
        self.modes = {p: modes.get(p, "ok") for p in PAGES}
        self.scene_started = time.monotonic()
        for fn in self.listeners:
            fn(self.scene, caption, dict(self.modes))

    async def play(self) -> None:
        """Play the script forever (cancel the task to stop)."""
        i = 0
        while True:
            self.set_scene(i)
            await asyncio.sleep(self.scene_seconds)
            i += 1


def _page(title: str, body: str) -> str:
    return (f"<!doctype html><html lang=\"vi\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"</head><body><header><h1>Cổng Dịch vụ công — Phường Mô Phỏng (demo)</h1></header>"
            f"<main>{body}</main><footer>Trung tâm phục vụ hành chính công — hệ thống mô phỏng của "
            f"hcc-sentinel, chỉ chạy trên 127.0.0.1</footer></body></html>")


def build_app(system: DemoSystem) -> web.Application:
    """The aiohttp application serving the four pages according to ``system.modes``."""

    async def answer(request: web.Request, page: str, ok: web.Response) -> web.StreamResponse:
        system.requests += 1
        system.last_headers = dict(request.headers)
        mode = system.modes.get(page, "ok")
        if mode == "slow":
            await asyncio.sleep(system.slow_delay)
            return ok
        if mode == "error":
            return web.Response(status=503, text="503 Service Unavailable — máy chủ quá tải\n",
                                content_type="text/plain", charset="utf-8")
        if mode == "maintenance":
            return web.Response(text=_page(MAINTENANCE, f"<h2>{MAINTENANCE}</h2><p>Xin quý khách "
                                "vui lòng quay lại sau.</p>"), content_type="text/html", charset="utf-8")
        if mode == "hang":
            await asyncio.sleep(system.hang_seconds)
            return ok
        if mode == "stall":
            body = ok.body if isinstance(ok.body, bytes) else str(ok.text).encode()
            resp = web.StreamResponse(headers={"Content-Type": ok.content_type + "; charset=utf-8"})
            resp.content_length = len(body) + 4096
            await resp.prepare(request)
            await resp.write(body[: max(1, len(body) // 2)])
            await asyncio.sleep(system.hang_seconds)
            return resp
        return ok

    async def home(request: web.Request) -> web.StreamResponse:
        return await answer(request, "home", web.Response(
            text=_page("Cổng Dịch vụ công", "<h2>Dịch vụ công trực tuyến</h2><ul><li><a href=\"/tra-cuu\">"
                       "Tra cứu hồ sơ</a></li><li><a href=\"/dang-nhap\">Đăng nhập bằng VNeID</a></li>"
                       "</ul>"), content_type="text/html", charset="utf-8"))

    async def search(request: web.Request) -> web.StreamResponse:
        q = request.query.get("q", "")
        return await answer(request, "search", web.Response(
            text=_page("Tra cứu hồ sơ", f"<h2>Kết quả tra cứu</h2><p>Từ khóa: {html.escape(q)}</p>"
                       "<p>Tìm thấy 1 hồ sơ: Đăng ký khai sinh — Đang xử lý</p>"),
            content_type="text/html", charset="utf-8"))

    async def login(request: web.Request) -> web.StreamResponse:
        return await answer(request, "login", web.Response(
            text=_page("Đăng nhập", "<h2>Đăng nhập</h2><form method=\"post\"><input name=\"username\">"
                       "<input name=\"password\" type=\"password\"><button>Đăng nhập</button></form>"),
            content_type="text/html", charset="utf-8"))

    async def api(request: web.Request) -> web.StreamResponse:
        dossier = request.match_info["id"]
        payload = {"ma_ho_so": dossier, "thu_tuc": "Đăng ký khai sinh", "trang_thai": "dang_xu_ly",
                   "trang_thai_ten": "Đang xử lý", "cap_nhat": int(time.time())}
        return await answer(request, "api", web.Response(
            text=json.dumps(payload, ensure_ascii=False), content_type="application/json", charset="utf-8"))

    async def state(_request: web.Request) -> web.StreamResponse:
        return web.json_response({"scene": system.scene, "modes": system.modes, "requests": system.requests})

    app = web.Application()
    app.router.add_get("/", home)
    app.router.add_get("/tra-cuu", search)
    app.router.add_get("/dang-nhap", login)
    app.router.add_get("/api/ho-so/{id}", api)
    app.router.add_get("/_demo/state", state)
    return app


async def start(system: DemoSystem, port: int = 0) -> tuple[web.AppRunner, int]:
    """Serve the simulated system on ``127.0.0.1:port`` (0 = any free port).

    Returns:
        ``(runner, port)``; call ``await runner.cleanup()`` to stop.

    Raises:
        OSError: the port cannot be bound.
    """
    runner = web.AppRunner(build_app(system), access_log=None, handle_signals=False,
                           handler_cancellation=True, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    return runner, runner.addresses[0][1]


class ThreadedServer:
    """A :class:`DemoSystem` served from a background thread with its own event loop, for
    synchronous tests and the benchmark (the probes under test run in other processes/loops).

    Usage::

        server = ThreadedServer(); port = server.start(); ...; server.stop()
    """

    def __init__(self, system: DemoSystem | None = None, port: int = 0):
        self.system = system or DemoSystem()
        self.port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    def start(self) -> int:
        """Start serving; returns the bound port."""
        ready = threading.Event()
        error: list[BaseException] = []

        def main() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                self._runner, self.port = loop.run_until_complete(start(self.system, self.port))
            except BaseException as exc:  # noqa: BLE001 - reported to the caller
                error.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=main, name="demo-app", daemon=True)
        self._thread.start()
        ready.wait(10)
        if error:
            raise error[0]
        return self.port

    def set_modes(self, **modes: str) -> None:
        """Set page modes, e.g. ``set_modes(home="error")`` (thread-safe)."""
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self.system.modes.update, modes)
        time.sleep(0.05)

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
