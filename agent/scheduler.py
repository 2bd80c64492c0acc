"""Probe scheduler: one asyncio loop per target, deterministic jitter, no drift, bounded concurrency.

Rules (and where they come from):

* **Deterministic jitter.** Each target's phase within its interval is
  ``sha256(agent_id + NUL + target_id)`` read as a fraction of the interval
  (:func:`jitter_fraction`).  Prometheus spreads scrapes the same way (a hash of the target,
  modulo the interval) so that many scrapers do not hit one target in the same second; here the
  95 commune agents probing one shared provincial system spread over the interval.  ``hashlib``
  is used, not :func:`hash`, whose value changes with every process (``PYTHONHASHSEED``).
* **No drift.** Run times are ``anchor + k * interval`` on the monotonic clock
  (:func:`time.monotonic`); the loop never sleeps ``interval`` after the work.
* **Overruns are skipped, not piled up.** When a probe (or its wait for a concurrency slot)
  outlasts the next planned slot, the target's overrun counter is increased and every slot that
  already passed is skipped.  Like Prometheus, which never runs two scrapes of one target at once.
* **One probe per target at a time**: each target has exactly one loop, which runs its probes
  one after another; on reload a target's old loop is cancelled and awaited before a new one
  starts.
* **Global bound**: an :class:`asyncio.Semaphore` of ``max_concurrency`` slots.
* **Staggered start** (the stampede after a restart that Gatus PR #1792 describes): the first
  probe of a target runs ``fraction * min(startup_spread or interval, interval)`` seconds after
  the loop starts.  Later runs are on the grid ``start + fraction * interval + k * interval``.
* **Interval override**: ``interval_for(target_id)`` may return a shorter interval (the alerts
  engine's ``retry_interval`` while a target is failing) or ``None`` for the normal one; a change
  re-anchors the grid at the last planned run.
* **Last-resort deadline**: each probe runs under ``asyncio.timeout(spec.timeout + 2)``; a probe
  that does not return in time becomes a ``hang`` result with reason ``timeout_total``.  A probe
  that raises becomes an ``error`` result with reason ``internal``.
* **Lag**: actual start minus planned start (seconds, including the wait for a concurrency slot)
  is reported to ``on_lag`` for the ``hcc_sentinel_scheduler_lag_seconds`` histogram.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import math
import time
from typing import Awaitable, Callable

from probes.base import Outcome, ProbeContext, ProbeResult, TargetSpec

log = logging.getLogger("hcc_sentinel.scheduler")

#: ``async probe(spec, ctx) -> ProbeResult`` — the signature every probe kind exposes.
ProbeFn = Callable[[TargetSpec, ProbeContext], Awaitable[ProbeResult]]
#: ``async listener(result)`` — called with every result, in registration order.
Listener = Callable[[ProbeResult], Awaitable[None]]

#: Seconds added to ``spec.timeout`` for the scheduler's own last-resort deadline.
DEADLINE_MARGIN = 2.0
#: At most one overrun log line per target per this many seconds (the counter counts them all).
OVERRUN_LOG_EVERY = 600.0


def jitter_fraction(agent_id: str, target_id: str) -> float:
    """Deterministic phase of a target in ``[0, 1)``: SHA-256 of ``agent_id NUL target_id``.

    The same pair gives the same value in every process and on every machine.
    """
    digest = hashlib.sha256(f"{agent_id}\0{target_id}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def jitter_offset(agent_id: str, target_id: str, interval: float) -> float:
    """Offset of a target's runs within its interval, seconds in ``[0, interval)``.

    Equivalent to ``hash(agent_id, target_id) mod interval`` with a 64-bit hash.
    """
    return jitter_fraction(agent_id, target_id) * interval


def next_slot(anchor: float, interval: float, after: float) -> tuple[float, int]:
    """The first grid time ``anchor + k * interval`` (k integer) strictly after ``after``.

    Returns:
        ``(time, k)`` — monotonic seconds and the slot index.
    """
    k = math.floor((after - anchor) / interval) + 1
    t = anchor + k * interval
    if t <= after:  # float rounding
        k += 1
        t = anchor + k * interval
    return t, k


def deadline_result(spec: TargetSpec, started_at: float, duration: float, reason: str,
                    detail: str) -> ProbeResult:
    """A result made by the scheduler itself (deadline or probe bug)."""
    return ProbeResult(target=spec.id, kind=spec.kind, outcome=Outcome.HANG if reason == "timeout_total"
                       else Outcome.ERROR, reason=reason, detail=detail, started_at=started_at,
                       duration_seconds=duration)


async def run_probe(probe: ProbeFn, spec: TargetSpec, ctx: ProbeContext) -> ProbeResult:
    """Run one probe with the last-resort deadline (``spec.timeout + 2`` s).

    Never raises except :class:`asyncio.CancelledError`: a probe that overruns gives reason
    ``timeout_total`` (hang), one that raises gives ``internal`` (error).
    """
    wall = time.time()
    t0 = time.monotonic()
    limit = spec.timeout + DEADLINE_MARGIN
    try:
        async with asyncio.timeout(limit):
            return await probe(spec, ctx)
    except TimeoutError:
        return deadline_result(spec, wall, time.monotonic() - t0, "timeout_total",
                               f"probe did not finish within {limit:g}s (timeout {spec.timeout:g}s + "
                               f"{DEADLINE_MARGIN:g}s margin)")
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001 - a probe bug must not stop the loop
        log.error("probe %s (%s) raised %s: %s", spec.id, spec.kind, type(exc).__name__, exc)
        log.debug("probe traceback", exc_info=True)
        return deadline_result(spec, wall, time.monotonic() - t0, "internal",
                               f"probe raised {type(exc).__name__}")


@dataclasses.dataclass
class TargetLoopState:
    """Live state of one target's loop (read by metrics and /api/targets).

    Attributes:
        spec: the target's spec.
        fraction: jitter fraction in [0, 1).
        interval: the interval currently in force, seconds.
        next_run: planned monotonic time of the next run (``None`` while running).
        running: a probe is in flight (or waiting for a concurrency slot).
        runs: probes completed by this loop.
        overruns: probes (or slot waits) that outlasted the next planned slot.
        skipped_slots: planned slots skipped because of overruns.
        last_result: the last result, if any.
        last_lag: lag of the last run, seconds.
    """

    spec: TargetSpec
    fraction: float
    interval: float
    next_run: float | None = None
    running: bool = False
    runs: int = 0
    overruns: int = 0
    skipped_slots: int = 0
    last_result: ProbeResult | None = None
    last_lag: float = 0.0
    last_overrun_log: float = float("-inf")


class Scheduler:
    """Runs every target's probe loop.

    Args:
        agent_id: the agent id (input of the jitter hash).
        probe_for: ``probe_for(spec) -> ProbeFn`` — the probe coroutine function of the spec's kind.
        context: ``() -> ProbeContext`` read before every probe (so a reload can change it).
        max_concurrency: probes running at once across all targets (>= 1).
        startup_spread: seconds over which the first probes after a start are spread
            (``None``: each target's interval).
        interval_for: optional override, ``interval_for(target_id) -> seconds | None``.
        on_lag: optional ``on_lag(target_id, seconds)`` for every run.
        on_overrun: optional ``on_overrun(target_id, skipped_slots)``.
        clock: monotonic clock (tests may inject one).
    """

    def __init__(
        self,
        agent_id: str,
        probe_for: Callable[[TargetSpec], ProbeFn],
        context: Callable[[], ProbeContext],
        max_concurrency: int = 8,
        startup_spread: float | None = None,
        interval_for: Callable[[str], float | None] | None = None,
        on_lag: Callable[[str, float], None] | None = None,
        on_overrun: Callable[[str, int], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be >= 1")
        self.agent_id = agent_id
        self.probe_for = probe_for
        self.context = context
        self.startup_spread = startup_spread
        self.interval_for = interval_for
        self.on_lag = on_lag
        self.on_overrun = on_overrun
        self.clock = clock
        self.listeners: list[Listener] = []
        self.states: dict[str, TargetLoopState] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._sem = asyncio.Semaphore(max_concurrency)
        self.max_concurrency = max_concurrency
        self.in_flight = 0
        self.max_in_flight_seen = 0

    # -- configuration ---------------------------------------------------------------------
    def set_max_concurrency(self, n: int) -> None:
        """Use a new bound for probes started from now on (running ones keep their slot)."""
        if n != self.max_concurrency:
            self._sem = asyncio.Semaphore(n)
            self.max_concurrency = n

    def add_listener(self, listener: Listener) -> None:
        """Add ``async listener(result)``, called after every probe in registration order."""
        self.listeners.append(listener)

    @property
    def target_ids(self) -> list[str]:
        return list(self._tasks)

    async def start(self, specs: list[TargetSpec]) -> None:
        """Start one loop per spec (must be called from the running event loop)."""
        for spec in specs:
            self._start_one(spec)

    def _start_one(self, spec: TargetSpec) -> None:
        state = TargetLoopState(spec=spec, fraction=jitter_fraction(self.agent_id, spec.id),
                                interval=spec.interval)
        self.states[spec.id] = state
        self._tasks[spec.id] = asyncio.create_task(self._loop(state), name=f"probe-loop:{spec.id}")

    async def _stop_one(self, target_id: str) -> None:
        task = self._tasks.pop(target_id, None)
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        self.states.pop(target_id, None)

    async def update(self, specs: list[TargetSpec], agent_id: str | None = None
                     ) -> tuple[list[str], list[str], list[str]]:
        """Apply a new target list: stop removed loops, restart changed ones, start new ones.

        A target whose :class:`TargetSpec` is equal to the running one keeps its loop (and its
        place on the grid).  If ``agent_id`` changes, every loop restarts (new jitter).

        Returns:
            ``(added, removed, changed)`` target ids.
        """
        restart_all = agent_id is not None and agent_id != self.agent_id
        if agent_id is not None:
            self.agent_id = agent_id
        new = {s.id: s for s in specs}
        removed = [t for t in self._tasks if t not in new]
        added = [t for t in new if t not in self._tasks]
        changed = [t for t in new if t in self._tasks and (restart_all or self.states[t].spec != new[t])]
        for t in removed + changed:
            await self._stop_one(t)
        for t in changed + added:
            self._start_one(new[t])
        return added, removed, changed

    async def stop(self) -> None:
        """Cancel every loop and wait until each has finished (in-flight probes are cancelled)."""
        for t in list(self._tasks):
            await self._stop_one(t)

    # -- the loop --------------------------------------------------------------------------
    def _current_interval(self, spec: TargetSpec) -> float:
        if self.interval_for is not None:
            try:
                value = self.interval_for(spec.id)
            except Exception:  # noqa: BLE001
                log.exception("interval_for(%s) failed; using the configured interval", spec.id)
                value = None
            if value is not None and value > 0:
                return float(value)
        return spec.interval

    async def _loop(self, st: TargetLoopState) -> None:
        spec = st.spec
        start = self.clock()
        spread = min(self.startup_spread or spec.interval, spec.interval)
        base_anchor = start + st.fraction * spec.interval  # the target's normal grid
        anchor, interval = base_anchor, spec.interval
        planned = start + st.fraction * spread  # first run: staggered
        while True:
            st.next_run = planned
            delay = planned - self.clock()
            if delay > 0:
                await asyncio.sleep(delay)
            st.running = True
            sem = self._sem
            try:
                async with sem:
                    actual = self.clock()
                    lag = max(0.0, actual - planned)
                    st.last_lag = lag
                    if self.on_lag is not None:
                        self.on_lag(spec.id, lag)
                    self.in_flight += 1
                    self.max_in_flight_seen = max(self.max_in_flight_seen, self.in_flight)
                    try:
                        result = await run_probe(self.probe_for(spec), spec, self.context())
                    finally:
                        self.in_flight -= 1
            finally:
                st.running = False
            st.runs += 1
            st.last_result = result
            for listener in list(self.listeners):
                try:
                    await listener(result)
                except asyncio.CancelledError:
                    raise
                except Exception:  # noqa: BLE001 - one broken listener must not stop probing
                    log.exception("result listener %r failed for %s", listener, spec.id)

            # -- plan the next run on the grid ---------------------------------------------
            new_interval = self._current_interval(spec)
            if new_interval != interval:
                if new_interval == spec.interval:
                    anchor = base_anchor  # back on the normal, jittered grid
                else:
                    anchor = planned  # re-anchor the override grid at the last planned run
                interval = new_interval
                st.interval = interval
            # at least half an interval after this run (the first, staggered run may be off-grid)
            nxt, _ = next_slot(anchor, interval, planned + interval * 0.5)
            now = self.clock()
            if nxt < now:
                after_now, _ = next_slot(anchor, interval, now)
                skipped = max(1, round((after_now - nxt) / interval))
                st.overruns += 1
                st.skipped_slots += skipped
                if self.on_overrun is not None:
                    self.on_overrun(spec.id, skipped)
                if now - st.last_overrun_log >= OVERRUN_LOG_EVERY:  # one line, not one per probe
                    st.last_overrun_log = now
                    log.warning("target %s: probe overran its interval (%.2fs), skipping %d slot(s) "
                                "(%d overrun(s) so far)", spec.id, interval, skipped, st.overruns)
                nxt = after_now
            planned = nxt
