"""Tests of probes/http.py against real misbehaving servers on 127.0.0.1 (tests/servers).

Every network test asserts the outcome, the reason and that the probe returned within its
deadline plus a generous margin (the machine is shared).  No test touches DNS or any address
outside loopback: name-based cases replace ``probes.http._lookup``.
"""

from __future__ import annotations

import asyncio
import errno
import gc
import json
import socket
import time
import unicodedata
from urllib.parse import quote

import psutil
import pydantic
import pytest

import probes
from probes import http as http_probe
from probes.base import PHASES, Outcome, ProbeContext, ProbeResult, TargetSpec
from probes.http import Options, classify_exception, decode_body, parse_json_path, probe, walk_json
from probes.net import ProbeFailure
from tests.servers import (
    MisbehavingHTTPServer,
    Reply,
    TLSMaterial,
    encode_body,
    free_port,
    silent_server,
    unresponsive_listener,
)

MARGIN = 1.5  # seconds allowed beyond spec.timeout (shared 2-core machine)
CTX = ProbeContext(user_agent="hcc-sentinel/test (commune=26068)", headers={"X-Synthetic-Probe": "hcc-sentinel; commune=26068"})
KEYWORD = "Thủ tục hành chính"
MAINTENANCE = "Hệ thống đang bảo trì"


def spec_for(url: str, *, timeout: float = 5.0, slow_after: float = 3.0, **options: object) -> TargetSpec:
    return TargetSpec(id="t1", kind="http", timeout=timeout, slow_after=slow_after,
                      options=Options.model_validate({"url": url, **options}))


async def run(url: str, *, timeout: float = 5.0, slow_after: float = 3.0, ctx: ProbeContext = CTX, **options: object) -> ProbeResult:
    spec = spec_for(url, timeout=timeout, slow_after=slow_after, **options)
    started = time.monotonic()
    result = await probe(spec, ctx)
    elapsed = time.monotonic() - started
    assert elapsed <= timeout + MARGIN, f"probe took {elapsed:.2f}s, deadline {timeout}s"
    assert isinstance(result, ProbeResult)
    assert set(result.phases) <= set(PHASES)
    return result


def expect(result: ProbeResult, outcome: str, reason: str) -> None:
    assert (result.outcome.value, result.reason) == (outcome, reason), (result.outcome, result.reason, result.detail)


def assert_phases_add_up(r: ProbeResult) -> None:
    """The five phases cover the probe; only set-up and the body checks fall outside them."""
    gap = r.duration_seconds - sum(r.phases.values())
    assert -0.01 < gap < 0.1 + 0.05 * r.duration_seconds, (gap, r.phases, r.duration_seconds)


def cp1258(text: str) -> bytes:
    """Encode Vietnamese as Windows-1258 does: precomposed base letters + combining tone marks."""
    out = bytearray()
    for ch in unicodedata.normalize("NFC", text):
        try:
            out += ch.encode("cp1258")
        except UnicodeEncodeError:
            decomposed = unicodedata.normalize("NFD", ch)
            base, tone = unicodedata.normalize("NFC", decomposed[:-1]), decomposed[-1]
            out += base.encode("cp1258") + tone.encode("cp1258")
    return bytes(out)


@pytest.fixture
async def srv():
    async with MisbehavingHTTPServer() as server:
        yield server


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    return TLSMaterial(tmp_path_factory.mktemp("tls"))


# ------------------------------------------------------------------------------------------
# module contract
# ------------------------------------------------------------------------------------------


def test_module_contract():
    assert http_probe.KIND == "http"
    assert probes.kinds()["http"] is http_probe
    assert Options.model_config["extra"] == "forbid"
    with pytest.raises(pydantic.ValidationError):
        Options.model_validate({"url": "http://127.0.0.1/", "no_such_option": 1})


def test_options_validation():
    o = Options.model_validate({"url": "http://127.0.0.1/", "expect_status": ["2xx", 301, "400-404"],
                                "connect_timeout": "500ms", "stall_timeout": "2s"})
    assert o.expect_status == ((200, 299), (301, 301), (400, 404))
    assert o.connect_timeout == 0.5 and o.stall_timeout == 2.0
    assert Options.model_validate({"url": "http://127.0.0.1/", "expect_status": "3xx"}).expect_status == ((300, 399),)
    assert o.max_body_bytes == 1024 * 1024 and o.follow_redirects and o.verify_tls and o.ip_protocol == "ip4"
    bad = [
        {"url": "ftp://127.0.0.1/"},
        {"url": "http://127.0.0.1/", "body": "a", "json": {"a": 1}},
        {"url": "http://127.0.0.1/", "expect_status": ["7xx"]},
        {"url": "http://127.0.0.1/", "body_regex": ["("]},
        {"url": "http://127.0.0.1/", "basic_auth": {"username": "u", "password": "p"}, "bearer_token": "t"},
        {"url": "http://127.0.0.1/", "json_conditions": [{"path": "a", "equals": 1, "exists": True}]},
        {"url": "http://127.0.0.1/", "json_conditions": [{"path": "a..b", "exists": True}]},
        {"url": "http://127.0.0.1/", "ca_file": "/nonexistent/ca.pem"},
        {"url": "http://127.0.0.1/", "headers": {"X-A": "a\r\nInjected: 1"}},
    ]
    for doc in bad:
        with pytest.raises(pydantic.ValidationError):
            Options.model_validate(doc)
    secret = Options.model_validate({"url": "http://127.0.0.1/", "bearer_token": "s3cr3t-token"})
    assert "s3cr3t-token" not in repr(secret)


def test_json_path_walker():
    doc = {"data": {"status": "OK", "items": [{"name": "a"}, {"name": "b"}], "a.b": 1, "0": "zero"}}
    assert parse_json_path("data.items[1].name") == ("data", "items", 1, "name")
    assert walk_json(doc, "data.status") == "OK"
    assert walk_json(doc, "$.data.items.0.name") == "a"
    assert walk_json(doc, "data.items[-1].name") == "b"
    assert walk_json(doc, r"data.a\.b") == 1
    assert walk_json(doc, "data.0") == "zero"  # digits are a key on an object
    assert walk_json(doc, "") == doc
    missing = walk_json(doc, "data.items[5].name")
    assert missing is walk_json(doc, "data.nope") is walk_json(doc, "data.status.deeper")


def test_decode_body_rules():
    text = KEYWORD + " – Cổng dịch vụ công"
    assert decode_body(cp1258(text), "text/html; charset=windows-1258")[0] == text
    assert decode_body(b"\xef\xbb\xbf" + text.encode(), "text/html; charset=iso-8859-1")[0] == text  # BOM wins
    assert decode_body(text.encode("utf-16-le").join([b"\xff\xfe", b""]), None)[0] == text
    meta = b'<html><head><meta http-equiv="Content-Type" content="text/html; charset=windows-1258"></head>'
    assert decode_body(meta + cp1258(text), "text/html")[0].endswith(text)
    assert decode_body(text.encode(), None) == (text, "utf-8")
    assert decode_body(unicodedata.normalize("NFD", text).encode(), None)[0] == text  # NFC out


def test_classify_unreachable_and_friends():
    assert classify_exception(OSError(errno.ENETUNREACH, "Network is unreachable"), "connect", "h:1")[0] == "unreachable"
    assert classify_exception(OSError(errno.EHOSTUNREACH, "No route to host"), "connect", "h:1")[0] == "unreachable"
    assert classify_exception(ConnectionRefusedError(errno.ECONNREFUSED, "refused"), "connect", "h:1")[0] == "refused"
    assert classify_exception(ConnectionResetError(errno.ECONNRESET, "reset"), "processing", "u")[0] == "reset"
    assert classify_exception(socket.gaierror(socket.EAI_NONAME, "Name or service not known"), "resolve", "h")[0] == "dns"
    assert classify_exception(OSError(errno.EACCES, "Permission denied"), "connect", "h:1")[0] == "connect"


# ------------------------------------------------------------------------------------------
# success, slow, phases, headers
# ------------------------------------------------------------------------------------------


async def test_ok_with_facts_and_phases(srv):
    r = await run(srv.url("/ok"))
    expect(r, "ok", "ok")
    assert r.success
    f = r.facts
    assert f["http_status_code"] == 200 and f["http_version"] == "1.1"
    assert f["body_bytes"] == 3 and f["body_bytes_compressed"] == 3 and f["content_length"] == 3
    assert f["redirects"] == 0 and f["ip_address"] == "127.0.0.1" and f["http_ssl"] is False
    assert f["final_url"] == srv.url("/ok")
    assert set(r.to_json()["phases"]) == set(PHASES)
    assert all(v >= 0 for v in r.phases.values())
    assert_phases_add_up(r)


async def test_slow(srv):
    r = await run(srv.url("/delay/0.5"), slow_after=0.2)
    expect(r, "slow", "slow")
    assert r.success
    assert 0.4 <= r.phases["processing"] <= 0.5 + MARGIN
    assert_phases_add_up(r)


async def test_user_agent_and_context_headers_reach_server(srv):
    r = await run(srv.url("/echo"), headers={"X-Target": "motcua"})
    expect(r, "ok", "ok")
    seen = srv.requests[-1].headers
    assert seen["user-agent"] == CTX.user_agent
    assert seen["x-synthetic-probe"] == CTX.headers["X-Synthetic-Probe"]
    assert seen["x-target"] == "motcua"
    assert seen["connection"] == "close"  # fresh connection per probe, no keep-alive


async def test_fresh_connection_per_probe(srv):
    await run(srv.url("/ok"))
    await run(srv.url("/ok"))
    ports = {req.peer[1] for req in srv.requests[-2:]}
    assert len(ports) == 2


async def test_post_json_body(srv):
    r = await run(srv.url("/echo"), method="post", json={"mã": "26068"}, json_conditions=[
        {"path": "method", "equals": "POST"},
        {"path": "headers.content-type", "equals": "application/json"},
        {"path": "body", "regex": "26068"},
    ])
    expect(r, "ok", "ok")
    assert json.loads(srv.requests[-1].body) == {"mã": "26068"}


# ------------------------------------------------------------------------------------------
# hangs
# ------------------------------------------------------------------------------------------


async def test_stall_before_headers(srv):
    r = await run(srv.url("/hang"), timeout=4, first_byte_timeout=1)
    expect(r, "hang", "timeout_first_byte")
    assert r.phases["processing"] >= 0.9
    assert r.duration_seconds < 4


async def test_stall_before_headers_hits_total_deadline(srv):
    r = await run(srv.url("/hang"), timeout=1.5)
    expect(r, "hang", "timeout_first_byte")


async def test_200_then_stalled_body_is_never_ok(srv):
    r = await run(srv.url("/stall-body"), timeout=4, stall_timeout=1)
    expect(r, "hang", "stall")
    assert r.facts["http_status_code"] == 200
    assert r.facts["body_bytes_compressed"] == 100
    assert r.phases["transfer"] >= 0.9


async def test_body_dripping_until_total_deadline(srv):
    r = await run(srv.url("/drip?interval=0.2&bytes=100"), timeout=2, stall_timeout=1)
    expect(r, "hang", "timeout_total")
    assert 0 < r.facts["body_bytes_compressed"] < 100


async def test_body_dripping_slower_than_stall_timeout(srv):
    r = await run(srv.url("/drip?interval=1.5&bytes=5"), timeout=4, stall_timeout=0.5)
    expect(r, "hang", "stall")


async def test_tcp_connect_hangs():
    try:
        cm = unresponsive_listener()
        url = await cm.__aenter__()
    except RuntimeError as exc:
        pytest.skip(f"cannot make a hanging listener here: {exc}")
    try:
        r = await run(url + "/", timeout=4, connect_timeout=1)
        expect(r, "hang", "timeout_connect")
        assert r.phases["connect"] >= 0.9
    finally:
        await cm.__aexit__(None, None, None)


async def test_tls_handshake_hangs():
    async with silent_server() as (host, port):
        r = await run(f"https://{host}:{port}/", timeout=4, tls_timeout=1)
    expect(r, "hang", "timeout_tls")
    assert r.phases["tls"] >= 0.9


# ------------------------------------------------------------------------------------------
# connection errors
# ------------------------------------------------------------------------------------------


async def test_refused_port():
    r = await run(f"http://127.0.0.1:{free_port()}/")
    expect(r, "error", "refused")


async def test_reset_before_response(srv):
    r = await run(srv.url("/reset"))
    expect(r, "error", "reset")


async def test_reset_mid_body(srv):
    r = await run(srv.url("/reset-body"))
    expect(r, "error", "reset")


async def test_closed_without_response(srv):
    r = await run(srv.url("/close"))
    expect(r, "error", "reset")


async def test_garbage_is_protocol_error(srv):
    r = await run(srv.url("/garbage"))
    expect(r, "error", "protocol")


# ------------------------------------------------------------------------------------------
# DNS (no real DNS: the resolver seam is replaced)
# ------------------------------------------------------------------------------------------


async def test_dns_failure(monkeypatch):
    async def nxdomain(host, ip_protocol, timeout):
        raise ProbeFailure("dns", f"{host}: NXDOMAIN (name does not exist)")

    monkeypatch.setattr(http_probe, "_lookup", nxdomain)
    r = await run("http://portal.invalid/")
    expect(r, "error", "dns")
    assert "portal.invalid" in r.detail


async def test_dns_hang(monkeypatch):
    async def never(host, ip_protocol, timeout):
        await asyncio.sleep(3600)

    monkeypatch.setattr(http_probe, "_lookup", never)
    r = await run("http://portal.invalid/", timeout=1)
    expect(r, "hang", "timeout_resolve")
    assert r.phases["resolve"] >= 0.9


async def test_name_resolution_and_ip_preference(monkeypatch, srv):
    calls = []

    async def fake(host, ip_protocol, timeout):
        calls.append((host, ip_protocol))
        return [(socket.AF_INET6, "::1"), (socket.AF_INET, "127.0.0.1")]

    monkeypatch.setattr(http_probe, "_lookup", fake)
    r = await run(f"http://portal.test:{srv.port}/echo")
    expect(r, "ok", "ok")
    assert r.facts["ip_address"] == "127.0.0.1"  # ip4 preferred over the ::1 listed first
    assert srv.requests[-1].headers["host"] == f"portal.test:{srv.port}"

    assert calls == [("portal.test", "auto")]  # with fallback: both families asked for

    async def only_v6(host, ip_protocol, timeout):
        calls.append((host, ip_protocol))
        return [(socket.AF_INET6, "::1")]

    monkeypatch.setattr(http_probe, "_lookup", only_v6)
    r = await run(f"http://portal.test:{srv.port}/", ip_protocol_fallback=False)
    expect(r, "error", "dns")
    assert calls[-1] == ("portal.test", "ip4")  # without fallback: only the preferred family
    assert "IPv4" in r.detail


async def test_ip6_preference_with_fallback_orders_ip6_first(monkeypatch):
    async def fake(host, ip_protocol, timeout):
        return [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")]

    monkeypatch.setattr(http_probe, "_lookup", fake)
    tracker = http_probe._Tracker(Options(url="http://portal.test/", ip_protocol="ip6"), 5.0)
    tracker.new_hop(False)
    found = await http_probe._Resolver(tracker).resolve("portal.test", 8080)
    assert [(a["host"], a["port"], a["family"]) for a in found] == [
        ("::1", 8080, socket.AF_INET6), ("127.0.0.1", 8080, socket.AF_INET)]


class _TinyDNS(asyncio.DatagramProtocol):
    """UDP DNS on 127.0.0.1: ``portal.hcc.test`` has A 127.0.0.1 (and no AAAA); every other
    name gets no reply at all (a hanging lookup)."""

    def connection_made(self, transport):  # type: ignore[override]
        self.transport = transport

    def datagram_received(self, data, addr):  # type: ignore[override]
        import dnslib

        request = dnslib.DNSRecord.parse(data)
        if str(request.q.qname).lower() != "portal.hcc.test.":
            return
        reply = request.reply()
        if dnslib.QTYPE[request.q.qtype] == "A":
            reply.add_answer(dnslib.RR(request.q.qname, dnslib.QTYPE.A, rdata=dnslib.A("127.0.0.1"), ttl=60))
        self.transport.sendto(reply.pack(), addr)


async def test_hanging_lookups_use_no_thread_and_do_not_stall_others(monkeypatch, srv):
    """The real resolver path (dnspython, asyncio) against a loopback DNS server: many hanging
    lookups run next to a good one, and nothing goes through the loop's thread pool."""
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(_TinyDNS, local_addr=("127.0.0.1", 0))
    server = f"127.0.0.1:{transport.get_extra_info('sockname')[1]}"
    real = http_probe.resolve_host

    async def via_test_server(host, ip_protocol, timeout):
        return await real(host, ip_protocol, timeout, server)

    def forbidden(*args, **kwargs):
        raise AssertionError("the http probe must not use the loop's thread pool")

    monkeypatch.setattr(http_probe, "resolve_host", via_test_server)
    monkeypatch.setattr(loop, "getaddrinfo", forbidden)
    monkeypatch.setattr(loop, "run_in_executor", forbidden)
    try:
        hanging = [asyncio.create_task(run(f"http://hang{i}.hcc.test/", timeout=2)) for i in range(10)]
        good = await run(f"http://portal.hcc.test:{srv.port}/echo", timeout=2)
        expect(good, "ok", "ok")
        assert good.facts["ip_address"] == "127.0.0.1"
        for result in await asyncio.gather(*hanging):
            expect(result, "hang", "timeout_resolve")
    finally:
        transport.close()


# ------------------------------------------------------------------------------------------
# status, redirects
# ------------------------------------------------------------------------------------------


async def test_5xx(srv):
    r = await run(srv.url("/status/503"))
    expect(r, "error", "http_status")
    assert r.facts["http_status_code"] == 503
    assert "503" in r.detail


async def test_expected_status_list(srv):
    expect(await run(srv.url("/status/404"), expect_status=[404]), "ok", "ok")
    expect(await run(srv.url("/redirect/loop"), follow_redirects=False, expect_status=["3xx"]), "ok", "ok")


async def test_redirect_chain_sums_phases(srv):
    r = await run(srv.url("/redirect/chain/3"))
    expect(r, "ok", "ok")
    assert r.facts["redirects"] == 3 and r.facts["final_url"].endswith("/redirect/chain/0")
    assert_phases_add_up(r)


async def test_redirect_loop(srv):
    r = await run(srv.url("/redirect/loop"))
    expect(r, "error", "redirect_limit")
    assert "loop" in r.detail


async def test_self_redirect_that_sets_a_cookie_is_not_a_loop(srv):
    def login(req):
        if "sid=42" in req.headers.get("cookie", ""):
            return Reply(body=b"logged in")
        return Reply(status=302, headers=[("Location", "/login"), ("Set-Cookie", "sid=42; Path=/")])

    srv.route("/login", login)
    r = await run(srv.url("/login"), body_contains=["logged in"])
    expect(r, "ok", "ok")
    assert r.facts["redirects"] == 1


async def test_too_many_redirects(srv):
    r = await run(srv.url("/redirect/chain/5"), max_redirects=3)
    expect(r, "error", "redirect_limit")


async def test_redirect_to_other_host():
    async with MisbehavingHTTPServer("127.0.0.1") as a, MisbehavingHTTPServer("127.0.0.2") as b:
        url = a.url("/redirect/to?url=" + quote(b.url("/echo"), safe=""))
        r = await run(url, redirect_same_host_only=True)
        expect(r, "error", "redirect_policy")
        assert not b.requests
        # Allowed by default; credentials are not forwarded to the other origin.
        r = await run(url, bearer_token="tok-123")
        expect(r, "ok", "ok")
        assert r.facts["ip_address"] == "127.0.0.2"
        assert a.requests[-1].headers["authorization"] == "Bearer tok-123"
        assert "authorization" not in b.requests[-1].headers


async def test_redirect_to_non_http_scheme(srv):
    r = await run(srv.url("/redirect/to?url=" + quote("ftp://127.0.0.1/x", safe="")))
    expect(r, "error", "redirect_policy")


async def test_303_turns_post_into_get(srv):
    r = await run(srv.url("/redirect/to?status=303&url=/echo"), method="POST", body="x=1",
                  json_conditions=[{"path": "method", "equals": "GET"}, {"path": "body", "equals": ""}])
    expect(r, "ok", "ok")


# ------------------------------------------------------------------------------------------
# body: size, encodings, charsets, content checks, JSON
# ------------------------------------------------------------------------------------------


async def test_endless_body_is_capped_and_memory_bounded(srv):
    proc = psutil.Process()
    gc.collect()
    before = proc.memory_info().rss
    r = await run(srv.url("/endless"), max_body_bytes=8 * 1024 * 1024, body_contains=["never there"])
    expect(r, "error", "body_too_large")
    gc.collect()
    growth = proc.memory_info().rss - before
    assert growth < 50 * 1024 * 1024, growth
    assert r.facts["body_bytes_compressed"] >= 8 * 1024 * 1024


async def test_content_length_over_cap_stops_at_once(srv):
    srv.route("/big", Reply(body=b"z" * 5000))
    r = await run(srv.url("/big"), max_body_bytes=1000)
    expect(r, "error", "body_too_large")


async def test_decompression_bomb_is_capped(srv):
    srv.route("/bomb", Reply(body=encode_body(b"\0" * (64 * 1024 * 1024), "gzip"), headers=[("Content-Encoding", "gzip")]))
    r = await run(srv.url("/bomb"))
    expect(r, "error", "body_too_large")


@pytest.mark.parametrize("coding", ["gzip", "br", "deflate", "deflate-raw"])
async def test_compressed_bodies(srv, coding):
    page = f"<html><body><h1>{KEYWORD}</h1>{'Cổng dịch vụ công ' * 200}</body></html>"
    header = "deflate" if coding.startswith("deflate") else coding
    srv.route("/z", Reply(body=encode_body(page, coding), headers=[("Content-Encoding", header)], content_type="text/html; charset=utf-8"))
    r = await run(srv.url("/z"), body_contains=[KEYWORD])
    expect(r, "ok", "ok")
    assert r.facts["body_bytes"] == len(page.encode())
    assert r.facts["body_bytes_compressed"] < r.facts["body_bytes"]
    assert "gzip" in srv.requests[-1].headers["accept-encoding"]


async def test_windows_1258_body(srv):
    srv.route("/vn", Reply(body=cp1258(f"<p>{KEYWORD}</p>"), content_type="text/html; charset=windows-1258"))
    r = await run(srv.url("/vn"), body_contains=[KEYWORD])
    expect(r, "ok", "ok")
    assert r.facts["body_charset"] == "cp1258"
    srv.route("/vn-meta", Reply(body=b'<meta charset="windows-1258">' + cp1258(KEYWORD), content_type="text/html"))
    expect(await run(srv.url("/vn-meta"), body_contains=[KEYWORD]), "ok", "ok")


async def test_utf8_bom_body(srv):
    srv.route("/bom", Reply(body=b"\xef\xbb\xbf" + f"<p>{KEYWORD}</p>".encode(), content_type="text/html"))
    r = await run(srv.url("/bom"), body_contains=[KEYWORD])
    expect(r, "ok", "ok")


async def test_nfd_and_nfc_are_the_same_text(srv):
    nfd = unicodedata.normalize("NFD", KEYWORD)
    assert nfd != KEYWORD
    srv.route("/nfd", Reply(body=f"<p>{nfd}</p>".encode()))
    srv.route("/nfc", Reply(body=f"<p>{KEYWORD}</p>".encode()))
    expect(await run(srv.url("/nfd"), body_contains=[KEYWORD]), "ok", "ok")
    expect(await run(srv.url("/nfc"), body_contains=[nfd]), "ok", "ok")
    expect(await run(srv.url("/nfd"), body_regex=[r"Thủ\s+tục"]), "ok", "ok")


async def test_maintenance_page_with_200_is_content_error(srv):
    srv.route("/home", Reply(body=f"<html><h1>{MAINTENANCE}</h1></html>".encode(), content_type="text/html; charset=utf-8"))
    r = await run(srv.url("/home"), body_not_contains=[MAINTENANCE])
    expect(r, "error", "content")
    assert r.facts["http_status_code"] == 200
    r = await run(srv.url("/home"), body_contains=[KEYWORD])
    expect(r, "error", "content")
    r = await run(srv.url("/home"), body_not_regex=["bảo\\s+trì"])
    expect(r, "error", "content")


async def test_json_conditions(srv):
    doc = {"data": {"status": "OK", "count": 3, "ready": True, "note": None,
                    "items": [{"name": "Hộ tịch"}, {"name": "Đất đai"}]}}
    srv.route("/api", Reply(body=json.dumps(doc, ensure_ascii=False).encode(), content_type="application/json"))
    passing = [
        {"path": "data.status", "equals": "OK"},
        {"path": "data.status", "in": ["OK", "DEGRADED"]},
        {"path": "data.count", "min": 1, "max": 10},
        {"path": "data.ready", "equals": True},
        {"path": "data.note", "equals": None},
        {"path": "data.items[1].name", "equals": unicodedata.normalize("NFD", "Đất đai")},
        {"path": "data.items.0.name", "regex": "^Hộ"},
        {"path": "data.error", "exists": False},
        {"path": "data.status", "not_equals": "DOWN"},
    ]
    expect(await run(srv.url("/api"), json_conditions=passing), "ok", "ok")
    failing = [
        [{"path": "data.status", "equals": "DOWN"}],
        [{"path": "data.count", "equals": True}],  # 3 is not true: booleans are not numbers
        [{"path": "data.missing", "exists": True}],
        [{"path": "data.count", "max": 2}],
        [{"path": "data.items[5].name", "equals": "x"}],
    ]
    for conditions in failing:
        r = await run(srv.url("/api"), json_conditions=conditions)
        expect(r, "error", "json")
    srv.route("/notjson", Reply(body=b"<html>oops</html>", content_type="text/html"))
    expect(await run(srv.url("/notjson"), json_conditions=[{"path": "a", "exists": True}]), "error", "json")


# ------------------------------------------------------------------------------------------
# authentication, secrets
# ------------------------------------------------------------------------------------------


async def test_basic_auth(srv):
    url = srv.url("/auth/basic?user=canbo&password=m%E1%BA%ADt-kh%E1%BA%A9u")  # mật-khẩu
    expect(await run(url, basic_auth={"username": "canbo", "password": "mật-khẩu"}), "ok", "ok")
    r = await run(url, basic_auth={"username": "canbo", "password": "wrong-pass-xyz"})
    expect(r, "error", "http_status")
    assert r.facts["http_status_code"] == 401
    assert "wrong-pass-xyz" not in json.dumps(r.to_json(), ensure_ascii=False)


async def test_bearer_token(srv):
    expect(await run(srv.url("/auth/bearer?token=abc.def"), bearer_token="abc.def"), "ok", "ok")
    expect(await run(srv.url("/auth/bearer?token=abc.def"), bearer_token="nope"), "error", "http_status")


async def test_url_credentials_are_used_but_never_shown(srv):
    url = f"http://canbo:hunter2@127.0.0.1:{srv.port}/auth/basic?user=canbo&password=hunter2"
    r = await run(url)
    expect(r, "ok", "ok")
    shown = json.dumps(r.to_json(), ensure_ascii=False)
    assert "hunter2" not in shown and "canbo:" not in shown
    r = await run(f"http://canbo:hunter2@127.0.0.1:{srv.port}/status/500?token=hunter2")
    expect(r, "error", "http_status")
    assert "hunter2" not in r.detail and "hunter2" not in json.dumps(r.to_json())


# ------------------------------------------------------------------------------------------
# TLS
# ------------------------------------------------------------------------------------------


async def test_tls_good_with_ca_file(tls):
    async with MisbehavingHTTPServer(ssl_context=tls.good()) as s:
        r = await run(s.url("/ok"), ca_file=str(tls.ca_file))
    expect(r, "ok", "ok")
    assert r.facts["http_ssl"] is True
    assert r.facts["tls_version"] in ("TLSv1.2", "TLSv1.3")
    assert r.facts["cert_not_after"] > time.time() + 86400
    assert r.facts["cert_leaf_not_after"] >= r.facts["cert_not_after"]
    assert r.phases["tls"] > 0  # guards the aiohttp connector hook splitting TCP from TLS
    assert_phases_add_up(r)


async def test_tls_unknown_ca(tls):
    async with MisbehavingHTTPServer(ssl_context=tls.good()) as s:
        r = await run(s.url("/ok"))
    expect(r, "error", "tls")


async def test_tls_expired(tls):
    async with MisbehavingHTTPServer(ssl_context=tls.expired()) as s:
        r = await run(s.url("/ok"), ca_file=str(tls.ca_file))
    expect(r, "error", "tls_expired")


async def test_tls_wrong_host(tls):
    async with MisbehavingHTTPServer(ssl_context=tls.wrong_host()) as s:
        r = await run(s.url("/ok"), ca_file=str(tls.ca_file))
    expect(r, "error", "tls_hostname")


async def test_tls_self_signed(tls):
    async with MisbehavingHTTPServer(ssl_context=tls.self_signed()) as s:
        r = await run(s.url("/ok"), ca_file=str(tls.ca_file))
        expect(r, "error", "tls")
        assert "self" in r.detail.lower()
        r = await run(s.url("/ok"), verify_tls=False)
    expect(r, "ok", "ok")
    assert r.facts["cert_not_after"] > time.time()


async def test_https_redirect_chain_phases(tls):
    async with MisbehavingHTTPServer(ssl_context=tls.good()) as s:
        r = await run(s.url("/redirect/chain/2"), ca_file=str(tls.ca_file))
    expect(r, "ok", "ok")
    assert r.facts["redirects"] == 2
    assert r.phases["tls"] > 0


async def test_cancellation_propagates_and_closes_sockets(srv):
    spec = spec_for(srv.url("/hang"), timeout=10)
    task = asyncio.create_task(probe(spec, CTX))
    for _ in range(100):
        await asyncio.sleep(0.02)
        if srv.requests:
            break
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.1)
    client_side = [c for c in psutil.Process().net_connections(kind="tcp4")
                   if c.raddr and c.raddr[1] == srv.port and c.status == psutil.CONN_ESTABLISHED]
    assert not client_side


async def test_unexpected_exception_becomes_internal(monkeypatch):
    async def broken(host, ip_protocol, timeout):
        raise RuntimeError("boom")

    monkeypatch.setattr(http_probe, "_lookup", broken)
    r = await run("http://portal.invalid/")
    expect(r, "error", "internal")


# ------------------------------------------------------------------------------------------
# phases cross-checked against the real blackbox_exporter (Debian package)
# ------------------------------------------------------------------------------------------


@pytest.fixture
async def blackbox(tmp_path, tls):
    from tests.conftest import require_binary

    binary = require_binary("prometheus-blackbox-exporter")
    config = tmp_path / "blackbox.yml"
    config.write_text("modules:\n  http:\n    prober: http\n    timeout: 5s\n"
                      "    http:\n      preferred_ip_protocol: ip4\n"
                      f"      tls_config:\n        ca_file: {tls.ca_file}\n")
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        binary, f"--config.file={config}", f"--web.listen-address=127.0.0.1:{port}",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                break
            except OSError:
                await asyncio.sleep(0.05)
        else:
            pytest.fail("blackbox_exporter did not start")
        yield f"http://127.0.0.1:{port}"
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


@pytest.mark.parametrize("scheme", ["http", "https"])
async def test_phases_agree_with_blackbox_exporter(blackbox, tls, scheme):
    async with MisbehavingHTTPServer(ssl_context=tls.good() if scheme == "https" else None) as srv:
        srv.route("/timed", Reply(body=b"abcde", delay=0.4, drip=0.15))
        target = srv.url("/timed")
        ours = await run(target, ca_file=str(tls.ca_file))
        text = await _blackbox_probe(blackbox, target)
    expect(ours, "ok", "ok")
    theirs = {}
    for line in text.splitlines():
        if line.startswith("probe_http_duration_seconds{"):
            phase = line.split('phase="')[1].split('"')[0]
            theirs[phase] = float(line.rsplit(" ", 1)[1])
        elif line.startswith(("probe_success ", "probe_http_status_code ", "probe_http_uncompressed_body_length ",
                              "probe_ssl_earliest_cert_expiry ")):
            name, value = line.split()
            theirs[name] = float(value)
    assert theirs["probe_success"] == 1 and theirs["probe_http_status_code"] == 200
    assert theirs["probe_http_uncompressed_body_length"] == ours.facts["body_bytes"] == 5
    for phase in ("processing", "transfer"):  # 0.4 s before the status line, 5 bytes 0.15 s apart
        assert abs(ours.phases[phase] - theirs[phase]) < 0.3, (phase, ours.phases, theirs)
    assert ours.phases["processing"] >= 0.35 and ours.phases["transfer"] >= 0.5
    assert theirs["resolve"] < 0.1 and ours.phases["resolve"] < 0.1
    if scheme == "http":
        assert ours.phases["tls"] == 0 == theirs["tls"]
    else:
        assert ours.phases["tls"] > 0 and theirs["tls"] > 0
        assert ours.facts["cert_not_after"] == int(theirs["probe_ssl_earliest_cert_expiry"])


async def _blackbox_probe(blackbox: str, target: str) -> str:
    import aiohttp

    async with aiohttp.ClientSession() as client:
        async with client.get(f"{blackbox}/probe", params={"module": "http", "target": target}) as resp:
            return await resp.text()


def test_outcome_enum_is_the_base_one():
    assert Outcome("hang") is Outcome.HANG
