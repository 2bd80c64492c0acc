"""Network helpers shared by the probe kinds: name resolution, TCP connect, TLS classification,
certificate facts, stream closing.

Not a probe kind (no ``KIND``, not in :data:`probes.KIND_MODULES`).  Used by :mod:`probes.tcp`,
:mod:`probes.tls`, :mod:`probes.icmp`, :mod:`probes.dns` and :mod:`probes.http`.

* :func:`resolve_host` — ``/etc/hosts`` then DNS A/AAAA (RFC 1035, RFC 3596) with dnspython's
  asyncio resolver: no thread (so no executor pool to fill up with hanging lookups) and no cache.
* :func:`connect_tcp` / :func:`os_error_reason` — TCP connect (RFC 9293) with classified errors.
* :func:`make_ssl_context`, :func:`start_tls`, :func:`tls_error_reason`,
  :func:`peer_chain_der`, :func:`cert_facts` — TLS client side, certificate chain and facts
  (RFC 8446, RFC 5280, RFC 6125).
* :class:`ProbeFailure` — a classified failure carrying a reason code of
  :data:`probes.base.REASONS`.

Every time is in seconds (``float``); every wall-clock value is Unix seconds (UTC).
"""

from __future__ import annotations

import asyncio
import datetime
import errno
import hashlib
import ipaddress
import socket
import ssl
from typing import Annotated, Any, Literal

import dns.asyncresolver
import dns.exception
import dns.resolver
from pydantic import AfterValidator

from probes.base import Clock

__all__ = [
    "DnsServer",
    "IpProtocol",
    "ProbeFailure",
    "cert_facts",
    "close_writer",
    "connect_tcp",
    "make_ssl_context",
    "os_error_reason",
    "parse_server",
    "peer_chain_der",
    "resolve_first",
    "resolve_host",
    "start_tls",
    "tls_error_reason",
    "utc_now",
]

#: Address families to resolve: ``auto`` (IPv4 first, then IPv6), ``ip4`` or ``ip6``.
IpProtocol = Literal["auto", "ip4", "ip6"]


class ProbeFailure(Exception):
    """A classified failure that ends a probe.

    Attributes:
        reason: a code from :data:`probes.base.REASONS` (``"dns"``, ``"timeout_connect"``...).
        detail: one English line for :attr:`probes.base.ProbeResult.detail` (no secrets).
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


# --------------------------------------------------------------------------------------------
# Name resolution
# --------------------------------------------------------------------------------------------


def parse_server(value: str, default_port: int = 53) -> tuple[str, int]:
    """Parse a DNS server address: ``"127.0.0.1"``, ``"127.0.0.1:5353"``, ``"::1"``,
    ``"[::1]:5353"`` (a bare IPv6 literal takes ``default_port``).

    Returns:
        ``(ip, port)``: the IP literal as written (without brackets) and the port (int).

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


def _check_server(value: str) -> str:
    parse_server(value)
    return value


#: An option holding a DNS server ``"ip[:port]"``, checked by :func:`parse_server` at validation
#: (a :class:`pydantic.ValidationError` with parse_server's message otherwise).
DnsServer = Annotated[str, AfterValidator(_check_server)]


def _families(ip_protocol: str) -> list[int]:
    """Address families for ``ip_protocol``, in order of preference: ``ip4`` → ``[AF_INET]``,
    ``ip6`` → ``[AF_INET6]``, anything else (``auto``) → ``[AF_INET, AF_INET6]``."""
    if ip_protocol == "ip4":
        return [socket.AF_INET]
    if ip_protocol == "ip6":
        return [socket.AF_INET6]
    return [socket.AF_INET, socket.AF_INET6]


def _hosts_file_lookup(host: str, path: str = "/etc/hosts") -> list[str]:
    """Addresses for ``host`` in the hosts file (hosts(5) format), in file order.

    Names compare case-insensitively without a final dot; a zone index (``fe80::1%eth0``) is
    dropped.  Returns ``[]`` when the file is unreadable or does not name ``host``.
    """
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
    (``"ip[:port]"``).  No search domains are applied (the name is taken as absolute).  With
    ``ip_protocol="auto"`` both queries run concurrently and IPv4 addresses come first.

    Args:
        host: name or IP literal (an IPv6 literal may be bracketed).
        ip_protocol: ``"auto"``, ``"ip4"`` or ``"ip6"``.
        timeout: seconds for the whole resolution.
        dns_server: optional ``"ip[:port]"`` of the server to ask instead of the system's.

    Returns:
        ``[(family, ip), ...]`` — ``family`` is ``socket.AF_INET`` / ``AF_INET6``, ``ip`` the
        address as text; at least one entry.

    Raises:
        ProbeFailure: ``dns`` (NXDOMAIN, SERVFAIL, no address of the wanted family) or
            ``timeout_resolve`` (no answer within ``timeout``).
        ValueError: ``dns_server`` is not a valid ``"ip[:port]"`` (see :func:`parse_server`).
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


async def resolve_first(
    host: str,
    ip_protocol: str,
    dns_server: str | None,
    clock: Clock,
    total: float,
    phases: dict[str, float],
    facts: dict[str, Any],
) -> tuple[int, str]:
    """The ``resolve`` step of a probe: :func:`resolve_host` within what is left of ``total``
    (seconds from ``clock``'s start), timed into ``phases["resolve"]`` (seconds, also on
    failure); the first address is recorded as ``facts["ip_address"]``.

    Returns:
        ``(family, ip)`` of the first address.

    Raises:
        ProbeFailure: as :func:`resolve_host` (``dns``, ``timeout_resolve``).
    """
    t0 = clock.elapsed()
    try:
        addresses = await resolve_host(host, ip_protocol, clock.remaining(total), dns_server)
    finally:
        phases["resolve"] = clock.elapsed() - t0
    family, ip = addresses[0]
    facts["ip_address"] = ip
    return family, ip


# --------------------------------------------------------------------------------------------
# TCP
# --------------------------------------------------------------------------------------------


def os_error_reason(exc: OSError) -> str:
    """Reason code for an OS-level socket error: ``refused`` (ECONNREFUSED), ``reset``
    (ECONNRESET, ECONNABORTED, EPIPE, ESHUTDOWN), ``unreachable`` (ENETUNREACH, EHOSTUNREACH, EHOSTDOWN,
    ENETDOWN, EADDRNOTAVAIL), ``permission`` (EACCES, EPERM) or ``connect`` (anything else);
    errno names from POSIX / Linux."""
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
    """Open a non-blocking TCP socket connected to ``(ip, port)`` within ``timeout`` seconds
    (three-way handshake, RFC 9293).

    Returns:
        the connected socket; the caller owns (and closes) it.

    Raises:
        ProbeFailure: ``timeout_connect``, ``refused``, ``unreachable``, ``reset``,
            ``permission`` or ``connect`` (see :func:`os_error_reason`).
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


# --------------------------------------------------------------------------------------------
# TLS and certificates
# --------------------------------------------------------------------------------------------

#: OpenSSL ``X509_V_ERR_*`` codes (openssl/x509_vfy.h) that mean "outside the validity period".
_X509_DATE_ERRORS = {9, 10, 13, 14}  # CERT_NOT_YET_VALID, CERT_HAS_EXPIRED, bad notBefore/notAfter field
#: ``X509_V_ERR_HOSTNAME_MISMATCH`` and ``X509_V_ERR_IP_ADDRESS_MISMATCH``.
_X509_NAME_ERRORS = {62, 64}


def tls_error_reason(exc: BaseException) -> tuple[str, str]:
    """Classify a TLS handshake failure.

    Returns:
        ``(reason, detail)``: ``tls_expired`` (X509 errors 9/10/13/14: not yet valid, expired,
        bad date field; RFC 5280 §4.1.2.5), ``tls_hostname`` (X509 error 62/64: name mismatch,
        RFC 6125), ``reset`` (peer closed or reset during the handshake), a reason of
        :func:`os_error_reason` (other OS errors) or ``tls`` (anything else: untrusted chain,
        protocol or cipher mismatch).
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


async def start_tls(
    writer: asyncio.StreamWriter, context: ssl.SSLContext, server_name: str, timeout: float, where: str
) -> None:
    """Run the TLS handshake (RFC 8446 / RFC 5246) on a connected stream, as a client, within
    ``timeout`` seconds; SNI and the name checked (RFC 6125) are ``server_name``.

    Args:
        writer: the connected stream; upgraded in place on success.
        context: client context, e.g. from :func:`make_ssl_context`.
        server_name: host name for SNI and verification.
        timeout: seconds (asyncio's own handshake limit is set 5 s later, so this one decides).
        where: ``"ip:port"`` for the detail line.

    Raises:
        ProbeFailure: ``timeout_tls``, or a reason of :func:`tls_error_reason` (``tls``,
            ``tls_expired``, ``tls_hostname``, ``reset``...).  The stream is left open: the
            caller closes it (see :func:`close_writer`).
    """
    try:
        await asyncio.wait_for(
            writer.start_tls(context, server_hostname=server_name, ssl_handshake_timeout=timeout + 5.0),
            timeout=timeout,
        )
    except TimeoutError:
        raise ProbeFailure("timeout_tls", f"TLS handshake with {where} not finished within {timeout:.3g}s") from None
    except (ssl.SSLError, OSError, EOFError) as exc:
        raise ProbeFailure(*tls_error_reason(exc)) from None


def make_ssl_context(verify: bool, ca_file: str | None, check_hostname: bool = True) -> ssl.SSLContext:
    """Client TLS context: the system trust store (or only ``ca_file``, PEM), TLS ≥ 1.2 when
    verifying; host name checked per RFC 6125 when ``check_hostname``.  ``verify=False``
    accepts any certificate and any name.

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

    Args:
        der: the certificate, DER-encoded.
        now: the current time, Unix seconds (for ``cert_days_left``).

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
    available (or either fails) the leaf alone comes from ``getpeercert(binary_form=True)``.

    Args:
        ssl_object: an :class:`ssl.SSLObject` / :class:`ssl.SSLSocket` after the handshake.
        verified: which chain to read (see above).

    Returns:
        a list of DER certificates; ``[]`` when the peer sent none.  Never raises for a
        missing or failing chain API.
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


def utc_now() -> float:
    """Wall clock, Unix seconds (UTC)."""
    return datetime.datetime.now(datetime.timezone.utc).timestamp()
