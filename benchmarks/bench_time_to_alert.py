"""Time to alert: from the moment a target starts failing to the webhook receiver getting the
message — real time, no scaling.

Each run is one independent agent pipeline in this process: the agent's real scheduler
(``agent.scheduler.Scheduler``, deterministic jitter, interval override) running the real ``http``
probe against a real HTTP server on 127.0.0.1, the real alerts engine (own SQLite database, timer
loop, outbox worker) and apprise posting ``json://`` to a real aiohttp webhook receiver on
127.0.0.1.  Runs execute concurrently (they are independent: separate engines, databases, target
paths and webhook paths), so N runs take about as long as one.

Per run:

1. warm-up (random 5–35 s, so the failure starts at a random phase of the 30 s schedule);
2. a **blip**: the target answers 503 to exactly one probe, then is fine again — this must
   alert nobody (checked for 40 s);
3. a random pause (0–30 s), then the target starts failing (HTTP 503) at ``T0`` and stays down;
   the latency is the webhook's arrival time minus ``T0``.

Defaults: interval 30 s, failure_threshold 3, retry_interval 5 s, group_wait 10 s (counted from
the first failed probe).  Expected: the first failed probe comes U(0, 30) s after T0 (the probe
schedule), two retries 5 s apart confirm it, the group is ready then (10 s after the first failure),
the timer tick (≤ 1 s) and apprise's POST add the rest: median ≈ 15 + 10 + ~1 s, max ≈ 41 s.

Usage::

    python3 benchmarks/bench_time_to_alert.py [--runs 24] [--interval 30] [--retry 5]
                                              [--threshold 3] [--group-wait 10]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiohttp import web  # noqa: E402

from agent.scheduler import Scheduler  # noqa: E402
from alerts.config import AlertingConfig  # noqa: E402
from alerts.engine import AlertEngine  # noqa: E402
from alerts.model import AlertTarget, Site  # noqa: E402
from probes import http as http_probe  # noqa: E402
from probes.base import ProbeContext, TargetSpec  # noqa: E402


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Servers:
    """Target server (per-path ok/error) and webhook receiver, both on 127.0.0.1."""

    def __init__(self) -> None:
        self.target_port, self.hook_port = free_port(), free_port()
        self.modes: dict[str, str] = {}
        self.hits: dict[str, int] = {}
        self.errors_served: dict[str, int] = {}
        self.error_times: dict[str, list[float]] = {}
        self.arrivals: dict[str, list[tuple[float, str]]] = {}
        self._runners: list[web.AppRunner] = []

    async def _target(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        self.hits[name] = self.hits.get(name, 0) + 1
        if self.modes.get(name) == "error":
            self.errors_served[name] = self.errors_served.get(name, 0) + 1
            self.error_times.setdefault(name, []).append(time.time())
            return web.Response(status=503, text="Hệ thống đang quá tải")
        return web.Response(text="Hệ thống một cửa — bình thường")

    async def _hook(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.arrivals.setdefault(request.match_info["name"], []).append((time.time(), body.get("title", "")))
        return web.Response(text="ok")

    async def start(self) -> None:
        for port, route, handler in ((self.target_port, "/{name}", self._target),
                                     (self.hook_port, "/hook/{name}", self._hook)):
            app = web.Application()
            app.router.add_route("*", route, handler)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", port).start()
            self._runners.append(runner)

    async def stop(self) -> None:
        for r in self._runners:
            await r.cleanup()


async def one_run(i: int, srv: Servers, args: argparse.Namespace, tmp: Path) -> dict:
    name = f"t{i}"
    srv.modes[name] = "ok"
    cfg = AlertingConfig.model_validate({
        "units": [{"id": "so-khcn", "name": "Sở Khoa học và Công nghệ",
                   "urls": [f"json://127.0.0.1:{srv.hook_port}/hook/{name}"]}],
        "route": {"units": ["so-khcn"]},
        "group_wait": args.group_wait,
        "outbox": {"retry_initial": 1, "retry_max": 5},
    })
    target = AlertTarget(id=name, name="Hệ thống một cửa tỉnh", system="motcua", system_name="Hệ thống một cửa",
                         owner="so-khcn", interval=args.interval, retry_interval=args.retry,
                         failure_threshold=args.threshold, success_threshold=2)
    site = Site(f"bench-{i}", "26068", "Phường Biên Hòa", "phuong")
    engine = AlertEngine(cfg, [target], site, tmp / f"{name}.db")
    opts = http_probe.Options(url=f"http://127.0.0.1:{srv.target_port}/{name}", first_byte_timeout=5)
    spec = TargetSpec(id=name, kind="http", timeout=5.0, slow_after=2.0, options=opts, interval=args.interval)
    sched = Scheduler(agent_id=f"bench-{i}", probe_for=lambda s: http_probe.probe,
                      context=lambda: ProbeContext(agent_id=f"bench-{i}"), interval_for=engine.interval_for)
    sched.add_listener(engine.observe)
    await engine.start()
    await sched.start([spec])
    rng = random.Random(i * 7919)
    out: dict = {"run": i}
    try:
        await asyncio.sleep(rng.uniform(5, args.interval + 5))
        # --- a blip: exactly one failed probe
        before = srv.errors_served.get(name, 0)
        srv.modes[name] = "error"
        while srv.errors_served.get(name, 0) == before:
            await asyncio.sleep(0.01)
        srv.modes[name] = "ok"
        await asyncio.sleep(40)
        out["blip_alerts"] = len(srv.arrivals.get(name, []))
        # --- a real outage, starting at a random phase
        await asyncio.sleep(rng.uniform(0, args.interval))
        t0 = time.time()
        srv.modes[name] = "error"
        deadline = t0 + args.interval * (args.threshold + 3) + 60
        while len(srv.arrivals.get(name, [])) <= out["blip_alerts"] and time.time() < deadline:
            await asyncio.sleep(0.05)
        arrivals = srv.arrivals.get(name, [])
        out["latency"] = arrivals[-1][0] - t0 if len(arrivals) > out["blip_alerts"] else None
        out["title"] = arrivals[-1][1] if arrivals else ""
        first = [t for t in srv.error_times.get(name, []) if t >= t0]
        out["first_fail"] = first[0] - t0 if first else None
    finally:
        srv.modes[name] = "ok"
        await sched.stop()
        await engine.stop()
    return out


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=24, help="concurrent runs (wall time ~2.5 min whatever N)")
    ap.add_argument("--interval", type=float, default=30.0, help="probe interval, s")
    ap.add_argument("--retry", type=float, default=5.0, help="retry_interval while failing, s")
    ap.add_argument("--threshold", type=int, default=3, help="failure_threshold")
    ap.add_argument("--group-wait", type=float, default=10.0, help="group_wait, s")
    args = ap.parse_args()
    print(f"time to alert, real time: {args.runs} concurrent runs; interval {args.interval:g} s, "
          f"failure_threshold {args.threshold}, retry_interval {args.retry:g} s, group_wait {args.group_wait:g} s")
    srv = Servers()
    await srv.start()
    started = time.monotonic()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            results = await asyncio.gather(*(one_run(i, srv, args, Path(tmp)) for i in range(args.runs)))
    finally:
        await srv.stop()
    lat = [r["latency"] for r in results if r.get("latency") is not None]
    for r in results:
        shown = f"{r['latency']:.1f} s" if r.get("latency") is not None else "NO ALERT"
        phase = (f"first failed probe +{r['first_fail']:.1f} s, then +{r['latency'] - r['first_fail']:.1f} s to the webhook"
                 if r.get("latency") is not None and r.get("first_fail") is not None else "")
        print(f"  run {r['run']:2d}: {shown}  {phase}  (alerts after the blip: {r['blip_alerts']})")
    blips = len(results)
    blip_alerts = sum(r["blip_alerts"] for r in results)
    print(f"blips: {blips} -> alerts: {blip_alerts}")
    if lat:
        print(f"time to alert: median {statistics.median(lat):.1f} s, max {max(lat):.1f} s, "
              f"min {min(lat):.1f} s over {len(lat)} runs (wall time {time.monotonic() - started:.0f} s)")
    pipe = [r["latency"] - r["first_fail"] for r in results
            if r.get("latency") is not None and r.get("first_fail") is not None]
    if pipe:
        print(f"first failed probe -> webhook (thresholds + group + delivery): median {statistics.median(pipe):.2f} s, "
              f"max {max(pipe):.2f} s; the rest is the wait for the next scheduled probe (0..interval)")
    missing = blips - len(lat)
    if missing:
        print(f"{missing} run(s) got no alert")
    return 0 if (blip_alerts == 0 and not missing) else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
