"""TLS certificate probe: is the certificate a server really sends valid, trusted, for the right
name, and how long until it expires?

Rules: validity period and chain per RFC 5280 (§4.1.2.5, §6), host name per RFC 6125 (as
implemented by OpenSSL through Python's :mod:`ssl`).  Expiry is reported like
blackbox_exporter's ``probe_ssl_earliest_cert_expiry``.

How it works: one TCP connection and a *verifying* handshake (trust store or ``ca_file``, host
name check unless ``check_hostname: false``).  If verification fails, a second connection does
an *unverified* handshake only to read the certificates the server sends, so the facts (expiry,
subject, issuer...) are there even for an expired or untrusted certificate.  The chain the
server sent is read with ``get_unverified_chain()`` (private on Python 3.11, see
:func:`probes.net.peer_chain_der`); the leaf alone from ``getpeercert(binary_form=True)`` is the
fallback.

Options (YAML key ``tls``)::

    host: dichvucong.gov.vn
    port: 443
    server_name: dichvucong.gov.vn   # SNI and the name checked; default: host
    ca_file: /etc/ssl/extra-ca.pem   # default: the system trust store
    check_hostname: true
    verify: true                     # false: only dates/expiry are checked (self-signed hosts)
    min_days: 7                      # fewer days left -> error tls_expiring
    days_warning: 21                 # fewer days left -> still ok, fact cert_expiry_warning true
    connect_timeout: 5s
    ip_protocol: auto
    dns_server: 127.0.0.1:5353
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

from pydantic import BaseModel, Field, model_validator

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
    peer_chain_der,
    resolve_first,
    start_tls,
    utc_now,
)

KIND = "tls"


class Options(BaseModel):
    """Options of the ``tls`` kind (see the module docstring)."""

    model_config = STRICT

    host: str = Field(min_length=1)
    port: int = Field(default=443, ge=1, le=65535)
    server_name: str | None = None
    ca_file: str | None = None
    check_hostname: bool = True
    verify: bool = True
    min_days: float = Field(default=7.0, ge=0)
    days_warning: float = Field(default=21.0, ge=0)
    connect_timeout: PositiveDuration | None = None
    ip_protocol: IpProtocol = "auto"
    dns_server: DnsServer | None = None

    @model_validator(mode="after")
    def _days(self) -> "Options":
        if self.days_warning < self.min_days:
            raise ValueError("days_warning must be >= min_days")
        return self


async def _handshake(
    family: int, ip: str, opts: Options, context: ssl.SSLContext, server_name: str, clock: Clock, total: float,
    phases: dict[str, float] | None,
) -> asyncio.StreamWriter:
    """Connect and run one TLS handshake; record ``connect``/``tls`` phases when ``phases``.

    Raises:
        ProbeFailure: connect or handshake failure, classified.
    """
    budget = clock.remaining(total)
    if opts.connect_timeout is not None:
        budget = min(budget, opts.connect_timeout)
    t0 = clock.elapsed()
    try:
        sock = await connect_tcp(family, ip, opts.port, budget)
    finally:
        if phases is not None:
            phases["connect"] = clock.elapsed() - t0
    _reader, writer = await asyncio.open_connection(sock=sock)
    tls_budget = clock.remaining(total)
    t0 = clock.elapsed()
    try:
        await start_tls(writer, context, server_name, tls_budget, f"{ip}:{opts.port}")
    except BaseException:
        await close_writer(writer, grace=0)
        raise
    finally:
        if phases is not None:
            phases["tls"] = clock.elapsed() - t0
    return writer


def _chain_facts(ssl_object: Any, facts: dict[str, Any], verified: bool) -> list[dict[str, Any]]:
    """Fill ``facts``: leaf facts, and ``cert_not_after``/``cert_days_left`` for the earliest
    expiry of the chain — the verified chain (up to the trust anchor) after a successful
    verification, else the chain as sent.  Using the verified chain avoids counting an expired
    extra certificate the server still sends but the verifier does not use (the 2021
    "DST Root CA X3" case).  Returns the parsed facts per certificate, leaf first."""
    now = utc_now()
    parsed = []
    for der in peer_chain_der(ssl_object, verified=verified):
        try:
            parsed.append(cert_facts(der, now))
        except ValueError:
            continue
    facts["tls_version"] = ssl_object.version()
    if parsed:
        facts.update(parsed[0])
        facts["cert_chain_length"] = len(parsed)
        earliest = min(parsed, key=lambda f: f["cert_not_after"])
        facts["cert_not_after"] = earliest["cert_not_after"]
        facts["cert_days_left"] = earliest["cert_days_left"]
    return parsed


async def probe(spec: TargetSpec, ctx: ProbeContext) -> ProbeResult:
    """Check the server's certificate.

    Returns:
        A :class:`ProbeResult`.  Reasons: ``tls_expired`` (a certificate sent is past notAfter
        or before notBefore, RFC 5280 §4.1.2.5), ``tls_hostname`` (name mismatch, RFC 6125),
        ``tls`` (untrusted chain, handshake failure, unreadable ``ca_file``),
        ``tls_expiring`` (fewer than ``min_days`` left), ``timeout_tls``, plus the connection
        reasons of :func:`probes.tcp.probe` (``dns``, ``refused``, ``timeout_connect``...).
        Facts: ``cert_not_after`` (earliest expiry of the verified chain, or of the chain as
        sent when unverified; Unix seconds), ``cert_not_before`` (leaf, Unix seconds),
        ``cert_days_left`` (float days to ``cert_not_after``, negative when past), ``cert_subject``, ``cert_issuer``, ``cert_serial``,
        ``cert_fingerprint_sha256``, ``cert_dns_names`` (leaf), ``cert_chain_length``,
        ``tls_version``, ``cert_expiry_warning`` (bool), ``cert_verified`` (bool),
        ``ip_address``.  Never raises for network failures.
    """
    opts: Options = spec.options
    clock = Clock()
    phases: dict[str, float] = {}
    facts: dict[str, Any] = {}
    total = spec.timeout
    server_name = opts.server_name or opts.host

    def result(reason: str | None, detail: str) -> ProbeResult:
        return make_result(spec, clock, reason, detail, phases, facts)

    try:
        try:
            verifying = make_ssl_context(opts.verify, opts.ca_file, opts.check_hostname)
        except (OSError, ssl.SSLError) as exc:
            return result("tls", f"cannot load ca_file {opts.ca_file!r}: {exc}")

        family, ip = await resolve_first(opts.host, opts.ip_protocol, opts.dns_server, clock, total, phases, facts)

        verify_failure: ProbeFailure | None = None
        try:
            writer = await _handshake(family, ip, opts, verifying, server_name, clock, total, phases)
        except ProbeFailure as failure:
            if failure.reason not in ("tls", "tls_expired", "tls_hostname"):
                raise
            verify_failure = failure
            # Second look, unverified, only to read what the server sends.
            try:
                writer = await _handshake(family, ip, opts, make_ssl_context(False, None), server_name, clock, total, None)
            except ProbeFailure:
                writer = None
        facts["cert_verified"] = verify_failure is None and opts.verify
        parsed: list[dict[str, Any]] = []
        if writer is not None:
            try:
                ssl_object = writer.get_extra_info("ssl_object")
                if ssl_object is not None:
                    parsed = _chain_facts(ssl_object, facts, verified=facts["cert_verified"])
            finally:
                await close_writer(writer, grace=min(0.25, clock.remaining(total)))

        # Dates of the leaf are checked here too: with verify: false, or when the chain is also
        # untrusted, OpenSSL's single error code would hide an expired leaf.
        now = utc_now()
        leaf = parsed[0] if parsed else None
        if leaf is not None and leaf["cert_not_after"] <= now:
            return result("tls_expired", f"certificate {leaf['cert_subject']!r} expired on "
                          f"{_iso(leaf['cert_not_after'])} ({-leaf['cert_days_left']:.1f} days ago)")
        if leaf is not None and leaf["cert_not_before"] > now:
            return result("tls_expired", f"certificate {leaf['cert_subject']!r} is not valid before "
                          f"{_iso(leaf['cert_not_before'])}")
        if verify_failure is not None:
            return result(verify_failure.reason, verify_failure.detail)
        if not parsed:
            return result("tls", "the server sent no certificate")

        days_left = facts["cert_days_left"]
        facts["cert_expiry_warning"] = days_left < opts.days_warning
        expiry = _iso(facts["cert_not_after"])
        if days_left < opts.min_days:
            return result("tls_expiring", f"certificate expires in {days_left:.1f} days ({expiry}), "
                          f"fewer than min_days {opts.min_days:g}")
        note = f"; warning: fewer than {opts.days_warning:g} days" if facts["cert_expiry_warning"] else ""
        return result(None, f"certificate valid for {days_left:.1f} more days (until {expiry}){note}")
    except ProbeFailure as failure:
        return result(failure.reason, failure.detail)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001 - a probe never raises
        return result("internal", f"unexpected {type(exc).__name__}: {exc}")


def _iso(unix: float) -> str:
    import datetime

    return datetime.datetime.fromtimestamp(unix, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
