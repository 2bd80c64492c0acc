"""The ``icmp`` probe: real echo requests to the loopback interface.

* In this process: whatever socket the OS allows (on the CI box: root, ping sockets disabled by
  ``ping_group_range = "1 0"``, so the raw-socket path runs).
* In a private network namespace (``unshare -n``, needs root; skipped otherwise), so that
  sysctls can be changed without touching the host: the unprivileged ``SOCK_DGRAM`` path
  (``ping_group_range`` opened), 100 % loss (``icmp_echo_ignore_all``), partial loss (the sysctl
  flipped after the second reply), no route (``unreachable``), and no permission at all
  (``CAP_NET_RAW`` dropped with setpriv, ping sockets closed).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from probes import icmp
from probes.base import Outcome, ProbeContext, TargetSpec

MARGIN = 1.5  # seconds: shared 2-core machine, never assert tight timings
REPO = Path(__file__).resolve().parent.parent


def spec(timeout: float = 3.0, slow_after: float = 1.0, **options) -> TargetSpec:
    return TargetSpec(id="icmp-test", kind="icmp", timeout=timeout, slow_after=slow_after, options=icmp.Options(**options))


async def run(target: TargetSpec):
    started = time.perf_counter()
    result = await icmp.probe(target, ProbeContext())
    elapsed = time.perf_counter() - started
    assert elapsed <= target.timeout + MARGIN, f"probe took {elapsed:.2f}s"
    json.dumps(result.to_json())
    return result


def _icmp_allowed(family: int) -> bool:
    proto = socket.IPPROTO_ICMPV6 if family == socket.AF_INET6 else socket.IPPROTO_ICMP
    for kind in (socket.SOCK_DGRAM, socket.SOCK_RAW):
        try:
            socket.socket(family, kind, proto).close()
            return True
        except OSError:
            continue
    return False


# --------------------------------------------------------------------------------------------
# Packets (no network)
# --------------------------------------------------------------------------------------------


def test_checksum_rfc1071_example():
    # RFC 1071 §3: bytes 00 01 f2 03 f4 f5 f6 f7 sum to 0xddf2; the checksum is its complement.
    assert icmp.checksum(bytes.fromhex("0001f203f4f5f6f7")) == (~0xDDF2 & 0xFFFF)
    assert icmp.checksum(b"\x01") == (~0x0100 & 0xFFFF)  # odd length padded with zero


def test_echo_request_layout_and_checksum():
    packet = icmp.build_echo_request(0x1234, 7, b"payload!")
    assert packet[0] == 8 and packet[1] == 0  # RFC 792 echo request
    assert struct.unpack("!HH", packet[4:8]) == (0x1234, 7)
    assert icmp.checksum(packet) == 0  # a correct checksum makes the sum verify to zero
    v6 = icmp.build_echo_request(1, 2, b"x", v6=True)
    assert v6[0] == 128 and v6[2:4] == b"\0\0"  # kernel fills the ICMPv6 checksum


def test_parse_reply_with_ip_header_and_error_message():
    reply = bytearray(icmp.build_echo_request(0xBEEF, 3, b"token123rest"))
    reply[0] = 0  # echo reply
    reply[2:4] = b"\0\0"
    reply[2:4] = struct.pack("!H", icmp.checksum(bytes(reply)))
    ip_header = bytes([0x45, 0, 0, 0, 0, 0, 0, 0, 57, 1, 0, 0]) + socket.inet_aton("127.0.0.1") * 2
    parsed = icmp.parse_icmp(ip_header + bytes(reply), v6=False, ip_header=True)
    assert parsed is not None and (parsed.type, parsed.ident, parsed.seq, parsed.hop_limit) == (0, 0xBEEF, 3, 57)
    assert parsed.payload == b"token123rest"
    corrupt = bytearray(reply)
    corrupt[-1] ^= 0xFF
    assert icmp.parse_icmp(ip_header + bytes(corrupt), v6=False, ip_header=True) is None
    # Destination unreachable quoting our request (IP header + first 8 bytes).
    quoted = ip_header[:9] + bytes([1]) + ip_header[10:] + icmp.build_echo_request(0xBEEF, 4, b"")
    error = struct.pack("!BBHI", 3, 1, 0, 0) + quoted
    error = error[:2] + struct.pack("!H", icmp.checksum(error)) + error[4:]
    parsed = icmp.parse_icmp(ip_header + error, v6=False, ip_header=True)
    assert parsed is not None and parsed.error and (parsed.type, parsed.code, parsed.seq) == (3, 1, 4)


# --------------------------------------------------------------------------------------------
# In this process
# --------------------------------------------------------------------------------------------


@pytest.mark.skipif(not _icmp_allowed(socket.AF_INET), reason="no ICMP socket allowed in this process")
async def test_ping_loopback_ok():
    result = await run(spec(host="127.0.0.1", count=3, interval="100ms"))
    assert result.outcome is Outcome.OK and result.reason == "ok", result.detail
    facts = result.facts
    assert facts["icmp_socket"] in ("dgram", "raw")
    assert facts["icmp_packets_sent"] == 3 and facts["icmp_packets_received"] == 3
    assert facts["icmp_loss_ratio"] == 0.0
    assert 0 < facts["icmp_rtt_min_seconds"] <= facts["icmp_rtt_avg_seconds"] <= facts["icmp_rtt_max_seconds"] < 1.0
    assert facts["icmp_reply_hop_limit"] == 64  # Linux default TTL, loopback: no hop


@pytest.mark.skipif(not _icmp_allowed(socket.AF_INET6), reason="no ICMPv6 socket allowed in this process")
async def test_ping_loopback_ipv6_ok():
    result = await run(spec(host="::1", count=2, interval="100ms"))
    assert result.reason == "ok", result.detail
    assert result.facts["icmp_packets_received"] == 2 and result.facts["ip_address"] == "::1"


@pytest.mark.skipif(not _icmp_allowed(socket.AF_INET), reason="no ICMP socket allowed in this process")
async def test_ping_localhost_name_and_slow():
    result = await run(spec(host="localhost", ip_protocol="ip4", count=1, slow_after=0.0))
    assert result.outcome is Outcome.SLOW and result.reason == "slow"  # avg RTT > slow_after 0
    assert result.facts["ip_address"] == "127.0.0.1"


async def test_interval_shrunk_to_fit_timeout():
    if not _icmp_allowed(socket.AF_INET):
        pytest.skip("no ICMP socket allowed in this process")
    result = await run(spec(timeout=1.0, host="127.0.0.1", count=5, interval="10s"))
    assert result.reason == "ok" and result.facts["icmp_packets_sent"] == 5


# --------------------------------------------------------------------------------------------
# In a private network namespace
# --------------------------------------------------------------------------------------------

_SCRIPT = textwrap.dedent(
    """
    import asyncio, json, sys
    from probes import icmp
    from probes.base import ProbeContext, TargetSpec

    args = json.loads(sys.argv[1])
    flip_after = args.pop("flip_after_replies", None)
    if flip_after is not None:
        original = icmp._Exchange.on_readable

        def on_readable(self, sock):
            original(self, sock)
            if len(self.rtts) >= flip_after and not getattr(self, "flipped", False):
                self.flipped = True
                with open("/proc/sys/net/ipv4/icmp_echo_ignore_all", "w") as handle:
                    handle.write("1")

        icmp._Exchange.on_readable = on_readable
    timeout = args.pop("timeout")
    target = TargetSpec(id="t", kind="icmp", timeout=timeout, slow_after=1.0, options=icmp.Options(**args))
    result = asyncio.run(icmp.probe(target, ProbeContext()))
    print(json.dumps(result.to_json()))
    """
)


def _netns_works() -> bool:
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("ip"):
        return False
    probe = subprocess.run(["unshare", "-n", "ip", "link", "set", "lo", "up"], capture_output=True, timeout=10)
    return probe.returncode == 0


NETNS = _netns_works()
needs_netns = pytest.mark.skipif(not NETNS, reason="needs root and unshare -n (private network namespace)")


def in_netns(setup: str, timeout: float = 3.0, prefix: tuple[str, ...] = (), **options) -> dict:
    """Run one probe inside a fresh network namespace after the shell commands ``setup``."""
    args = json.dumps({"timeout": timeout, **options})
    command = " ".join(["exec", *prefix, '"$0"', "-c", '"$1"', '"$2"'])
    shell = f"ip link set lo up; {setup}; {command}"
    started = time.perf_counter()
    done = subprocess.run(
        ["unshare", "-n", "sh", "-c", shell, sys.executable, _SCRIPT, args],
        capture_output=True, text=True, timeout=timeout + 20, cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["duration_seconds"] <= timeout + MARGIN
    assert time.perf_counter() - started < timeout + 10  # interpreter start-up included
    return result


OPEN_PING = 'echo "0 2147483647" > /proc/sys/net/ipv4/ping_group_range'


@needs_netns
def test_unprivileged_datagram_socket_path():
    for host in ("127.0.0.1", "::1"):
        result = in_netns(OPEN_PING, host=host, socket="dgram", count=2, interval=0.1)
        assert result["reason"] == "ok", result["detail"]
        assert result["icmp_socket"] == "dgram" and result["icmp_packets_received"] == 2
        assert result["icmp_reply_hop_limit"] == 64


@needs_netns
def test_total_loss():
    setup = f"{OPEN_PING}; echo 1 > /proc/sys/net/ipv4/icmp_echo_ignore_all"
    result = in_netns(setup, timeout=2.0, host="127.0.0.1", count=3, interval=0.1, packet_timeout=0.5)
    assert result["outcome"] == "error" and result["reason"] == "loss", result["detail"]
    assert result["icmp_packets_sent"] == 3 and result["icmp_packets_received"] == 0
    assert result["icmp_loss_ratio"] == 1.0
    assert "icmp_rtt_avg_seconds" not in result


@needs_netns
def test_partial_loss():
    # The kernel stops answering right after the second reply is read: 2 of 4 come back.
    result = in_netns(OPEN_PING, timeout=3.0, host="127.0.0.1", count=4, interval=0.2, packet_timeout=0.5,
                      flip_after_replies=2)
    assert result["reason"] == "loss", result["detail"]
    assert (result["icmp_packets_sent"], result["icmp_packets_received"]) == (4, 2)
    assert result["icmp_loss_ratio"] == 0.5
    tolerant = in_netns(OPEN_PING, timeout=3.0, host="127.0.0.1", count=4, interval=0.2, packet_timeout=0.5,
                        max_loss=0.5, flip_after_replies=2)
    assert tolerant["reason"] == "ok", tolerant["detail"]


@needs_netns
def test_no_route_is_unreachable():
    result = in_netns(OPEN_PING, host="10.255.0.1", count=2, interval=0.1)  # only lo in the namespace
    assert result["outcome"] == "error" and result["reason"] == "unreachable", result["detail"]


@needs_netns
def test_no_permission():
    if not shutil.which("setpriv"):
        pytest.skip("setpriv (util-linux) not installed")
    # ping_group_range stays at the kernel default "1 0" (nobody); CAP_NET_RAW is dropped.
    result = in_netns("true", prefix=("setpriv", "--inh-caps=-all", "--bounding-set=-net_raw"), host="127.0.0.1")
    assert result["outcome"] == "error" and result["reason"] == "permission", result["detail"]
    assert "ping_group_range" in result["detail"] and "CAP_NET_RAW" in result["detail"]


def test_options_defaults():
    options = icmp.Options(host="10.0.0.1")
    assert (options.count, options.max_loss, options.socket) == (3, 0.34, "auto")
    with pytest.raises(ValueError):
        icmp.Options(host="h", payload_size=4)
    with pytest.raises(ValueError):
        icmp.Options(host="h", max_loss=1.5)
