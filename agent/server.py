"""The agent's HTTP server (aiohttp) on ``agent.listen``.

Routes:

* ``GET /metrics`` — Prometheus text format 0.0.4, or OpenMetrics 1.0 when the ``Accept`` header
  asks for ``application/openmetrics-text`` (content negotiation as in prometheus-client's
  ``choose_encoder``); gzip when the scraper accepts it (Prometheus does).
* ``GET /healthz`` — ``200 {"status", "agent_id", "targets", "last_reload_ok", ...}``.
* ``POST /-/reload`` — re-read the config (Prometheus' own reload endpoint name); 200 with the
  added/removed/changed targets, or 400 with ``problems`` (``FILE:LINE: field: message``).  Only
  from a loopback client, or with ``Authorization: Bearer <alerting.ack_token>``; else 403 JSON.
* ``GET /api/targets`` — the current state of every target (JSON list).
* ``GET /api/results?target=ID&since=T&until=T&limit=N`` — results from the history database,
  oldest first.  ``since``/``until``: Unix seconds, ISO 8601 (``2026-05-01T08:00:00+07:00``; a
  time without offset is in ``agent.timezone``, like ``hcc-sentinel silence --start``) or a
  duration back from now (``15m``); default ``since`` is 1 h ago, ``limit`` 1000 (1 to 10000).
  Errors are JSON ``{"error": "bad_request" | "not_found" | "unavailable", "message"}``.

Other packages add routes: every module of :data:`ROUTE_MODULES` that exists is imported and its
``setup_routes(app, runtime)`` called.
"""

from __future__ import annotations

import datetime as dt
import errno
import hmac
import importlib
import ipaddress
import logging
import time
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from aiohttp import web

from probes.config_types import parse_duration

if TYPE_CHECKING:
    from agent.runtime import AgentRuntime

log = logging.getLogger("hcc_sentinel.server")

#: Modules adding routes through ``setup_routes(app, runtime)`` (skipped while not written).
ROUTE_MODULES: tuple[str, ...] = ("agent.api_alerts", "agent.status")

RUNTIME_KEY: web.AppKey[Any] = web.AppKey("runtime", object)


class ServerError(Exception):
    """The listen address cannot be used; ``str(err)`` is one line."""


#: Most results one ``/api/results`` answer returns (``limit`` 1..MAX_RESULTS).
MAX_RESULTS = 10_000


def parse_time(value: str, now: float | None = None, tz: str = "UTC") -> float:
    """``since``/``until`` query values -> Unix seconds.

    Accepts Unix seconds (``1767225600``), ISO 8601 with or without offset (a time without
    offset is in ``tz``: the API passes ``agent.timezone``, as ``silence --start`` does) or a
    Prometheus-style duration meaning "that long ago" (``15m``, ``2h``).

    Raises:
        ValueError: none of these.
    """
    now = time.time() if now is None else now
    text = value.strip()
    try:
        return float(text)
    except ValueError:
        pass
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        pass
    else:
        if when.tzinfo is None:
            when = when.replace(tzinfo=ZoneInfo(tz))
        return when.timestamp()
    return now - parse_duration(text)


def _rt(request: web.Request) -> "AgentRuntime":
    return request.app[RUNTIME_KEY]


async def metrics(request: web.Request) -> web.StreamResponse:
    from agent.metrics import exposition
    body, content_type = exposition(_rt(request).registry, request.headers.get("Accept"))
    resp = web.Response(body=body, headers={"Content-Type": content_type})
    if "gzip" in request.headers.get("Accept-Encoding", ""):
        resp.enable_compression()
    return resp


async def healthz(request: web.Request) -> web.StreamResponse:
    return web.json_response(_rt(request).healthz())


def _error(status: int, error: str, message: str) -> web.Response:
    """A JSON error answer, shaped like agent.api_alerts': ``{"error", "message"}``."""
    return web.json_response({"error": error, "message": message}, status=status, dumps=_dumps)


def _is_loopback(remote: str | None) -> bool:
    try:
        return remote is not None and ipaddress.ip_address(remote.split("%", 1)[0]).is_loopback
    except ValueError:  # a Unix socket peer or an unparsable address
        return False


def reload_allowed(request: web.Request) -> bool:
    """``POST /-/reload`` is allowed from a loopback client (127.0.0.0/8, ::1), or with
    ``Authorization: Bearer <alerting.ack_token>`` when a token is configured."""
    if _is_loopback(request.remote):
        return True
    token = getattr(getattr(_rt(request).config, "alerting", None), "ack_token", None)
    expected = token.get_secret_value() if token is not None else ""
    auth = request.headers.get("Authorization", "")
    given = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
    return bool(expected) and bool(given) and hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


async def reload(request: web.Request) -> web.StreamResponse:
    if not reload_allowed(request):
        log.warning("POST /-/reload from %s refused: not loopback and no valid token", request.remote)
        return web.json_response(
            {"status": "error", "error": "forbidden",
             "message": "reload is allowed from 127.0.0.1/::1, or with Authorization: Bearer <alerting.ack_token>"},
            status=403)
    result = await _rt(request).reload()
    return web.json_response(result.to_json(), status=200 if result.ok else 400)


async def api_targets(request: web.Request) -> web.StreamResponse:
    rt = _rt(request)
    return web.json_response({"agent_id": rt.agent_id, "targets": rt.targets_state()},
                             dumps=_dumps)


async def api_results(request: web.Request) -> web.StreamResponse:
    rt = _rt(request)
    q = request.query
    target = q.get("target", "")
    if not target:
        return _error(400, "bad_request", "missing ?target=ID")
    tz = rt.config.agent.timezone
    try:
        since = parse_time(q["since"], tz=tz) if "since" in q else time.time() - 3600
    except ValueError:
        return _error(400, "bad_request", f"since: {q['since']!r} is neither Unix seconds, an ISO 8601 time "
                      "(without offset: agent.timezone) nor a duration such as 15m")
    try:
        until = parse_time(q["until"], tz=tz) if "until" in q else None
    except ValueError:
        return _error(400, "bad_request", f"until: {q['until']!r} is neither Unix seconds, an ISO 8601 time "
                      "(without offset: agent.timezone) nor a duration such as 15m")
    try:
        limit = int(q.get("limit", "1000"))
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_RESULTS:
        return _error(400, "bad_request", f"limit: must be a whole number from 1 to {MAX_RESULTS}, "
                      f"not {q.get('limit')!r}")
    if rt.store is None:
        return _error(503, "unavailable", "history store not open")
    results = await rt.store.history(target, since, until, limit)
    known = target in rt.specs()
    if not results and not known:
        return _error(404, "not_found", f"unknown target {target!r}")
    return web.json_response({"target": target, "since": since, "until": until,
                              "results": [r.to_json() for r in results]}, dumps=_dumps)


def _dumps(obj: Any) -> str:
    import json
    return json.dumps(obj, ensure_ascii=False, default=str)


def build_app(runtime: "AgentRuntime") -> web.Application:
    """The aiohttp application with the core routes and every available route module's routes.

    Raises:
        ImportError: a route module exists but fails to import (a bug, never hidden).
    """
    app = web.Application()
    app[RUNTIME_KEY] = runtime
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_post("/-/reload", reload)
    app.router.add_get("/api/targets", api_targets)
    app.router.add_get("/api/results", api_results)
    for name in ROUTE_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue
            raise
        module.setup_routes(app, runtime)
    return app


async def start_server(runtime: "AgentRuntime", host: str, port: int) -> web.AppRunner:
    """Serve :func:`build_app` on ``host:port``.

    Raises:
        ServerError: the address is in use, not local, or not permitted.
    """
    runner = web.AppRunner(build_app(runtime), access_log=None, handle_signals=False,
                           handler_cancellation=True, shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        why = {errno.EADDRINUSE: "address already in use (another agent running?)",
               errno.EACCES: "permission denied", errno.EADDRNOTAVAIL: "address not available on this host"
               }.get(exc.errno or 0, exc.strerror or str(exc))
        raise ServerError(f"cannot listen on {host}:{port}: {why}") from None
    return runner
