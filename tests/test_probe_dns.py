"""The ``dns`` probe against a real DNS server on 127.0.0.1 (asyncio UDP + TCP, dnslib packets).

Zone ``hcc.test.`` served by :class:`ZoneServer`:

* ``www``   A (mutable, to show there is no stale cache) and AAAA
* ``alias`` CNAME -> www
* ``big``   60 A records: over UDP the reply is truncated (TC), the probe must retry over TCP
* ``empty`` NOERROR, no answer
* ``fail``  SERVFAIL
* ``hang``  never answered
* ``junk``  a malformed reply
* anything else NXDOMAIN
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import time

import dnslib
import pytest

from probes import dns as dns_probe
from probes.base import Outcome, ProbeContext, TargetSpec

MARGIN = 1.5  # seconds: shared 2-core machine, never assert tight timings


class ZoneServer:
    """A tiny authoritative server for ``hcc.test.`` on 127.0.0.1 (same port for UDP and TCP)."""

    def __init__(self) -> None:
        self.www_a = ["10.1.2.3"]
        self.queries: list[tuple[str, str, str]] = []  # (transport, name, type)
        self.port = 0
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.base_events.Server | None = None

    def answer(self, data: bytes, transport: str) -> bytes | None:
        request = dnslib.DNSRecord.parse(data)
        qname = str(request.q.qname).lower()
        qtype = dnslib.QTYPE[request.q.qtype]
        self.queries.append((transport, qname, qtype))
        reply = request.reply()  # QR, AA, RD copied, RA
        if qname == "hang.hcc.test.":
            return None
        if qname == "junk.hcc.test.":
            return data[:2] + b"\x81\x80\x00"  # our id, then a truncated header
        if qname == "fail.hcc.test.":
            reply.header.rcode = dnslib.RCODE.SERVFAIL
        elif qname == "www.hcc.test.":
            if qtype == "A":
                for ip in self.www_a:
                    reply.add_answer(dnslib.RR(qname, dnslib.QTYPE.A, rdata=dnslib.A(ip), ttl=3600))
            elif qtype == "AAAA":
                reply.add_answer(dnslib.RR(qname, dnslib.QTYPE.AAAA, rdata=dnslib.AAAA("fd00::10"), ttl=3600))
        elif qname == "alias.hcc.test.":
            reply.add_answer(dnslib.RR(qname, dnslib.QTYPE.CNAME, rdata=dnslib.CNAME("www.hcc.test."), ttl=60))
            if qtype == "A":
                for ip in self.www_a:
                    reply.add_answer(dnslib.RR("www.hcc.test.", dnslib.QTYPE.A, rdata=dnslib.A(ip), ttl=60))
        elif qname == "big.hcc.test." and qtype == "A":
            for i in range(60):
                reply.add_answer(dnslib.RR(qname, dnslib.QTYPE.A, rdata=dnslib.A(f"10.9.0.{i + 1}"), ttl=60))
        elif qname == "empty.hcc.test.":
            pass
        else:
            reply.header.rcode = dnslib.RCODE.NXDOMAIN
        packed = reply.pack()
        if transport == "udp" and len(packed) > 512:  # RFC 1035 §4.2.1
            reply.rr = []
            reply.header.tc = 1
            packed = reply.pack()
        return packed

    async def start(self) -> "ZoneServer":
        loop = asyncio.get_running_loop()
        server = self

        class Udp(asyncio.DatagramProtocol):
            def connection_made(self, transport):  # type: ignore[override]
                self.transport = transport

            def datagram_received(self, data, addr):  # type: ignore[override]
                out = server.answer(data, "udp")
                if out is not None:
                    self.transport.sendto(out, addr)

        async def tcp_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while True:
                    (length,) = struct.unpack("!H", await reader.readexactly(2))
                    out = server.answer(await reader.readexactly(length), "tcp")
                    if out is None:
                        await asyncio.sleep(30)
                        return
                    writer.write(struct.pack("!H", len(out)) + out)
                    await writer.drain()
            except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
                pass
            finally:
                writer.close()

        # Find a port free for both UDP and TCP.
        for _ in range(20):
            udp_transport, _proto = await loop.create_datagram_endpoint(Udp, local_addr=("127.0.0.1", 0))
            port = udp_transport.get_extra_info("sockname")[1]
            try:
                tcp_server = await asyncio.start_server(tcp_client, "127.0.0.1", port)
            except OSError:
                udp_transport.close()
                continue
            self._udp, self._tcp, self.port = udp_transport, tcp_server, port
            return self
        raise RuntimeError("no free port for UDP+TCP")

    async def stop(self) -> None:
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


@pytest.fixture
async def zone():
    server = await ZoneServer().start()
    yield server
    await server.stop()


def spec(timeout: float = 2.0, slow_after: float = 1.0, **options) -> TargetSpec:
    return TargetSpec(id="dns-test", kind="dns", timeout=timeout, slow_after=slow_after,
                      options=dns_probe.Options(**options))


async def run(target: TargetSpec):
    started = time.perf_counter()
    result = await dns_probe.probe(target, ProbeContext())
    elapsed = time.perf_counter() - started
    assert elapsed <= target.timeout + MARGIN, f"probe took {elapsed:.2f}s"
    json.dumps(result.to_json())  # facts stay JSON-serialisable
    return result


async def test_a_record_ok(zone):
    result = await run(spec(name="www.hcc.test", server=zone.address, expect_any_of=["10.1.2.3", "10.9.9.9"]))
    assert result.outcome is Outcome.OK and result.reason == "ok", result.detail
    assert result.facts["dns_answers"] == ["10.1.2.3"]
    assert result.facts["dns_rcode"] == "NOERROR"
    assert result.facts["dns_answer_rrs"] == 1
    assert result.facts["dns_transport"] == "udp"
    assert result.phases["resolve"] > 0


async def test_aaaa_normalised_comparison(zone):
    result = await run(spec(name="www.hcc.test", record_type="aaaa", server=zone.address,
                            expect_all_of=["FD00:0:0::10"]))
    assert result.reason == "ok", result.detail
    assert result.facts["dns_answers"] == ["fd00::10"]


async def test_cname_chain_followed(zone):
    result = await run(spec(name="alias.hcc.test", server=zone.address, expect_regex=r"^10\.1\."))
    assert result.reason == "ok", result.detail
    assert result.facts["dns_answers"] == ["10.1.2.3"]
    assert result.facts["dns_answer_rrs"] == 2  # CNAME + A, like probe_dns_answer_rrs


async def test_unexpected_answer(zone):
    result = await run(spec(name="www.hcc.test", server=zone.address, expect_any_of=["10.0.0.1"]))
    assert result.outcome is Outcome.ERROR and result.reason == "dns_answer"
    result = await run(spec(name="www.hcc.test", server=zone.address, expect_all_of=["10.1.2.3", "10.1.2.4"]))
    assert result.reason == "dns_answer" and "10.1.2.4" in result.detail
    result = await run(spec(name="www.hcc.test", server=zone.address, expect_regex=r"^192\.168\."))
    assert result.reason == "dns_answer"


async def test_nxdomain(zone):
    result = await run(spec(name="nothing.hcc.test", server=zone.address))
    assert result.outcome is Outcome.ERROR and result.reason == "dns"
    assert result.facts["dns_rcode"] == "NXDOMAIN"
    assert "NXDOMAIN" in result.detail


async def test_expected_nxdomain_is_ok(zone):
    result = await run(spec(name="nothing.hcc.test", server=zone.address, expect_rcode="nxdomain"))
    assert result.reason == "ok", result.detail
    assert result.facts["dns_answers"] == []


async def test_servfail_and_no_answer(zone):
    result = await run(spec(name="fail.hcc.test", server=zone.address))
    assert result.reason == "dns" and result.facts["dns_rcode"] == "SERVFAIL"
    result = await run(spec(name="empty.hcc.test", server=zone.address))
    assert result.reason == "dns" and "no A record" in result.detail
    assert result.facts["dns_answer_rrs"] == 0


async def test_hang_is_timeout_resolve(zone):
    result = await run(spec(timeout=1.0, name="hang.hcc.test", server=zone.address))
    assert result.outcome is Outcome.HANG and result.reason == "timeout_resolve"
    assert result.duration_seconds >= 0.9


async def test_hang_over_tcp(zone):
    result = await run(spec(timeout=1.0, name="hang.hcc.test", server=zone.address, transport="tcp"))
    assert result.outcome is Outcome.HANG and result.reason == "timeout_resolve"


async def test_malformed_reply_is_protocol(zone):
    result = await run(spec(name="junk.hcc.test", server=zone.address))
    assert result.outcome is Outcome.ERROR and result.reason == "protocol", result.detail


async def test_tcp_transport(zone):
    result = await run(spec(name="www.hcc.test", server=zone.address, transport="tcp"))
    assert result.reason == "ok", result.detail
    assert result.facts["dns_transport"] == "tcp"
    assert zone.queries[-1][0] == "tcp"


async def test_truncated_udp_retried_over_tcp(zone):
    result = await run(spec(name="big.hcc.test", server=zone.address, expect_all_of=["10.9.0.1", "10.9.0.60"]))
    assert result.reason == "ok", result.detail
    assert result.facts["dns_transport"] == "tcp"
    assert len(result.facts["dns_answers"]) == 60
    assert [q[0] for q in zone.queries] == ["udp", "tcp"]


async def test_no_stale_caching(zone):
    target = spec(name="www.hcc.test", server=zone.address)
    first = await run(target)
    assert first.facts["dns_answers"] == ["10.1.2.3"]
    zone.www_a = ["10.4.5.6", "10.4.5.7"]  # the record changes (TTL 3600 would keep a cache)
    second = await run(target)
    assert sorted(second.facts["dns_answers"]) == ["10.4.5.6", "10.4.5.7"]
    assert len(zone.queries) == 2  # both probes reached the server


async def test_server_not_listening_udp_times_out():
    # A bound UDP socket that never answers (dnspython does not surface ICMP port-unreachable
    # on UDP, so a closed port looks the same as a silent server).
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    try:
        port = silent.getsockname()[1]
        result = await run(spec(timeout=0.8, name="www.hcc.test", server=f"127.0.0.1:{port}"))
        assert result.reason == "timeout_resolve"
    finally:
        silent.close()


async def test_tcp_refused():
    closed = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    closed.bind(("127.0.0.1", 0))  # bound, not listening: SYN gets RST
    try:
        port = closed.getsockname()[1]
        result = await run(spec(name="www.hcc.test", server=f"127.0.0.1:{port}", transport="tcp"))
        assert result.outcome is Outcome.ERROR and result.reason == "refused"
    finally:
        closed.close()


async def test_system_resolver_tries_next_nameserver(zone, monkeypatch):
    # Stand-in for /etc/resolv.conf: first nameserver silent, second is the test zone.
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    try:
        servers = [("127.0.0.1", silent.getsockname()[1]), ("127.0.0.1", zone.port)]
        monkeypatch.setattr(dns_probe, "system_nameservers", lambda: servers)
        result = await run(spec(timeout=2.0, slow_after=5.0, name="www.hcc.test"))
        assert result.reason == "ok", result.detail
        assert result.facts["dns_server"] == zone.address
    finally:
        silent.close()


async def test_slow_answer(zone):
    result = await run(spec(name="www.hcc.test", server=zone.address, slow_after=0.0))
    assert result.outcome is Outcome.SLOW and result.reason == "slow"


def test_options_validation():
    with pytest.raises(ValueError):
        dns_probe.Options(name="www.hcc.test", record_type="NOPE")
    with pytest.raises(ValueError):
        dns_probe.Options(name="www.hcc.test", server="ns.example:53")  # must be an IP
    with pytest.raises(ValueError):
        dns_probe.Options(name="www.hcc.test", expect_rcode="MAYBE")
    with pytest.raises(ValueError):
        dns_probe.Options(name="www.hcc.test", bogus=1)
    assert dns_probe.Options(name="x.test", server="[::1]:5353").server == "[::1]:5353"
    assert dns_probe.normalise_answer("WWW.Example.") == "www.example"
    assert dns_probe.normalise_answer("0:0::1") == "::1"
