"""TCP probe: resolve, connect, optional TLS, optional send/expect exchange.

Like blackbox_exporter's ``tcp`` prober (``query_response`` reduced to one send and one expect).
Phases: ``resolve`` (DNS), ``connect`` (TCP three-way handshake, RFC 9293), ``tls`` (TLS
handshake, RFC 8446 / RFC 5246) and ``processing`` (request sent → first reply byte).

Resolution, connect and TLS helpers come from :mod:`probes.net` (shared with the other kinds).

Options (YAML key ``tcp``)::

    host: motcua.dongnai.gov.vn   # name or IP literal
    port: 443
    connect_timeout: 5s           # default: the target's whole timeout
    tls: true                     # TLS after connect
    server_name: motcua.dongnai.gov.vn   # SNI and name to verify; default: host
    verify_tls: true              # verify chain and host name
    ca_file: /etc/ssl/commune-ca.pem     # default: the system trust store
    send: "QUIT\\r\\n"            # escapes: \\r \\n \\t \\0 \\\\ \\xHH
    expect: "^220 "               # regex searched in the reply (UTF-8, undecodable bytes replaced)
    expect_max_bytes: 4096        # read at most this many bytes looking for ``expect``
    first_byte_timeout: 5s        # default: whatever is left of the timeout
    ip_protocol: auto             # auto (IPv4 first, then IPv6) | ip4 | ip6
    dns_server: 127.0.0.1:5353    # default: /etc/hosts, then the system resolver
"""

from __future__ import annotations

import asyncio
import re
import ssl
from typing import Any

from pydantic import BaseModel, Field, field_validator

from probes.base import Clock, ProbeContext, ProbeResult, TargetSpec, make_result
from probes.config_types import STRICT, PositiveDuration
from probes.net import (
    DnsServer,
    IpProtocol,
    ProbeFailure,
    cert_facts,
    close_writer,
    connect_tcp,
    make_ssl_context,
    os_error_reason,
    peer_chain_der,
    resolve_first,
    start_tls,
    utc_now,
)

KIND = "tcp"


# --------------------------------------------------------------------------------------------
# Escapes in ``send``
# --------------------------------------------------------------------------------------------

_SIMPLE_ESCAPES = {"n": b"\n", "r": b"\r", "t": b"\t", "0": b"\0", "\\": b"\\", '"': b'"', "'": b"'"}


def unescape(text: str) -> bytes:
    """Turn ``send`` text into bytes: UTF-8, with the escapes ``\\n \\r \\t \\0 \\\\ \\" \\'`` and
    ``\\xHH`` (one raw byte).

    Raises:
        ValueError: an unknown or incomplete escape sequence.
    """
    out = bytearray()
    i = 0
    while i < len(text):
        char = text[i]
        if char != "\\":
            out += char.encode("utf-8")
            i += 1
            continue
        if i + 1 >= len(text):
            raise ValueError("send ends with a lone backslash")
        code = text[i + 1]
        if code in _SIMPLE_ESCAPES:
            out += _SIMPLE_ESCAPES[code]
            i += 2
        elif code == "x":
            digits = text[i + 2 : i + 4]
            if len(digits) != 2 or not all(c in "0123456789abcdefABCDEF" for c in digits):
                raise ValueError(f"bad \\x escape at position {i}: write \\xHH with two hex digits")
            out.append(int(digits, 16))
            i += 4
        else:
            raise ValueError(f"unknown escape \\{code} at position {i}")
    return bytes(out)


# --------------------------------------------------------------------------------------------
# Options
# --------------------------------------------------------------------------------------------


class Options(BaseModel):
    """Options of the ``tcp`` kind (see the module docstring for an example)."""

    model_config = STRICT

    host: str = Field(min_length=1, description="host name or IP literal")
    port: int = Field(ge=1, le=65535)
    connect_timeout: PositiveDuration | None = None
    tls: bool = False
    server_name: str | None = None
    verify_tls: bool = True
    ca_file: str | None = None
    send: str | None = None
    expect: str | None = None
    expect_max_bytes: int = Field(default=4096, ge=1, le=1_048_576)
    first_byte_timeout: PositiveDuration | None = None
    ip_protocol: IpProtocol = "auto"
    dns_server: DnsServer | None = None

    @field_validator("send")
    @classmethod
    def _send_escapes(cls, value: str | None) -> str | None:
        if value is not None:
            unescape(value)
        return value

    @field_validator("expect")
    @classmethod
    def _expect_regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"expect is not a valid regular expression: {exc}") from exc
        return value


# --------------------------------------------------------------------------------------------
# The probe
# --------------------------------------------------------------------------------------------


async def probe(spec: TargetSpec, ctx: ProbeContext) -> ProbeResult:
    """Run one TCP probe.

    Steps: resolve ``host`` (phase ``resolve``), connect (``connect``, bounded by
    ``connect_timeout``), TLS handshake when ``tls`` (``tls``), send ``send``, then read up to
    ``expect_max_bytes`` until ``expect`` matches (``processing`` = send → first reply byte).

    Returns:
        A :class:`ProbeResult`; reasons: ``dns``, ``timeout_resolve``, ``refused``, ``reset``,
        ``unreachable``, ``connect``, ``timeout_connect``, ``tls``, ``tls_expired``,
        ``tls_hostname``, ``timeout_tls``, ``expect``, ``timeout_first_byte``, ``timeout_total``.
        Facts: ``ip_address``, ``tcp_reply_bytes`` (when reading), ``tls_version`` and
        ``cert_not_after`` (earliest expiry, Unix seconds, of the verified chain — or of the
        chain as sent when ``verify_tls`` is false) with TLS.
        Never raises for network failures.
    """
    opts: Options = spec.options
    clock = Clock()
    phases: dict[str, float] = {}
    facts: dict[str, Any] = {}
    writer: asyncio.StreamWriter | None = None
    total = spec.timeout

    succeeded = False

    def result(reason: str | None, detail: str) -> ProbeResult:
        nonlocal succeeded
        succeeded = reason is None
        return make_result(spec, clock, reason, detail, phases, facts)

    try:
        family, ip = await resolve_first(opts.host, opts.ip_protocol, opts.dns_server, clock, total, phases, facts)

        # connect
        connect_budget = clock.remaining(total)
        if opts.connect_timeout is not None:
            connect_budget = min(connect_budget, opts.connect_timeout)
        t0 = clock.elapsed()
        try:
            sock = await connect_tcp(family, ip, opts.port, connect_budget)
        finally:
            phases["connect"] = clock.elapsed() - t0
        reader, writer = await asyncio.open_connection(sock=sock, limit=max(opts.expect_max_bytes, 65536))

        # TLS
        if opts.tls:
            server_name = opts.server_name or opts.host
            try:
                context = make_ssl_context(opts.verify_tls, opts.ca_file)
            except (OSError, ssl.SSLError) as exc:
                return result("tls", f"cannot load ca_file {opts.ca_file!r}: {exc}")
            tls_budget = clock.remaining(total)
            t0 = clock.elapsed()
            try:
                await start_tls(writer, context, server_name, tls_budget, f"{ip}:{opts.port}")
            except ProbeFailure as failure:
                phases["tls"] = clock.elapsed() - t0  # before result(): make_result copies phases
                return result(failure.reason, failure.detail)
            phases["tls"] = clock.elapsed() - t0
            ssl_object = writer.get_extra_info("ssl_object")
            if ssl_object is not None:
                facts["tls_version"] = ssl_object.version()
                now = utc_now()
                expiries = []
                for der in peer_chain_der(ssl_object, verified=opts.verify_tls):
                    try:
                        expiries.append(cert_facts(der, now)["cert_not_after"])
                    except ValueError:
                        continue
                if expiries:
                    facts["cert_not_after"] = min(expiries)

        # exchange
        if opts.send is None and opts.expect is None:
            return result(None, f"connected to {ip}:{opts.port}" + (" with TLS" if opts.tls else ""))
        t0 = clock.elapsed()
        if opts.send is not None:
            try:
                writer.write(unescape(opts.send))
                await asyncio.wait_for(writer.drain(), timeout=clock.remaining(total))
            except TimeoutError:
                return result("timeout_total", f"sending to {ip}:{opts.port} did not finish before the deadline")
            except OSError as exc:
                return result(os_error_reason(exc), f"send to {ip}:{opts.port} failed: {exc}")
        if opts.expect is None:
            return result(None, f"connected to {ip}:{opts.port} and sent {len(unescape(opts.send or ''))} bytes")

        pattern = re.compile(opts.expect)
        buffer = bytearray()
        first_budget = clock.remaining(total)
        if opts.first_byte_timeout is not None:
            first_budget = min(first_budget, opts.first_byte_timeout)
        first_deadline = clock.elapsed() + first_budget
        while True:
            budget = clock.remaining(total) if buffer else max(0.0, first_deadline - clock.elapsed())
            try:
                chunk = await asyncio.wait_for(reader.read(opts.expect_max_bytes - len(buffer)), timeout=budget)
            except TimeoutError:
                facts["tcp_reply_bytes"] = len(buffer)
                if not buffer:
                    return result("timeout_first_byte", f"sent, but no reply from {ip}:{opts.port} within {budget:.3g}s")
                return result("expect", f"{opts.expect!r} not found in the {len(buffer)} bytes received before the deadline: {_snippet(buffer)}")
            except (ssl.SSLError, OSError) as exc:
                facts["tcp_reply_bytes"] = len(buffer)
                reason = os_error_reason(exc) if isinstance(exc, OSError) else "reset"
                return result(reason, f"reading from {ip}:{opts.port}: {exc}")
            if chunk and not buffer:
                phases["processing"] = clock.elapsed() - t0
            buffer += chunk
            facts["tcp_reply_bytes"] = len(buffer)
            text = buffer.decode("utf-8", errors="replace")
            if pattern.search(text):
                return result(None, f"{opts.expect!r} matched in the reply from {ip}:{opts.port}")
            if not chunk:
                if not buffer:
                    return result("reset", f"{ip}:{opts.port} closed the connection without replying")
                return result("expect", f"connection closed; {opts.expect!r} not found in: {_snippet(buffer)}")
            if len(buffer) >= opts.expect_max_bytes:
                return result("expect", f"{opts.expect!r} not found in the first {len(buffer)} bytes: {_snippet(buffer)}")
    except ProbeFailure as failure:
        return result(failure.reason, failure.detail)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001 - a probe never raises
        return result("internal", f"unexpected {type(exc).__name__}: {exc}")
    finally:
        if writer is not None:
            clean = succeeded and clock.remaining(total) > 0
            await close_writer(writer, grace=min(0.5, clock.remaining(total)) if clean else 0.0)


def _snippet(data: bytes | bytearray, limit: int = 80) -> str:
    text = bytes(data[:limit]).decode("utf-8", errors="replace")
    return repr(text + ("…" if len(data) > limit else ""))
