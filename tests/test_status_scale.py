"""The status page stays fast with 50 targets and 35 days of history.

The history database is filled with one result per target per interval (60 s) for 35 days —
50 × 35 × 1440 = 2 520 000 rows — then a real agent runtime serves ``/status`` and
``/api/status`` from it.  The test asserts that the page renders (every target, 96 timeline
cells each, the right states) and that the queries use the ``(target, started_at)`` index; the
timings are printed (``pytest -s``), not asserted (2 shared cores).
"""

from __future__ import annotations

import json
import random
import sqlite3
import time
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from agent.config import load_config
from agent.runtime import AgentRuntime
from agent.status import HistoryReader
from agent.store import HistoryDB
from test_status import free_port

TARGETS = 50
DAYS = 35
INTERVAL = 60.0


def fill_history(path: Path, now: float) -> int:
    """Insert DAYS of results for TARGETS targets (a few failures and slow results, and
    target-07 down for the last hour). Returns the number of rows."""
    HistoryDB(path).close()  # schema, WAL
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous=OFF")
    rng = random.Random(26068)
    start = now - DAYS * 86400 + 300
    steps = int((now - start) // INTERVAL)

    def rows():  # noqa: ANN202
        for i in range(TARGETS):
            tid = f"target-{i:02d}"
            offset = rng.uniform(0, INTERVAL)
            for k in range(steps):
                at = start + k * INTERVAL + offset
                if at >= now:
                    break
                if tid == "target-07" and at > now - 3600:
                    outcome, reason = "error", "http_status"
                else:
                    x = rng.random()
                    outcome, reason = ("hang", "timeout_first_byte") if x < 0.002 else \
                        ("error", "http_status") if x < 0.005 else ("slow", "slow") if x < 0.02 else ("ok", "ok")
                yield (tid, "http", at, 0.12, outcome, reason, "", "{}", "{}")

    conn.execute("BEGIN")
    conn.executemany("INSERT INTO results (target, kind, started_at, duration, outcome, reason, detail, phases, facts)"
                     " VALUES (?,?,?,?,?,?,?,?,?)", rows())
    conn.execute("COMMIT")
    n = conn.execute("SELECT count(*) FROM results").fetchone()[0]
    conn.close()
    return n


async def test_status_page_with_50_targets_and_35_days(tmp_path: Path) -> None:
    # a target server that answers ok, so the runtime's own probes (if any run) are ok
    async def ok(_request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/{x}", ok)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    srv_port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    now = time.time()
    t0 = time.perf_counter()
    rows = fill_history(data_dir / "history.db", now)
    fill_seconds = time.perf_counter() - t0
    assert rows >= TARGETS * (DAYS * 1440 - 10)

    port = free_port()
    targets = "\n".join(
        f"  - {{id: target-{i:02d}, name: \"Hệ thống số {i}\", system: s{i % 5}, "
        f"http: {{url: \"http://127.0.0.1:{srv_port}/t{i}\"}}}}" for i in range(TARGETS))
    systems = "\n".join(f"  - {{id: s{k}, name: \"Hệ thống nhóm {k}\"}}" for k in range(5))
    config_path = tmp_path / "agent.yaml"
    config_path.write_text(f"""
agent:
  id: hcc-26068
  commune: {{code: "26068", name: "Phường Biên Hòa", type: phuong}}
  listen: 127.0.0.1:{port}
  data_dir: {data_dir}
  retention: 36d
  startup_spread: 60s
defaults: {{interval: 60s, timeout: 5s, slow_after: 2s}}
alerting: {{enabled: false}}
systems:
{systems}
targets:
{targets}
""", encoding="utf-8")
    rt = AgentRuntime(str(config_path), config=load_config(config_path), process_metrics=False)
    await rt.start()
    try:
        async with aiohttp.ClientSession() as session:
            timings = []
            for _ in range(3):
                t = time.perf_counter()
                async with session.get(f"http://127.0.0.1:{port}/status") as resp:
                    html = await resp.text()
                    assert resp.status == 200
                timings.append(time.perf_counter() - t)
            t = time.perf_counter()
            async with session.get(f"http://127.0.0.1:{port}/api/status") as resp:
                data = json.loads(await resp.text())
            api_seconds = time.perf_counter() - t
        assert len(data["targets"]) == TARGETS
        assert all(len(t["timeline"]) == 96 for t in data["targets"])
        by_id = {t["id"]: t for t in data["targets"]}
        assert by_id["target-07"]["state"] == "down"
        assert by_id["target-07"]["timeline"][-1]["outcome"] == "error"
        assert by_id["target-07"]["since"] == pytest.approx(now - 3600, abs=INTERVAL + 5)
        assert by_id["target-01"]["last"] is not None
        assert by_id["target-01"]["availability_24h"] > 0.9
        assert html.count('class="target ') == TARGETS
        assert html.count('class="cell o-') >= TARGETS * 96
        plan = HistoryReader(data_dir / "history.db").plan()
        assert "results_target_time" in plan, plan
        print(f"\n[status page benchmark] {rows} rows ({TARGETS} targets x {DAYS} days at {INTERVAL:g}s) "
              f"filled in {fill_seconds:.1f}s; GET /status {', '.join(f'{x * 1000:.0f}' for x in timings)} ms "
              f"({len(html) // 1024} KiB); GET /api/status {api_seconds * 1000:.0f} ms; plan: {plan}")
    finally:
        await rt.stop()
        await runner.cleanup()
