"""CPU seconds per HTTP probe and resident memory: hcc-sentinel agent vs blackbox_exporter.

Not a test: a measurement to report.  Everything runs on 127.0.0.1.

Setup
    * one local HTTP target: the simulated portal home page of :mod:`agent.demo_app` (about
      500 bytes of HTML), served from a thread of this process;
    * Debian's ``/usr/bin/prometheus-blackbox-exporter`` with module ``http_2xx`` (prober http,
      IPv4) on a free port; the load generator (this process) sends
      ``GET /probe?target=<url>&module=http_2xx`` N times, one after another;
    * our agent, ``hcc-sentinel run`` in a child process, in two variants: 50 targets (all the
      same URL, 1 s interval: 50 probes/s) and 1 target (50 ms interval: 20 probes/s), running
      until it has completed N probes (counted in its SQLite history from this process, so that
      counting costs the agent nothing; /metrics is not scraped during the window).
      The agent's numbers include everything it does per probe: scheduling, the probe, metrics,
      the SQLite history write.

Both probers open a fresh connection per probe (blackbox_exporter disables keep-alive; our http
probe uses a new connector with ``force_close``).

CPU is ``psutil.Process(pid).cpu_times()`` (user + system) of the server process only, taken
over the measurement window (after warm-up), so the load generator's and the target's own CPU
(this process) are not counted.  Memory at the end of the window: RSS (``memory_info().rss``,
includes the pages of shared libraries — libpython, libcrypto, pydantic-core — that other
processes map too) and USS (``memory_full_info().uss``, the pages only this process holds: what
stopping it would give back).

The agent runs from bytecode, as an installed package does: a first, unmeasured run fills a
private ``PYTHONPYCACHEPREFIX`` (nothing is written into the source tree) with every module it
imports.  The extra variant "no .pyc" runs it the way a source checkout with
``PYTHONDONTWRITEBYTECODE=1`` does: the project's own modules compiled at every start (the
compiler's garbage leaves about 1.5 MiB more resident).

Usage::

    python3 benchmarks/bench_probe_cpu.py [--probes 1000] [--bbe /usr/bin/prometheus-blackbox-exporter]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent.demo_app import ThreadedServer  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return t.user + t.system


def wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                resp.read()
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not answer within {timeout:g}s")


def bench_bbe(binary: str, target_url: str, n: int, tmp: Path, rate: float | None = None) -> dict[str, float]:
    """N probes through blackbox_exporter's /probe, back to back (``rate=None``) or paced at
    ``rate`` probes per second (the agent's pace)."""
    port = free_port()
    config = tmp / "blackbox.yml"
    config.write_text("modules:\n  http_2xx:\n    prober: http\n    timeout: 5s\n"
                      "    http:\n      preferred_ip_protocol: ip4\n", encoding="utf-8")
    proc = subprocess.Popen([binary, f"--config.file={config}", f"--web.listen-address=127.0.0.1:{port}",
                             "--log.level=warn"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        ps = psutil.Process(proc.pid)
        probe_url = f"http://127.0.0.1:{port}/probe?module=http_2xx&target={urllib.request.quote(target_url, safe='')}"
        wait_http(f"http://127.0.0.1:{port}/metrics")
        for _ in range(50):  # warm-up
            urllib.request.urlopen(probe_url, timeout=10).read()
        c0, t0 = cpu_seconds(ps), time.monotonic()
        ok = 0
        for i in range(n):
            if rate:
                delay = t0 + i / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            body = urllib.request.urlopen(probe_url, timeout=10).read()
            ok += b"probe_success 1" in body
        cpu, wall = cpu_seconds(ps) - c0, time.monotonic() - t0
        mem = ps.memory_full_info()
    finally:
        proc.terminate()
        proc.wait(10)
    return {"probes": n, "ok": ok, "cpu": cpu, "wall": wall, "rss": mem.rss, "uss": mem.uss}


def agent_config(path: Path, data: Path, port: int, url: str, targets: int, interval: str, timeout: str,
                 slow_after: str, alerting: bool = True) -> None:
    lines = ["agent:", "  id: bench-agent", '  commune: {code: "26068", name: "Phường Biên Hòa", type: phuong}',
             f"  listen: 127.0.0.1:{port}", f"  data_dir: {data}", "  max_concurrency: 16",
             "  startup_spread: 1s",
             f"defaults: {{interval: {interval}, timeout: {timeout}, slow_after: {slow_after}}}",
             f"alerting: {{enabled: {'true' if alerting else 'false'}}}", "targets:"]
    for i in range(targets):
        lines += [f"  - id: t{i:02d}", f"    http: {{url: \"{url}\"}}"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def probes_done(db: Path) -> int:
    """Probes recorded in the agent's history database (read here, so the count costs the
    agent no CPU; the agent writes its batches every second, WAL lets us read meanwhile)."""
    if not db.exists():
        return 0
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return con.execute("SELECT count(*) FROM results").fetchone()[0]
    except sqlite3.OperationalError:  # table not created yet
        return 0
    finally:
        con.close()


def agent_env(tmp: Path, bytecode: bool) -> dict[str, str]:
    """Environment of the agent child.  With ``bytecode`` the bytecode cache is
    ``tmp/pycache`` (``PYTHONPYCACHEPREFIX``; it holds the bytecode of every module, the
    standard library's and site-packages' too, so the first run with it compiles everything:
    :func:`main` makes that run an unmeasured warm-up).  Without, the project's modules are
    compiled from source at each start (``PYTHONDONTWRITEBYTECODE=1``; third-party modules still
    load their installed bytecode)."""
    env = dict(os.environ)
    if not bytecode:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        env.pop("PYTHONPYCACHEPREFIX", None)
        return env
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(tmp / "pycache")
    return env


def bench_agent(target_url: str, n: int, tmp: Path, targets: int, interval: str, timeout: str,
                slow_after: str, alerting: bool = True, bytecode: bool = True) -> dict[str, float]:
    """N probes through a running ``hcc-sentinel run`` (child process)."""
    port = free_port()
    work = Path(tempfile.mkdtemp(prefix=f"agent-{targets}-", dir=tmp))
    config = work / "agent.yaml"
    agent_config(config, work / "data", port, target_url, targets, interval, timeout, slow_after, alerting)
    proc = subprocess.Popen([sys.executable, "-m", "agent", "run", "-c", str(config), "--log-level", "warning"],
                            cwd=ROOT, env=agent_env(tmp, bytecode), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        ps = psutil.Process(proc.pid)
        db = work / "data" / "history.db"
        wait_http(f"http://127.0.0.1:{port}/healthz")
        while probes_done(db) < max(50, targets * 2):  # warm-up: every loop has run
            time.sleep(0.2)
        p0, c0, t0 = probes_done(db), cpu_seconds(ps), time.monotonic()
        while probes_done(db) - p0 < n:
            time.sleep(0.5)
        cpu, wall = cpu_seconds(ps) - c0, time.monotonic() - t0
        done = probes_done(db) - p0
        mem = ps.memory_full_info()
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=20)
        if proc.returncode not in (0, -15):
            print(err, file=sys.stderr)
    return {"probes": done, "cpu": cpu, "wall": wall, "rss": mem.rss, "uss": mem.uss}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--probes", type=int, default=1000, help="probes per variant (default 1000)")
    parser.add_argument("--bbe", default="/usr/bin/prometheus-blackbox-exporter")
    args = parser.parse_args()
    if not os.path.exists(args.bbe):
        print(f"{args.bbe} not found (apt-get install prometheus-blackbox-exporter)", file=sys.stderr)
        return 2
    server = ThreadedServer()
    port = server.start()
    url = f"http://127.0.0.1:{port}/"
    tmp = Path(tempfile.mkdtemp(prefix="hcc-bench-"))
    try:
        print(f"target {url}; {args.probes} probes per variant; {psutil.cpu_count()} CPUs", flush=True)
        rows: list[tuple[str, dict[str, float]]] = []

        def show(label: str, r: dict[str, float]) -> None:
            rows.append((label, r))
            print(f"{label:<46} {r['cpu'] / r['probes'] * 1000:7.3f} ms CPU/probe  ({r['cpu']:.2f}s CPU, "
                  f"{r['probes']:.0f} probes, {r['wall']:.1f}s)  RSS {r['rss'] / 2**20:.1f} MiB  "
                  f"USS {r['uss'] / 2**20:.1f} MiB", flush=True)

        show("blackbox_exporter, back to back", bench_bbe(args.bbe, url, args.probes, tmp))
        show("blackbox_exporter, paced 50/s", bench_bbe(args.bbe, url, args.probes, tmp, rate=50))
        show("blackbox_exporter, paced 20/s", bench_bbe(args.bbe, url, args.probes, tmp, rate=20))
        bench_agent(url, 100, tmp, 50, "1s", "900ms", "500ms")  # warm-up: fills the bytecode cache
        show("hcc-sentinel, 50 targets (50/s)", bench_agent(url, args.probes, tmp, 50, "1s", "900ms", "500ms"))
        show("hcc-sentinel, 50 targets (50/s), alerting off", bench_agent(url, args.probes, tmp, 50, "1s", "900ms",
                                                                   "500ms", alerting=False))
        show("hcc-sentinel, 1 target (20/s)", bench_agent(url, args.probes, tmp, 1, "50ms", "50ms", "40ms"))
        show("hcc-sentinel, 50 targets (50/s), no .pyc", bench_agent(url, args.probes, tmp, 50, "1s", "900ms",
                                                                  "500ms", bytecode=False))
        per = {label: r["cpu"] / r["probes"] for label, r in rows}
        print("ratio of CPU per probe, agent / blackbox_exporter at the same pace:")
        for label, value in per.items():
            if label.startswith("hcc-sentinel"):
                bbe = per["blackbox_exporter, paced 20/s" if "20/s" in label else "blackbox_exporter, paced 50/s"]
                print(f"  {label:<46} {value / bbe:.2f}")
        mem = {label: r for label, r in rows}
        bbe, a50 = mem["blackbox_exporter, paced 50/s"], mem["hcc-sentinel, 50 targets (50/s)"]
        print(f"memory: blackbox_exporter RSS {bbe['rss'] / 2**20:.1f} MiB (USS {bbe['uss'] / 2**20:.1f} MiB), "
              f"agent with 50 targets RSS {a50['rss'] / 2**20:.1f} MiB = {a50['rss'] / 1e6:.1f} MB "
              f"(USS {a50['uss'] / 2**20:.1f} MiB); goal RSS <= 60 MB: {'met' if a50['rss'] <= 60e6 else 'NOT met'}")
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
