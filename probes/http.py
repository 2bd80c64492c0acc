"""HTTP(S) probe: one request (plus redirects), classified as ok / slow / error / hang.

What it does, per probe:

1. A fresh :class:`aiohttp.ClientSession` with its own connector: no keep-alive reuse and no DNS
   cache between probes (``force_close=True``, ``use_dns_cache=False``), a cookie jar that lives
   for this probe only.  Names are resolved by :func:`probes.net.resolve_host` (``/etc/hosts``,
   then DNS with dnspython's asyncio resolver), never in the loop's thread pool: a few hanging
   lookups cannot stall the other targets.
2. One request per hop; redirects are followed by this module (not by aiohttp) so that the
   redirect policy, loop detection and per-hop phase timing are exact (RFC 9110 §15.4).
3. The final response's status is checked, then its body is read *in full* (capped by
   ``max_body_bytes``), decompressed here (gzip / deflate / br, bounded), decoded to text
   (BOM → ``Content-Type`` charset → ``<meta charset>`` → UTF-8, with ``windows-1258``), NFC
   normalised and checked.

Phases follow blackbox_exporter's ``probe_http_duration_seconds{phase}``
(``prober/http.go``), summed over all hops:

``resolve``
    hop start → DNS answer (0 for an IP-literal URL).
``connect``
    DNS answer → TCP connected.
``tls``
    TCP connected → TLS handshake done (0 for ``http``).  Older blackbox_exporter releases
    measured ``gotConn − dnsDone`` here, which also contains the TCP connect; we measure the
    handshake alone so that the five phases add up to the probe's duration (the tests compare
    with the installed blackbox_exporter 0.23).
``processing``
    connection ready → first response byte (includes writing the request, like BBE's
    ``responseStart − gotConn``).
``transfer``
    first response byte → last body byte (for a redirect hop: → end of its headers; its body
    is not read).

On a failure the phase in progress is counted up to the moment the probe gave up (BBE leaves
it at 0); so ``sum(phases) ≈ duration_seconds`` always holds.

The TCP/TLS split needs a hook aiohttp does not offer publicly: :class:`_TracedConnector`
overrides ``TCPConnector._wrap_create_connection`` (a private method; written against aiohttp
3.14, needs >= 3.10 where aiohttp started connecting through ``aiohappyeyeballs``) to connect the
socket (``aiohappyeyeballs.start_connection``) and then run the TLS handshake
(``loop.create_connection(sock=...)``) as two timed steps.  The same hook wraps the protocol's
``data_received`` to timestamp the first response byte.  ``tests/test_probe_http.py`` fails
loudly (``tls`` phase 0, wrong reasons) if an aiohttp upgrade breaks this.

Deadlines: one :func:`asyncio.timeout` per hop, re-armed at each phase change to
``min(phase limit, probe deadline)`` (``connect_timeout``, ``tls_timeout``,
``first_byte_timeout``; then ``stall_timeout`` re-armed on every received chunk).  When it
fires, the phase in progress and the limit that was armed give the reason code.

The probe never raises: unexpected exceptions become reason ``internal``.
"""

from __future__ import annotations

import asyncio
import base64
import codecs
import errno
import functools
import json
import os
import re
import socket
import ssl
import time
import zlib
from typing import Annotated, Any, Literal

import aiohttp
import aiohappyeyeballs
import brotli
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.client_exceptions import (
    ClientConnectorCertificateError,
    ClientConnectorError,
    ClientConnectorSSLError,
)
from multidict import CIMultiDict
from pydantic import (
    BaseModel,
    BeforeValidator,
    Field,
    FilePath,
    JsonValue,
    SecretStr,
    field_validator,
    model_validator,
)
from yarl import URL

from probes.base import Clock, ProbeContext, ProbeResult, TargetSpec, make_result, nfc
from probes.config_types import STRICT, PositiveDuration
from probes.net import ProbeFailure, peer_chain_der, resolve_host

KIND = "http"

#: Status codes that are followed as redirects when they carry a ``Location`` (RFC 9110 §15.4).
REDIRECT_STATUSES: frozenset[int] = frozenset({301, 302, 303, 307, 308})
#: Request headers never forwarded to another origin on a redirect (RFC 9110 §15.4 item 3:
#: consider removing fields with security implications "including ... Authorization and
#: Cookie"; browsers and ``requests`` drop them cross-origin too).
_CROSS_ORIGIN_DROP: tuple[str, ...] = ("Authorization", "Proxy-Authorization", "Cookie")
_MAX_BODY_CAP = 256 * 1024 * 1024
_SNIFF_BYTES = 4096  # how far to look for <meta charset> / <?xml encoding?>


# --------------------------------------------------------------------------------------------
# Options
# --------------------------------------------------------------------------------------------


def _parse_status_range(value: Any) -> tuple[int, int]:
    """``200`` → (200, 200); ``"2xx"`` → (200, 299); ``"200-399"`` → (200, 399).

    Raises:
        ValueError: not a status code / class / range within 100..599.
    """
    if isinstance(value, bool):
        raise ValueError("expected a status code such as 200, '2xx' or '200-399'")
    if isinstance(value, (tuple, list)) and len(value) == 2:
        lo, hi = (int(v) for v in value)
    elif isinstance(value, int):
        lo = hi = value
    elif isinstance(value, str):
        text = value.strip().lower()
        if re.fullmatch(r"[1-5]xx", text):
            lo = int(text[0]) * 100
            hi = lo + 99
        elif re.fullmatch(r"\d{3}", text):
            lo = hi = int(text)
        elif m := re.fullmatch(r"(\d{3})\s*-\s*(\d{3})", text):
            lo, hi = int(m.group(1)), int(m.group(2))
        else:
            raise ValueError(f"{value!r} is not a status code, class ('2xx') or range ('200-399')")
    else:
        raise ValueError("expected a status code such as 200, '2xx' or '200-399'")
    if not (100 <= lo <= hi <= 599):
        raise ValueError(f"status range {lo}-{hi} must lie within 100-599 with low <= high")
    return (lo, hi)


#: One accepted status range, inclusive.
StatusRange = Annotated[tuple[int, int], BeforeValidator(_parse_status_range)]

_PATH_TOKEN = re.compile(r"\[(-?\d+)\]")


def parse_json_path(path: str) -> tuple[str | int, ...]:
    """Split a dotted JSON path into tokens.

    Grammar: segments separated by ``.`` (``\\.`` is a literal dot inside a key); a segment may
    carry ``[n]`` list indexes (``items[0].name``); a bare all-digit segment (``items.0.name``)
    is an index when the value at that point is a list, a key when it is an object.  An optional
    leading ``$`` / ``$.`` is ignored; ``""`` or ``"$"`` is the document root.

    Returns:
        tuple of tokens: ``str`` (key, or digits usable as either) or ``int`` (bracket index).

    Raises:
        ValueError: empty segment (``a..b``) or malformed brackets.
    """
    text = path.strip()
    if text.startswith("$"):
        text = text[1:].lstrip(".")
    if not text:
        return ()
    segments: list[str] = []
    cur: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text) and text[i + 1] in ".[\\":
            cur.append(text[i + 1])
            i += 2
            continue
        if ch == ".":
            segments.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
        i += 1
    segments.append("".join(cur))
    tokens: list[str | int] = []
    for seg in segments:
        head, _, rest = seg.partition("[")
        rest = "[" + rest if rest or seg.endswith("[") else ""
        if head:
            tokens.append(head)
        if rest:
            pos = 0
            for m in _PATH_TOKEN.finditer(rest):
                if m.start() != pos:
                    raise ValueError(f"bad index syntax in JSON path {path!r}")
                tokens.append(int(m.group(1)))
                pos = m.end()
            if pos != len(rest):
                raise ValueError(f"bad index syntax in JSON path {path!r}")
        if not head and not rest:
            raise ValueError(f"empty segment in JSON path {path!r}")
    return tuple(tokens)


_MISSING = object()


def walk_json(doc: Any, path: str | tuple[str | int, ...]) -> Any:
    """Value at ``path`` in a parsed JSON document, or the module's ``_MISSING`` sentinel.

    See :func:`parse_json_path` for the grammar; negative indexes count from the end.

    Raises:
        ValueError: malformed path (only when ``path`` is a string).
    """
    tokens = parse_json_path(path) if isinstance(path, str) else path
    cur = doc
    for tok in tokens:
        if isinstance(cur, dict):
            if isinstance(tok, int) or tok not in cur:
                return _MISSING
            cur = cur[tok]
        elif isinstance(cur, list):
            if isinstance(tok, str):
                if not re.fullmatch(r"-?\d+", tok):
                    return _MISSING
                tok = int(tok)
            if not -len(cur) <= tok < len(cur):
                return _MISSING
            cur = cur[tok]
        else:
            return _MISSING
    return cur


def _json_equal(a: Any, b: Any) -> bool:
    """JSON equality: booleans are not numbers, 1 == 1.0, strings compared after NFC."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, str) and isinstance(b, str):
        return nfc(a) == nfc(b)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    return a is None and b is None


_JSON_OPERATORS = ("exists", "equals", "not_equals", "in_", "not_in", "regex", "min", "max")


class JsonCondition(BaseModel):
    """One condition on the JSON body: ``path`` plus exactly one operator.

    Operators: ``exists`` (bool), ``equals`` / ``not_equals`` (any JSON value, ``null``
    included), ``in`` / ``not_in`` (list of JSON values), ``regex`` (Python ``re.search`` on a
    string value, both NFC-normalised), ``min`` / ``max`` (inclusive, numeric values only; the
    two may be combined into a range).
    Every operator except ``exists: false`` and ``not_*`` fails when the path is absent.
    """

    model_config = STRICT

    path: str
    exists: bool | None = None
    equals: JsonValue = None
    not_equals: JsonValue = None
    in_: list[JsonValue] | None = Field(default=None, alias="in")
    not_in: list[JsonValue] | None = None
    regex: str | None = None
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _one_operator(self) -> "JsonCondition":
        given = [op for op in _JSON_OPERATORS if op in self.model_fields_set]
        if not (len(given) == 1 or set(given) == {"min", "max"}):
            names = ", ".join(o.rstrip("_") for o in _JSON_OPERATORS)
            raise ValueError(f"json condition on {self.path!r} needs exactly one of: {names} (min and max may be combined)")
        parse_json_path(self.path)
        if self.regex is not None:
            re.compile(nfc(self.regex))
        return self

    def check(self, doc: Any) -> str | None:
        """``None`` when the condition holds, else a one-line English reason (no values that
        could be secrets beyond what the config itself states)."""
        op = next(o for o in _JSON_OPERATORS if o in self.model_fields_set)  # min before max
        value = walk_json(doc, self.path)
        where = f"JSON {self.path!r}"
        if op == "exists":
            found = value is not _MISSING
            if found == self.exists:
                return None
            return f"{where} is missing" if self.exists else f"{where} exists but must not"
        if value is _MISSING:
            if op in ("not_equals", "not_in"):
                return None
            return f"{where} is missing"
        shown = _short(json.dumps(value, ensure_ascii=False))
        if op == "equals":
            return None if _json_equal(value, self.equals) else f"{where} is {shown}, expected {_short(json.dumps(self.equals, ensure_ascii=False))}"
        if op == "not_equals":
            return f"{where} is {shown}, which is forbidden" if _json_equal(value, self.not_equals) else None
        if op == "in_":
            return None if any(_json_equal(value, v) for v in self.in_ or []) else f"{where} is {shown}, not one of the allowed values"
        if op == "not_in":
            return f"{where} is {shown}, one of the forbidden values" if any(_json_equal(value, v) for v in self.not_in or []) else None
        if op == "regex":
            if not isinstance(value, str):
                return f"{where} is not a string"
            return None if re.search(nfc(self.regex or ""), nfc(value)) else f"{where} does not match /{self.regex}/"
        # min / max
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"{where} is not a number"
        if self.min is not None and value < self.min:
            return f"{where} is {shown}, below the minimum {self.min:g}"
        if self.max is not None and value > self.max:
            return f"{where} is {shown}, above the maximum {self.max:g}"
        return None


class BasicAuth(BaseModel):
    """HTTP Basic credentials (RFC 7617); the password is already substituted by the agent.

    Raises (validation): the username contains ``:`` (RFC 7617 §2)."""

    model_config = STRICT

    username: str
    password: SecretStr

    @field_validator("username")
    @classmethod
    def _no_colon(cls, value: str) -> str:
        if ":" in value:
            raise ValueError("a Basic auth username cannot contain ':' (RFC 7617)")
        return value


def basic_auth_header(username: str, password: str) -> str:
    """``Authorization`` value for HTTP Basic: base64 of ``user:password`` in UTF-8
    (RFC 7617 §2.1, ``charset="UTF-8"``), so Vietnamese passwords work."""
    token = base64.b64encode(f"{username}:{password}".encode("utf-8")).decode("ascii")
    return f"Basic {token}"


_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")  # RFC 9110 §5.6.2 token


class Options(BaseModel):
    """Options of an ``http`` target (YAML key ``http:``).  Durations in seconds (config:
    ``500ms``, ``10s``...), sizes in bytes.  Every phase limit is also capped by the target's
    ``timeout``.

    Raises (at validation, as :class:`pydantic.ValidationError`): unknown field, bad URL scheme,
    more than one of ``body`` / ``json`` / ``form``, both ``basic_auth`` and ``bearer_token``
    (or URL credentials), bad status range, bad regex, bad JSON condition, missing ``ca_file``.
    """

    model_config = STRICT

    url: str
    method: str = "GET"
    headers: dict[str, str] = Field(default_factory=dict)
    body: str | None = None
    json_body: JsonValue = Field(default=None, alias="json")
    form: dict[str, str] | None = None
    basic_auth: BasicAuth | None = None
    bearer_token: SecretStr | None = None
    expect_status: tuple[StatusRange, ...] = ((200, 299),)
    body_contains: tuple[str, ...] = ()
    body_not_contains: tuple[str, ...] = ()
    body_regex: tuple[str, ...] = ()
    body_not_regex: tuple[str, ...] = ()
    json_conditions: tuple[JsonCondition, ...] = ()
    follow_redirects: bool = True
    max_redirects: int = Field(default=10, ge=0, le=50)
    redirect_same_host_only: bool = False
    verify_tls: bool = True
    ca_file: FilePath | None = None
    max_body_bytes: int = Field(default=1024 * 1024, ge=1, le=_MAX_BODY_CAP)
    connect_timeout: PositiveDuration = 10.0
    tls_timeout: PositiveDuration = 10.0
    first_byte_timeout: PositiveDuration = 30.0
    stall_timeout: PositiveDuration = 10.0
    ip_protocol: Literal["ip4", "ip6"] = "ip4"
    ip_protocol_fallback: bool = True

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        try:
            url = URL(value.strip())
        except (ValueError, TypeError) as exc:
            raise ValueError(f"not a URL: {exc}") from None
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError("url must be an absolute http:// or https:// URL with a host")
        return str(url)

    @field_validator("expect_status", mode="before")
    @classmethod
    def _status_list(cls, value: Any) -> Any:
        if isinstance(value, (int, str)):  # a single code / class / range
            return [value]
        return value

    @field_validator("ca_file")
    @classmethod
    def _check_ca_file(cls, value: Any) -> Any:
        if value is not None:
            try:
                ssl.create_default_context(cafile=str(value))
            except (ssl.SSLError, OSError) as exc:
                raise ValueError(f"ca_file {str(value)!r} is not a PEM CA bundle: {exc}") from None
        return value

    @field_validator("method")
    @classmethod
    def _check_method(cls, value: str) -> str:
        if not _TOKEN.match(value):
            raise ValueError(f"{value!r} is not an HTTP method token")
        return value.upper()

    @field_validator("headers")
    @classmethod
    def _check_headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name, val in value.items():
            if not _TOKEN.match(name):
                raise ValueError(f"{name!r} is not a valid header name")
            if "\r" in val or "\n" in val:
                raise ValueError(f"header {name!r} contains a line break")
        return value

    @field_validator("body_regex", "body_not_regex")
    @classmethod
    def _check_regex(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for pattern in value:
            try:
                re.compile(nfc(pattern))
            except re.error as exc:
                raise ValueError(f"bad regex {pattern!r}: {exc}") from None
        return value

    @model_validator(mode="after")
    def _check_combinations(self) -> "Options":
        payloads = [n for n in ("body", "json_body", "form") if n in self.model_fields_set]
        if len(payloads) > 1:
            raise ValueError("give at most one of body, json, form")
        url = URL(self.url)
        if self.basic_auth is not None and self.bearer_token is not None:
            raise ValueError("give at most one of basic_auth, bearer_token")
        if url.user is not None and (self.basic_auth is not None or self.bearer_token is not None):
            raise ValueError("credentials in the URL and basic_auth/bearer_token: give only one")
        return self

    @property
    def wants_text(self) -> bool:
        """True when a text check needs the decoded body."""
        return bool(self.body_contains or self.body_not_contains or self.body_regex or self.body_not_regex)


# --------------------------------------------------------------------------------------------
# Timing and deadlines
# --------------------------------------------------------------------------------------------


#: Stops the probe with a reason code and detail (:class:`probes.net.ProbeFailure`; also what the
#: resolver raises, so a DNS failure ends the hop like any other classified failure).
_ProbeFailure = ProbeFailure


class _Hop:
    """Timestamps (``time.perf_counter``) of one request/response exchange."""

    __slots__ = ("start", "dns_done", "connect_done", "got_conn", "first_byte", "end", "tls",
                 "peer", "tls_version", "cert_not_after", "cert_leaf_not_after")

    def __init__(self, start: float, tls: bool) -> None:
        self.start = start
        self.tls = tls
        self.dns_done: float | None = None
        self.connect_done: float | None = None
        self.got_conn: float | None = None
        self.first_byte: float | None = None
        self.end: float | None = None
        self.peer: str | None = None
        self.tls_version: str | None = None
        self.cert_not_after: int | None = None
        self.cert_leaf_not_after: int | None = None

    def phases(self, now: float) -> dict[str, float]:
        """Per-phase seconds; the first missing mark is taken as ``now`` (phase in progress)."""
        names = ("resolve", "connect", "tls", "processing", "transfer")
        marks = [self.dns_done, self.connect_done, self.got_conn, self.first_byte, self.end]
        out = dict.fromkeys(names, 0.0)
        prev = self.start
        for name, mark in zip(names, marks):
            if mark is None:
                out[name] = max(0.0, now - prev)
                break
            out[name] = max(0.0, mark - prev)
            prev = mark
        return out


class _Tracker:
    """Shared state of one probe: hops, current phase, the hop's re-armable deadline, and the
    raw low-level error (recorded by the resolver/connector before aiohttp wraps it)."""

    def __init__(self, opts: Options, total: float) -> None:
        self.opts = opts
        self.loop = asyncio.get_running_loop()
        self.deadline = self.loop.time() + total  # absolute, loop clock
        self.hops: list[_Hop] = []
        self.phase = "resolve"
        self.armed = "total"  # which limit the hop timer currently enforces
        self.timer: asyncio.Timeout | None = None
        self.raw_error: BaseException | None = None
        self.raw_phase: str | None = None
        self.session: aiohttp.ClientSession | None = None

    # -- hop life cycle ------------------------------------------------------------------
    def new_hop(self, tls: bool) -> _Hop:
        # A hop starts where the previous one ended, so the phases of a redirect chain add up
        # (the first starts now: option handling and session setup are not a phase).
        start = (self.hops[-1].end if self.hops else None) or time.perf_counter()
        hop = _Hop(start, tls)
        self.hops.append(hop)
        self.phase = "resolve"
        self.raw_error = None
        self.raw_phase = None
        return hop

    @property
    def hop(self) -> _Hop:
        return self.hops[-1]

    def arm(self, limit: float | None, name: str) -> None:
        """Re-arm the hop timer to ``min(now + limit, probe deadline)``."""
        when = self.deadline
        self.armed = "total"
        if limit is not None and self.loop.time() + limit < self.deadline:
            when = self.loop.time() + limit
            self.armed = name
        if self.timer is not None:
            try:
                self.timer.reschedule(when)
            except RuntimeError:  # timer already expiring or exited: nothing to re-arm
                pass

    def fail(self, exc: BaseException) -> None:
        self.raw_error = exc
        self.raw_phase = self.phase

    # -- events (called from the resolver, the connector and the protocol) ----------------
    def dns_start(self) -> None:
        self.phase = "resolve"

    def dns_done(self) -> None:
        self.hop.dns_done = time.perf_counter()

    def connect_start(self) -> None:
        hop = self.hop
        if hop.dns_done is None:  # IP literal: no DNS step
            hop.dns_done = time.perf_counter()
        if self.phase != "connect":  # aiohttp may retry the remaining addresses: one budget
            self.phase = "connect"
            self.arm(self.opts.connect_timeout, "connect_timeout")

    def connected(self, peer: str, tls: bool) -> None:
        hop = self.hop
        hop.connect_done = time.perf_counter()
        hop.peer = peer
        if tls:
            self.phase = "tls"
            self.arm(self.opts.tls_timeout, "tls_timeout")
        else:
            # the TCP handshake is done: a deadline that fires before aiohttp hands the
            # connection over (a starved event loop) is no longer a connect timeout
            self.phase = "processing"
            self.arm(self.opts.first_byte_timeout, "first_byte_timeout")

    def conn_ready(self, transport: asyncio.BaseTransport) -> None:
        hop = self.hop
        hop.got_conn = time.perf_counter()
        self.raw_error = None  # an earlier address may have failed; this one worked
        self.raw_phase = None
        if hop.connect_done is None:
            hop.connect_done = hop.got_conn
        sslobj = transport.get_extra_info("ssl_object")
        if sslobj is None:  # plain TCP: connect ends when the connection is usable (as BBE)
            hop.connect_done = hop.got_conn
        else:
            hop.tls_version = sslobj.version()
            hop.cert_not_after, hop.cert_leaf_not_after = _cert_expiries(sslobj, self.opts.verify_tls)
        self.phase = "processing"
        self.arm(self.opts.first_byte_timeout, "first_byte_timeout")

    def data(self, n: int) -> None:
        """Bytes arrived from the socket (or were consumed from the body stream)."""
        hop = self.hop
        if self.phase == "processing" and hop.got_conn is not None:
            hop.first_byte = time.perf_counter()
            self.phase = "transfer"
        if self.phase == "transfer":
            self.arm(self.opts.stall_timeout, "stall_timeout")

    def headers_done(self) -> None:
        hop = self.hop
        if hop.got_conn is None:  # should not happen; keep the arithmetic sane
            hop.got_conn = hop.connect_done or hop.dns_done or time.perf_counter()
        if hop.first_byte is None:
            hop.first_byte = time.perf_counter()
        if self.phase != "transfer":
            self.phase = "transfer"
            self.arm(self.opts.stall_timeout, "stall_timeout")

    def end_hop(self) -> None:
        self.hop.end = time.perf_counter()

    def phases(self) -> dict[str, float]:
        now = time.perf_counter()
        total = {p: 0.0 for p in ("resolve", "connect", "tls", "processing", "transfer")}
        for hop in self.hops:
            for k, v in hop.phases(now).items():
                total[k] += v
        return total


def _cert_expiries(sslobj: Any, verified: bool) -> tuple[int | None, int | None]:
    """``(earliest notAfter in the chain, leaf notAfter)``, Unix seconds; ``None`` if unknown.
    The earliest is blackbox_exporter's ``probe_ssl_earliest_cert_expiry``."""
    from cryptography import x509  # lazy: ~8 MiB RSS that plain-HTTP agents never need

    try:
        stamps = [int(x509.load_der_x509_certificate(der).not_valid_after_utc.timestamp())
                  for der in peer_chain_der(sslobj, verified)]
    except Exception:  # noqa: BLE001 - a fact, never a reason to fail the probe
        return None, None
    if not stamps:
        return None, None
    return min(stamps), stamps[0]


# --------------------------------------------------------------------------------------------
# Resolver and connector
# --------------------------------------------------------------------------------------------


#: Seconds the lookup's own limit runs past the hop deadline, so that the hop timer (which
#: cancels the lookup) is the one that reports ``timeout_resolve``.
_RESOLVE_GRACE = 0.25


async def _lookup(host: str, ip_protocol: str, timeout: float) -> list[tuple[int, str]]:
    """Name → addresses with :func:`probes.net.resolve_host`: ``/etc/hosts``, then DNS A/AAAA
    (RFC 1035, RFC 3596) through dnspython's asyncio resolver — no thread (a hanging lookup
    holds no executor thread other targets need), no cache.  Module-level so tests can
    replace it and never touch real DNS.

    Args:
        host: the URL's host name (never an IP literal: aiohttp does not resolve those).
        ip_protocol: ``"auto"`` (both families), ``"ip4"`` or ``"ip6"``.
        timeout: seconds.

    Returns:
        ``[(family, ip), ...]``, at least one entry.

    Raises:
        ProbeFailure: ``dns`` or ``timeout_resolve``.
    """
    return await resolve_host(host, ip_protocol, timeout)


class _Resolver(AbstractResolver):
    """Uncached, thread-free resolver that orders addresses by the preferred IP protocol (BBE's
    ``preferred_ip_protocol`` / ``ip_protocol_fallback``) and records timing in the tracker.

    With ``ip_protocol_fallback`` both families are looked up and the preferred one comes first
    (aiohttp tries the others if it cannot connect); without it only the preferred family is
    asked for.  Failures raise :class:`probes.net.ProbeFailure` (``dns``, ``timeout_resolve``).
    """

    def __init__(self, tracker: _Tracker) -> None:
        self._tracker = tracker

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_UNSPEC) -> list[ResolveResult]:
        t = self._tracker
        t.dns_start()
        fallback = t.opts.ip_protocol_fallback
        want = socket.AF_INET if t.opts.ip_protocol == "ip4" else socket.AF_INET6
        budget = max(0.0, t.deadline - t.loop.time()) + _RESOLVE_GRACE
        try:
            found = await _lookup(host, "auto" if fallback else t.opts.ip_protocol, budget)
        except ProbeFailure as exc:
            t.fail(exc)
            raise
        preferred = [a for a in found if a[0] == want]
        others = [a for a in found if a[0] != want and a[0] in (socket.AF_INET, socket.AF_INET6)]
        chosen = preferred + (others if fallback else [])
        if not chosen:
            exc = ProbeFailure("dns", f"{host}: no {'IPv4' if want == socket.AF_INET else 'IPv6'} address")
            t.fail(exc)
            raise exc
        t.dns_done()
        out: list[ResolveResult] = []
        seen: set[str] = set()
        for fam, ip in chosen:
            if ip in seen:
                continue
            seen.add(ip)
            out.append({"hostname": host, "host": ip, "port": port, "family": fam, "proto": socket.IPPROTO_TCP, "flags": socket.AI_NUMERICHOST})
        return out

    async def close(self) -> None:
        return None


class _TracedConnector(aiohttp.TCPConnector):
    """``TCPConnector`` whose connection step is split into a timed TCP connect and a timed
    TLS handshake, recording the peer address, TLS version and certificate expiries.

    Overrides the private ``_wrap_create_connection`` (see the module docstring)."""

    def __init__(self, tracker: _Tracker, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._tracker = tracker

    async def _wrap_create_connection(  # type: ignore[override]
        self,
        *args: Any,
        addr_infos: list[Any],
        req: Any,
        timeout: Any,
        client_error: type[Exception] = ClientConnectorError,
        **kwargs: Any,
    ) -> tuple[asyncio.Transport, Any]:
        t = self._tracker
        loop = asyncio.get_running_loop()
        t.connect_start()
        try:
            sock = await aiohappyeyeballs.start_connection(addr_infos=addr_infos, loop=loop)
        except OSError as exc:
            t.fail(exc)
            raise client_error(req.connection_key, exc) from exc
        try:
            peer = sock.getpeername()[0]
        except OSError:
            peer = None
        use_tls = bool(kwargs.get("ssl"))
        t.connected(peer, use_tls)
        factory = args[0]

        def timed_factory() -> Any:
            proto = factory()
            original = proto.data_received

            def data_received(data: bytes) -> None:
                if data:
                    t.data(len(data))
                original(data)

            proto.data_received = data_received
            return proto

        if use_tls:
            # Our hop timer fires first; these only bound asyncio's own waits (the shutdown
            # one runs in the background after the probe closes the connection).
            kwargs["ssl_handshake_timeout"] = self._tracker.opts.tls_timeout + 5.0
            kwargs["ssl_shutdown_timeout"] = 1.0
        try:
            transport, proto = await loop.create_connection(timed_factory, *args[1:], sock=sock, **kwargs)
        except ssl.CertificateError as exc:
            t.fail(exc)
            raise ClientConnectorCertificateError(req.connection_key, exc) from exc
        except ssl.SSLError as exc:
            t.fail(exc)
            raise ClientConnectorSSLError(req.connection_key, exc) from exc
        except OSError as exc:
            t.fail(exc)
            raise client_error(req.connection_key, exc) from exc
        except BaseException:
            sock.close()
            raise
        t.conn_ready(transport)
        return transport, proto


@functools.lru_cache(maxsize=32)
def _ssl_context(verify: bool, ca_file: str | None, _mtime: float) -> ssl.SSLContext:
    """Client TLS context; cached (loading the system CA store costs tens of ms).  With
    ``ca_file`` only that bundle is trusted (as blackbox_exporter's ``tls_config.ca_file``)."""
    ctx = ssl.create_default_context(cafile=ca_file) if ca_file else ssl.create_default_context()
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


# --------------------------------------------------------------------------------------------
# Body: bounded decompression and charset decoding
# --------------------------------------------------------------------------------------------


class _BodyTooLarge(Exception):
    pass


class _Inflater:
    """One ``Content-Encoding`` stage with bounded output (decompression-bomb safe)."""

    def __init__(self, coding: str) -> None:
        self.coding = coding
        self._z: Any = None
        self._br = brotli.Decompressor() if coding == "br" else None
        self._pending = b""
        if coding in ("gzip", "x-gzip"):
            self._z = zlib.decompressobj(16 + zlib.MAX_WBITS)

    def feed(self, data: bytes, room: int) -> bytes:
        """Decode ``data``; raises :class:`_BodyTooLarge` if output would exceed ``room``."""
        if self._br is not None:
            try:
                out = [self._br.process(data, output_buffer_limit=room + 1)]
            except TypeError:  # Brotli < 1.2 has no output limit: bounded by input size only
                out = [self._br.process(data)]
                if len(out[0]) > room:
                    raise _BodyTooLarge from None
                return out[0]
            total = len(out[0])
            while total <= room and not self._br.can_accept_more_data():
                more = self._br.process(b"", output_buffer_limit=room - total + 1)
                if not more:
                    break
                out.append(more)
                total += len(more)
            if total > room:
                raise _BodyTooLarge
            return b"".join(out)
        if self._z is None:  # deflate: zlib-wrapped (RFC 9110 §8.4.1.2) or, in practice, raw
            self._pending += data
            if len(self._pending) < 2:
                return b""
            b0, b1 = self._pending[0], self._pending[1]
            wrapped = (b0 & 0x0F) == 8 and ((b0 << 8) | b1) % 31 == 0
            self._z = zlib.decompressobj(zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS)
            data, self._pending = self._pending, b""
        out: list[bytes] = []
        total = 0
        buf = data
        while buf:
            if self._z.eof:  # trailing garbage after the stream: ignored, like browsers
                break
            chunk = self._z.decompress(buf, room - total + 1)
            out.append(chunk)
            total += len(chunk)
            if total > room:
                raise _BodyTooLarge
            buf = self._z.unconsumed_tail
        return b"".join(out)


_WHATWG_ALIASES = {
    # WHATWG Encoding Standard: these labels mean windows-1252 on the web.
    "iso-8859-1": "cp1252", "iso8859-1": "cp1252", "latin1": "cp1252", "latin-1": "cp1252",
    "l1": "cp1252", "us-ascii": "cp1252", "ascii": "cp1252", "windows-1252": "cp1252",
    "iso-8859-11": "cp874", "tis-620": "cp874",
    "windows-1258": "cp1258", "x-cp1258": "cp1258", "cp1258": "cp1258",
    "utf8": "utf-8", "unicode-1-1-utf-8": "utf-8",
    "utf-16": "utf-16-le", "unicode": "utf-16-le",
}
_META_CHARSET = re.compile(rb"""<meta[^>]*?charset\s*=\s*["']?\s*([A-Za-z0-9_.:\-]+)""", re.I)
_XML_ENCODING = re.compile(rb"""^\s*<\?xml[^>]*?encoding\s*=\s*["']([A-Za-z0-9_.:\-]+)""", re.I)
_CHARSET_PARAM = re.compile(r"""charset\s*=\s*["']?([^"';\s]+)""", re.I)


def _codec(label: str | bytes | None) -> str | None:
    """Python codec name for a charset label, or None if unknown."""
    if not label:
        return None
    if isinstance(label, bytes):
        label = label.decode("ascii", "replace")
    name = label.strip().strip("\"'").lower()
    name = _WHATWG_ALIASES.get(name, name)
    try:
        return codecs.lookup(name).name
    except LookupError:
        return None


def decode_body(raw: bytes, content_type: str | None) -> tuple[str, str]:
    """Decode an HTTP body to NFC text.

    Order (WHATWG Encoding Standard "decode" + HTML §13.2.3 encoding sniffing): a byte-order
    mark (UTF-8, UTF-16LE/BE) wins; else the ``Content-Type`` ``charset`` parameter; else a
    ``<meta charset>`` / ``<meta http-equiv content="...charset=...">`` / ``<?xml encoding?>``
    in the first 4 KiB; else UTF-8.  Labels such as ``windows-1258`` / ``iso-8859-1`` follow
    WHATWG's aliases.  Undecodable bytes become U+FFFD.  Vietnamese in windows-1258 uses
    combining tone marks, hence the final Unicode NFC normalisation.

    Returns:
        (text in NFC, Python codec name used).
    """
    if raw.startswith(codecs.BOM_UTF8):
        enc, raw = "utf-8", raw[3:]
    elif raw.startswith(codecs.BOM_UTF16_LE):
        enc, raw = "utf-16-le", raw[2:]
    elif raw.startswith(codecs.BOM_UTF16_BE):
        enc, raw = "utf-16-be", raw[2:]
    else:
        enc = None
        if content_type:
            m = _CHARSET_PARAM.search(content_type)
            enc = _codec(m.group(1)) if m else None
        if enc is None:
            head = raw[:_SNIFF_BYTES]
            m = _XML_ENCODING.search(head) or _META_CHARSET.search(head)
            enc = _codec(m.group(1)) if m else None
            if enc in ("utf-16-le", "utf-16-be", "utf-16"):
                enc = "utf-8"  # HTML: a <meta> cannot declare UTF-16 for ASCII-compatible bytes
        enc = enc or "utf-8"
    return nfc(raw.decode(enc, errors="replace")), enc


# --------------------------------------------------------------------------------------------
# Classification of low-level errors
# --------------------------------------------------------------------------------------------

_UNREACHABLE = {errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN, errno.EHOSTDOWN}
_RESET = {errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED}
#: OpenSSL X509_V_ERR_* codes (include/openssl/x509_vfy.h).
_CERT_EXPIRED = {9, 10}  # CERT_NOT_YET_VALID, CERT_HAS_EXPIRED
_CERT_HOSTNAME = {62, 63, 64}  # HOSTNAME_MISMATCH, EMAIL_MISMATCH, IP_ADDRESS_MISMATCH


def _errno_of(exc: BaseException) -> int | None:
    seen = 0
    cur: BaseException | None = exc
    while cur is not None and seen < 6:
        if isinstance(cur, OSError) and cur.errno:
            return cur.errno
        cur = cur.__cause__ or cur.__context__
        seen += 1
    return None


def classify_exception(exc: BaseException, phase: str, where: str) -> tuple[str, str]:
    """Map a low-level exception raised in ``phase`` to ``(reason, detail)``.

    Args:
        exc: the raw exception (``socket.gaierror``, ``OSError``, ``ssl.SSLError``, or an
            aiohttp ``ClientError`` when no raw one was recorded).
        phase: one of resolve / connect / tls / processing / transfer.
        where: ``host:port`` or a display URL for the detail line (no credentials).

    Returns:
        a reason code from :data:`probes.base.REASONS` and a one-line English detail.
    """
    if isinstance(exc, ssl.SSLCertVerificationError) or (
        isinstance(exc, ClientConnectorCertificateError) and isinstance(exc.certificate_error, ssl.SSLCertVerificationError)
    ):
        err = exc if isinstance(exc, ssl.SSLCertVerificationError) else exc.certificate_error  # type: ignore[union-attr]
        code = getattr(err, "verify_code", None)
        msg = getattr(err, "verify_message", None) or str(err)
        if code in _CERT_EXPIRED:
            return "tls_expired", f"TLS certificate of {where} is not valid now: {msg}"
        if code in _CERT_HOSTNAME:
            return "tls_hostname", f"TLS certificate does not match {where}: {msg}"
        return "tls", f"TLS certificate of {where} not trusted: {msg}"
    if isinstance(exc, ssl.CertificateError):  # hostname check done by Python (old path)
        return "tls_hostname", f"TLS certificate does not match {where}: {exc}"
    if isinstance(exc, socket.gaierror) or (phase == "resolve" and isinstance(exc, OSError)):
        text = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return "dns", f"DNS lookup for {where} failed: {text}"
    if isinstance(exc, (ssl.SSLError, ClientConnectorSSLError)):
        reason = getattr(exc, "reason", None) or str(exc)
        return "tls", f"TLS with {where} failed: {reason}"
    code = _errno_of(exc)
    if isinstance(exc, ConnectionRefusedError) or code == errno.ECONNREFUSED:
        return "refused", f"connection to {where} refused"
    if code in _UNREACHABLE:
        return "unreachable", f"{where} unreachable: {os.strerror(code)}"
    if isinstance(exc, ConnectionResetError) or code in _RESET:
        return "reset", f"connection to {where} reset by the peer during {phase}"
    if code == errno.ETIMEDOUT:
        return ("timeout_connect" if phase == "connect" else "timeout_total"), f"{where}: {os.strerror(code)} during {phase}"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "reset", f"{where} closed the connection without a complete response"
    if isinstance(exc, aiohttp.ClientPayloadError):
        text = str(exc)
        if "Not enough data" in text or "not completed" in text or "ContentLength" in text:
            return "reset", f"{where} closed the connection before the body was complete"
        return "protocol", f"malformed body from {where}: {_short(text)}"
    if isinstance(exc, aiohttp.ClientResponseError):
        return "protocol", f"malformed response from {where}: {_short(exc.message)}"
    if isinstance(exc, OSError) and phase in ("connect",):
        return "connect", f"connection to {where} failed: {_short(exc.strerror or str(exc))}"
    if isinstance(exc, aiohttp.ClientOSError):
        return "reset", f"connection to {where} failed during {phase}: {_short(exc.strerror or str(exc))}"
    if isinstance(exc, aiohttp.ClientConnectionError):
        return "reset", f"connection to {where} lost during {phase}: {_short(str(exc))}"
    return "internal", f"unexpected {type(exc).__name__} during {phase}: {_short(str(exc))}"


def _timeout_reason(phase: str, armed: str) -> str:
    if phase == "resolve":
        return "timeout_resolve"
    if phase == "connect":
        return "timeout_connect"
    if phase == "tls":
        return "timeout_tls"
    if phase == "processing":
        return "timeout_first_byte"
    return "stall" if armed == "stall_timeout" else "timeout_total"


def _short(text: str, limit: int = 160) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def display_url(url: URL) -> str:
    """``scheme://host[:port]/path``: no userinfo, query or fragment (they may hold secrets)."""
    try:
        return str(url.with_user(None).with_query(None).with_fragment(None))
    except (ValueError, TypeError):
        return f"{url.scheme}://{url.host}"


def _origin(url: URL) -> tuple[str, str, int | None]:
    return (url.scheme, (url.host or "").lower().rstrip("."), url.port)


# --------------------------------------------------------------------------------------------
# The probe
# --------------------------------------------------------------------------------------------


async def probe(spec: TargetSpec, ctx: ProbeContext) -> ProbeResult:
    """Probe one HTTP(S) target.

    Args:
        spec: target; ``spec.options`` is an :class:`Options`; ``spec.timeout`` (s) is the
            total deadline; ``spec.slow_after`` (s) the slow threshold.
        ctx: agent context; ``ctx.user_agent`` and ``ctx.headers`` go on every request
            (target ``headers`` override them).

    Returns:
        a :class:`ProbeResult`.  Never raises (except :class:`asyncio.CancelledError` when the
        caller cancels it, after closing its sockets).  Normally returns at ``spec.timeout``
        plus the socket close (at most 0.5 s); an internal safety net bounds the worst case at
        ``spec.timeout`` + 1 s.  Facts (each present when known):
        ``http_status_code``, ``http_version``, ``body_bytes`` (decoded),
        ``body_bytes_compressed`` (as received, after de-chunking), ``content_length`` (header,
        if any), ``redirects``, ``final_url`` (no userinfo, no query), ``http_ssl``,
        ``tls_version``, ``cert_not_after`` (earliest expiry in the chain, Unix s),
        ``cert_leaf_not_after``, ``ip_address``, ``body_charset``.
        Rules: RFC 9110 §15.4 (redirects), §15 (status classes); phases as blackbox_exporter.
    """
    clock = Clock()
    opts: Options = spec.options
    facts: dict[str, Any] = {"redirects": 0}
    tracker: _Tracker | None = None
    try:
        tracker = _Tracker(opts, spec.timeout)
        # Safety net only: every wait inside is already bounded by the hop timers.
        async with asyncio.timeout(spec.timeout + 0.5):
            reason, detail = await _run(spec, ctx, opts, tracker, facts)
    except TimeoutError:
        phase = tracker.phase if tracker else "resolve"
        reason, detail = _timeout_reason(phase, "total"), f"no result within the probe timeout ({spec.timeout:g}s) during {phase}"
    except Exception as exc:  # noqa: BLE001 - the probe never raises
        reason, detail = "internal", f"unexpected {type(exc).__name__}: {_short(str(exc))}"
    except asyncio.CancelledError:  # cancelled by the caller: release sockets, then obey
        await _close_session(tracker)
        raise
    phases = tracker.phases() if tracker else {}
    result = make_result(spec, clock, reason, detail, phases=phases, facts=facts)
    # Closing happens after the result is taken so it does not count in the duration.
    await _close_session(tracker)
    return result


async def _close_session(tracker: _Tracker | None) -> None:
    """Close the probe's session (and so every socket it opened), waiting at most 0.5 s."""
    if tracker is None or tracker.session is None:
        return
    session, tracker.session = tracker.session, None
    try:
        async with asyncio.timeout(0.5):
            await session.close()
    except (Exception, asyncio.CancelledError):  # noqa: BLE001 - cleanup must not change the result
        pass


async def _run(spec: TargetSpec, ctx: ProbeContext, opts: Options, tracker: _Tracker, facts: dict[str, Any]) -> tuple[str | None, str]:
    """The probe body; returns ``(reason or None for success, detail)``."""
    url = URL(opts.url)
    origin0 = _origin(url)
    host0 = origin0[1]

    # Request headers: agent headers, then the target's (which override), then credentials.
    headers: CIMultiDict[str] = CIMultiDict()
    headers["User-Agent"] = ctx.user_agent
    headers["Accept-Encoding"] = "gzip, deflate, br"  # only what this module can decode
    for k, v in ctx.headers.items():
        headers[k] = v
    for k, v in opts.headers.items():
        headers[k] = v
    auth_header: str | None = None
    if url.user is not None:
        auth_header = basic_auth_header(url.user, url.password or "")
        url = url.with_user(None)
    elif opts.basic_auth is not None:
        auth_header = basic_auth_header(opts.basic_auth.username, opts.basic_auth.password.get_secret_value())
    elif opts.bearer_token is not None:
        auth_header = f"Bearer {opts.bearer_token.get_secret_value()}"
    if auth_header is not None:
        headers["Authorization"] = auth_header

    data: bytes | None = None
    if "json_body" in opts.model_fields_set:
        data = json.dumps(opts.json_body, ensure_ascii=False).encode("utf-8")
        headers.setdefault("Content-Type", "application/json")
    elif opts.form is not None:
        from urllib.parse import urlencode

        data = urlencode(opts.form).encode("ascii")
        headers.setdefault("Content-Type", "application/x-www-form-urlencoded")
    elif opts.body is not None:
        data = opts.body.encode("utf-8")
        headers.setdefault("Content-Type", "text/plain; charset=utf-8")

    ca_file = str(opts.ca_file) if opts.ca_file else None
    try:
        mtime = os.stat(ca_file).st_mtime if ca_file else 0.0
        sslctx = _ssl_context(opts.verify_tls, ca_file, mtime)
    except (OSError, ssl.SSLError) as exc:  # the file changed after validation
        return "tls", f"cannot load ca_file: {_short(str(exc))}"
    connector = _TracedConnector(
        tracker,
        ssl=sslctx,
        use_dns_cache=False,
        force_close=True,
        resolver=_Resolver(tracker),
        limit=0,
    )
    session = aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.CookieJar(unsafe=True),
        auto_decompress=False,
        timeout=aiohttp.ClientTimeout(total=None, connect=None, sock_connect=None, sock_read=None),
        skip_auto_headers=("User-Agent",),
    )
    tracker.session = session  # closed by probe() once the result is taken
    return await _exchange(spec, opts, tracker, session, url, headers, data, host0, origin0, facts)


async def _exchange(
    spec: TargetSpec,
    opts: Options,
    tracker: _Tracker,
    session: aiohttp.ClientSession,
    url: URL,
    headers: CIMultiDict[str],
    data: bytes | None,
    host0: str,
    origin0: tuple[str, str, int | None],
    facts: dict[str, Any],
) -> tuple[str | None, str]:
    method = opts.method
    visited: set[tuple[Any, ...]] = {(method, str(url.with_fragment(None)), ())}
    redirects = 0
    while True:
        where = display_url(url)
        hop = tracker.new_hop(url.scheme == "https")
        hop_headers = headers.copy()
        if _origin(url) != origin0:
            for name in _CROSS_ORIGIN_DROP:
                hop_headers.popall(name, None)
        facts["final_url"] = where
        facts["http_ssl"] = url.scheme == "https"
        resp: aiohttp.ClientResponse | None = None
        try:
            async with asyncio.timeout_at(tracker.deadline) as timer:
                tracker.timer = timer
                tracker.arm(None, "total")
                resp = await session.request(method, url, headers=hop_headers, data=data, allow_redirects=False)
                tracker.headers_done()
                facts["http_status_code"] = resp.status
                facts["http_version"] = f"{resp.version.major}.{resp.version.minor}" if resp.version else None
                if hop.peer:
                    facts["ip_address"] = hop.peer
                if hop.tls_version:
                    facts["tls_version"] = hop.tls_version
                if hop.cert_not_after is not None:
                    facts["cert_not_after"] = hop.cert_not_after
                    facts["cert_leaf_not_after"] = hop.cert_leaf_not_after
                location = resp.headers.get("Location")
                if opts.follow_redirects and resp.status in REDIRECT_STATUSES and location is not None:
                    tracker.end_hop()
                    resp.close()
                    tracker.timer = None
                    target = _next_url(url, location)
                    if target.scheme not in ("http", "https") or not target.host:
                        return "redirect_policy", f"{where} redirects to a non-HTTP location ({target.scheme or 'relative'}:)"
                    if opts.redirect_same_host_only and (target.host or "").lower().rstrip(".") != host0:
                        return "redirect_policy", f"{where} redirects to another host ({target.host}), forbidden by redirect_same_host_only"
                    redirects += 1
                    facts["redirects"] = redirects
                    if redirects > opts.max_redirects:
                        return "redirect_limit", f"more than {opts.max_redirects} redirects (last from {where})"
                    # RFC 9110 §15.4.4 (303 → GET) and §15.4.2/15.4.3 (POST → GET allowed for 301/302).
                    if (resp.status == 303 and method != "HEAD") or (resp.status in (301, 302) and method == "POST"):
                        method = "GET"
                        data = None
                        headers.popall("Content-Type", None)
                    cookies = tuple(sorted((c.key, c.value, c.get("domain", "")) for c in session.cookie_jar))
                    state = (method, str(target.with_fragment(None)), cookies)
                    if state in visited:
                        return "redirect_limit", f"redirect loop: {where} leads back to {display_url(target)} after {redirects} redirect(s)"
                    visited.add(state)
                    url = target
                    continue
                # Final response.
                status_ok = any(lo <= resp.status <= hi for lo, hi in opts.expect_status)
                if not status_ok:
                    tracker.end_hop()
                    resp.close()
                    expected = ", ".join(f"{lo}" if lo == hi else f"{lo}-{hi}" for lo, hi in opts.expect_status)
                    return "http_status", f"HTTP {resp.status} from {method} {where} (expected {expected})"
                body = await _read_body(resp, opts, tracker, facts)
                tracker.end_hop()
                tracker.timer = None
        except _ProbeFailure as failure:
            if resp is not None:
                resp.close()
            if hop.end is None:
                tracker.end_hop()
            return failure.reason, failure.detail
        except BaseException as exc:
            if resp is not None:
                resp.close()
            expired = tracker.timer is not None and tracker.timer.expired()
            if isinstance(exc, asyncio.CancelledError) and not expired:
                raise
            if isinstance(exc, TimeoutError) or expired:
                reason = _timeout_reason(tracker.phase, tracker.armed)
                return reason, _timeout_detail(reason, tracker, spec, where)
            if not isinstance(exc, Exception):
                raise
            # The raw OS/SSL error recorded while connecting is more precise than aiohttp's wrapper.
            raw = tracker.raw_error if tracker.raw_error is not None else exc
            phase = tracker.raw_phase or tracker.phase
            host_port = f"{url.host}:{url.port}" if phase in ("resolve", "connect", "tls") else where
            if phase == "resolve":
                host_port = url.host or where
            reason, detail = classify_exception(raw, phase, host_port)
            return reason, detail
        finally:
            tracker.timer = None
        break

    # Content checks on the final body.
    problem = _check_body(opts, body, facts)
    if problem is not None:
        return problem
    extra = f", {redirects} redirect(s)" if redirects else ""
    return None, f"HTTP {facts['http_status_code']} from {method} {where}{extra}, {facts.get('body_bytes', 0)} bytes"


def _timeout_detail(reason: str, tracker: _Tracker, spec: TargetSpec, where: str) -> str:
    opts = tracker.opts
    limit = {
        "connect_timeout": opts.connect_timeout,
        "tls_timeout": opts.tls_timeout,
        "first_byte_timeout": opts.first_byte_timeout,
        "stall_timeout": opts.stall_timeout,
    }.get(tracker.armed, spec.timeout)
    which = tracker.armed if tracker.armed != "total" else "probe timeout"
    text = {
        "timeout_resolve": "no DNS answer",
        "timeout_connect": "TCP connect not finished",
        "timeout_tls": "TLS handshake not finished",
        "timeout_first_byte": "no response after sending the request",
        "stall": "body stopped arriving",
        "timeout_total": "response not complete",
    }[reason]
    return f"{text} for {where} within {limit:g}s ({which})"


def _next_url(current: URL, location: str) -> URL:
    """Resolve ``Location`` against the current URL (RFC 9110 §10.2.2, RFC 3986 §5); a
    fragment-less Location inherits the current fragment.

    Raises:
        _ProbeFailure: ``protocol`` when Location is not a URL.
    """
    try:
        target = current.join(URL(location.strip()))
    except (ValueError, TypeError):
        raise _ProbeFailure("protocol", f"{display_url(current)} sent an invalid Location header") from None
    if not target.fragment and current.fragment:
        target = target.with_fragment(current.fragment)
    return target


class _Body:
    __slots__ = ("raw", "content_type", "decodable", "coding")

    def __init__(self, raw: bytes | None, content_type: str | None, decodable: bool, coding: str) -> None:
        self.raw = raw
        self.content_type = content_type
        self.decodable = decodable
        self.coding = coding


async def _read_body(resp: aiohttp.ClientResponse, opts: Options, tracker: _Tracker, facts: dict[str, Any]) -> _Body:
    """Read the whole body (bounded), decompress it (bounded), keep it only if checks need it.

    Raises:
        _ProbeFailure: ``body_too_large`` (stops reading at once), ``protocol`` (bad
            compressed data).  Timeouts and connection errors propagate to the caller.
    """
    cap = opts.max_body_bytes
    keep = opts.wants_text or bool(opts.json_conditions)
    clen = resp.content_length
    if clen is not None:
        facts["content_length"] = clen
        if clen > cap:
            raise _ProbeFailure("body_too_large", f"Content-Length {clen} exceeds max_body_bytes {cap}")
    codings = [c.strip().lower() for c in resp.headers.get("Content-Encoding", "").split(",") if c.strip()]
    codings = [c for c in codings if c != "identity"]
    decodable = all(c in ("gzip", "x-gzip", "deflate", "br") for c in codings)
    stages = [_Inflater(c) for c in reversed(codings)] if decodable else []
    compressed = 0
    decoded = 0
    parts: list[bytes] = []
    try:
        while True:
            chunk = await resp.content.readany()
            if not chunk:
                break
            tracker.data(0)  # consuming counts as progress for the stall timer
            compressed += len(chunk)
            facts["body_bytes_compressed"] = compressed
            out = chunk
            for stage in stages:
                out = stage.feed(out, cap - decoded)
            decoded += len(out)
            if decoded > cap or compressed > cap:
                raise _BodyTooLarge
            if keep:
                parts.append(out)
    except _BodyTooLarge:
        resp.close()
        facts["body_bytes"] = decoded
        raise _ProbeFailure("body_too_large", f"body larger than max_body_bytes ({cap} bytes); stopped reading") from None
    except (zlib.error, brotli.error) as exc:
        raise _ProbeFailure("protocol", f"cannot decode Content-Encoding {', '.join(codings)}: {_short(str(exc))}") from None
    facts["body_bytes"] = decoded
    facts["body_bytes_compressed"] = compressed
    return _Body(b"".join(parts) if keep else None, resp.headers.get("Content-Type"), decodable, ", ".join(codings))


def _check_body(opts: Options, body: _Body, facts: dict[str, Any]) -> tuple[str, str] | None:
    """Text and JSON checks; ``None`` when all pass, else ``(reason, detail)``.
    Keywords and patterns are NFC-normalised like the body; matching is case-sensitive."""
    if body.raw is None:
        return None
    if not body.decodable:
        return "protocol", f"cannot check the body: unsupported Content-Encoding {body.coding!r}"
    text, charset = decode_body(body.raw, body.content_type)
    facts["body_charset"] = charset
    if opts.wants_text:
        for word in opts.body_contains:
            if nfc(word) not in text:
                return "content", f"body does not contain {_short(word, 60)!r}"
        for word in opts.body_not_contains:
            if nfc(word) in text:
                return "content", f"body contains forbidden text {_short(word, 60)!r}"
        for pattern in opts.body_regex:
            if not re.search(nfc(pattern), text):
                return "content", f"body does not match /{_short(pattern, 60)}/"
        for pattern in opts.body_not_regex:
            if re.search(nfc(pattern), text):
                return "content", f"body matches forbidden /{_short(pattern, 60)}/"
    if opts.json_conditions:
        try:
            doc = json.loads(text)
        except (ValueError, RecursionError) as exc:
            return "json", f"body is not valid JSON: {_short(str(exc), 80)}"
        for cond in opts.json_conditions:
            problem = cond.check(doc)
            if problem is not None:
                return "json", problem
    return None


__all__ = [
    "KIND",
    "BasicAuth",
    "JsonCondition",
    "Options",
    "classify_exception",
    "decode_body",
    "display_url",
    "parse_json_path",
    "probe",
    "walk_json",
]
