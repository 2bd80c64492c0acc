"""The ``tcp`` probe against real servers on 127.0.0.1: banner/echo, refused, silent, reset,
full accept queue (connect hang), TLS (trustme), and name resolution through a real DNS server.
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import struct
import time

import dnslib
import pytest
import trustme

from probes import net, tcp
from probes.base import Outcome, ProbeContext, TargetSpec

MARGIN = 1.5  # seconds: shared 2-core machine, never assert tight timings


def spec(timeout: float = 2.0, slow_after: float = 1.0, **options) -> TargetSpec:
    return TargetSpec(id="tcp-test", kind="tcp", timeout=timeout, slow_after=slow_after, options=tcp.Options(**options))


async def run(target: TargetSpec):
    started = time.perf_counter()
    result = await tcp.probe(target, ProbeContext())
    elapsed = time.perf_counter() - started
    assert elapsed <= target.timeout + MARGIN, f"probe took {elapsed:.2f}s"
    json.dumps(result.to_json())
    return result


class Servers:
    """Start asyncio servers on 127.0.0.1 and close them all at the end."""

    def __init__(self) -> None:
        self.servers: list[asyncio.base_events.Server] = []
        self.tasks: set[asyncio.Task] = set()

    async def start(self, handler, ssl_context: ssl.SSLContext | None = None) -> int:
        async def wrapped(reader, writer):
            task = asyncio.current_task()
            self.tasks.add(task)
            try:
                await handler(reader, writer)
            except (ConnectionError, asyncio.CancelledError, ssl.SSLError, asyncio.IncompleteReadError):
                pass
            finally:
                self.tasks.discard(task)
                writer.transport.abort()

        server = await asyncio.start_server(wrapped, "127.0.0.1", 0, ssl=ssl_context)
        self.servers.append(server)
        return server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        for server in self.servers:
            server.close()


@pytest.fixture
async def servers():
    holder = Servers()
    yield holder
    await holder.close()


async def banner_echo(reader, writer):
    writer.write("220 hcc-sentinel test ready — xin chào\r\n".encode())
    await writer.drain()
    while line := await reader.readline():
        writer.write(b"echo:" + line)
        await writer.drain()


async def silent(reader, writer):
    await asyncio.sleep(30)


async def rst_after_read(reader, writer):
    await reader.read(1)  # wait for the request, then reset
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def wrong_reply(reader, writer):
    writer.write(b"500 go away\r\n")
    await writer.drain()


async def wrong_reply_stay_open(reader, writer):
    writer.write(b"500 go away\r\n")
    await writer.drain()
    await asyncio.sleep(30)


async def test_banner_ok(servers):
    port = await servers.start(banner_echo)
    result = await run(spec(host="127.0.0.1", port=port, expect="^220 .*xin chào"))
    assert result.outcome is Outcome.OK and result.reason == "ok", result.detail
    assert result.facts["ip_address"] == "127.0.0.1"
    assert result.facts["tcp_reply_bytes"] > 0
    assert result.phases["connect"] > 0 and result.phases["processing"] > 0


async def test_send_with_escapes_and_expect_echo(servers):
    port = await servers.start(banner_echo)
    result = await run(spec(host="127.0.0.1", port=port, send="PING \\x41\\t1\\r\\n", expect=r"echo:PING A\t1"))
    assert result.reason == "ok", result.detail


async def test_connect_only_localhost_via_hosts_file(servers):
    port = await servers.start(silent)
    result = await run(spec(host="localhost", port=port, ip_protocol="ip4"))
    assert result.reason == "ok", result.detail
    assert result.facts["ip_address"] == "127.0.0.1"


async def test_refused():
    closed = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    closed.bind(("127.0.0.1", 0))  # bound but not listening: the SYN gets an RST
    try:
        result = await run(spec(host="127.0.0.1", port=closed.getsockname()[1]))
        assert result.outcome is Outcome.ERROR and result.reason == "refused"
    finally:
        closed.close()


async def test_silent_server_is_timeout_first_byte(servers):
    port = await servers.start(silent)
    result = await run(spec(timeout=3.0, host="127.0.0.1", port=port, send="HELLO\\r\\n", expect="^OK",
                            first_byte_timeout="700ms"))
    assert result.outcome is Outcome.HANG and result.reason == "timeout_first_byte", result.detail
    assert result.duration_seconds >= 0.6


async def test_silent_server_total_deadline(servers):
    port = await servers.start(silent)
    result = await run(spec(timeout=0.8, host="127.0.0.1", port=port, expect="^OK"))
    assert result.reason == "timeout_first_byte"


async def test_reset(servers):
    port = await servers.start(rst_after_read)
    result = await run(spec(host="127.0.0.1", port=port, send="HELLO\\r\\n", expect="^OK"))
    assert result.outcome is Outcome.ERROR and result.reason == "reset", result.detail


async def test_expect_mismatch_then_close(servers):
    port = await servers.start(wrong_reply)
    result = await run(spec(host="127.0.0.1", port=port, expect="^220"))
    assert result.outcome is Outcome.ERROR and result.reason == "expect"
    assert "500 go away" in result.detail


async def test_expect_mismatch_connection_stays_open(servers):
    port = await servers.start(wrong_reply_stay_open)
    result = await run(spec(timeout=1.0, host="127.0.0.1", port=port, expect="^220"))
    assert result.reason == "expect"


async def test_expect_byte_cap(servers):
    async def chatty(reader, writer):
        writer.write(b"x" * 10000)
        await writer.drain()
        await asyncio.sleep(30)

    port = await servers.start(chatty)
    result = await run(spec(host="127.0.0.1", port=port, expect="^220", expect_max_bytes=100))
    assert result.reason == "expect" and result.facts["tcp_reply_bytes"] == 100


async def test_full_accept_queue_is_timeout_connect():
    # A listener that never accepts, with its accept queue filled: Linux drops further SYNs,
    # so the next connect hangs.
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    try:
        for _ in range(4):
            filler = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            filler.setblocking(False)
            try:
                filler.connect(("127.0.0.1", port))
            except BlockingIOError:
                pass
            fillers.append(filler)
        await asyncio.sleep(0.2)
        result = await run(spec(timeout=3.0, host="127.0.0.1", port=port, connect_timeout="600ms"))
        if result.reason == "ok":
            pytest.skip("this kernel accepted past the backlog; cannot make a connect hang here")
        assert result.outcome is Outcome.HANG and result.reason == "timeout_connect", result.detail
        assert result.duration_seconds < 2.0
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


# --------------------------------------------------------------------------------------------
# TLS over tcp
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


@pytest.fixture
def ca_file(ca, tmp_path):
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


def server_context(ca, *names, **kwargs) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*names, **kwargs).configure_cert(context)
    return context


async def test_tls_ok_with_banner(servers, ca, ca_file):
    port = await servers.start(banner_echo, server_context(ca, "svc.hcc.test"))
    result = await run(spec(host="127.0.0.1", port=port, tls=True, server_name="svc.hcc.test", ca_file=ca_file,
                            send="hi\\n", expect="echo:hi"))
    assert result.reason == "ok", result.detail
    assert result.phases["tls"] > 0
    assert result.facts["cert_not_after"] > time.time()
    assert result.facts["tls_version"].startswith("TLS")


async def test_tls_untrusted(servers, ca):
    port = await servers.start(silent, server_context(ca, "svc.hcc.test"))
    result = await run(spec(host="127.0.0.1", port=port, tls=True, server_name="svc.hcc.test"))  # system CAs
    assert result.outcome is Outcome.ERROR and result.reason == "tls", result.detail
    assert result.phases["connect"] > 0 and result.phases["tls"] > 0  # a failed handshake still has its time


async def test_tls_wrong_host(servers, ca, ca_file):
    port = await servers.start(silent, server_context(ca, "other.hcc.test"))
    result = await run(spec(host="127.0.0.1", port=port, tls=True, server_name="svc.hcc.test", ca_file=ca_file))
    assert result.reason == "tls_hostname", result.detail


async def test_tls_expired(servers, ca, ca_file):
    import datetime

    now = datetime.datetime.now(datetime.timezone.utc)
    context = server_context(ca, "svc.hcc.test", not_before=now - datetime.timedelta(days=30),
                             not_after=now - datetime.timedelta(days=1))
    port = await servers.start(silent, context)
    result = await run(spec(host="127.0.0.1", port=port, tls=True, server_name="svc.hcc.test", ca_file=ca_file))
    assert result.reason == "tls_expired", result.detail


async def test_tls_not_verified(servers, ca):
    port = await servers.start(silent, server_context(ca, "other.hcc.test"))
    result = await run(spec(host="127.0.0.1", port=port, tls=True, verify_tls=False))
    assert result.reason == "ok", result.detail
    assert "cert_not_after" in result.facts


async def test_tls_handshake_hang(servers, ca_file):
    port = await servers.start(silent)  # plain TCP server that never speaks TLS
    result = await run(spec(timeout=1.0, host="127.0.0.1", port=port, tls=True, ca_file=ca_file))
    assert result.outcome is Outcome.HANG and result.reason == "timeout_tls"


# --------------------------------------------------------------------------------------------
# Name resolution through a real DNS server on 127.0.0.1
# --------------------------------------------------------------------------------------------


class MiniDns(asyncio.DatagramProtocol):
    """``svc.hcc.test`` A 127.0.0.1, ``slow.hcc.test`` never answered, anything else NXDOMAIN."""

    def connection_made(self, transport):  # type: ignore[override]
        self.transport = transport

    def datagram_received(self, data, addr):  # type: ignore[override]
        request = dnslib.DNSRecord.parse(data)
        name = str(request.q.qname).lower()
        reply = request.reply()
        if name == "slow.hcc.test.":
            return
        if name == "svc.hcc.test.":
            if request.q.qtype == dnslib.QTYPE.A:
                reply.add_answer(dnslib.RR(name, dnslib.QTYPE.A, rdata=dnslib.A("127.0.0.1")))
        else:
            reply.header.rcode = dnslib.RCODE.NXDOMAIN
        self.transport.sendto(reply.pack(), addr)


@pytest.fixture
async def mini_dns():
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(MiniDns, local_addr=("127.0.0.1", 0))
    yield f"127.0.0.1:{transport.get_extra_info('sockname')[1]}"
    transport.close()


async def test_resolved_name(servers, mini_dns):
    port = await servers.start(banner_echo)
    result = await run(spec(host="svc.hcc.test", port=port, dns_server=mini_dns, expect="^220"))
    assert result.reason == "ok", result.detail
    assert result.facts["ip_address"] == "127.0.0.1"
    assert result.phases["resolve"] > 0


async def test_nxdomain_is_dns(mini_dns):
    result = await run(spec(host="nothing.hcc.test", port=80, dns_server=mini_dns))
    assert result.outcome is Outcome.ERROR and result.reason == "dns", result.detail


async def test_no_aaaa_is_dns(mini_dns):
    result = await run(spec(host="svc.hcc.test", port=80, dns_server=mini_dns, ip_protocol="ip6"))
    assert result.reason == "dns" and "AAAA" in result.detail


async def test_dns_hang_is_timeout_resolve(mini_dns):
    result = await run(spec(timeout=0.8, host="slow.hcc.test", port=80, dns_server=mini_dns))
    assert result.outcome is Outcome.HANG and result.reason == "timeout_resolve"


def test_unescape_and_options():
    assert tcp.unescape("a\\r\\n\\x00\\\\é") == b"a\r\n\x00\\" + "é".encode()
    with pytest.raises(ValueError):
        tcp.unescape("bad\\q")
    with pytest.raises(ValueError):
        tcp.Options(host="h", port=1, send="\\x4")
    with pytest.raises(ValueError):
        tcp.Options(host="h", port=1, expect="(")
    with pytest.raises(ValueError):
        tcp.Options(host="h", port=70000)
    assert net.parse_server("[::1]:5353") == ("::1", 5353)
    assert net.parse_server("::1") == ("::1", 53)
    assert net.parse_server("127.0.0.1:5353") == ("127.0.0.1", 5353)
