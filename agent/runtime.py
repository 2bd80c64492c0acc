"""The agent runtime: config -> scheduler -> result listeners (store, metrics, ...) -> HTTP server.

``AgentRuntime`` is what ``hcc-sentinel run`` and ``hcc-sentinel demo`` start.  Extension points
for other packages (the alerts engine is wired in through them):

* :meth:`AgentRuntime.add_listener` — ``async fn(result)`` called with every probe result;
* :meth:`AgentRuntime.add_collector` — a prometheus-client collector added to ``/metrics``;
* :meth:`AgentRuntime.add_reload_hook` — ``fn(config)`` (sync or async) after a good reload;
* :meth:`AgentRuntime.set_interval_override` — ``fn(target_id) -> seconds | None``.

Signals (``run``): SIGINT/SIGTERM stop cleanly (exit 0); SIGHUP reloads the config file.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import inspect
import logging
import os
import signal
import time
import unicodedata
import urllib.parse
from typing import Any, Callable

import probes
from agent import __version__
from agent.config import ConfigBase, load_config
from agent.metrics import MetricsState, TargetMeta, make_registry
from agent.scheduler import Listener, ProbeFn, Scheduler, run_probe
from agent.store import DB_NAME, Store, StoreError
from agent.yamlconf import ConfigError
from probes.base import ProbeContext, ProbeResult, TargetSpec

log = logging.getLogger("hcc_sentinel.agent")

# exit codes of ``hcc-sentinel run`` (documented in docs/runtime.md)
EXIT_OK = 0
EXIT_CONFIG = 2
EXIT_STORE = 3
EXIT_LISTEN = 4


def ascii_safe(text: str) -> str:
    """Vietnamese text as ASCII for an HTTP header value (RFC 9110 field values are
    ISO-8859-1 at best; aiohttp rejects other characters): diacritics removed, ``đ``/``Đ`` ->
    ``d``/``D``, anything else outside printable ASCII percent-encoded (UTF-8).

    >>> ascii_safe("Phường Biên Hòa")
    'Phuong Bien Hoa'
    """
    text = text.replace("đ", "d").replace("Đ", "D")
    stripped = "".join(ch for ch in unicodedata.normalize("NFD", text) if not unicodedata.combining(ch))
    return "".join(ch if 32 <= ord(ch) < 127 else urllib.parse.quote(ch, safe="") for ch in stripped)


def user_agent(config: ConfigBase) -> str:
    """``hcc-sentinel/<version> (+commune <code> <name>; agent <id>)``, ASCII only."""
    c = config.agent.commune
    return f"hcc-sentinel/{__version__} (+commune {c.code} {ascii_safe(c.name)}; agent {config.agent.id})"


def probe_context(config: ConfigBase) -> ProbeContext:
    """The :class:`ProbeContext` of this agent: User-Agent and ``X-Synthetic-Probe`` header
    (so the shared systems' operators can tell probe traffic from citizens')."""
    return ProbeContext(
        user_agent=user_agent(config),
        headers={"X-Synthetic-Probe": f"hcc-sentinel; agent={config.agent.id}; commune={config.agent.commune.code}"},
        agent_id=config.agent.id,
    )


def target_metas(config: ConfigBase) -> dict[str, TargetMeta]:
    """``probe_target_info`` labels (and interval/timeout) of every target."""
    out: dict[str, TargetMeta] = {}
    for spec in config.target_specs():
        t = config.target(spec.id)
        out[spec.id] = TargetMeta(kind=spec.kind, system=t.system or "", owner=config.owner_of(t) or "",
                                  name=t.name or "", interval=spec.interval, timeout=spec.timeout)
    return out


LOCK_NAME = "agent.lock"


class DataDirLock:
    """Exclusive ownership of a ``data_dir`` by one agent process: ``fcntl.flock`` (non-blocking)
    on ``<data_dir>/agent.lock``, which then holds the owner's pid.

    Two agents on one data_dir would each run an alerts engine on the same databases and send
    every alert twice.  The lock is held from :meth:`AgentRuntime.start` to
    :meth:`AgentRuntime.stop`; the kernel drops it when the process dies (no stale lock after a
    crash or a power cut).  The CLI tools (``ack``, ``silence``, ``incidents``, ``outbox``,
    ``report --local``) never take it: they work while the daemon runs.
    """

    def __init__(self, data_dir: "os.PathLike[str] | str"):
        self.path = os.path.join(os.fspath(data_dir), LOCK_NAME)
        self.data_dir = os.fspath(data_dir)
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock and write our pid into the file.

        Raises:
            StoreError: another process holds it (one line naming its pid), or the file cannot
                be created.
        """
        try:
            os.makedirs(self.data_dir, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise StoreError(f"data_dir {self.data_dir}: cannot create {LOCK_NAME} ({exc.strerror or exc}); "
                             "check the data_dir and its permissions") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            try:
                holder = os.read(fd, 32).decode("ascii", "replace").strip()
            except OSError:
                holder = ""
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                pid = holder if holder.isdigit() else "unknown"
                raise StoreError(f"data_dir {self.data_dir} is used by another hcc-sentinel process "
                                 f"(pid {pid})") from None
            raise StoreError(f"data_dir {self.data_dir}: cannot lock {LOCK_NAME} ({exc.strerror or exc})") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        self._fd = fd

    def release(self) -> None:
        """Drop the lock (the file stays; its content is only meaningful while locked)."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)

    @property
    def held(self) -> bool:
        return self._fd is not None


class ReloadResult:
    """Outcome of a reload: ``ok``, ``problems`` (``FILE:LINE: field: message`` lines) and the
    ``added`` / ``removed`` / ``changed`` target ids."""

    def __init__(self, ok: bool, problems: list[str] | None = None, added: list[str] | None = None,
                 removed: list[str] | None = None, changed: list[str] | None = None):
        self.ok = ok
        self.problems = problems or []
        self.added = added or []
        self.removed = removed or []
        self.changed = changed or []

    def to_json(self) -> dict[str, Any]:
        if not self.ok:
            return {"status": "error", "problems": self.problems}
        return {"status": "ok", "added": self.added, "removed": self.removed, "changed": self.changed}


class AgentRuntime:
    """One running agent.

    Args:
        config_path: the YAML file (re-read on reload); may be ``None`` with ``config`` given
            (then reload is refused).
        config: an already validated config (default: loaded from ``config_path``).
        probe_for: ``probe_for(spec) -> ProbeFn`` (default: the spec's kind module's ``probe``).
        process_metrics: include prometheus-client's process/platform/GC collectors.
        store_flush_interval: seconds between history batch writes.

    Raises:
        ConfigError: ``config`` not given and the file is invalid.
    """

    def __init__(self, config_path: str | None, config: ConfigBase | None = None, *,
                 probe_for: Callable[[TargetSpec], ProbeFn] | None = None,
                 process_metrics: bool = True, store_flush_interval: float = 1.0,
                 serve: bool = True):
        self.config_path = config_path
        self.config: ConfigBase = config if config is not None else load_config(config_path)  # type: ignore[arg-type]
        self._kinds = probes.kinds()
        self.probe_for = probe_for or self._default_probe_for
        self.metrics = MetricsState()
        self.registry = make_registry(self.metrics, process_metrics)
        self.extra_listeners: list[Listener] = []
        self.reload_hooks: list[Callable[[ConfigBase], Any]] = []
        self.interval_override: Callable[[str], float | None] | None = None
        self.store: Store | None = None
        self.lock: DataDirLock | None = None
        self.alerts: Any = None  # alerts.engine.AlertEngine, set by agent.api_alerts.attach
        self.scheduler: Scheduler | None = None
        self.server: Any = None  # aiohttp AppRunner
        self.serve = serve
        self.store_flush_interval = store_flush_interval
        self.started_at = time.time()
        self._stop = asyncio.Event()
        self._reload_lock = asyncio.Lock()
        self._last_outcome: dict[str, str] = {}
        self._apply_identity()

    # -- extension points ------------------------------------------------------------------
    def add_listener(self, fn: Listener) -> None:
        """Register ``async fn(result)``; called after the store and metrics, for every result."""
        self.extra_listeners.append(fn)
        if self.scheduler is not None:
            self.scheduler.add_listener(fn)

    def add_collector(self, collector: Any) -> None:
        """Add a prometheus-client collector (object with ``collect()``) to ``/metrics``."""
        self.registry.register(collector)

    def add_reload_hook(self, fn: Callable[[ConfigBase], Any]) -> None:
        """Register ``fn(new_config)`` (sync or async), called after every successful reload."""
        self.reload_hooks.append(fn)

    def set_interval_override(self, fn: Callable[[str], float | None] | None) -> None:
        """``fn(target_id) -> seconds | None``: interval to use instead of the configured one."""
        self.interval_override = fn

    # -- helpers ---------------------------------------------------------------------------
    async def _log_outcome_change(self, result: ProbeResult) -> None:
        """One log line when a target's outcome changes (first result included)."""
        before = self._last_outcome.get(result.target)
        if before != result.outcome.value:
            self._last_outcome[result.target] = result.outcome.value
            level = logging.INFO if result.success else logging.WARNING
            log.log(level, "target %s: %s -> %s (%s, %s) in %.3fs: %s", result.target, before or "start",
                    result.outcome.value, result.outcome.vietnamese, result.reason, result.duration_seconds,
                    result.detail)

    def _default_probe_for(self, spec: TargetSpec) -> ProbeFn:
        return self._kinds[spec.kind].probe

    def _interval_for(self, target_id: str) -> float | None:
        return self.interval_override(target_id) if self.interval_override is not None else None

    def _apply_identity(self) -> None:
        a = self.config.agent
        self.metrics.set_agent(a.id, a.commune.code, a.commune.name, a.commune.type)
        self.metrics.set_targets(target_metas(self.config))
        self.context = probe_context(self.config)

    @property
    def agent_id(self) -> str:
        return self.config.agent.id

    def specs(self) -> dict[str, TargetSpec]:
        return {s.id: s for s in self.config.target_specs()}

    # -- life cycle ------------------------------------------------------------------------
    async def start(self) -> None:
        """Lock the data_dir, open the store, start the HTTP server and the probe loops.

        Raises:
            StoreError: the data_dir is used by another agent process (:class:`DataDirLock`) or
                the history database is unusable.
            agent.server.ServerError: the listen address cannot be bound.
        """
        a = self.config.agent
        lock = DataDirLock(a.data_dir)
        lock.acquire()  # before any database is opened: one agent per data_dir
        self.lock = lock
        try:
            self.store = Store(a.data_dir / DB_NAME, retention=a.retention, flush_interval=self.store_flush_interval)
            await self.store.open()
        except BaseException:
            self.store = None
            self._release_lock()
            raise
        try:
            await self._start_rest()
        except BaseException:
            if self.alerts is not None:
                await self.alerts.stop()
                self.alerts = None
            await self.store.close()
            self.store = None
            self._release_lock()
            raise
        a = self.config.agent
        log.info("agent %s (%s %s) started: %d target(s), listening on %s, history in %s",
                 a.id, a.commune.code, a.commune.name, len(self.scheduler.target_ids) if self.scheduler else 0,
                 a.listen if self.serve else "(no server)", a.data_dir / DB_NAME)

    async def _start_rest(self) -> None:
        a = self.config.agent
        store = self.store
        assert store is not None
        self.metrics.store_stats = lambda: store.stats
        if self.alerts is None and self.config.alerting.enabled:
            from agent.api_alerts import attach as attach_alerts  # listener, collector, interval override
            await attach_alerts(self)
        sched = Scheduler(
            agent_id=a.id, probe_for=self.probe_for, context=lambda: self.context,
            max_concurrency=a.max_concurrency, startup_spread=a.startup_spread,
            interval_for=self._interval_for, on_lag=self.metrics.observe_lag,
            on_overrun=self.metrics.observe_overrun)
        sched.add_listener(store.observe)
        sched.add_listener(self.metrics.observe)
        sched.add_listener(self._log_outcome_change)
        for fn in self.extra_listeners:
            sched.add_listener(fn)
        self.metrics.in_flight = lambda: sched.in_flight
        self.metrics.intervals = lambda t: sched.states[t].interval if t in sched.states else None
        if self.serve:
            from agent.server import start_server
            self.server = await start_server(self, a.listen_host, a.listen_port)
        self.scheduler = sched
        self.metrics.set_reload(True)
        await sched.start(list(self.specs().values()))

    async def stop(self) -> None:
        """Stop the loops (in-flight probes are cancelled), the server, then flush the store."""
        if self.scheduler is not None:
            await self.scheduler.stop()
        if self.alerts is not None:
            await self.alerts.stop()
            self.alerts = None
        if self.server is not None:
            await self.server.cleanup()
            self.server = None
        if self.store is not None:
            await self.store.close()
        self._release_lock()
        log.info("agent %s stopped", self.agent_id)

    def _release_lock(self) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    def request_stop(self) -> None:
        self._stop.set()

    async def run(self) -> int:
        """Start, serve until SIGINT/SIGTERM (SIGHUP reloads), stop; returns the exit code.

        Exit codes: 0 clean stop, 3 data_dir used by another agent or history database unusable,
        4 listen address unusable.
        """
        from agent.server import ServerError
        try:
            await self.start()
        except StoreError as exc:
            log.error("%s", exc)
            return EXIT_STORE
        except ServerError as exc:
            log.error("%s", exc)
            return EXIT_LISTEN
        loop = asyncio.get_running_loop()
        installed: list[int] = []
        for sig, handler in ((signal.SIGINT, self.request_stop), (signal.SIGTERM, self.request_stop),
                             (signal.SIGHUP, lambda: asyncio.ensure_future(self.reload()))):
            try:
                loop.add_signal_handler(sig, handler)
                installed.append(sig)
            except (NotImplementedError, RuntimeError):  # not the main thread / platform
                pass
        try:
            await self._stop.wait()
            log.info("stop requested")
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)
            await self.stop()
        return EXIT_OK

    # -- reload ----------------------------------------------------------------------------
    async def reload(self) -> ReloadResult:
        """Re-read the config file; apply it if valid, else keep the running config.

        A bad file is refused with the same ``FILE:LINE: field: message`` lines as
        ``hcc-sentinel check`` (logged, returned) and ``hcc_sentinel_config_last_reload_successful``
        becomes 0.  On success: removed targets' loops stop (and their series leave /metrics),
        new ones start, changed ones restart; ``listen`` and ``data_dir`` changes need a restart.
        """
        async with self._reload_lock:
            if self.config_path is None:
                self.metrics.set_reload(False)
                return ReloadResult(False, ["(no config file): this agent was started without a file"])
            try:
                new = load_config(self.config_path)
            except ConfigError as exc:
                problems = [str(p) for p in exc.problems]
                self.metrics.set_reload(False)
                log.error("config reload refused, keeping the running config (%d problem(s)):", len(problems))
                for line in problems:
                    log.error("  %s", line)
                return ReloadResult(False, problems)
            old = self.config
            for field in ("listen", "data_dir"):
                if getattr(old.agent, field) != getattr(new.agent, field):
                    log.warning("agent.%s changed from %s to %s: takes effect after a restart",
                                field, getattr(old.agent, field), getattr(new.agent, field))
            if old.agent.listen != new.agent.listen or old.agent.data_dir != new.agent.data_dir:
                agent = new.agent.model_copy(update={"listen": old.agent.listen, "data_dir": old.agent.data_dir})
                new = new.model_copy(update={"agent": agent})
            self.config = new
            self._apply_identity()
            added: list[str] = []
            removed: list[str] = []
            changed: list[str] = []
            if self.scheduler is not None:
                self.scheduler.set_max_concurrency(new.agent.max_concurrency)
                self.scheduler.startup_spread = new.agent.startup_spread
                added, removed, changed = await self.scheduler.update(list(self.specs().values()),
                                                                      agent_id=new.agent.id)
            if self.store is not None:
                self.store.retention = new.agent.retention
            self.metrics.set_reload(True)
            for hook in self.reload_hooks:
                try:
                    value = hook(new)
                    if inspect.isawaitable(value):
                        await value
                except Exception:  # noqa: BLE001
                    log.exception("reload hook %r failed", hook)
            log.info("config reloaded: %d target(s); added %s, removed %s, changed %s",
                     len(new.target_specs()), added or "none", removed or "none", changed or "none")
            return ReloadResult(True, added=added, removed=removed, changed=changed)

    # -- one-off probe ---------------------------------------------------------------------
    async def probe_once(self, target_id: str) -> ProbeResult:
        """Run one probe of ``target_id`` now (with the scheduler's last-resort deadline).

        Raises:
            KeyError: no such target.
        """
        spec = self.specs()[target_id]
        return await run_probe(self.probe_for(spec), spec, self.context)

    # -- state for /api/targets and /healthz ----------------------------------------------
    def targets_state(self) -> list[dict[str, Any]]:
        """Current state of every target as JSON-serialisable dicts."""
        out: list[dict[str, Any]] = []
        now_mono, now_wall = time.monotonic(), time.time()
        for spec in self.config.target_specs():
            t = self.config.target(spec.id)
            st = self.scheduler.states.get(spec.id) if self.scheduler else None
            counters = self.metrics.counters.get(spec.id)
            counts: dict[str, int] = {"ok": 0, "slow": 0, "error": 0, "hang": 0}
            if counters:
                for (outcome, _reason), n in counters.outcomes.items():
                    counts[outcome] += n
            item: dict[str, Any] = {
                "id": spec.id, "kind": spec.kind, "name": t.name, "system": t.system,
                "owner": self.config.owner_of(t), "interval": spec.interval,
                "interval_in_force": st.interval if st else spec.interval,
                "timeout": spec.timeout, "slow_after": spec.slow_after, "depends_on": list(t.depends_on),
                "uplink": t.uplink, "running": bool(st and st.running),
                "next_run_at": (now_wall + (st.next_run - now_mono)) if st and st.next_run and not st.running else None,
                "runs": st.runs if st else 0, "overruns": st.overruns if st else 0,
                "counts_since_start": counts,
                "last": st.last_result.to_json() if st and st.last_result else None,
            }
            out.append(item)
        return out

    def healthz(self) -> dict[str, Any]:
        return {"status": "ok", "agent_id": self.agent_id, "commune_code": self.config.agent.commune.code,
                "targets": len(self.config.target_specs()), "last_reload_ok": self.metrics.reload_ok,
                "version": __version__, "uptime_seconds": round(time.time() - self.started_at, 3)}


