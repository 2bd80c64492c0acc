"""Shared types of every probe kind: the outcome, the reason codes, the result.

Every probe module in :mod:`probes` exposes the same three names::

    KIND: str                       # "http", "tcp", ... (also the YAML key of its options)
    class Options(pydantic.BaseModel)  # the kind's own options, validated by the agent
    async def probe(spec: TargetSpec, ctx: ProbeContext) -> ProbeResult

``probe`` never raises for a network failure: every failure is a :class:`ProbeResult` whose
``outcome`` is ``error`` or ``hang``.  It must return within ``spec.timeout`` plus a small margin
(the scheduler also enforces the deadline with :func:`asyncio.timeout` as a last resort).

Outcomes are the source article's three words — *lỗi* (error), *chậm* (slow), *treo* (hang) —
plus ``ok``.  Phases follow blackbox_exporter's ``probe_http_duration_seconds{phase}``:
``resolve`` (DNS), ``connect`` (TCP handshake), ``tls`` (TLS handshake), ``processing``
(request sent → first response byte), ``transfer`` (first byte → last byte).
"""

from __future__ import annotations

import dataclasses
import enum
import time
import unicodedata
from typing import Any

#: The five phase names, in order, as blackbox_exporter's ``probe_http_duration_seconds{phase}``.
PHASES: tuple[str, ...] = ("resolve", "connect", "tls", "processing", "transfer")


class Outcome(str, enum.Enum):
    """Classification of one probe. ``ok`` and ``slow`` count as success (``probe_success`` 1)."""

    OK = "ok"
    SLOW = "slow"
    ERROR = "error"
    HANG = "hang"

    @property
    def success(self) -> bool:
        return self in (Outcome.OK, Outcome.SLOW)

    @property
    def vietnamese(self) -> str:
        """The word a commune officer uses: bình thường / chậm / lỗi / treo."""
        return {"ok": "bình thường", "slow": "chậm", "error": "lỗi", "hang": "treo"}[self.value]


#: The closed set of reason codes: code -> (outcome it implies, English description).
#: A probe must use one of these; :class:`ProbeResult` refuses any other.
REASONS: dict[str, tuple[Outcome, str]] = {
    "ok": (Outcome.OK, "succeeded within slow_after"),
    "slow": (Outcome.SLOW, "succeeded, but took longer than slow_after"),
    # --- definite failures (error) ---
    "dns": (Outcome.ERROR, "name resolution failed (NXDOMAIN, SERVFAIL, no address)"),
    "dns_answer": (Outcome.ERROR, "DNS answered, but not with the expected records"),
    "refused": (Outcome.ERROR, "connection refused (RST to SYN)"),
    "reset": (Outcome.ERROR, "connection reset or closed by the peer mid-exchange"),
    "unreachable": (Outcome.ERROR, "network or host unreachable (no route, ICMP unreachable)"),
    "connect": (Outcome.ERROR, "connection failed for another OS-level reason"),
    "tls": (Outcome.ERROR, "TLS handshake or certificate verification failed"),
    "tls_expired": (Outcome.ERROR, "the server's certificate has expired or is not yet valid"),
    "tls_hostname": (Outcome.ERROR, "the certificate does not match the host name"),
    "tls_expiring": (Outcome.ERROR, "the certificate expires within the configured minimum days"),
    "http_status": (Outcome.ERROR, "HTTP status code not among the expected ones"),
    "content": (Outcome.ERROR, "body text check failed (contains / not contains / regex)"),
    "json": (Outcome.ERROR, "body is not JSON or a JSON field condition failed"),
    "redirect_limit": (Outcome.ERROR, "too many redirects, or a redirect loop"),
    "redirect_policy": (Outcome.ERROR, "a redirect the target's policy forbids (e.g. other host)"),
    "body_too_large": (Outcome.ERROR, "body larger than the configured cap"),
    "protocol": (Outcome.ERROR, "malformed response (bad HTTP, bad DNS packet, bad banner)"),
    "expect": (Outcome.ERROR, "TCP exchange: the expected reply was not received"),
    "loss": (Outcome.ERROR, "ICMP: packet loss above the allowed share"),
    "threshold": (Outcome.ERROR, "host: a resource is above its configured threshold"),
    "permission": (Outcome.ERROR, "the OS refused the operation (e.g. ICMP socket not allowed)"),
    "step": (Outcome.ERROR, "flow: a step's assertion failed"),
    "internal": (Outcome.ERROR, "bug or unexpected exception in the probe itself"),
    # --- no complete answer in time (hang) ---
    "timeout_resolve": (Outcome.HANG, "no DNS answer before the deadline"),
    "timeout_connect": (Outcome.HANG, "TCP connect not finished before connect_timeout"),
    "timeout_tls": (Outcome.HANG, "TLS handshake not finished before its deadline"),
    "timeout_first_byte": (Outcome.HANG, "connected and sent, but no response before first_byte_timeout"),
    "stall": (Outcome.HANG, "the body stopped arriving for longer than stall_timeout"),
    "timeout_total": (Outcome.HANG, "the whole probe did not finish before timeout"),
}


def reason_outcome(reason: str) -> Outcome:
    """Outcome implied by a reason code.

    Raises:
        KeyError: ``reason`` is not in :data:`REASONS`.
    """
    return REASONS[reason][0]


def nfc(text: str) -> str:
    """Unicode NFC normalisation (Vietnamese text arrives in NFC or NFD; compare in NFC)."""
    return unicodedata.normalize("NFC", text)


@dataclasses.dataclass(frozen=True)
class TargetSpec:
    """What a probe needs to know about its target; built by the agent from the config.

    Attributes:
        id: target id (slug, unique within an agent).
        kind: probe kind, e.g. ``"http"``.
        timeout: total deadline of one probe, seconds (> 0).
        slow_after: a success that took longer than this (seconds) is ``slow``.
        options: the kind's validated ``Options`` instance.
        interval: the normal probe interval, seconds (informative for the probe).
    """

    id: str
    kind: str
    timeout: float
    slow_after: float
    options: Any
    interval: float = 60.0


@dataclasses.dataclass(frozen=True)
class ProbeContext:
    """Per-agent facts every probe uses.

    Attributes:
        user_agent: value of the ``User-Agent`` header (names the product and the commune).
        headers: extra headers sent with every HTTP request, e.g.
            ``{"X-Synthetic-Probe": "hcc-sentinel; commune=26068"}`` so the operators of the
            shared system can tell probe traffic from citizens'.
        agent_id: the agent's id.
    """

    user_agent: str = "hcc-sentinel"
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    agent_id: str = ""


@dataclasses.dataclass
class ProbeResult:
    """The result of one probe.

    Attributes:
        target: target id.
        kind: probe kind.
        outcome: ok / slow / error / hang.
        reason: code from :data:`REASONS` (``"ok"`` / ``"slow"`` on success).
        detail: one human-readable line (English, no secrets), e.g. ``"HTTP 503 from GET /"``.
        started_at: wall clock at start, Unix seconds (UTC).
        duration_seconds: wall time of the whole probe, seconds.
        phases: seconds spent per phase (keys from :data:`PHASES`; absent phase = 0).
        facts: kind-specific facts with stable names, e.g. ``http_status_code`` (int),
            ``body_bytes`` (int), ``cert_not_after`` (Unix seconds), ``dns_answers`` (list).

    Raises:
        ValueError: at construction, if ``reason`` is not in :data:`REASONS`.
    """

    target: str
    kind: str
    outcome: Outcome
    reason: str
    detail: str
    started_at: float
    duration_seconds: float
    phases: dict[str, float] = dataclasses.field(default_factory=dict)
    facts: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.reason not in REASONS:
            raise ValueError(f"unknown reason code {self.reason!r}")
        self.outcome = Outcome(self.outcome)

    @property
    def success(self) -> bool:
        """True for ok/slow (blackbox_exporter's ``probe_success`` 1)."""
        return self.outcome.success

    def to_json(self) -> dict[str, Any]:
        """JSON-serialisable dict: target, kind, outcome, reason, detail, started_at,
        duration_seconds, success, phases (all five keys, seconds), then the facts flattened."""
        out: dict[str, Any] = {
            "target": self.target,
            "kind": self.kind,
            "outcome": self.outcome.value,
            "reason": self.reason,
            "detail": self.detail,
            "started_at": self.started_at,
            "duration_seconds": round(self.duration_seconds, 6),
            "success": self.success,
            "phases": {p: round(self.phases.get(p, 0.0), 6) for p in PHASES},
        }
        for key, value in self.facts.items():
            out.setdefault(key, value)
        return out


class Clock:
    """Monotonic clock helper for phase timing (``time.perf_counter``)."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.wall = time.time()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def remaining(self, deadline: float) -> float:
        """Seconds left until ``deadline`` (seconds from start); never negative."""
        return max(0.0, deadline - self.elapsed())


def make_result(
    spec: TargetSpec,
    clock: Clock,
    reason: str | None,
    detail: str,
    phases: dict[str, float] | None = None,
    facts: dict[str, Any] | None = None,
) -> ProbeResult:
    """Build a result; ``reason=None`` means success, classified ``ok`` or ``slow`` by
    comparing the elapsed time with ``spec.slow_after``.

    Raises:
        ValueError: unknown reason code.
    """
    duration = clock.elapsed()
    if reason is None:
        reason = "slow" if duration > spec.slow_after else "ok"
    return ProbeResult(
        target=spec.id,
        kind=spec.kind,
        outcome=reason_outcome(reason),
        reason=reason,
        detail=detail,
        started_at=clock.wall,
        duration_seconds=duration,
        phases=dict(phases or {}),
        facts=dict(facts or {}),
    )
