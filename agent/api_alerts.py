"""Wiring of the alerts engine into the agent, and its HTTP API.

:func:`attach` builds an :class:`alerts.engine.AlertEngine` from the agent config and plugs it
into the runtime's extension points (result listener, ``/metrics`` collector, scheduler interval
override, reload hook).  :func:`setup_routes` (called by ``agent.server``) adds:

* ``POST /api/incidents/{id}/ack`` — acknowledge (stops reminders and escalation).  Needs
  ``Authorization: Bearer <alerting.ack_token>`` (or ``"token"`` in the JSON body); 403 without
  a valid token or when no token is configured.  JSON body (optional): ``{"by": "...", "note": "..."}``.
  200 with the incident; 404 unknown incident.
* ``GET /api/incidents?open=1&limit=100`` — incidents, newest first.
* ``GET /api/silences?all=1`` — silences (by default those not yet ended).
* ``POST /api/silences`` — add one (token as above).  JSON body: ``author``, ``reason``,
  ``starts_at`` (optional; Unix seconds or ISO 8601, naive = agent time zone; default now),
  ``ends_at`` or ``duration`` (``"2h"``), ``match`` (``{"target": ["motcua-home"]}``),
  ``match_re``, ``maintenance`` (bool).  201 with the silence.
* ``DELETE /api/silences/{id}`` — expire now (token; ``?by=NAME``).  200, or 404.

Without a running engine (``alerting`` disabled) the handlers act on ``<data_dir>/alerts.db``
directly, like the CLI.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from aiohttp import web

from alerts import db as adb
from alerts.engine import AlertEngine
from alerts.model import AlertTarget, Site
from probes.config_types import parse_duration

if TYPE_CHECKING:
    from agent.config import ConfigBase
    from agent.runtime import AgentRuntime

log = logging.getLogger("hcc_sentinel.api_alerts")


# ------------------------------------------------------------------------------------------
# building the engine from the agent config
# ------------------------------------------------------------------------------------------


def alert_targets(config: "ConfigBase") -> list[AlertTarget]:
    """The engine's view of every target: names, system, owner, dependencies, thresholds."""
    out = []
    for t in config.targets:  # type: ignore[attr-defined]
        system = config.system(t.system)
        out.append(AlertTarget(
            id=t.id, name=t.name, system=t.system,
            system_name=system.name if system else None,
            system_name_en=system.name_en if system else None,
            owner=config.owner_of(t), depends_on=tuple(t.depends_on), uplink=t.uplink,
            interval=config.effective(t, "interval"), retry_interval=config.effective(t, "retry_interval"),
            failure_threshold=config.effective(t, "failure_threshold"),
            success_threshold=config.effective(t, "success_threshold"),
            degraded_threshold=config.effective(t, "degraded_threshold"),
            labels=dict(t.labels)))
    return out


def site_of(config: "ConfigBase", config_path: str | None = None) -> Site:
    """The agent's identity for messages (``config_path``, made absolute, goes into the
    ``hcc-sentinel ack ... -c <config>`` hint)."""
    a = config.agent
    return Site(agent_id=a.id, commune_code=a.commune.code, commune_name=a.commune.name,
                commune_type=a.commune.type, timezone=a.timezone, status_url=a.status_url,
                config_path=str(Path(config_path).resolve()) if config_path else None)


def _alerting(config: "ConfigBase", config_path: str | None) -> Any:
    alerting = config.alerting
    tdir = alerting.templates_dir
    if tdir is not None and not Path(tdir).is_absolute() and config_path:
        alerting = alerting.model_copy(update={"templates_dir": (Path(config_path).resolve().parent / tdir)})
    return alerting


def build_engine(config: "ConfigBase", config_path: str | None = None, **kwargs: Any) -> AlertEngine:
    """An engine for ``config`` with its database at ``<data_dir>/alerts.db``.

    Args:
        config: validated agent config.
        config_path: the config file (a relative ``templates_dir`` is relative to it).
        **kwargs: passed to :class:`AlertEngine` (``clock``, ``sender``, ``tick_interval``).
    """
    return AlertEngine(_alerting(config, config_path), alert_targets(config), site_of(config, config_path),
                       adb.db_path(config.agent.data_dir), **kwargs)


async def attach(runtime: "AgentRuntime") -> AlertEngine:
    """Build the engine, register it with ``runtime`` and start its timer and outbox worker.

    Sets ``runtime.alerts``.  Call before the scheduler starts (``AgentRuntime.start``) so the
    listener and the interval override are in place for the first probe.
    """
    engine = build_engine(runtime.config, runtime.config_path)
    runtime.alerts = engine  # type: ignore[attr-defined]
    runtime.add_listener(engine.observe)
    runtime.add_collector(engine.collector)
    runtime.set_interval_override(engine.interval_for)

    def on_reload(cfg: "ConfigBase") -> None:
        engine.update(_alerting(cfg, runtime.config_path), alert_targets(cfg), site_of(cfg, runtime.config_path))

    runtime.add_reload_hook(on_reload)
    await engine.start()
    log.info("alerts: %d unit(s), database %s", len(runtime.config.alerting.units), engine.db_path)
    return engine


# ------------------------------------------------------------------------------------------
# HTTP API
# ------------------------------------------------------------------------------------------


def parse_when(value: Any, tz: str, now: float | None = None) -> float:
    """Unix seconds, ISO 8601 (naive = ``tz``), ``"now"`` or ``"now+2h"`` -> Unix seconds.

    Raises:
        ValueError: none of these.
    """
    now = time.time() if now is None else now
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    text = str(value).strip()
    if text == "now":
        return now
    if text.startswith("now+"):
        return now + parse_duration(text[4:])
    try:
        return float(text)
    except ValueError:
        pass
    when = datetime.fromisoformat(text)
    if when.tzinfo is None:
        when = when.replace(tzinfo=ZoneInfo(tz))
    return when.timestamp()


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, text=json.dumps(data, ensure_ascii=False, default=str),
                        content_type="application/json")


def _runtime(request: web.Request) -> "AgentRuntime":
    from agent.server import RUNTIME_KEY

    return request.app[RUNTIME_KEY]


def _engine(request: web.Request) -> AlertEngine | None:
    return getattr(_runtime(request), "alerts", None)


def _conn(request: web.Request):  # type: ignore[no-untyped-def]
    engine = _engine(request)
    if engine is not None:
        return engine.conn
    return adb.connect(adb.db_path(_runtime(request).config.agent.data_dir))


def _authorised(request: web.Request, body: dict[str, Any]) -> bool:
    token = _runtime(request).config.alerting.ack_token
    expected = token.get_secret_value() if token is not None else ""
    if not expected:
        return False
    auth = request.headers.get("Authorization", "")
    given = auth[7:].strip() if auth.lower().startswith("bearer ") else str(body.get("token") or "")
    return bool(given) and hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


async def _body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        data = await request.json()
    except ValueError:
        raise web.HTTPBadRequest(text=json.dumps({"error": "body is not JSON"}), content_type="application/json")
    if not isinstance(data, dict):
        raise web.HTTPBadRequest(text=json.dumps({"error": "body must be a JSON object"}),
                                 content_type="application/json")
    return data


_FORBIDDEN = {"error": "forbidden", "message": "a valid alerting.ack_token is required (Authorization: Bearer ...)"}


async def ack_incident(request: web.Request) -> web.Response:
    body = await _body(request)
    if not _authorised(request, body):
        return _json(_FORBIDDEN, 403)
    incident_id = int(request.match_info["id"])
    by = str(body.get("by") or "api").strip()[:100] or "api"
    note = body.get("note")
    note = str(note)[:500] if note is not None else None
    engine = _engine(request)
    try:
        if engine is not None:
            row = engine.ack(incident_id, by, note)
        else:
            conn = _conn(request)
            try:
                row = adb.ack_incident(conn, incident_id, by, note, time.time())
            finally:
                conn.close()
    except KeyError:
        return _json({"error": "not_found", "message": f"no incident {incident_id}"}, 404)
    return _json({"incident": row})


async def list_incidents(request: web.Request) -> web.Response:
    open_only = request.query.get("open", "0").lower() in ("1", "true", "yes")
    try:
        limit = max(1, min(1000, int(request.query.get("limit", "100"))))
    except ValueError:
        return _json({"error": "limit must be an integer"}, 400)
    engine = _engine(request)
    if engine is not None:
        rows = engine.incidents(open_only=open_only, limit=limit)
    else:
        path = adb.db_path(_runtime(request).config.agent.data_dir)
        if not path.exists():
            return _json({"incidents": []})
        conn = adb.connect(path)
        try:
            rows = adb.list_incidents(conn, open_only=open_only, limit=limit)
        finally:
            conn.close()
    return _json({"incidents": rows})


async def list_silences(request: web.Request) -> web.Response:
    include_ended = request.query.get("all", "0").lower() in ("1", "true", "yes")
    tz = _runtime(request).config.agent.timezone
    conn = _conn(request)
    try:
        rows = adb.load_silences(conn, now=time.time(), include_ended=include_ended)
    finally:
        if _engine(request) is None:
            conn.close()
    return _json({"silences": [s.to_json(tz) for s in rows]})


async def add_silence(request: web.Request) -> web.Response:
    body = await _body(request)
    if not _authorised(request, body):
        return _json(_FORBIDDEN, 403)
    tz = _runtime(request).config.agent.timezone
    now = time.time()
    try:
        starts = parse_when(body.get("starts_at", "now"), tz, now)
        if body.get("ends_at") is not None:
            ends = parse_when(body["ends_at"], tz, now)
        elif body.get("duration") is not None:
            ends = starts + parse_duration(body["duration"])
        else:
            raise ValueError("give ends_at or duration")
        match = body.get("match") or {}
        if not isinstance(match, dict):
            raise ValueError("match must be an object")
        match = {k: ([str(x) for x in v] if isinstance(v, list) else [str(v)]) for k, v in match.items()}
        kwargs = dict(author=str(body.get("author") or ""), reason=str(body.get("reason") or ""),
                      starts_at=starts, ends_at=ends, match=match, match_re=body.get("match_re") or {},
                      maintenance=bool(body.get("maintenance", False)))
        engine = _engine(request)
        if engine is not None:
            sid = engine.add_silence(**kwargs)  # type: ignore[arg-type]
            conn = engine.conn
        else:
            conn = _conn(request)
            sid = adb.add_silence(conn, now=now, **kwargs)  # type: ignore[arg-type]
    except (ValueError, TypeError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return _json({"error": "bad_request", "message": msg}, 400)
    silence = next(s for s in adb.load_silences(conn, include_ended=True) if s.id == sid)
    if _engine(request) is None:
        conn.close()
    return _json({"silence": silence.to_json(tz)}, 201)


async def expire_silence(request: web.Request) -> web.Response:
    if not _authorised(request, {}):
        return _json(_FORBIDDEN, 403)
    sid = int(request.match_info["id"])
    by = request.query.get("by", "api")[:100]
    engine = _engine(request)
    try:
        if engine is not None:
            done = engine.expire_silence(sid, by)
        else:
            conn = _conn(request)
            try:
                done = adb.expire_silence(conn, sid, by, time.time())
            finally:
                conn.close()
    except KeyError:
        return _json({"error": "not_found", "message": f"no silence {sid}"}, 404)
    return _json({"id": sid, "expired": done})


def setup_routes(app: web.Application, runtime: "AgentRuntime") -> None:
    """Add the incident and silence endpoints to ``app`` (called by ``agent.server.build_app``)."""
    app.router.add_post(r"/api/incidents/{id:\d+}/ack", ack_incident)
    app.router.add_get("/api/incidents", list_incidents)
    app.router.add_get("/api/silences", list_silences)
    app.router.add_post("/api/silences", add_silence)
    app.router.add_delete(r"/api/silences/{id:\d+}", expire_silence)
