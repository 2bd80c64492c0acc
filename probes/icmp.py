"""ICMP echo ("ping") probe, written from the RFCs: echo request/reply per RFC 792 (IPv4) and
RFC 4443 §4 (IPv6), Internet checksum per RFC 1071.

Sockets, tried in this order with ``socket: auto``:

1. ``SOCK_DGRAM`` + ``IPPROTO_ICMP`` / ``IPPROTO_ICMPV6`` — Linux "ping sockets", no privilege
   needed when the process's group is inside ``sysctl net.ipv4.ping_group_range`` (the same
   range governs IPv6).  The kernel picks the echo identifier and only delivers our replies.
2. ``SOCK_RAW`` — needs root or ``CAP_NET_RAW``.  Receives every ICMP packet of the host, so
   replies are matched on identifier, sequence number and a random 8-byte token in the payload;
   a kernel ``ICMP_FILTER`` keeps out everything but echo replies and errors.

Neither allowed -> error ``permission`` with the current ``ping_group_range`` in the detail.
All I/O goes through the asyncio event loop (``add_reader`` + non-blocking ``recvmsg``); no
threads, no subprocess.

Options (YAML key ``icmp``)::

    host: 10.10.0.1          # name or IP literal
    count: 3                 # echo requests per probe
    interval: 1s             # between requests (shrunk to fit the timeout, see below)
    packet_timeout: 2s       # a reply later than this after its request counts as lost
    max_loss: 0.34           # loss ratio allowed; 1 of 3 lost passes, 2 of 3 fail;
                             # no reply at all is always an error
    payload_size: 56         # bytes of ICMP payload (as ping(8)); >= 16
    ip_protocol: auto        # auto (IPv4 first) | ip4 | ip6
    socket: auto             # auto | dgram | raw
    dns_server: 127.0.0.1:5353

Timing rules: the last request is sent no later than half the target's ``timeout``
(``interval`` is reduced when ``(count - 1) * interval`` would not fit), and each request waits
for ``min(packet_timeout, time left)``.  Because the probe's wall time is mostly the interval,
``slow`` compares the *average RTT* with ``slow_after``, not the probe duration.
"""

from __future__ import annotations

import asyncio
import errno
import os
import platform
import socket
import struct
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, Field

from probes.base import Clock, ProbeContext, ProbeResult, TargetSpec, make_result
from probes.config_types import STRICT, PositiveDuration
from probes.net import DnsServer, IpProtocol, ProbeFailure, os_error_reason, resolve_first

KIND = "icmp"

ICMP_ECHO_REPLY = 0  # RFC 792
ICMP_DEST_UNREACH = 3
ICMP_ECHO_REQUEST = 8
ICMP_TIME_EXCEEDED = 11
ICMP6_DEST_UNREACH = 1  # RFC 4443
ICMP6_TIME_EXCEEDED = 3
ICMP6_ECHO_REQUEST = 128
ICMP6_ECHO_REPLY = 129

_TOKEN_LEN = 8
_MIN_PAYLOAD = _TOKEN_LEN + 8  # token + send time (double)

# Linux constants Python's socket module does not export.
_IP_RECVTTL = 12  # linux/in.h
_SOL_RAW = 255
_ICMP_FILTER = 1  # linux/icmp.h: bitmask of ICMP types to drop on a raw socket
_ICMP6_FILTER = 1  # netinet/icmp6.h, level IPPROTO_ICMPV6
# SO_TIMESTAMPNS from asm-generic/socket.h; other architectures use other numbers.
_SO_TIMESTAMPNS = 35 if platform.machine() in ("x86_64", "aarch64", "riscv64", "i386", "i686", "armv7l") else None


class Options(BaseModel):
    """Options of the ``icmp`` kind (see the module docstring)."""

    model_config = STRICT

    host: str = Field(min_length=1)
    count: int = Field(default=3, ge=1, le=100)
    interval: PositiveDuration = 1.0
    packet_timeout: PositiveDuration = 2.0
    max_loss: float = Field(default=0.34, ge=0.0, le=1.0)
    payload_size: int = Field(default=56, ge=_MIN_PAYLOAD, le=1452)
    ip_protocol: IpProtocol = "auto"
    socket: Literal["auto", "dgram", "raw"] = "auto"
    dns_server: DnsServer | None = None


# --------------------------------------------------------------------------------------------
# Packets
# --------------------------------------------------------------------------------------------


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071; used by ICMP per RFC 792): the 16-bit one's complement
    of the one's complement sum of the data as big-endian 16-bit words (an odd length is padded
    with one zero byte).

    Returns:
        int in 0..0xFFFF.  A packet with a correct checksum field sums to 0.
    """
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def build_echo_request(ident: int, seq: int, payload: bytes, v6: bool = False) -> bytes:
    """An ICMP echo request: type 8 code 0 (RFC 792) or ICMPv6 type 128 code 0 (RFC 4443 §4.1),
    identifier and sequence number (16-bit, big-endian), then ``payload``.

    For IPv4 the checksum is computed here.  For ICMPv6 it stays 0: the checksum covers an IPv6
    pseudo-header, and the kernel always fills it in for ICMPv6 sockets (RFC 3542 §3.1).
    """
    kind = ICMP6_ECHO_REQUEST if v6 else ICMP_ECHO_REQUEST
    header = struct.pack("!BBHHH", kind, 0, 0, ident & 0xFFFF, seq & 0xFFFF)
    if v6:
        return header + payload
    packet = header + payload
    return packet[:2] + struct.pack("!H", checksum(packet)) + packet[4:]


@dataclass
class Icmp:
    """A parsed ICMP message: type, code, identifier, sequence, the rest, and the TTL/hop limit
    when known.  For error messages (destination unreachable, time exceeded) ``ident`` and
    ``seq`` come from the echo request quoted inside, and ``error`` is True."""

    type: int
    code: int
    ident: int
    seq: int
    payload: bytes
    hop_limit: int | None = None
    error: bool = False


def parse_icmp(data: bytes, v6: bool, ip_header: bool) -> Icmp | None:
    """Parse a received ICMP datagram; ``ip_header`` when it starts with the IPv4 header (raw
    IPv4 sockets).  Returns None for anything too short or with a bad IPv4 checksum."""
    hop_limit = None
    if ip_header:
        if len(data) < 20:
            return None
        ihl = (data[0] & 0x0F) * 4
        hop_limit = data[8]
        data = data[ihl:]
    if len(data) < 8:
        return None
    if not v6 and ip_header and checksum(data) != 0:
        return None  # corrupt (kernel-delivered datagram sockets are already checked)
    kind, code, _sum, ident, seq = struct.unpack("!BBHHH", data[:8])
    errors = (ICMP6_DEST_UNREACH, ICMP6_TIME_EXCEEDED) if v6 else (ICMP_DEST_UNREACH, ICMP_TIME_EXCEEDED)
    if kind in errors:
        inner = data[8:]  # the offending packet: IP header + at least 8 bytes of ICMP
        if v6:
            if len(inner) < 48 or inner[6] != socket.IPPROTO_ICMPV6:
                return None
            quoted = inner[40:]
        else:
            if len(inner) < 28 or inner[9] != socket.IPPROTO_ICMP:
                return None
            quoted = inner[(inner[0] & 0x0F) * 4 :]
        if len(quoted) < 8:
            return None
        q_kind, _c, _s, q_ident, q_seq = struct.unpack("!BBHHH", quoted[:8])
        if q_kind != (ICMP6_ECHO_REQUEST if v6 else ICMP_ECHO_REQUEST):
            return None
        return Icmp(kind, code, q_ident, q_seq, quoted[8:], hop_limit, error=True)
    return Icmp(kind, code, ident, seq, data[8:], hop_limit)


# --------------------------------------------------------------------------------------------
# Sockets
# --------------------------------------------------------------------------------------------


def _ping_group_range() -> str:
    try:
        with open("/proc/sys/net/ipv4/ping_group_range", encoding="ascii") as handle:
            return " ".join(handle.read().split())
    except OSError:
        return "unknown"


def open_icmp_socket(family: int, mode: str) -> tuple[socket.socket, str]:
    """Open a non-blocking ICMP socket: ``mode`` ``auto`` (datagram, then raw), ``dgram`` or
    ``raw``.

    Returns:
        ``(socket, "dgram" | "raw")``.

    Raises:
        ProbeFailure: ``permission`` when the OS allows neither (detail names the sysctl
            ``net.ipv4.ping_group_range`` and ``CAP_NET_RAW``).
    """
    proto = socket.IPPROTO_ICMPV6 if family == socket.AF_INET6 else socket.IPPROTO_ICMP
    kinds = {"auto": [("dgram", socket.SOCK_DGRAM), ("raw", socket.SOCK_RAW)],
             "dgram": [("dgram", socket.SOCK_DGRAM)], "raw": [("raw", socket.SOCK_RAW)]}[mode]
    errors: list[str] = []
    for name, sock_type in kinds:
        try:
            sock = socket.socket(family, sock_type, proto)
        except OSError as exc:
            errors.append(f"{name}: {exc.strerror or exc}")
            if exc.errno not in (errno.EPERM, errno.EACCES, errno.EPROTONOSUPPORT, errno.ESOCKTNOSUPPORT):
                raise ProbeFailure(os_error_reason(exc), f"cannot open ICMP socket ({name}): {exc}") from None
            continue
        sock.setblocking(False)
        _tune(sock, family, name)
        return sock, name
    raise ProbeFailure(
        "permission",
        "ICMP not allowed (" + "; ".join(errors) + "): let the agent's group use ping sockets "
        f"(sysctl net.ipv4.ping_group_range, now '{_ping_group_range()}', e.g. "
        "sysctl -w net.ipv4.ping_group_range='0 2147483647') or give it CAP_NET_RAW",
    )


def _tune(sock: socket.socket, family: int, name: str) -> None:
    """Ask for the reply's TTL/hop limit and kernel receive timestamps; filter raw sockets."""
    options: list[tuple[int, int, Any]] = []
    if family == socket.AF_INET6:
        options.append((socket.IPPROTO_IPV6, socket.IPV6_RECVHOPLIMIT, 1))
        if name == "raw":
            # struct icmp6_filter: 256 bits, 1 = block.  Pass echo reply and the two errors.
            words = [0xFFFFFFFF] * 8
            for kind in (ICMP6_ECHO_REPLY, ICMP6_DEST_UNREACH, ICMP6_TIME_EXCEEDED):
                words[kind >> 5] &= ~(1 << (kind & 31))
            options.append((socket.IPPROTO_ICMPV6, _ICMP6_FILTER, struct.pack("=8I", *words)))
    else:
        if name == "dgram":
            options.append((socket.IPPROTO_IP, _IP_RECVTTL, 1))
        else:
            blocked = 0xFFFFFFFF & ~((1 << ICMP_ECHO_REPLY) | (1 << ICMP_DEST_UNREACH) | (1 << ICMP_TIME_EXCEEDED))
            options.append((_SOL_RAW, _ICMP_FILTER, struct.pack("=I", blocked)))
    if _SO_TIMESTAMPNS is not None:
        options.append((socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1))
    for level, option, value in options:
        try:
            sock.setsockopt(level, option, value)
        except OSError:
            pass  # optional refinements only


# --------------------------------------------------------------------------------------------
# The probe
# --------------------------------------------------------------------------------------------


@dataclass
class _Exchange:
    family: int
    ip: str
    mode: str
    ident: int
    token: bytes
    sent_perf: dict[int, float] = field(default_factory=dict)
    sent_wall: dict[int, float] = field(default_factory=dict)
    rtts: dict[int, float] = field(default_factory=dict)
    late: int = 0
    duplicates: int = 0
    hop_limit: int | None = None
    unreachable: list[str] = field(default_factory=list)
    recv_errors: list[OSError] = field(default_factory=list)
    packet_timeout: float = 2.0
    sending_done: bool = False
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def check_done(self) -> None:
        if self.sending_done and len(self.rtts) >= len(self.sent_perf):
            self.done.set()

    def on_readable(self, sock: socket.socket) -> None:
        v6 = self.family == socket.AF_INET6
        while True:
            try:
                data, ancdata, _flags, address = sock.recvmsg(65535, 512)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. EHOSTUNREACH reported on a ping socket
                self.recv_errors.append(exc)
                return
            now_perf = time.perf_counter()
            rx_wall: float | None = None
            hop_limit: int | None = None
            for level, kind, value in ancdata:
                if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPNS and len(value) in (8, 16):
                    sec, nsec = struct.unpack("=qq" if len(value) == 16 else "=ii", value)
                    rx_wall = sec + nsec / 1e9
                elif (level, kind) in ((socket.IPPROTO_IP, socket.IP_TTL), (socket.IPPROTO_IPV6, socket.IPV6_HOPLIMIT)):
                    hop_limit = struct.unpack("=i", value[:4])[0] if len(value) >= 4 else value[0]
            msg = parse_icmp(data, v6, ip_header=(not v6 and self.mode == "raw"))
            if msg is None:
                continue
            if self.mode == "raw" and msg.ident != self.ident:
                continue  # somebody else's ping
            if not msg.payload.startswith(self.token) and not (msg.error and len(msg.payload) < _TOKEN_LEN):
                continue
            if msg.seq not in self.sent_perf:
                continue
            if msg.error:
                self.unreachable.append(f"ICMP{'v6' if v6 else ''} type {msg.type} code {msg.code} from {address[0]}")
                continue
            if msg.type != (ICMP6_ECHO_REPLY if v6 else ICMP_ECHO_REPLY):
                continue
            if msg.seq in self.rtts:
                self.duplicates += 1
                continue
            rtt = now_perf - self.sent_perf[msg.seq]
            if rx_wall is not None:
                kernel_rtt = rx_wall - self.sent_wall[msg.seq]
                if 0 <= kernel_rtt <= rtt:
                    rtt = kernel_rtt  # excludes event-loop latency on a busy machine
            if rtt > self.packet_timeout:
                self.late += 1
                continue
            self.rtts[msg.seq] = rtt
            self.hop_limit = msg.hop_limit if msg.hop_limit is not None else hop_limit
            self.check_done()


async def probe(spec: TargetSpec, ctx: ProbeContext) -> ProbeResult:
    """Send ``count`` ICMP echo requests to ``host`` and judge loss and round-trip time.

    Returns:
        A :class:`ProbeResult`.  Reasons: ``loss`` (loss ratio above ``max_loss``; also when
        nothing came back), ``unreachable`` (no reply and an ICMP destination-unreachable /
        time-exceeded came back, or the OS has no route), ``permission`` (no ICMP socket
        allowed), ``dns`` / ``timeout_resolve`` (name resolution), ``slow`` when the average RTT
        exceeds ``slow_after``.  Facts: ``icmp_packets_sent``, ``icmp_packets_received``,
        ``icmp_loss_ratio`` (0..1), ``icmp_rtt_min_seconds`` / ``icmp_rtt_avg_seconds`` /
        ``icmp_rtt_max_seconds`` (when a reply came), ``icmp_reply_hop_limit`` (TTL or hop
        limit of the last reply, when the OS reports it), ``icmp_duplicates``,
        ``icmp_socket`` (``"dgram"``/``"raw"``), ``ip_address``.  Never raises for network
        failures.
    """
    opts: Options = spec.options
    clock = Clock()
    phases: dict[str, float] = {}
    facts: dict[str, Any] = {}
    total = spec.timeout
    loop = asyncio.get_running_loop()

    def result(reason: str | None, detail: str) -> ProbeResult:
        return make_result(spec, clock, reason, detail, phases, facts)

    sock: socket.socket | None = None
    reader_added = False
    try:
        family, ip = await resolve_first(opts.host, opts.ip_protocol, opts.dns_server, clock, total, phases, facts)
        v6 = family == socket.AF_INET6

        sock, mode = open_icmp_socket(family, opts.socket)
        facts["icmp_socket"] = mode
        exchange = _Exchange(family, ip, mode, ident=int.from_bytes(os.urandom(2), "big"), token=os.urandom(_TOKEN_LEN),
                             packet_timeout=opts.packet_timeout)
        loop.add_reader(sock.fileno(), exchange.on_readable, sock)
        reader_added = True

        left = clock.remaining(total)
        interval = opts.interval
        if opts.count > 1:
            interval = min(interval, 0.5 * left / (opts.count - 1))
        base_seq = int.from_bytes(os.urandom(2), "big")
        send_errors: list[OSError] = []
        start = clock.elapsed()
        destination = (ip, 0, 0, 0) if v6 else (ip, 0)
        for i in range(opts.count):
            delay = start + i * interval - clock.elapsed()
            if delay > 0:
                await asyncio.sleep(delay)
            if clock.remaining(total) <= 0:
                break
            seq = (base_seq + i) & 0xFFFF
            padding = max(0, opts.payload_size - _MIN_PAYLOAD)
            payload = exchange.token + struct.pack("!d", time.time()) + bytes(padding)
            packet = build_echo_request(exchange.ident, seq, payload, v6)
            exchange.sent_wall[seq] = time.time()
            exchange.sent_perf[seq] = time.perf_counter()
            try:
                sock.sendto(packet, destination)
            except OSError as exc:
                del exchange.sent_wall[seq], exchange.sent_perf[seq]
                send_errors.append(exc)
        exchange.sending_done = True
        exchange.check_done()

        if exchange.sent_perf:
            last_send = max(exchange.sent_perf.values())
            wait = min(clock.remaining(total), last_send + opts.packet_timeout - time.perf_counter())
            if wait > 0 and not exchange.done.is_set():
                try:
                    await asyncio.wait_for(exchange.done.wait(), timeout=wait)
                except TimeoutError:
                    pass

        sent = len(exchange.sent_perf)
        received = len(exchange.rtts)
        facts["icmp_packets_sent"] = sent
        facts["icmp_packets_received"] = received
        facts["icmp_duplicates"] = exchange.duplicates
        loss = 1.0 if sent == 0 else (sent - received) / sent
        facts["icmp_loss_ratio"] = round(loss, 6)
        if received:
            rtts = list(exchange.rtts.values())
            facts["icmp_rtt_min_seconds"] = min(rtts)
            facts["icmp_rtt_avg_seconds"] = sum(rtts) / len(rtts)
            facts["icmp_rtt_max_seconds"] = max(rtts)
        if exchange.hop_limit is not None:
            facts["icmp_reply_hop_limit"] = exchange.hop_limit

        if sent == 0:
            if send_errors:
                exc = send_errors[0]
                return result(os_error_reason(exc), f"cannot send ICMP echo to {ip}: {exc.strerror or exc}")
            return result("timeout_total", f"no time left to send an ICMP echo to {ip}")
        summary = f"{received}/{sent} replies from {ip}"
        if received == 0:
            if exchange.unreachable:
                return result("unreachable", f"{summary}: {exchange.unreachable[0]}")
            if exchange.recv_errors:
                exc = exchange.recv_errors[0]
                return result(os_error_reason(exc), f"{summary}: {exc.strerror or exc}")
        if loss > opts.max_loss or received == 0:
            extra = f", {exchange.late} late" if exchange.late else ""
            if send_errors:
                extra += f", {len(send_errors)} send errors ({send_errors[0].strerror or send_errors[0]})"
            return result("loss", f"{summary} ({loss:.0%} loss > max_loss {opts.max_loss:.0%}{extra})")
        avg = facts["icmp_rtt_avg_seconds"] if received else 0.0
        detail = f"{summary}, rtt avg {avg * 1000:.2f} ms"
        reason = "slow" if avg > spec.slow_after else "ok"
        return result(reason, detail)
    except ProbeFailure as failure:
        return result(failure.reason, failure.detail)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001 - a probe never raises
        return result("internal", f"unexpected {type(exc).__name__}: {exc}")
    finally:
        if sock is not None:
            if reader_added:
                loop.remove_reader(sock.fileno())
            sock.close()
