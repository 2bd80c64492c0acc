"""TCP probe: resolve, connect, optional TLS, optional send/expect exchange.

Like blackbox_exporter's ``tcp`` prober (``query_response`` reduced to one send and one expect).
Phases: ``resolve`` (DNS), ``connect`` (TCP three-way handshake, RFC 9293), ``tls`` (TLS
handshake, RFC 8446 / RFC 5246) and ``processing`` (request sent → first reply byte).

The module also holds the small network helpers the ``tls`` and ``icmp`` kinds share:
:func:`resolve_host` (``/etc/hosts`` then DNS with dnspython's asyncio resolver, no threads, no
cache), :func:`connect_tcp`, :func:`tls_error_reason` and :func:`cert_facts`.

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
import datetime
import errno
import hashlib
import ipaddress
import re
import socket
import ssl
from typing import Any, Literal

import dns.asyncresolver
import dns.exception
import dns.resolver
from pydantic import BaseModel, Field, field_validator

from probes.base import Clock, ProbeContext, ProbeResult, TargetSpec, make_result
from probes.config_types import STRICT, PositiveDuration

KIND = "tcp"

IpProtocol = Literal["auto", "ip4", "ip6"]


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


def _check_server(value: str | None) -> str | None:
    if value is not None:
        parse_server(value)
    return value


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
    dns_server: str | None = None

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

    @field_validator("dns_server")
    @classmethod
    def _dns_server(cls, value: str | None) -> str | None:
        return _check_server(value)


# --------------------------------------------------------------------------------------------
# Shared helpers: resolve, connect, TLS classification, certificate facts
# --------------------------------------------------------------------------------------------


class ProbeFailure(Exception):
    """A classified failure: ``reason`` is a code from :data:`probes.base.REASONS`."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def parse_server(value: str, default_port: int = 53) -> tuple[str, int]:
    """Parse a DNS server address: ``"127.0.0.1"``, ``"127.0.0.1:5353"``, ``"::1"``,
    ``"[::1]:5353"``.

    Returns:
        ``(ip, port)``.

    Raises:
        ValueError: not an IP literal with an optional port 1..65535.
    """
    text = value.strip()
    host, port = text, default_port
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(f"{value!r}: missing ']'")
        host, rest = text[1:end], text[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"{value!r}: expected ':port' after ']'")
            port = int(rest[1:])
    elif text.count(":") == 1:
        host, port_text = text.split(":")
        port = int(port_text)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{value!r}: the server must be an IP address, e.g. 127.0.0.1:5353") from None
    if not 1 <= port <= 65535:
        raise ValueError(f"{value!r}: port out of range")
    return host, port


def _families(ip_protocol: str) -> list[int]:
    if ip_protocol == "ip4":
        return [socket.AF_INET]
    if ip_protocol == "ip6":
        return [socket.AF_INET6]
    return [socket.AF_INET, socket.AF_INET6]


def _hosts_file_lookup(host: str, path: str = "/etc/hosts") -> list[str]:
    """Addresses for ``host`` in the hosts file (hosts(5) format), in file order."""
    name = host.rstrip(".").lower()
    found: list[str] = []
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                fields = line.split("#", 1)[0].split()
                if len(fields) >= 2 and name in (f.lower() for f in fields[1:]):
                    try:
                        found.append(str(ipaddress.ip_address(fields[0].split("%", 1)[0])))
                    except ValueError:
                        continue
    except OSError:
        return []
    return found


async def resolve_host(
    host: str, ip_protocol: str, timeout: float, dns_server: str | None = None
) -> list[tuple[int, str]]:
    """Resolve ``host`` to addresses without threads and without any cache.

    Order: an IP literal is returned as is; then (only when ``dns_server`` is None) the hosts
    file ``/etc/hosts``; then DNS A/AAAA queries (RFC 1035, RFC 3596) through a fresh
    :class:`dns.asyncresolver.Resolver` — the system's ``/etc/resolv.conf`` or ``dns_server``
    (``"ip[:port]"``).  With ``ip_protocol="auto"`` both queries run concurrently and IPv4
    addresses come first.

    Args:
        host: name or IP literal.
        ip_protocol: ``"auto"``, ``"ip4"`` or ``"ip6"``.
        timeout: seconds for the whole resolution.
        dns_server: optional ``"ip[:port]"`` of the server to ask instead of the system's.

    Returns:
        ``[(family, ip), ...]`` — at least one entry.

    Raises:
        ProbeFailure: ``dns`` (NXDOMAIN, SERVFAIL, no address of the wanted family) or
            ``timeout_resolve`` (no answer within ``timeout``).
    """
    families = _families(ip_protocol)
    try:
        literal = ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        literal = None
    if literal is not None:
        family = socket.AF_INET6 if literal.version == 6 else socket.AF_INET
        if family not in families:
            raise ProbeFailure("dns", f"{host} is an IPv{literal.version} address but ip_protocol is {ip_protocol}")
        return [(family, str(literal))]

    if dns_server is None:
        from_file = []
        for text in _hosts_file_lookup(host):
            family = socket.AF_INET6 if ":" in text else socket.AF_INET
            if family in families:
                from_file.append((family, text))
        if from_file:
            from_file.sort(key=lambda item: families.index(item[0]))
            return from_file

    if dns_server is None:
        resolver = dns.asyncresolver.Resolver()  # reads /etc/resolv.conf now; no cache
    else:
        server_ip, server_port = parse_server(dns_server)
        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers = [server_ip]
        resolver.port = server_port
    resolver.cache = None

    async def one(family: int) -> list[tuple[int, str]]:
        rdtype = "A" if family == socket.AF_INET else "AAAA"
        answer = await resolver.resolve(host, rdtype, lifetime=max(timeout, 0.001), search=False, raise_on_no_answer=False)
        return [(family, rdata.address) for rdata in answer] if answer.rrset is not None else []

    try:
        results = await asyncio.wait_for(
            asyncio.gather(*(one(f) for f in families), return_exceptions=True), timeout=max(timeout, 0.0)
        )
    except TimeoutError:
        raise ProbeFailure("timeout_resolve", f"no DNS answer for {host} within {timeout:.3g}s") from None
    addresses: list[tuple[int, str]] = []
    errors: list[BaseException] = []
    for result in results:
        if isinstance(result, BaseException):
            errors.append(result)
        else:
            addresses.extend(result)
    if addresses:
        return addresses
    for error in errors:
        if isinstance(error, (dns.resolver.LifetimeTimeout, dns.exception.Timeout)):
            raise ProbeFailure("timeout_resolve", f"no DNS answer for {host} within {timeout:.3g}s")
    for error in errors:
        if isinstance(error, dns.resolver.NXDOMAIN):
            raise ProbeFailure("dns", f"{host}: NXDOMAIN (name does not exist)")
    for error in errors:
        if isinstance(error, dns.resolver.NoNameservers):
            raise ProbeFailure("dns", f"{host}: no server answered usefully (SERVFAIL/REFUSED)")
    for error in errors:
        if not isinstance(error, Exception):  # CancelledError and friends: never swallow
            raise error
        if not isinstance(error, dns.exception.DNSException):
            raise ProbeFailure("dns", f"{host}: resolution failed: {type(error).__name__}: {error}")
    wanted = {"ip4": "A", "ip6": "AAAA"}.get(ip_protocol, "A/AAAA")
    raise ProbeFailure("dns", f"{host}: no {wanted} record")


def os_error_reason(exc: OSError) -> str:
    """Reason code for an OS-level socket error: ``refused``, ``reset``, ``unreachable``,
    ``permission`` or ``connect`` (errno names from POSIX / Linux)."""
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, (ConnectionResetError, ConnectionAbortedError, BrokenPipeError)):
        return "reset"
    if exc.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EHOSTDOWN, errno.ENETDOWN, errno.EADDRNOTAVAIL):
        return "unreachable"
    if isinstance(exc, PermissionError):
        return "permission"
    return "connect"


async def connect_tcp(family: int, ip: str, port: int, timeout: float) -> socket.socket:
    """Open a non-blocking TCP socket connected to ``(ip, port)`` within ``timeout`` seconds.

    Raises:
        ProbeFailure: ``timeout_connect``, ``refused``, ``unreachable``, ``reset`` or ``connect``.
    """
    loop = asyncio.get_running_loop()
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        await asyncio.wait_for(loop.sock_connect(sock, (ip, port)), timeout=max(timeout, 0.0))
    except TimeoutError:
        sock.close()
        raise ProbeFailure("timeout_connect", f"TCP connect to {ip}:{port} not finished within {timeout:.3g}s") from None
    except OSError as exc:
        sock.close()
        raise ProbeFailure(os_error_reason(exc), f"TCP connect to {ip}:{port}: {exc.strerror or exc}") from None
    except BaseException:
        sock.close()
        raise
    return sock


#: OpenSSL ``X509_V_ERR_*`` codes (openssl/x509_vfy.h) that mean "outside the validity period".
_X509_DATE_ERRORS = {9, 10, 13, 14}  # CERT_NOT_YET_VALID, CERT_HAS_EXPIRED, bad notBefore/notAfter field
#: ``X509_V_ERR_HOSTNAME_MISMATCH`` and ``X509_V_ERR_IP_ADDRESS_MISMATCH``.
_X509_NAME_ERRORS = {62, 64}


def tls_error_reason(exc: BaseException) -> tuple[str, str]:
    """Classify a TLS handshake failure.

    Returns:
        ``(reason, detail)``: ``tls_expired`` (X509 errors 9/10: not yet valid / expired,
        RFC 5280 §4.1.2.5), ``tls_hostname`` (X509 error 62/64: name mismatch, RFC 6125),
        ``reset`` (peer closed or reset during the handshake) or ``tls`` (anything else:
        untrusted chain, protocol or cipher mismatch).
    """
    if isinstance(exc, ssl.SSLCertVerificationError):
        code = getattr(exc, "verify_code", None)
        message = getattr(exc, "verify_message", None) or str(exc)
        if code in _X509_DATE_ERRORS:
            return "tls_expired", f"certificate verification failed: {message}"
        if code in _X509_NAME_ERRORS:
            return "tls_hostname", f"certificate verification failed: {message}"
        return "tls", f"certificate verification failed: {message}"
    if isinstance(exc, ssl.SSLError):
        return "tls", f"TLS handshake failed: {exc.reason or exc}"
    if isinstance(exc, (ConnectionResetError, BrokenPipeError, ConnectionAbortedError, EOFError)):
        return "reset", f"connection closed during the TLS handshake: {exc}"
    if isinstance(exc, OSError):
        return os_error_reason(exc), f"TLS handshake: {exc.strerror or exc}"
    return "tls", f"TLS handshake failed: {type(exc).__name__}: {exc}"


def make_ssl_context(verify: bool, ca_file: str | None, check_hostname: bool = True) -> ssl.SSLContext:
    """Client TLS context: the system trust store (or ``ca_file``), TLS ≥ 1.2 when verifying.

    Raises:
        OSError / ssl.SSLError: ``ca_file`` unreadable or not PEM.
    """
    if not verify:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    context = ssl.create_default_context(cafile=ca_file)
    context.check_hostname = check_hostname
    return context


def _name_to_text(name: Any) -> str:
    try:
        return name.rfc4514_string()
    except Exception:  # noqa: BLE001 - odd encodings must not break a probe
        return str(name)


def cert_facts(der: bytes, now: float) -> dict[str, Any]:
    """Facts about one certificate (DER), per RFC 5280.

    Returns:
        ``cert_not_after`` / ``cert_not_before`` (Unix seconds, int), ``cert_days_left`` (float,
        negative when expired), ``cert_subject`` / ``cert_issuer`` (RFC 4514 strings),
        ``cert_serial`` (hex string), ``cert_fingerprint_sha256`` (hex), ``cert_dns_names``
        (subjectAltName dNSName and iPAddress entries, list of str).

    Raises:
        ValueError: ``der`` is not a parsable X.509 certificate.
    """
    from cryptography import x509

    cert = x509.load_der_x509_certificate(der)
    not_after = cert.not_valid_after_utc.timestamp()
    not_before = cert.not_valid_before_utc.timestamp()
    names: list[str] = []
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = [str(v) for v in san.get_values_for_type(x509.DNSName)]
        names += [str(v) for v in san.get_values_for_type(x509.IPAddress)]
    except x509.ExtensionNotFound:
        pass
    except Exception:  # noqa: BLE001 - malformed extension: keep the other facts
        pass
    return {
        "cert_not_after": int(not_after),
        "cert_not_before": int(not_before),
        "cert_days_left": round((not_after - now) / 86400.0, 4),
        "cert_subject": _name_to_text(cert.subject),
        "cert_issuer": _name_to_text(cert.issuer),
        "cert_serial": format(cert.serial_number, "x"),
        "cert_fingerprint_sha256": hashlib.sha256(der).hexdigest(),
        "cert_dns_names": names,
    }


def peer_chain_der(ssl_object: Any, verified: bool = False) -> list[bytes]:
    """DER of the peer's certificates, leaf first.

    ``verified=False``: the chain exactly as the server sent it
    (``SSLObject.get_unverified_chain()``); ``verified=True``: the chain OpenSSL built and
    verified, up to the trust anchor (``get_verified_chain()``).  Both are public on
    Python >= 3.13 and private methods of the ``_ssl`` object on 3.10-3.12; when neither is
    available the leaf alone comes from ``getpeercert(binary_form=True)``.
    """
    name = "get_verified_chain" if verified else "get_unverified_chain"
    chain: list[bytes] = []
    getter = getattr(ssl_object, name, None)
    if getter is None:
        getter = getattr(getattr(ssl_object, "_sslobj", None), name, None)
    if getter is not None:
        try:
            for cert in getter() or []:
                chain.append(cert if isinstance(cert, bytes) else cert.public_bytes(ssl._ssl.ENCODING_DER))  # type: ignore[attr-defined]
        except Exception:  # noqa: BLE001 - private API: any surprise -> leaf only
            chain = []
    if not chain:
        leaf = ssl_object.getpeercert(binary_form=True)
        if leaf:
            chain = [leaf]
    return chain


async def close_writer(writer: asyncio.StreamWriter | None, grace: float = 0.5) -> None:
    """Close a stream, waiting at most ``grace`` seconds for a clean close (TLS close_notify,
    FIN); ``grace <= 0`` or any trouble aborts the transport at once.  Never raises."""
    if writer is None:
        return
    if grace <= 0:
        writer.transport.abort()
        return
    try:
        writer.close()
        await asyncio.wait_for(writer.wait_closed(), timeout=grace)
    except Exception:  # noqa: BLE001 - closing is best effort (TimeoutError included)
        writer.transport.abort()


def utc_now() -> float:
    """Wall clock, Unix seconds (UTC)."""
    return datetime.datetime.now(datetime.timezone.utc).timestamp()


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
        # resolve
        t0 = clock.elapsed()
        try:
            addresses = await resolve_host(opts.host, opts.ip_protocol, clock.remaining(total), opts.dns_server)
        finally:
            phases["resolve"] = clock.elapsed() - t0
        family, ip = addresses[0]
        facts["ip_address"] = ip

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
                await asyncio.wait_for(
                    writer.start_tls(context, server_hostname=server_name, ssl_handshake_timeout=tls_budget + 5.0),
                    timeout=tls_budget,
                )
            except TimeoutError:
                return result("timeout_tls", f"TLS handshake with {ip}:{opts.port} not finished within {tls_budget:.3g}s")
            except (ssl.SSLError, OSError, EOFError) as exc:
                reason, detail = tls_error_reason(exc)
                return result(reason, detail)
            finally:
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
