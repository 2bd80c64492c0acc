"""Config models of the ``alerting:`` section (owned by the alerts package).

Shape (every key optional; see ``configs/units.example.yaml`` and ``docs/alerts.md``)::

    alerting:
      units:                          # responsible units are data
        - id: so-khcn
          name: "Sở Khoa học và Công nghệ"
          urls: ["${SO_KHCN_ZALO_URL}", "${SO_KHCN_EMAIL_URL}"]   # apprise URLs, from secrets
          escalation:
            - {after: 30m, units: [vp-ubnd]}
      route:                          # Alertmanager-style routing tree
        to_owner: true                # root: the target's owner unit
        routes:
          - {match: {cause: local_link}, units: [it-26068]}
      group_wait: 30s
      repeat_interval: 4h
      maintenance:
        - {name: "Bảo trì tối thứ Bảy", match: {system: motcua}, cron: "0 23 * * 6", duration: 3h}
      outbox: {max_age: 48h}
      templates_dir: /etc/hcc-sentinel/templates
      ack_token: ${HCC_ACK_TOKEN}

Matchers (``match`` / ``match_re``) use the keys of :data:`MATCH_KEYS`.  A ``match`` value is one
string or a list (any of); a ``match_re`` value is a Python regular expression that must match the
whole value (Alertmanager anchors its regexes the same way).

Secrets (apprise URLs, the ack token) are :class:`pydantic.SecretStr`: they never appear in
``repr``, error messages, logs or metrics.  Validation errors about a URL name its position and
its scheme only.
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationInfo, field_validator, model_validator

from probes.config_types import STRICT, Duration, PositiveDuration

#: Keys a matcher may test.  ``target``/``system``/``owner``: ids from the agent config;
#: ``commune``: the 5-digit commune code; ``outcome``: ``error`` / ``hang`` / ``slow`` (the last
#: bad probe outcome); ``severity``: ``critical`` (down, link lost) or ``warning`` (degraded,
#: flapping); ``cause``: ``system`` or ``local_link``; ``kind``: ``down`` / ``degraded`` /
#: ``flapping`` / ``link``.
MATCH_KEYS: tuple[str, ...] = ("target", "system", "owner", "commune", "outcome", "severity", "cause", "kind")

MatchKey = Literal["target", "system", "owner", "commune", "outcome", "severity", "cause", "kind"]

#: STRICT plus: never echo input values in error text (they may hold apprise URLs or tokens).
SECRET_SAFE = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

_SLUG = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")


def _slug(value: str) -> str:
    if not _SLUG.match(value):
        raise ValueError("must be lower-case letters, digits, '-', '_' or '.', at most 63 characters")
    return value


def _as_list(value: Any) -> Any:
    if isinstance(value, (str, int)):
        return [str(value)]
    if isinstance(value, list):
        return [str(v) for v in value]
    return value


class Matchers(BaseModel):
    """Equality (``match``) and regex (``match_re``) matchers; all given keys must match.

    Source: Alertmanager's route ``match``/``match_re`` (prometheus.io/docs/alerting/latest/
    configuration/#route); regexes are anchored (fullmatch) as in Alertmanager.
    """

    model_config = STRICT
    match: dict[MatchKey, list[str]] = Field(default_factory=dict)
    match_re: dict[MatchKey, str] = Field(default_factory=dict)

    @field_validator("match", mode="before")
    @classmethod
    def _lists(cls, v: Any) -> Any:
        if isinstance(v, dict):
            return {k: _as_list(x) for k, x in v.items()}
        return v

    @field_validator("match_re")
    @classmethod
    def _regexes(cls, v: dict[str, str]) -> dict[str, str]:
        for key, pattern in v.items():
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"match_re.{key}: invalid regular expression: {exc}") from None
        return v

    def matches(self, facts: dict[str, str | None]) -> bool:
        """True when every matcher holds for ``facts`` (a missing fact never matches).

        Args:
            facts: key from :data:`MATCH_KEYS` -> value (``None`` = unknown).
        """
        for key, allowed in self.match.items():
            value = facts.get(key)
            if value is None or value not in allowed:
                return False
        for key, pattern in self.match_re.items():
            value = facts.get(key)
            if value is None or re.fullmatch(pattern, value) is None:
                return False
        return True


class EscalationStep(BaseModel):
    """One escalation level: after ``after`` seconds (counted from the first notice of the
    incident) without acknowledgement, ``units`` are told too."""

    model_config = STRICT
    after: PositiveDuration
    units: list[str] = Field(min_length=1)


class RateLimit(BaseModel):
    """At most ``count`` messages to one unit per ``per`` seconds (sliding window).  Messages
    over the limit wait in the outbox (they are not dropped) until the window allows them or
    they reach the outbox ``max_age``."""

    model_config = STRICT
    count: int = Field(30, ge=1, le=100000)
    per: PositiveDuration = 3600.0


class Unit(BaseModel):
    """A responsible unit (đơn vị chịu trách nhiệm): who is told, on which channels.

    Attributes:
        id: slug used by routes, systems' ``owner`` and escalation steps.
        name: Vietnamese name with diacritics, shown in messages.
        name_en: English name (optional).
        urls: apprise URLs, one per channel (``zalo://``, ``mailto://``, ``tgram://``,
            ``json://``, SMS gateways ...); write them as ``${ENV}`` / ``${file:...}`` secrets.
        escalation: chain of :class:`EscalationStep`, in increasing ``after``.
        rate_limit: per-unit override of the section's ``rate_limit``.
        send_resolved: also send "resolved" notices (default true).
        contact: a human contact line shown in messages (e.g. a phone number), optional.
    """

    model_config = SECRET_SAFE
    id: str
    name: str
    name_en: str | None = None
    urls: list[SecretStr] = Field(default_factory=list)
    escalation: list[EscalationStep] = Field(default_factory=list)
    rate_limit: RateLimit | None = None
    send_resolved: bool = True
    contact: str | None = None

    _id = field_validator("id")(lambda cls, v: _slug(v))

    @field_validator("urls")
    @classmethod
    def _urls(cls, v: list[SecretStr], info: ValidationInfo) -> list[SecretStr]:
        from alerts.delivery import check_url  # local: apprise is imported only to validate URLs

        unit = info.data.get("id")
        where = f"unit {unit!r} " if unit else ""
        for i, url in enumerate(v):
            problem = check_url(url.get_secret_value())
            if problem:
                raise ValueError(f"{where}urls[{i}]: {problem}")
        return v

    @model_validator(mode="after")
    def _steps(self) -> "Unit":
        afters = [s.after for s in self.escalation]
        if afters != sorted(afters):
            raise ValueError("escalation steps must be in increasing 'after' order")
        return self


class Route(Matchers):
    """A node of the routing tree (Alertmanager semantics, reduced).

    A node matches when its matchers hold (the root always matches).  Its children are tried in
    order; the first matching child is taken and the search stops there unless that child sets
    ``continue: true``.  When no child matches, the node itself is the result.  The notification
    goes to the union of the resulting nodes' ``units`` (plus the target's owner unit where
    ``to_owner`` is set).  Source: prometheus.io/docs/alerting/latest/configuration/#route.

    Differences from Alertmanager: ``group_by``/``group_wait``/``repeat_interval`` are section
    wide (one agent = one commune), and a node lists units rather than one receiver.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, hide_input_in_errors=True)
    units: list[str] = Field(default_factory=list)
    to_owner: bool = Field(False, description="also the target's owner unit (system owner)")
    continue_: bool = Field(False, alias="continue")
    routes: list["Route"] = Field(default_factory=list)


class MaintenanceWindow(Matchers):
    """A planned maintenance window (no alerts; state ``maintenance``).

    Either one-off (``start`` and ``end``; naive times are in the agent's time zone) or recurring
    (``cron`` five-field expression in the agent's time zone, evaluated by croniter, plus
    ``duration``).  A window starts at its start instant inclusive and ends exclusive, so a probe
    exactly at the start is inside and one exactly at the end is outside.  Windows may cross
    midnight.  Empty matchers = every target.
    """

    name: str
    start: datetime | None = None
    end: datetime | None = None
    cron: str | None = None
    duration: PositiveDuration | None = None

    @model_validator(mode="after")
    def _shape(self) -> "MaintenanceWindow":
        one_off = self.start is not None or self.end is not None
        recurring = self.cron is not None or self.duration is not None
        if one_off and recurring:
            raise ValueError("give either start/end (one-off) or cron/duration (recurring), not both")
        if one_off:
            if self.start is None or self.end is None:
                raise ValueError("a one-off window needs both start and end")
            if (self.start.tzinfo is None) != (self.end.tzinfo is None):
                raise ValueError("start and end must both have a UTC offset or both have none")
            if self.end <= self.start:
                raise ValueError("end must be after start")
        elif recurring:
            if self.cron is None or self.duration is None:
                raise ValueError("a recurring window needs both cron and duration")
            from croniter import croniter

            if not croniter.is_valid(self.cron):
                raise ValueError(f"invalid cron expression {self.cron!r} (five fields, e.g. '0 23 * * 6')")
        else:
            raise ValueError("a window needs start/end or cron/duration")
        return self


class FlapConfig(BaseModel):
    """Flap detection (Nagios): weighted share of state changes over the last ``samples``
    results, oldest weighted 0.75, newest 1.25; flapping starts above ``start_percent`` and stops
    below ``stop_percent``.  Source: Nagios Core docs, "Detection and Handling of State
    Flapping" (flapping.c)."""

    model_config = STRICT
    enabled: bool = True
    samples: int = Field(21, ge=3, le=100)
    start_percent: float = Field(20.0, gt=0, le=100)
    stop_percent: float = Field(5.0, ge=0, le=100)

    @model_validator(mode="after")
    def _order(self) -> "FlapConfig":
        if self.stop_percent >= self.start_percent:
            raise ValueError("stop_percent must be lower than start_percent")
        return self


class OutboxConfig(BaseModel):
    """Durable outbox and delivery worker settings.

    Attributes:
        max_age: a message not delivered this long after it was written is given up (counted in
            ``hcc_sentinel_notifications_expired_total``), seconds.
        retry_initial: first retry delay, seconds (exponential backoff, doubled each attempt,
            plus up to ``retry_initial`` of random jitter; tenacity's ``wait_exponential_jitter``).
        retry_max: cap of the retry delay, seconds.
        send_timeout: one delivery attempt on one channel, seconds.
        concurrency: deliveries in flight at once (at most one per channel).
    """

    model_config = STRICT
    max_age: PositiveDuration = 48 * 3600.0
    retry_initial: PositiveDuration = 5.0
    retry_max: PositiveDuration = 600.0
    send_timeout: PositiveDuration = 30.0
    concurrency: int = Field(4, ge=1, le=64)


class AlertingConfig(BaseModel):
    """The ``alerting:`` section.  No units means: the agent tracks states and incidents but
    sends no notifications.

    Defaults follow Alertmanager (``group_wait`` 30 s, ``repeat_interval`` 4 h) and Nagios flap
    thresholds; see ANCHORS.md §10.3.
    """

    model_config = SECRET_SAFE
    enabled: bool = True
    units: list[Unit] = Field(default_factory=list)
    route: Route = Field(default_factory=lambda: Route(to_owner=True))
    group_wait: Duration = 30.0
    repeat_interval: PositiveDuration = 4 * 3600.0
    rate_limit: RateLimit = Field(default_factory=RateLimit)
    flap: FlapConfig = Field(default_factory=FlapConfig)
    maintenance: list[MaintenanceWindow] = Field(default_factory=list)
    outbox: OutboxConfig = Field(default_factory=OutboxConfig)
    templates_dir: Path | None = None
    ack_token: SecretStr | None = None
    advice: dict[str, str] = Field(
        default_factory=dict,
        description="'what to do first' text per target id, system id, or 'local_link' (overrides the built-in advice)")

    def unit(self, unit_id: str) -> Unit | None:
        """The unit with id ``unit_id``, or ``None``."""
        return next((u for u in self.units if u.id == unit_id), None)

    @model_validator(mode="after")
    def _refs(self) -> "AlertingConfig":
        ids = [u.id for u in self.units]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"duplicate unit id(s): {', '.join(dupes)}")
        known = set(ids)
        problems: list[str] = []
        for u in self.units:
            for j, step in enumerate(u.escalation):
                for ref in step.units:
                    if ref not in known:
                        problems.append(f"units[{u.id}].escalation[{j}]: unknown unit {ref!r}")

        def walk(route: Route, path: str) -> None:
            for ref in route.units:
                if ref not in known:
                    problems.append(f"{path}.units: unknown unit {ref!r}")
            for k, child in enumerate(route.routes):
                walk(child, f"{path}.routes[{k}]")

        walk(self.route, "route")
        if problems:
            raise ValueError("; ".join(problems))
        return self
