"""Tests of the ``flow`` kind (probes/flow.py) against a local replica of a public-service portal.

The replica (:class:`Portal`, aiohttp on 127.0.0.1) serves the paths of the journeys in
``configs/journeys.example.yaml``: home page, procedure search, procedure page, a redirect to a
VNeID-style sign-on page, and a CSRF-protected form login (session cookie + hidden token; a
missing or wrong token gets 403).  Its search can be switched to hang, stall, fail or show a
maintenance page.
"""

from __future__ import annotations

import asyncio
import copy
import json
import secrets as pysecrets
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web

from probes import flow
from probes.base import REASONS, ProbeContext, TargetSpec

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "Mk-Gi@m-Sat#2026 xã"  # the secret every output is searched for
USERNAME = "giamsat.26068"


def page(title: str, body: str) -> str:
    return (f'<!DOCTYPE html><html lang="vi"><head><meta charset="utf-8"><title>{title}</title></head>'
            f"<body>{body}</body></html>")


class Portal:
    """A small public-service portal + identity provider replica.

    Attributes:
        search_mode: ``ok`` | ``hang`` (no response) | ``stall`` (headers and half a page, then
            silence) | ``error`` (HTTP 500) | ``maintenance`` (200 "Hệ thống đang bảo trì").
        csrf_received: every ``_csrf`` value posted to the login form.
        passwords_ok / logins: counters.
    """

    def __init__(self) -> None:
        self.search_mode = "ok"
        self.password = PASSWORD  # what the login accepts
        self.home_delay = 0.0  # seconds before the home page answers
        self.sessions: dict[str, dict[str, Any]] = {}
        self.csrf_received: list[str] = []
        self.logins = 0
        self.requests: list[str] = []
        self.app = web.Application()
        r = self.app.router
        r.add_get("/p/home/dvc-trang-chu.html", self.home)
        r.add_get("/p/home/dvc-tthc-thu-tuc-hanh-chinh.html", self.search)
        r.add_get("/p/home/dvc-tthc-thu-tuc-hanh-chinh-chi-tiet.html", self.procedure)
        r.add_get("/api/tthc", self.api_search)
        r.add_get("/p/home/dvc-dang-nhap.html", self.portal_login)
        r.add_get("/sso/authorize", self.sso_authorize)
        r.add_get("/sso/login", self.sso_login)
        r.add_get("/dang-nhap", self.login_form)
        r.add_post("/dang-nhap", self.login_post)
        r.add_get("/ca-nhan", self.profile)
        self.runner: web.AppRunner | None = None
        self.base = ""

    async def start(self) -> str:
        @web.middleware
        async def log_requests(request: web.Request, handler: Any) -> web.StreamResponse:
            self.requests.append(f"{request.method} {request.path_qs}")
            return await handler(request)

        self.app.middlewares.append(log_requests)
        self.runner = web.AppRunner(self.app, shutdown_timeout=0.1)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base = f"http://127.0.0.1:{port}"
        return self.base

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    # -- portal --------------------------------------------------------------------------------
    async def home(self, request: web.Request) -> web.Response:
        await asyncio.sleep(self.home_delay)
        return web.Response(text=page("Cổng Dịch vụ công Quốc gia", '<a href="/p/home/dvc-tthc-thu-tuc-hanh-chinh.html">'
                                       "Thủ tục hành chính</a>"), content_type="text/html")

    async def search(self, request: web.Request) -> web.StreamResponse:
        keyword = request.query.get("keyword", "")
        if self.search_mode == "hang":
            await asyncio.sleep(3600)
        if self.search_mode == "error":
            return web.Response(status=500, text=page("Lỗi", "Internal error"), content_type="text/html")
        if self.search_mode == "maintenance":
            return web.Response(text=page("Bảo trì", "Hệ thống đang bảo trì, vui lòng quay lại sau"), content_type="text/html")
        results = ""
        if "khai sinh" in keyword:
            results = ('<ul><li><a href="/p/home/dvc-tthc-thu-tuc-hanh-chinh-chi-tiet.html?ma_thu_tuc=1.001193">'
                       "Đăng ký khai sinh</a></li><li><a href=\"/p/home/dvc-tthc-thu-tuc-hanh-chinh-chi-tiet.html?"
                       'ma_thu_tuc=1.000656">Đăng ký khai sinh lưu động</a></li></ul>')
        html = page("Tra cứu thủ tục hành chính", f"<h1>Kết quả tìm kiếm: {keyword}</h1>{results}")
        if self.search_mode == "stall":
            resp = web.StreamResponse(headers={"Content-Type": "text/html; charset=utf-8"})
            await resp.prepare(request)
            await resp.write(html[: len(html) // 2].encode())
            await asyncio.sleep(3600)
            return resp
        return web.Response(text=html, content_type="text/html")

    async def api_search(self, request: web.Request) -> web.Response:
        items = [{"ma_thu_tuc": "1.001193", "ten": "Đăng ký khai sinh", "muc_do": 4}] if request.query.get("q") else []
        return web.json_response({"data": {"items": items, "total": len(items)}, "status": "ok"})

    async def procedure(self, request: web.Request) -> web.Response:
        code = request.query.get("ma_thu_tuc", "")
        if code != "1.001193":
            return web.Response(status=404, text=page("Không tìm thấy", "Không tìm thấy thủ tục"), content_type="text/html")
        return web.Response(text=page("Đăng ký khai sinh", "<h1>Thủ tục đăng ký khai sinh</h1>"
                                       '<a href="/p/home/dvc-dang-nhap.html">Nộp hồ sơ trực tuyến</a>'),
                            content_type="text/html")

    async def portal_login(self, request: web.Request) -> web.Response:
        raise web.HTTPFound("/sso/authorize?client_id=dvcqg&state=" + pysecrets.token_hex(4))

    async def sso_authorize(self, request: web.Request) -> web.Response:
        raise web.HTTPFound(f"/sso/login?state={request.query.get('state', '')}")

    async def sso_login(self, request: web.Request) -> web.Response:
        return web.Response(text=page("Đăng nhập - VNeID", "<h1>Đăng nhập bằng tài khoản định danh điện tử VNeID</h1>"),
                            content_type="text/html")

    # -- form login with CSRF --------------------------------------------------------------------
    async def login_form(self, request: web.Request) -> web.Response:
        sid = request.cookies.get("SESSION")
        if sid not in self.sessions:
            sid = pysecrets.token_urlsafe(12)
            self.sessions[sid] = {}
        token = pysecrets.token_urlsafe(16)
        self.sessions[sid]["csrf"] = token
        html = page("Đăng nhập hệ thống", f'''<form id="login" method="post" action="/dang-nhap">
            <input type="text" name="username" value="">
            <input type="password" name="password">
            <input type="hidden" name="_csrf" value="{token}">
            <button>Đăng nhập</button></form>''')
        resp = web.Response(text=html, content_type="text/html")
        resp.set_cookie("SESSION", sid, httponly=True, path="/")
        return resp

    async def login_post(self, request: web.Request) -> web.Response:
        form = await request.post()
        sid = request.cookies.get("SESSION")
        token = form.get("_csrf")
        self.csrf_received.append(str(token))
        session = self.sessions.get(sid or "")
        if session is None or not token or token != session.get("csrf"):
            return web.Response(status=403, text=page("403", "CSRF token không hợp lệ"), content_type="text/html")
        if form.get("username") != USERNAME or form.get("password") != self.password:
            # a re-rendered form that echoes the password back: the probe must not leak it
            return web.Response(text=page("Đăng nhập hệ thống",
                                          f'<p class="error">Tên đăng nhập hoặc mật khẩu không đúng</p>'
                                          f'<input name="password" value="{form.get("password")}">'),
                                content_type="text/html")
        self.logins += 1
        session["user"] = form["username"]
        raise web.HTTPFound("/ca-nhan")

    async def profile(self, request: web.Request) -> web.Response:
        session = self.sessions.get(request.cookies.get("SESSION", ""))
        if not session or "user" not in session:
            raise web.HTTPFound("/dang-nhap")
        return web.Response(text=page("Trang cá nhân", "Xin chào, Nguyễn Văn An. <a href='/dang-xuat'>Đăng xuất</a>"),
                            content_type="text/html")


@pytest.fixture
async def portal():
    p = Portal()
    await p.start()
    yield p
    await p.stop()


CTX = ProbeContext(user_agent="hcc-sentinel-test", headers={"X-Synthetic-Probe": "test"})


def spec_of(options: dict[str, Any], timeout: float = 10.0, slow_after: float = 5.0, target: str = "journey") -> TargetSpec:
    return TargetSpec(id=target, kind="flow", timeout=timeout, slow_after=slow_after,
                      options=flow.Options.model_validate(options))


def journey(base: str, password: str = PASSWORD, **step_overrides: Any) -> dict[str, Any]:
    """The full journey: home → search → procedure → VNeID login page → form login → profile."""
    return {
        "base_url": base,
        "variables": {"keyword": "khai sinh", "username": USERNAME},
        "secrets": {"password": password},
        "first_byte_timeout": "3s",
        "stall_timeout": "2s",
        "steps": [
            {"name": "home", "title": "Mở trang chủ", "url": "/p/home/dvc-trang-chu.html",
             "body_not_contains": ["Hệ thống đang bảo trì"]},
            {"name": "search", "title": "Tìm thủ tục", "url": "/p/home/dvc-tthc-thu-tuc-hanh-chinh.html",
             "query": {"keyword": "{{ keyword }}"}, "body_not_contains": ["Hệ thống đang bảo trì"],
             "extract": [{"name": "procedure_url", "from": "link", "text": "Đăng ký khai sinh"}],
             **step_overrides.get("search", {})},
            {"name": "procedure", "url": "{{ procedure_url }}", "body_contains": ["Thủ tục đăng ký khai sinh"]},
            {"name": "vneid", "url": "/p/home/dvc-dang-nhap.html", "body_contains": ["VNeID"],
             "extract": [{"name": "sso_url", "from": "url"}]},
            {"name": "login-page", "url": "/dang-nhap",
             "extract": [{"name": "csrf", "from": "form_field", "field": "_csrf", "form": "login", "secret": True},
                         {"name": "sid", "from": "cookie", "cookie": "SESSION", "secret": True}]},
            {"name": "login", "title": "Đăng nhập", "method": "POST", "url": "/dang-nhap",
             "form": {"username": "{{ username }}", "password": "{{ secrets.password }}", "_csrf": "{{ csrf }}"},
             "body_contains": ["Đăng xuất"], **step_overrides.get("login", {})},
        ],
    }


def assert_no_secret(result_json: dict[str, Any], secret: str = PASSWORD) -> None:
    text = json.dumps(result_json, ensure_ascii=False)
    assert secret not in text
    assert json.dumps(secret)[1:-1] not in text
    import urllib.parse
    assert urllib.parse.quote_plus(secret) not in text


async def test_full_journey_ok(portal: Portal) -> None:
    result = await flow.probe(spec_of(journey(portal.base)), CTX)
    assert result.outcome.value == "ok", result.detail
    assert result.reason == "ok"
    steps = result.facts["flow_steps"]
    assert [s["name"] for s in steps] == ["home", "search", "procedure", "vneid", "login-page", "login"]
    assert all(s["outcome"] == "ok" and s["reason"] == "ok" for s in steps)
    assert [s["status"] for s in steps] == [200] * 6
    assert result.facts["flow_failed_step"] is None
    assert steps[0]["title"] == "Mở trang chủ"
    assert all(isinstance(s["duration_seconds"], float) for s in steps)
    assert portal.logins == 1
    # the search link was extracted (relative href resolved) and followed
    assert "GET /p/home/dvc-tthc-thu-tuc-hanh-chinh-chi-tiet.html?ma_thu_tuc=1.001193" in portal.requests
    # the VNeID redirect chain was followed: portal -> /sso/authorize -> /sso/login
    assert any(r.startswith("GET /sso/login?state=") for r in portal.requests)
    # phases summed over every hop
    assert set(result.to_json()["phases"]) == {"resolve", "connect", "tls", "processing", "transfer"}
    assert result.phases["processing"] > 0
    assert_no_secret(result.to_json())


async def test_secret_not_logged(portal: Portal, caplog: pytest.LogCaptureFixture) -> None:
    """Nothing the probe (or aiohttp under it) logs carries the password, even at DEBUG."""
    import logging

    caplog.set_level(logging.DEBUG)
    await flow.probe(spec_of(journey(portal.base)), CTX)
    portal.password = "another"
    result = await flow.probe(spec_of(journey(portal.base)), CTX)
    assert result.reason == "step"
    logged = "\n".join(r.getMessage() for r in caplog.records) + caplog.text
    assert PASSWORD not in logged
    assert json.dumps(PASSWORD)[1:-1] not in logged


async def test_csrf_token_extracted_and_used(portal: Portal) -> None:
    result = await flow.probe(spec_of(journey(portal.base)), CTX)
    assert result.outcome.value == "ok", result.detail
    # exactly the token the form carried (and the session cookie that goes with it) was posted
    sid = next(iter(s for s, v in portal.sessions.items() if v.get("user")))
    assert portal.csrf_received == [portal.sessions[sid]["csrf"]]
    # extracted values never appear in the result
    text = json.dumps(result.to_json(), ensure_ascii=False)
    assert portal.csrf_received[0] not in text
    assert sid not in text


async def test_missing_csrf_token_gets_403_named(portal: Portal) -> None:
    options = journey(portal.base, login={"form": {"username": "{{ username }}", "password": "{{ secrets.password }}"}})
    result = await flow.probe(spec_of(options), CTX)
    assert result.outcome.value == "error"
    assert result.reason == "http_status"
    assert result.facts["flow_failed_step"] == "login"
    last = result.facts["flow_steps"][-1]
    assert last == {**last, "name": "login", "outcome": "error", "reason": "http_status", "status": 403}
    assert "HTTP 403" in result.detail and "'login'" in result.detail
    assert_no_secret(result.to_json())


async def test_wrong_csrf_token_gets_403(portal: Portal) -> None:
    options = journey(portal.base, login={"form": {"username": "{{ username }}", "password": "{{ secrets.password }}",
                                                    "_csrf": "{{ csrf }}x"}})
    result = await flow.probe(spec_of(options), CTX)
    assert (result.reason, result.facts["flow_failed_step"]) == ("http_status", "login")
    assert result.facts["flow_steps"][-1]["status"] == 403


async def test_wrong_password_is_error_at_login_step(portal: Portal) -> None:
    wrong = "Sai-Mat-Khau-" + pysecrets.token_hex(6)
    result = await flow.probe(spec_of(journey(portal.base, password=wrong)), CTX)
    assert result.outcome.value == "error"
    assert result.reason == "step"
    assert result.facts["flow_failed_step"] == "login"
    last = result.facts["flow_steps"][-1]
    assert (last["name"], last["outcome"], last["reason"], last["status"], last["check"]) == (
        "login", "error", "step", 200, "body_contains")
    assert "Đăng xuất" in result.detail and "Đăng nhập hệ thống" in result.detail  # page title given
    # the portal echoed the wrong password back in its page: it must not leak into the result
    assert_no_secret(result.to_json(), wrong)
    assert [s["outcome"] for s in result.facts["flow_steps"][:-1]] == ["ok"] * 5


async def test_hanging_search_is_hang_named_within_its_deadline(portal: Portal) -> None:
    portal.search_mode = "hang"
    options = journey(portal.base, search={"first_byte_timeout": "1s"})
    t0 = time.monotonic()
    result = await flow.probe(spec_of(options, timeout=20.0), CTX)
    elapsed = time.monotonic() - t0
    assert result.outcome.value == "hang"
    assert result.reason == "timeout_first_byte"
    assert result.facts["flow_failed_step"] == "search"
    steps = result.facts["flow_steps"]
    assert [s["name"] for s in steps] == ["home", "search"]
    assert steps[1]["outcome"] == "hang" and steps[1]["status"] is None
    assert steps[1]["duration_seconds"] >= 0.9
    # the step's 1 s deadline is respected (generous margin for 2 shared cores), not the 20 s one
    assert elapsed < 1.0 + 4.0
    assert "first_byte_timeout 1s" in result.detail
    assert result.facts["flow_step_names"][-1] == "login"


async def test_journey_timeout_caps_step_deadline(portal: Portal) -> None:
    portal.search_mode = "hang"
    t0 = time.monotonic()
    result = await flow.probe(spec_of(journey(portal.base), timeout=1.5, slow_after=1.0), CTX)
    assert time.monotonic() - t0 < 1.5 + 4.0
    assert result.outcome.value == "hang"
    assert result.reason == "timeout_first_byte"  # the phase the exchange was in
    assert "the step's deadline" in result.detail
    assert result.facts["flow_failed_step"] == "search"


async def test_stalled_body_is_stall(portal: Portal) -> None:
    portal.search_mode = "stall"
    options = journey(portal.base, search={"stall_timeout": "700ms"})
    t0 = time.monotonic()
    result = await flow.probe(spec_of(options, timeout=20.0), CTX)
    assert time.monotonic() - t0 < 0.7 + 4.0
    assert (result.outcome.value, result.reason, result.facts["flow_failed_step"]) == ("hang", "stall", "search")
    assert result.facts["flow_steps"][1]["status"] == 200


async def test_search_error_and_maintenance(portal: Portal) -> None:
    portal.search_mode = "error"
    result = await flow.probe(spec_of(journey(portal.base)), CTX)
    assert (result.reason, result.facts["flow_failed_step"]) == ("http_status", "search")
    assert result.facts["flow_steps"][1]["status"] == 500
    portal.search_mode = "maintenance"
    result = await flow.probe(spec_of(journey(portal.base)), CTX)
    assert (result.outcome.value, result.reason, result.facts["flow_failed_step"]) == ("error", "step", "search")
    assert "Hệ thống đang bảo trì" in result.detail


async def test_refused_connection_names_first_step() -> None:
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    result = await flow.probe(spec_of({"steps": [{"name": "home", "url": f"http://127.0.0.1:{port}/"}]}), CTX)
    assert (result.outcome.value, result.reason, result.facts["flow_failed_step"]) == ("error", "refused", "home")


async def test_json_extraction_location_and_conditions(portal: Portal) -> None:
    options = {
        "base_url": portal.base,
        "steps": [
            {"name": "api", "url": "/api/tthc", "query": {"q": "khai sinh"},
             "json_conditions": [{"path": "data.total", "min": 1}, {"path": "data.items[0].ten", "regex": "khai sinh"}],
             "extract": [{"name": "code", "from": "json", "path": "data.items.0.ma_thu_tuc"},
                         {"name": "level", "from": "json", "path": "data.items.0.muc_do"}]},
            {"name": "redirect", "url": "/p/home/dvc-dang-nhap.html", "follow_redirects": False,
             "expect_status": [302], "extract": [{"name": "next", "from": "location"}]},
            {"name": "procedure", "url": "/p/home/dvc-tthc-thu-tuc-hanh-chinh-chi-tiet.html",
             "query": {"ma_thu_tuc": "{{ code }}"}, "body_contains": ["khai sinh"]},
            {"name": "follow", "url": "{{ next }}", "body_contains": ["VNeID"],
             "body_regex": ["định danh điện tử"]},
        ],
    }
    result = await flow.probe(spec_of(options), CTX)
    assert result.outcome.value == "ok", result.detail
    assert [s["status"] for s in result.facts["flow_steps"]] == [200, 302, 200, 200]
    assert any("/sso/authorize?client_id=dvcqg" in r for r in portal.requests)


async def test_json_condition_failure_is_step(portal: Portal) -> None:
    options = {"base_url": portal.base, "steps": [
        {"name": "api", "url": "/api/tthc", "query": {"q": ""}, "json_conditions": [{"path": "data.total", "min": 1}]}]}
    result = await flow.probe(spec_of(options), CTX)
    assert (result.reason, result.facts["flow_failed_step"], result.facts["flow_steps"][0]["check"]) == (
        "step", "api", "json_conditions")


async def test_missing_extraction_fails_the_step(portal: Portal) -> None:
    options = journey(portal.base, search={"query": {"keyword": "không có"}})
    result = await flow.probe(spec_of(options), CTX)
    assert (result.reason, result.facts["flow_failed_step"]) == ("step", "search")
    assert result.facts["flow_steps"][1]["check"] == "extract"
    assert "procedure_url" in result.detail


async def test_slow_step_makes_the_journey_slow(portal: Portal) -> None:
    portal.home_delay = 0.2
    options = journey(portal.base)
    options["steps"][0]["slow_after"] = "100ms"
    result = await flow.probe(spec_of(options), CTX)
    assert (result.outcome.value, result.reason) == ("slow", "slow")
    assert result.facts["flow_steps"][0]["outcome"] == "slow"
    assert result.success


def test_reasons_used_are_known() -> None:
    assert "step" in REASONS and "timeout_first_byte" in REASONS


def test_config_rejects_undefined_template_names() -> None:
    with pytest.raises(ValueError, match="csrf"):
        flow.Options.model_validate({"base_url": "https://example.invalid", "steps": [
            {"name": "login", "method": "POST", "url": "/login", "form": {"_csrf": "{{ csrf }}"}},
            {"name": "page", "url": "/", "extract": [{"name": "csrf", "from": "form_field", "field": "_csrf"}]},
        ]})
    with pytest.raises(ValueError, match="duplicate step"):
        flow.Options.model_validate({"base_url": "https://example.invalid",
                                     "steps": [{"name": "a", "url": "/"}, {"name": "a", "url": "/"}]})
    with pytest.raises(ValueError, match="syntax"):
        flow.Options.model_validate({"base_url": "https://example.invalid", "steps": [{"name": "a", "url": "/{{ x"}]})
    with pytest.raises(ValueError, match="absolute"):
        flow.Options.model_validate({"steps": [{"name": "a", "url": "/relative"}]})
    with pytest.raises(ValueError):
        flow.Options.model_validate({"base_url": "https://example.invalid", "steps": [
            {"name": "a", "url": "/", "extract": [{"name": "secrets", "from": "url"}]}]})


def test_secret_is_not_in_repr_or_dump() -> None:
    options = flow.Options.model_validate(journey("http://127.0.0.1:1"))
    assert PASSWORD not in repr(options)
    assert PASSWORD not in json.dumps(options.model_dump(mode="json"), ensure_ascii=False)


def test_template_sandbox_blocks_python_internals() -> None:
    options = flow.Options.model_validate({"base_url": "http://127.0.0.1:1", "steps": [
        {"name": "a", "url": "/{{ target.__class__.__mro__ }}"}]})
    with pytest.raises(flow.StepFailure):
        flow._render(options.steps[0].url, {"target": "x"})


def test_page_parser_fields() -> None:
    html = """<html><head><meta name="csrf-token" content="m-tok"><title> Đăng
      nhập </title></head><body><form id="other"><input type="hidden" name="_csrf" value="other"></form>
      <form id="login" action="/dang-nhap"><input type=hidden name=_csrf value="a&amp;b">
      <input type="checkbox" name="remember" value="1"><select name="lang"><option value="vi">VI</option>
      <option value="en" selected>EN</option></select><textarea name="note">x y</textarea></form>
      <a href="/a">Đăng ký <b>khai sinh</b></a></body></html>"""
    p = flow.parse_page(html)
    assert p.field("_csrf") == "other"
    assert p.field("_csrf", "login") == "a&b"
    assert p.field("remember") is None
    assert p.field("lang") == "en"
    assert p.field("note") == "x y"
    assert p.meta["csrf-token"] == "m-tok"
    assert p.links == [("/a", "Đăng ký khai sinh")]
    assert " ".join(p.title.split()) == "Đăng nhập"


def test_scrubber_forms() -> None:
    s = flow.Scrubber()
    s.add(PASSWORD)
    import urllib.parse

    for form in (PASSWORD, urllib.parse.quote(PASSWORD, safe=""), urllib.parse.quote_plus(PASSWORD), json.dumps(PASSWORD)):
        assert "***" in s(f"x {form} y") and PASSWORD not in s(f"x {form} y")
    assert s({"a": [f"-{PASSWORD}-"]}) == {"a": ["-***-"]}


# --------------------------------------------------------------------------------------------
# configs/journeys.example.yaml: valid in the agent config, and runnable against the replica
# --------------------------------------------------------------------------------------------


def _example_config(tmp_path: Path, journeys: dict[str, Any], base_override: str | None = None) -> Path:
    base = yaml.safe_load((ROOT / "configs/example.yaml").read_text(encoding="utf-8"))
    targets = copy.deepcopy(journeys["targets"])
    if base_override:
        for t in targets:
            t["flow"]["base_url"] = base_override
    base["targets"] = base["targets"] + targets
    base["agent"]["data_dir"] = str(tmp_path / "data")
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(base, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def test_journeys_example_validates(tmp_path: Path) -> None:
    from agent.config import load_config

    text = (ROOT / "configs/journeys.example.yaml").read_text(encoding="utf-8")
    journeys = yaml.safe_load(text)
    config = load_config(_example_config(tmp_path, journeys),
                         env={"DNIS_MONITOR_USER": "giamsat", "DNIS_MONITOR_PASSWORD": PASSWORD})
    flows = [s for s in config.target_specs() if s.kind == "flow"]
    assert len(flows) >= 2
    for spec in flows:
        assert spec.timeout <= spec.interval


async def test_journeys_example_runs_against_the_replica(tmp_path: Path, portal: Portal) -> None:
    """The national-portal journey of the example, aimed at the local replica, passes; with the
    search hanging it names the search step."""
    from agent.config import load_config

    journeys = yaml.safe_load((ROOT / "configs/journeys.example.yaml").read_text(encoding="utf-8"))
    config = load_config(_example_config(tmp_path, journeys, base_override=portal.base),
                         env={"DNIS_MONITOR_USER": USERNAME, "DNIS_MONITOR_PASSWORD": PASSWORD})
    spec = next(s for s in config.target_specs() if s.id == "dvcqg-journey-khai-sinh")
    result = await flow.probe(spec, CTX)
    assert result.outcome.value == "ok", result.detail
    login = next(s for s in config.target_specs() if s.id == "qlvb-journey-dang-nhap")
    result = await flow.probe(login, CTX)
    assert result.outcome.value == "ok", result.detail
    assert_no_secret(result.to_json())
    portal.search_mode = "hang"
    spec = TargetSpec(id=spec.id, kind="flow", timeout=3.0, slow_after=2.0, options=spec.options)
    result = await flow.probe(spec, CTX)
    assert (result.outcome.value, result.facts["flow_failed_step"]) == ("hang", "search")
