"""DNS probe: ask one question, check the response code and the answers.

Messages per RFC 1035 (§4.1 header/RCODE, §4.2.1 UDP with retry over TCP when the TC bit is
set, §4.2.2 TCP), AAAA per RFC 3596; built and parsed by dnspython, sent with
:mod:`dns.asyncquery` (asyncio, no threads).  There is no cache anywhere: each probe builds a
fresh query and reads ``/etc/resolv.conf`` again when no ``server`` is given, so a changed
answer is seen at the next probe (what a commune's resolver returns *now*).

Like blackbox_exporter's ``dns`` prober: phase ``resolve`` is the lookup time
(``probe_dns_lookup_time_seconds``); facts ``dns_answer_rrs`` / ``dns_authority_rrs`` /
``dns_additional_rrs`` are ``probe_dns_answer_rrs`` etc.

Options (YAML key ``dns``)::

    name: motcua.dongnai.gov.vn
    record_type: A             # A, AAAA, CNAME, MX, TXT, NS, SOA, ... (dnspython names)
    server: 127.0.0.1:5353     # default: the nameservers of /etc/resolv.conf, in order
    transport: udp             # udp (with TCP retry on truncation) | tcp
    expect_rcode: NOERROR      # NXDOMAIN to assert that a name does NOT exist
    expect_any_of: [203.0.113.10, 203.0.113.11]   # at least one of these among the answers
    expect_all_of: []          # every one of these among the answers
    expect_regex: "^203\\.0\\.113\\."             # at least one answer matches
    recursion_desired: true
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
from typing import Any, Literal

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.resolver
from pydantic import BaseModel, Field, field_validator

from probes.base import Clock, ProbeContext, ProbeResult, TargetSpec, make_result
from probes.config_types import STRICT
from probes.net import DnsServer, os_error_reason, parse_server

KIND = "dns"


class Options(BaseModel):
    """Options of the ``dns`` kind (see the module docstring)."""

    model_config = STRICT

    name: str = Field(min_length=1)
    record_type: str = "A"
    server: DnsServer | None = None
    transport: Literal["udp", "tcp"] = "udp"
    expect_rcode: str = "NOERROR"
    expect_any_of: list[str] = Field(default_factory=list)
    expect_all_of: list[str] = Field(default_factory=list)
    expect_regex: str | None = None
    recursion_desired: bool = True

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        try:
            dns.name.from_text(value)
        except dns.exception.DNSException as exc:
            raise ValueError(f"{value!r} is not a valid DNS name: {exc}") from exc
        return value

    @field_validator("record_type")
    @classmethod
    def _record_type(cls, value: str) -> str:
        try:
            return dns.rdatatype.to_text(dns.rdatatype.from_text(value.upper()))
        except dns.exception.DNSException as exc:
            raise ValueError(f"unknown record type {value!r}") from exc

    @field_validator("expect_rcode")
    @classmethod
    def _rcode(cls, value: str) -> str:
        try:
            return dns.rcode.to_text(dns.rcode.from_text(value.upper()))
        except (dns.exception.DNSException, ValueError) as exc:
            raise ValueError(f"unknown rcode {value!r} (NOERROR, NXDOMAIN, SERVFAIL, REFUSED...)") from exc

    @field_validator("expect_regex")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"expect_regex is not a valid regular expression: {exc}") from exc
        return value


def normalise_answer(text: str) -> str:
    """Canonical text for comparing answers: IP addresses in compressed form (so ``::1`` equals
    ``0:0::1``), anything else lower-cased without a final dot (DNS names compare
    case-insensitively, RFC 4343)."""
    text = text.strip()
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return text.lower().rstrip(".")


def _rdata_text(rdata: Any) -> str:
    address = getattr(rdata, "address", None)
    return str(address) if address is not None else rdata.to_text()


def system_nameservers() -> list[tuple[str, int]]:
    """Nameservers of ``/etc/resolv.conf``, read now (no cached configuration).

    Raises:
        dns.resolver.NoResolverConfiguration: the file is missing or names no server.
    """
    resolver = dns.resolver.Resolver(configure=True)
    return [(str(ns), int(resolver.port)) for ns in resolver.nameservers]


async def _ask(query: dns.message.Message, ip: str, port: int, transport: str, timeout: float) -> tuple[dns.message.Message, str]:
    if transport == "tcp":
        response = await dns.asyncquery.tcp(query, ip, timeout=timeout, port=port)
        return response, "tcp"
    response, used_tcp = await dns.asyncquery.udp_with_fallback(query, ip, timeout=timeout, port=port)
    return response, "tcp" if used_tcp else "udp"


async def probe(spec: TargetSpec, ctx: ProbeContext) -> ProbeResult:
    """Send one DNS query and check the response.

    The configured ``server`` (or each ``/etc/resolv.conf`` nameserver in turn, sharing the
    deadline) gets the question ``name``/``record_type``; the first response is judged.

    Returns:
        A :class:`ProbeResult`.  Reasons: ``dns`` (RCODE other than ``expect_rcode``, e.g.
        NXDOMAIN/SERVFAIL, or NOERROR without any record of the asked type), ``dns_answer``
        (answers present but ``expect_any_of`` / ``expect_all_of`` / ``expect_regex`` failed),
        ``timeout_resolve`` (no response before the deadline), ``refused`` (ICMP port
        unreachable / TCP RST from the server), ``protocol`` (malformed or mismatched
        response), ``unreachable``/``connect`` (OS errors).  Facts: ``dns_answers`` (list of
        str: the records of the asked type in the answer section, CNAME chain followed),
        ``dns_rcode`` (str), ``dns_answer_rrs`` / ``dns_authority_rrs`` /
        ``dns_additional_rrs`` (int), ``dns_server`` (``ip:port`` that answered),
        ``dns_transport`` (``udp``/``tcp`` actually used).  Never raises for network failures.
    """
    opts: Options = spec.options
    clock = Clock()
    phases: dict[str, float] = {}
    facts: dict[str, Any] = {}
    total = spec.timeout

    def result(reason: str | None, detail: str) -> ProbeResult:
        return make_result(spec, clock, reason, detail, phases, facts)

    rdtype = dns.rdatatype.from_text(opts.record_type)
    question = f"{opts.name} {opts.record_type}"
    try:
        if opts.server is not None:
            servers = [parse_server(opts.server)]
        else:
            try:
                servers = system_nameservers()
            except dns.exception.DNSException as exc:
                return result("dns", f"no system resolver configured (/etc/resolv.conf): {exc}")
            if not servers:
                return result("dns", "no nameserver in /etc/resolv.conf")

        query = dns.message.make_query(opts.name, rdtype)
        if not opts.recursion_desired:
            query.flags &= ~dns.flags.RD

        response: dns.message.Message | None = None
        failures: list[tuple[str, str]] = []
        t0 = clock.elapsed()
        try:
            for index, (ip, port) in enumerate(servers):
                budget = clock.remaining(total) / (len(servers) - index)
                if budget <= 0:
                    break
                where = f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
                try:
                    response, used = await asyncio.wait_for(
                        _ask(query, ip, port, opts.transport, budget), timeout=budget + 0.25
                    )
                except (dns.exception.Timeout, TimeoutError):
                    failures.append(("timeout_resolve", f"no answer from {where} within {budget:.3g}s"))
                    continue
                except OSError as exc:
                    failures.append((os_error_reason(exc), f"{where}: {exc.strerror or exc}"))
                    continue
                except (dns.query.BadResponse, dns.exception.FormError, dns.message.ShortHeader,
                        dns.message.TrailingJunk, dns.exception.SyntaxError, EOFError) as exc:
                    failures.append(("protocol", f"malformed response from {where}: {type(exc).__name__}: {exc}"))
                    continue
                except dns.exception.DNSException as exc:
                    failures.append(("protocol", f"{where}: {type(exc).__name__}: {exc}"))
                    continue
                facts["dns_server"] = where
                facts["dns_transport"] = used
                break
        finally:
            phases["resolve"] = clock.elapsed() - t0

        if response is None:
            if not failures:
                return result("timeout_resolve", f"no time left to ask about {question}")
            for reason, detail in failures:
                if reason == "timeout_resolve":
                    return result(reason, f"{question}: {detail}")
            reason, detail = failures[0]
            return result(reason, f"{question}: {detail}")

        rcode = dns.rcode.to_text(response.rcode())
        facts["dns_rcode"] = rcode
        facts["dns_answer_rrs"] = sum(len(rrset) for rrset in response.answer)
        facts["dns_authority_rrs"] = sum(len(rrset) for rrset in response.authority)
        facts["dns_additional_rrs"] = sum(len(rrset) for rrset in response.additional)
        answers = [_rdata_text(rdata) for rrset in response.answer if rrset.rdtype == rdtype for rdata in rrset]
        facts["dns_answers"] = answers

        if rcode != opts.expect_rcode:
            return result("dns", f"{question}: rcode {rcode}, expected {opts.expect_rcode}")
        if rcode == "NOERROR" and not answers:
            return result("dns", f"{question}: NOERROR but no {opts.record_type} record (no answer)")

        have = {normalise_answer(a) for a in answers}
        if opts.expect_any_of and not have & {normalise_answer(a) for a in opts.expect_any_of}:
            return result("dns_answer", f"{question}: got {answers}, expected any of {opts.expect_any_of}")
        if opts.expect_all_of:
            missing = [a for a in opts.expect_all_of if normalise_answer(a) not in have]
            if missing:
                return result("dns_answer", f"{question}: got {answers}, missing {missing}")
        if opts.expect_regex is not None and not any(re.search(opts.expect_regex, a) for a in answers):
            return result("dns_answer", f"{question}: no answer among {answers} matches {opts.expect_regex!r}")
        shown = ", ".join(answers[:5]) + (" …" if len(answers) > 5 else "")
        return result(None, f"{question}: {rcode}" + (f" [{shown}]" if answers else ""))
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001 - a probe never raises
        return result("internal", f"unexpected {type(exc).__name__}: {exc}")
