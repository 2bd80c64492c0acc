"""Scheduler: deterministic spread jitter, no drift, one probe per target, global bound, overruns,
staggered start, interval override, last-resort deadline.  Fake probes (asyncio.sleep) keep the
timing in the test's hands; margins are generous (2 shared cores)."""

from __future__ import annotations

import asyncio
import collections
import os
import subprocess
import sys
import time

import pytest

from agent.scheduler import Scheduler, jitter_fraction, jitter_offset, next_slot
from probes.base import Outcome, ProbeContext, ProbeResult, TargetSpec

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def spec(tid: str, interval: float = 60.0, timeout: float = 5.0) -> TargetSpec:
    return TargetSpec(id=tid, kind="fake", timeout=timeout, slow_after=timeout / 2, options=None,
                      interval=interval)


def ok(s: TargetSpec, started: float) -> ProbeResult:
    return ProbeResult(target=s.id, kind=s.kind, outcome=Outcome.OK, reason="ok", detail="fake",
                       started_at=started, duration_seconds=0.0)


class Recorder:
    """A fake probe: records start/end times and concurrency, sleeps ``work`` seconds."""

    def __init__(self, work: float | dict[str, float] = 0.0):
        self.work = work
        self.starts: dict[str, list[float]] = collections.defaultdict(list)
        self.running: collections.Counter[str] = collections.Counter()
        self.max_per_target: collections.Counter[str] = collections.Counter()
        self.global_running = 0
        self.max_global = 0

    async def __call__(self, s: TargetSpec, ctx: ProbeContext) -> ProbeResult:
        self.starts[s.id].append(time.monotonic())
        self.running[s.id] += 1
        self.max_per_target[s.id] = max(self.max_per_target[s.id], self.running[s.id])
        self.global_running += 1
        self.max_global = max(self.max_global, self.global_running)
        try:
            work = self.work[s.id] if isinstance(self.work, dict) else self.work
            await asyncio.sleep(work)
            return ok(s, time.time())
        finally:
            self.running[s.id] -= 1
            self.global_running -= 1


def make(rec, agent_id="hcc-26068", **kw) -> Scheduler:
    return Scheduler(agent_id, probe_for=lambda s: rec, context=ProbeContext, **kw)


# -- jitter -------------------------------------------------------------------------------------
def test_jitter_is_deterministic_across_processes():
    values = [jitter_offset("hcc-26068", "motcua-home", 60.0), jitter_offset("hcc-26068", "dvcqg-home", 60.0)]
    code = ("from agent.scheduler import jitter_offset;"
            "print(repr(jitter_offset('hcc-26068','motcua-home',60.0)), repr(jitter_offset('hcc-26068','dvcqg-home',60.0)))")
    for seed in ("1", "2"):
        out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                             env={**os.environ, "PYTHONHASHSEED": seed}).stdout.split()
        assert [float(v) for v in out] == values
    assert values[0] != values[1]
    assert all(0 <= v < 60 for v in values)


def test_95_agents_spread_over_the_interval():
    """95 commune agents probing the same provincial target: no second of a 60 s interval gets
    more than a few of them (uniform would be ~1.6 per second)."""
    offsets = [jitter_offset(f"hcc-{26000 + 3 * i:05d}", "motcua-home", 60.0) for i in range(95)]
    per_second = collections.Counter(int(o) for o in offsets)
    assert max(per_second.values()) <= 6, per_second.most_common(3)
    assert len(per_second) >= 40  # covers most of the interval
    # the same for one agent's targets
    fr = [jitter_fraction("hcc-26068", f"t{i}") for i in range(200)]
    assert max(collections.Counter(int(f * 10) for f in fr).values()) <= 35


def test_next_slot():
    assert next_slot(10.0, 2.0, 10.0) == (12.0, 1)
    assert next_slot(10.0, 2.0, 11.9) == (12.0, 1)
    assert next_slot(10.0, 2.0, 15.0) == (16.0, 3)
    assert next_slot(10.0, 2.0, 5.0) == (6.0, -2)


# -- timing -------------------------------------------------------------------------------------
async def test_no_drift_over_many_runs():
    """Interval 0.2 s with 40 ms of work per probe: a sleep(interval)-after-work loop would be
    ~1.2 s late after 30 runs; ours stays on anchor + k * interval."""
    rec = Recorder(work=0.04)
    sched = make(rec, startup_spread=0.01)
    await sched.start([spec("a", interval=0.2, timeout=0.15)])
    while len(rec.starts["a"]) < 31:
        await asyncio.sleep(0.05)
    await sched.stop()
    starts = rec.starts["a"]
    first = starts[0]
    # after the (staggered) first run, the grid is anchor + k*interval; measure from run 1
    base = starts[1]
    errors = [t - (base + k * 0.2) for k, t in enumerate(starts[1:31])]
    assert max(abs(e) for e in errors) < 0.15, errors
    early = sum(errors[:10]) / 10
    late = sum(errors[-10:]) / 10
    assert late - early < 0.05, (early, late)
    assert starts[30] - first < 0.2 * 30 + 0.3
    assert sched.states.get("a") is None  # stopped


async def test_one_probe_per_target_and_overruns_are_skipped_not_piled_up():
    rec = Recorder(work=0.5)  # each probe outlasts its 0.2 s interval
    overruns: list[tuple[str, int]] = []
    sched = make(rec, startup_spread=0.01, on_overrun=lambda t, n: overruns.append((t, n)))
    await sched.start([spec("slowpoke", interval=0.2, timeout=1.0)])
    await asyncio.sleep(2.2)
    st = sched.states["slowpoke"]
    await sched.stop()
    assert rec.max_per_target["slowpoke"] == 1
    runs = len(rec.starts["slowpoke"])
    assert 3 <= runs <= 5, runs  # ~every 0.6 s (next free slot), not every 0.2 s
    assert st.overruns >= 2 and st.skipped_slots >= 2 * st.overruns
    assert overruns and all(n >= 2 for _, n in overruns)
    gaps = [b - a for a, b in zip(rec.starts["slowpoke"], rec.starts["slowpoke"][1:])]
    assert all(g >= 0.5 for g in gaps), gaps


async def test_global_concurrency_bound_and_lag_measured():
    rec = Recorder(work=0.3)
    lags: list[float] = []
    sched = make(rec, max_concurrency=3, startup_spread=0.05, on_lag=lambda t, s: lags.append(s))
    await sched.start([spec(f"t{i}", interval=5.0, timeout=1.0) for i in range(10)])
    while sum(len(v) for v in rec.starts.values()) < 10:
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.4)
    await sched.stop()
    assert rec.max_global == 3
    assert sched.max_in_flight_seen == 3
    assert len(lags) >= 10
    assert max(lags) >= 0.5  # 10 probes of 0.3 s through 3 slots: the last waited ~0.9 s


async def test_staggered_start_follows_the_jitter():
    rec = Recorder()
    sched = make(rec, startup_spread=2.0)
    t0 = time.monotonic()
    ids = [f"target-{i}" for i in range(20)]
    await sched.start([spec(t, interval=30.0) for t in ids])
    await asyncio.sleep(2.5)
    await sched.stop()
    firsts = {t: rec.starts[t][0] - t0 for t in ids}
    assert all(len(rec.starts[t]) == 1 for t in ids)  # next runs are ~30 s later
    assert max(firsts.values()) < 2.3
    assert max(firsts.values()) - min(firsts.values()) > 1.0  # spread, not a stampede
    for t in ids:  # each at fraction * spread
        assert abs(firsts[t] - jitter_fraction("hcc-26068", t) * 2.0) < 0.3


async def test_default_startup_spread_is_the_interval():
    rec = Recorder()
    sched = make(rec)
    t0 = time.monotonic()
    await sched.start([spec("x", interval=1.0)])
    while not rec.starts["x"]:
        await asyncio.sleep(0.01)
    await sched.stop()
    assert abs(rec.starts["x"][0] - t0 - jitter_fraction("hcc-26068", "x")) < 0.3


async def test_interval_override_and_back():
    rec = Recorder()
    fast = {"on": True}
    sched = make(rec, startup_spread=0.01, interval_for=lambda t: 0.1 if fast["on"] else None)
    await sched.start([spec("r", interval=2.0)])
    await asyncio.sleep(1.05)
    n_fast = len(rec.starts["r"])
    fast["on"] = False
    await asyncio.sleep(1.0)
    n_after = len(rec.starts["r"])
    await sched.stop()
    assert n_fast >= 6, n_fast  # retry interval 0.1 s instead of 2 s
    assert n_after - n_fast <= 2


# -- failures -----------------------------------------------------------------------------------
async def test_last_resort_deadline_and_internal_error():
    async def hangs(s, ctx):
        await asyncio.sleep(3600)

    async def raises(s, ctx):
        raise RuntimeError("bug")

    results: list[ProbeResult] = []

    async def listener(r: ProbeResult) -> None:
        results.append(r)

    async def broken_listener(r: ProbeResult) -> None:
        raise ValueError("listener bug")

    sched = Scheduler("a", probe_for=lambda s: hangs if s.id == "h" else raises, context=ProbeContext,
                      startup_spread=0.01)
    sched.add_listener(broken_listener)
    sched.add_listener(listener)
    await sched.start([spec("h", interval=10.0, timeout=0.2), spec("e", interval=0.3, timeout=0.2)])
    t0 = time.monotonic()
    while not any(r.target == "h" for r in results):
        await asyncio.sleep(0.05)
        assert time.monotonic() - t0 < 6
    await asyncio.sleep(0.4)
    await sched.stop()
    h = next(r for r in results if r.target == "h")
    assert h.outcome is Outcome.HANG and h.reason == "timeout_total"
    assert 2.1 <= h.duration_seconds < 4
    errors = [r for r in results if r.target == "e"]
    assert len(errors) >= 2  # the broken listener did not stop the loop
    assert all(r.reason == "internal" and r.outcome is Outcome.ERROR for r in errors)


async def test_update_keeps_unchanged_restarts_changed_stops_removed():
    rec = Recorder()
    sched = make(rec, startup_spread=0.01)
    await sched.start([spec("keep", 0.2), spec("change", 0.2), spec("drop", 0.2)])
    await asyncio.sleep(0.5)
    keep_state = sched.states["keep"]
    added, removed, changed = await sched.update([spec("keep", 0.2), spec("change", 0.3), spec("new", 0.2)])
    assert (added, removed, changed) == (["new"], ["drop"], ["change"])
    assert sched.states["keep"] is keep_state
    n_drop = len(rec.starts["drop"])
    await asyncio.sleep(0.6)
    assert len(rec.starts["drop"]) == n_drop
    assert rec.starts["new"]
    await sched.stop()
    assert not sched.target_ids


@pytest.mark.parametrize("n", [0])
def test_bad_concurrency(n):
    with pytest.raises(ValueError):
        Scheduler("a", probe_for=lambda s: None, context=ProbeContext, max_concurrency=n)
