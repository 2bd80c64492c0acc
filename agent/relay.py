"""``hcc-sentinel relay``: Alertmanager webhook -> Vietnamese messages -> the units' channels.

Alertmanager (``configs/alertmanager/alertmanager.yml``, rendered by ``hcc-sentinel fleet
render``) has one receiver per responsible unit, each a ``webhook_config`` to
``<relay>/alertmanager/<unit id>``.  The relay:

1. parses the webhook JSON (version 4, see :class:`WebhookMessage`);
2. decides what is news for that unit: alerts it has not announced yet (``problem``), alerts
   announced and now resolved (``resolved``), a pure repeat of the same open alerts at least
   ``reminder_min_interval`` after the last message (``reminder``, Alertmanager's
   ``repeat_interval``), an ``Escalation`` alert (``escalation``); anything else (a webhook
   retry, a group update that only resolves some alerts) adds no message for the open ones;
3. renders one message per event with the agent's own templates (:class:`alerts.templates.Renderer`:
   Vietnamese first, English second; per-unit overrides in ``alerting.templates_dir``);
4. writes it to the durable outbox (:class:`alerts.outbox.Outbox`, SQLite, retry with backoff)
   in the same transaction as the record of what was announced, and only then answers 200.

Alertmanager retries a webhook on a 5xx answer or no answer; the outbox key makes a retried
notification a no-op (idempotent), so a message is neither lost nor doubled.  Apprise URLs come
from the relay config's ``alerting.units`` (the same units as the agents', secrets resolved from
``${ENV}`` / ``${file:...}``) and never appear in logs or metrics.

Endpoints: ``POST /alertmanager/{unit}``, ``GET /healthz``, ``GET /metrics``.

Sources: Alertmanager webhook payload (prometheus.io/docs/alerting/latest/configuration/
#webhook_config, version "4"); apprise (github.com/caronc/apprise).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import signal
import sqlite3
import time
import zoneinfo
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from agent.config import check_listen, listen_parts
from agent.yamlconf import ConfigError, ConfigProblem, format_loc, load_yaml
from alerts.config import AlertingConfig
from alerts.db import connect, db_path, transaction
from alerts.delivery import Sender
from alerts.model import Site
from alerts.outbox import Outbox
from alerts.templates import ADVICE, Notice, NoticeItem, Renderer
from probes.base import nfc
from probes.config_types import STRICT, PositiveDuration

log = logging.getLogger("hcc_sentinel.relay")

#: Short Vietnamese / English titles of the central alerts (what a message item is about).
TITLES: dict[str, tuple[str, str]] = {
    "SystemOutageCentral": ("Sự cố tập trung (nhiều xã, phường cùng lỗi)", "Central outage (many communes)"),
    "CommuneLinkDown": ("Mất kết nối của xã, phường", "Commune link down"),
    "CommuneSystemDown": ("Lỗi chỉ tại xã, phường", "Failing from one commune only"),
    "SystemSlow": ("Chậm trên diện rộng", "Fleet-wide slowness"),
    "AgentMissing": ("Không nhận được dữ liệu từ agent", "No data from the agent"),
    "AgentsAbsent": ("Không có agent nào được thu thập", "No agent scraped at all"),
    "FleetScrapeOutage": ("Mất kết nối tới nhiều agent", "Many agents unreachable"),
    "CertificateExpiring": ("Chứng thư số sắp hết hạn", "Certificate expiring"),
    "AgentConfigReloadFailed": ("Agent không nạp được cấu hình", "Agent config reload failed"),
    "AgentOutboxBacklog": ("Thông báo của agent bị dồn", "Agent notifications queued"),
    "AgentOutboxBacklogFleet": ("Thông báo bị dồn ở nhiều agent", "Notifications queued fleet-wide"),
    "SLOErrorBudgetBurn": ("Ngân sách lỗi bị tiêu nhanh", "Error budget burning fast"),
    "SLOErrorBudgetBurnSlow": ("Ngân sách lỗi bị tiêu dần", "Error budget burning"),
    "HccSentinelRulesIncomplete": ("Thiếu luật giám sát", "Monitoring rules incomplete"),
}
#: Alerts about a degradation rather than an outage.
DEGRADED = {"SystemSlow", "CertificateExpiring", "SLOErrorBudgetBurnSlow", "AgentOutboxBacklog",
            "AgentOutboxBacklogFleet", "AgentConfigReloadFailed", "HccSentinelRulesIncomplete"}
#: Alerts whose cause is the commune's own link.
LOCAL_LINK = {"CommuneLinkDown", "AgentMissing"}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS relay_alerts (
    unit_id TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    starts_at TEXT NOT NULL,
    alertname TEXT,
    announced_at REAL NOT NULL,
    last_notified_at REAL NOT NULL,
    resolved_at REAL,
    PRIMARY KEY (unit_id, fingerprint, starts_at)
)
"""


# ---------------------------------------------------------------------------------------------
# config
# ---------------------------------------------------------------------------------------------


class SystemName(BaseModel):
    """A system's display names (from the fleet's agent configs)."""

    model_config = STRICT
    id: str
    name: str
    name_en: str | None = None


class RelayConfig(BaseModel):
    """The relay's config (``relay/relay.yaml`` from ``hcc-sentinel fleet render``).

    Attributes:
        listen: ``HOST:PORT`` of the HTTP server.
        data_dir: holds ``alerts.db`` (outbox and the record of announced alerts); relative to
            the config file.
        timezone: IANA zone of message times.
        default_unit: receives notifications posted for a unit the relay does not know.
        site_name / site_code: how central (non-commune) alerts name their origin.
        status_url: link shown in messages (e.g. the Grafana overview), optional.
        reminder_min_interval: Alertmanager re-sending the same open alerts (its
            ``repeat_interval``) becomes a reminder message only if the last message about them
            is at least this old (seconds; a webhook retry never duplicates a message).
        systems: display names of the systems (for the message items).
        alerting: the same ``alerting`` section as an agent's: ``units`` with apprise URLs,
            ``outbox`` settings, ``templates_dir``, ``rate_limit``.
    """

    model_config = STRICT
    listen: str = "127.0.0.1:9471"
    data_dir: Path = Path("./relay-data")
    timezone: str = "Asia/Ho_Chi_Minh"
    default_unit: str
    site_name: str = "Giám sát tập trung tỉnh Đồng Nai"
    site_code: str = "75"
    status_url: str | None = None
    reminder_min_interval: PositiveDuration = 3600.0
    systems: list[SystemName] = Field(default_factory=list)
    alerting: AlertingConfig

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        return check_listen(v)

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            zoneinfo.ZoneInfo(v)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown IANA time zone {v!r}") from None
        return v

    @model_validator(mode="after")
    def _default_unit(self) -> "RelayConfig":
        if self.alerting.unit(self.default_unit) is None:
            raise ValueError(f"default_unit {self.default_unit!r} is not one of alerting.units")
        return self

    @property
    def host(self) -> str:
        return listen_parts(self.listen)[0]

    @property
    def port(self) -> int:
        return listen_parts(self.listen)[1]


def load_relay_config(path: str | os.PathLike[str], env: dict[str, str] | None = None) -> RelayConfig:
    """Load and validate the relay config; secrets (``${ENV}``, ``${file:...}``) are resolved.

    Raises:
        ConfigError: every problem as ``file:line: field: message``.
    """
    data, lm = load_yaml(path, env)
    try:
        config = RelayConfig.model_validate(data or {})
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False):
            loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and "[" in p))
            msg = "unknown field (not allowed here)" if err["type"] == "extra_forbidden" else err["msg"].removeprefix("Value error, ")
            problems.append(ConfigProblem(lm.file, lm.line_of(loc), format_loc(loc), msg))
        raise ConfigError(problems) from None
    if not config.data_dir.is_absolute():
        config = config.model_copy(update={"data_dir": (Path(path).resolve().parent / config.data_dir).resolve()})
    return config


# ---------------------------------------------------------------------------------------------
# webhook payload
# ---------------------------------------------------------------------------------------------


class WebhookAlert(BaseModel):
    """One alert of an Alertmanager webhook notification."""

    model_config = ConfigDict(extra="allow")
    status: str
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    startsAt: str = ""
    endsAt: str = ""
    generatorURL: str = ""
    fingerprint: str = ""


class WebhookMessage(BaseModel):
    """Alertmanager's webhook JSON, version 4 (extra fields allowed for forward compatibility).

    Source: prometheus.io/docs/alerting/latest/configuration/#webhook_config.
    """

    model_config = ConfigDict(extra="allow")
    version: str
    groupKey: str = ""
    truncatedAlerts: int = 0
    status: str = "firing"
    receiver: str = ""
    groupLabels: dict[str, str] = Field(default_factory=dict)
    commonLabels: dict[str, str] = Field(default_factory=dict)
    commonAnnotations: dict[str, str] = Field(default_factory=dict)
    externalURL: str = ""
    alerts: list[WebhookAlert] = Field(default_factory=list)

    @field_validator("version")
    @classmethod
    def _v4(cls, v: str) -> str:
        if v != "4":
            raise ValueError(f"unsupported webhook payload version {v!r} (expected \"4\")")
        return v


def parse_time(value: str) -> float | None:
    """RFC 3339 time from Alertmanager (nanoseconds allowed) -> Unix seconds; ``None`` for the
    zero time ``0001-01-01T00:00:00Z`` or an empty string.

    Raises:
        ValueError: not an RFC 3339 time.
    """
    if not value or value.startswith("0001-01-01"):
        return None
    text = value.strip().replace("Z", "+00:00")
    date, _, rest = text.partition("T")
    if "." in rest:
        main, _, frac_tz = rest.partition(".")
        digits = ""
        for ch in frac_tz:
            if ch.isdigit():
                digits += ch
            else:
                break
        tz = frac_tz[len(digits):]
        rest = f"{main}.{digits[:6].ljust(6, '0')}{tz}"
    dt = datetime.fromisoformat(f"{date}T{rest}")
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


# ---------------------------------------------------------------------------------------------
# the relay
# ---------------------------------------------------------------------------------------------


class Relay:
    """The relay's state: config, outbox, renderer, counters; :meth:`handle` does the work.

    Args:
        config: the relay config.
        sender: channel sender for the outbox (default apprise).
        clock: Unix seconds (injectable for tests).
    """

    def __init__(self, config: RelayConfig, *, sender: Sender | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.clock = clock
        self.conn = connect(db_path(config.data_dir))
        self.conn.execute(_SCHEMA)
        self.outbox = Outbox(self.conn, config.alerting, clock=clock, sender=sender)
        self.renderer = Renderer(config.alerting.templates_dir)
        self.systems = {s.id: s for s in config.systems}
        #: (unit, event) -> messages enqueued; (status,) -> webhook requests
        self.enqueued: dict[tuple[str, str], int] = {}
        self.requests: dict[str, int] = {}

    # -- decoding ---------------------------------------------------------------------------

    def site_for(self, labels: dict[str, str]) -> Site:
        """The message's origin: the commune of the labels, or the central site."""
        tz = self.config.timezone
        if labels.get("commune_code"):
            return Site(agent_id=labels.get("agent_id") or f"hcc-{labels['commune_code']}",
                        commune_code=labels["commune_code"],
                        commune_name=nfc(labels.get("commune_name") or labels["commune_code"]),
                        commune_type=labels.get("commune_type") or "xa", timezone=tz,
                        status_url=self.config.status_url)
        return Site(agent_id="hcc-sentinel-relay", commune_code=self.config.site_code,
                    commune_name=self.config.site_name, commune_type="xa", timezone=tz,
                    status_url=self.config.status_url)

    def item_for(self, alert: WebhookAlert, resolved: bool) -> NoticeItem:
        """One message item for one alert (title, system names, state, times, advice)."""
        labels = alert.labels
        name = labels.get("escalated_alertname") or labels.get("alertname") or "alert"
        title_vi, title_en = TITLES.get(name, (name, name))
        system = labels.get("system")
        sysdef = self.systems.get(system or "")
        if name in LOCAL_LINK:
            state, advice = "link", ADVICE["local_link"]
        elif name in DEGRADED:
            state, advice = "degraded", ADVICE["degraded"]
        else:
            state, advice = "down", ADVICE["down"]
        summary = alert.annotations.get("summary", "")
        summary_en = alert.annotations.get("summary_en", "")
        detail = " / ".join(x for x in (summary, summary_en) if x) or None
        target = labels.get("target")
        return NoticeItem(
            incident_id=None,
            target_id=name + (f" {target}" if target else ""),
            target_name=title_vi if not target else f"{title_vi}: {target}",
            system_id=system,
            system_name=sysdef.name if sysdef else system,
            system_name_en=(sysdef.name_en if sysdef else None) or title_en,
            state="up" if resolved else state,
            outcome=None if resolved else ("slow" if state == "degraded" else "error"),
            reason=None,
            detail=detail,
            since=parse_time(alert.startsAt),
            resolved_at=(parse_time(alert.endsAt) or self.clock()) if resolved else None,
            cause="local_link" if name in LOCAL_LINK else "system",
            advice_vi=advice[0], advice_en=advice[1],
            link=name in LOCAL_LINK,
        )

    # -- the work ----------------------------------------------------------------------------

    def handle(self, unit_id: str, payload: dict[str, Any]) -> list[int]:
        """Turn one webhook notification for ``unit_id`` into outbox messages.

        Args:
            unit_id: the receiver's unit (the URL path); an unknown unit falls back to
                ``default_unit`` (logged).
            payload: the decoded JSON body.

        Returns:
            Ids of the messages newly written (empty when the notification was a retry or held
            nothing new).

        Raises:
            ValueError: not a version-4 webhook payload (the HTTP layer answers 400).
        """
        try:
            msg = WebhookMessage.model_validate(payload)
        except ValidationError as exc:
            raise ValueError("; ".join(e["msg"] for e in exc.errors(include_url=False))) from None
        if self.config.alerting.unit(unit_id) is None:
            log.warning("notification for unknown unit %r delivered to the default unit %s",
                        unit_id, self.config.default_unit)
            unit_id = self.config.default_unit
        now = self.clock()
        firing = [a for a in msg.alerts if a.status == "firing"]
        resolved = [a for a in msg.alerts if a.status == "resolved"]
        created: list[int] = []
        with transaction(self.conn):
            seen = {(r["fingerprint"], r["starts_at"]): r for r in self.conn.execute(
                "SELECT * FROM relay_alerts WHERE unit_id = ?", (unit_id,))}
            escal = [a for a in firing if a.labels.get("alertname") == "Escalation"]
            plain = [a for a in firing if a.labels.get("alertname") != "Escalation"]
            for group, event_new in ((plain, "problem"), (escal, "escalation")):
                if not group:
                    continue
                new = [a for a in group if (_fp(a), a.startsAt) not in seen]
                if new:
                    event, keyed = event_new, new
                    bucket = ""
                else:
                    # Nothing new.  A pure repeat (Alertmanager's repeat_interval: no alert
                    # resolved in this notification, the last message about these alerts long
                    # enough ago) is a reminder; a retry or a group update is not.
                    last = max(seen[(_fp(a), a.startsAt)]["last_notified_at"] for a in group)
                    if resolved or now - last < self.config.reminder_min_interval:
                        continue
                    event, keyed = ("reminder" if event_new == "problem" else "escalation"), group
                    bucket = f":{int(now // self.config.reminder_min_interval)}"
                key = f"am:{unit_id}:{event}:{_digest(keyed)}{bucket}"
                created += self._enqueue(unit_id, event, group, msg, key, resolved=False)
                for a in group:
                    self.conn.execute(
                        "INSERT INTO relay_alerts (unit_id, fingerprint, starts_at, alertname, announced_at,"
                        " last_notified_at) VALUES (?, ?, ?, ?, ?, ?)"
                        " ON CONFLICT (unit_id, fingerprint, starts_at) DO UPDATE SET last_notified_at = ?",
                        (unit_id, _fp(a), a.startsAt, a.labels.get("alertname"), now, now, now))
            done = [a for a in resolved
                    if (_fp(a), a.startsAt) in seen and seen[(_fp(a), a.startsAt)]["resolved_at"] is None]
            if done:
                key = f"am:{unit_id}:resolved:{_digest(done)}"
                created += self._enqueue(unit_id, "resolved", done, msg, key, resolved=True)
                for a in done:
                    self.conn.execute(
                        "UPDATE relay_alerts SET resolved_at = ? WHERE unit_id = ? AND fingerprint = ? AND starts_at = ?",
                        (now, unit_id, _fp(a), a.startsAt))
            # forget resolved alerts after a week
            self.conn.execute("DELETE FROM relay_alerts WHERE resolved_at IS NOT NULL AND resolved_at < ?",
                              (now - 7 * 86400,))
        return created

    def _enqueue(self, unit_id: str, event: str, alerts: list[WebhookAlert], msg: WebhookMessage,
                 key: str, resolved: bool) -> list[int]:
        unit = self.config.alerting.unit(unit_id)
        assert unit is not None
        labels = msg.commonLabels if msg.commonLabels else alerts[0].labels
        site = self.site_for(labels if labels.get("commune_code") else {})
        step = 0
        if event == "escalation":
            try:
                step = int(alerts[0].labels.get("escalation_step", "1"))
            except ValueError:
                step = 1
        notice = Notice(event=event, site=site, unit_id=unit.id, unit_name=unit.name,
                        items=[self.item_for(a, resolved) for a in alerts], now=self.clock(),
                        escalation_step=step, ack_hint=False)
        subject, body = self.renderer.render(notice)
        notify_type = {"problem": "failure", "escalation": "failure", "reminder": "warning",
                       "resolved": "success"}[event]
        ids = self.outbox.enqueue([unit.id], subject, body, key, kind=f"relay-{event}", notify_type=notify_type)
        if ids:
            k = (unit.id, event)
            self.enqueued[k] = self.enqueued.get(k, 0) + len(ids)
            log.info("enqueued %s message for unit %s (%d alert(s))", event, unit.id, len(alerts))
        return ids

    # -- HTTP --------------------------------------------------------------------------------

    def app(self) -> web.Application:
        """The aiohttp application (routes only; the outbox worker is started by :meth:`serve`)."""
        app = web.Application(client_max_size=8 * 1024 * 1024)
        app.router.add_post("/alertmanager/{unit}", self._post)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/metrics", self._metrics)
        return app

    async def _post(self, request: web.Request) -> web.Response:
        unit = request.match_info["unit"]
        try:
            payload = await request.json(loads=json.loads)
        except (json.JSONDecodeError, UnicodeDecodeError):
            self._count("bad_request")
            return web.json_response({"error": "body is not JSON"}, status=400)
        if not isinstance(payload, dict):
            self._count("bad_request")
            return web.json_response({"error": "body is not a JSON object"}, status=400)
        try:
            ids = self.handle(unit, payload)
        except ValueError as exc:
            self._count("bad_request")
            return web.json_response({"error": str(exc)}, status=400)
        except sqlite3.Error:
            log.exception("outbox write failed; Alertmanager will retry")
            self._count("error")
            return web.json_response({"error": "outbox unavailable"}, status=503)
        self._count("ok")
        return web.json_response({"enqueued": ids})

    def _count(self, status: str) -> None:
        self.requests[status] = self.requests.get(status, 0) + 1

    async def _healthz(self, _request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "outbox_messages": self.outbox.depth})

    async def _metrics(self, _request: web.Request) -> web.Response:
        registry = CollectorRegistry()
        registry.register(_RelayCollector(self))
        return web.Response(body=generate_latest(registry), headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})

    async def serve(self, ready: asyncio.Event | None = None, stop: asyncio.Event | None = None) -> None:
        """Serve HTTP and run the outbox worker until ``stop`` is set (or SIGTERM/SIGINT when
        ``stop`` is ``None``).

        Raises:
            OSError: the listen address cannot be bound.
        """
        runner = web.AppRunner(self.app(), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.config.host, self.config.port)
        await site.start()
        worker = asyncio.ensure_future(self.outbox.run())
        log.info("relay listening on %s", self.config.listen)
        stop = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, stop.set)
            except (NotImplementedError, RuntimeError):
                pass
        if ready is not None:
            ready.set()
        try:
            await stop.wait()
        finally:
            await self.outbox.stop()
            worker.cancel()
            await asyncio.gather(worker, return_exceptions=True)
            await runner.cleanup()
            self.conn.close()


class _RelayCollector:
    def __init__(self, relay: Relay) -> None:
        self.relay = relay

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Any:
        r = self.relay
        r.outbox.refresh_stats()
        yield GaugeMetricFamily("hcc_sentinel_outbox_messages", "Messages with a pending delivery.",
                                value=r.outbox.depth)
        yield GaugeMetricFamily("hcc_sentinel_outbox_oldest_age_seconds",
                                "Age of the oldest pending message (seconds).", value=r.outbox.oldest_age())
        req = CounterMetricFamily("hcc_sentinel_relay_requests", "Webhook requests by result.", labels=["result"])
        for status, n in sorted(r.requests.items()):
            req.add_metric([status], n)
        yield req
        enq = CounterMetricFamily("hcc_sentinel_relay_messages", "Messages enqueued by unit and event.",
                                  labels=["unit", "event"])
        for (unit, event), n in sorted(r.enqueued.items()):
            enq.add_metric([unit, event], n)
        yield enq
        # the same family and labels as the agent's (alerts.engine): channel = the URL's scheme
        notif = CounterMetricFamily("hcc_sentinel_notifications",
                                    "Notification delivery attempts by unit, channel scheme and result.",
                                    labels=["unit", "channel", "result"])
        for (unit, scheme, result), n in sorted(r.outbox.counts.items()):
            notif.add_metric([unit, scheme, result], n)
        yield notif


def _fp(alert: WebhookAlert) -> str:
    if alert.fingerprint:
        return alert.fingerprint
    return hashlib.sha256(json.dumps(alert.labels, sort_keys=True).encode()).hexdigest()[:16]


def _digest(alerts: list[WebhookAlert]) -> str:
    parts = sorted(f"{_fp(a)}@{a.startsAt}" for a in alerts)
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:20]


def run(config_path: str, listen: str | None = None) -> int:
    """Entry point of ``hcc-sentinel relay``: load the config and serve until SIGTERM.

    Returns:
        0 after a clean stop, 2 for a bad config, 4 when the address cannot be bound.
    """
    try:
        config = load_relay_config(config_path)
    except ConfigError as exc:
        for p in exc.problems:
            print(p, flush=True)
        return 2
    if listen:
        try:
            config = config.model_copy(update={"listen": check_listen(listen)})
        except ValueError as exc:
            print(f"--listen: {exc}", flush=True)
            return 2
    relay = Relay(config)
    try:
        asyncio.run(relay.serve())
    except OSError as exc:
        print(f"cannot listen on {config.listen}: {exc.strerror or exc}", flush=True)
        return 4
    return 0
