"""Run Debian's ``promtool``/``prometheus`` on a synthetic month (tests, demos, trying the report).

:func:`build_tsdb` writes a :class:`agent.report.synthetic.Month` as OpenMetrics and backfills it
with ``promtool tsdb create-blocks-from openmetrics`` (two parts in parallel, one block per part
thanks to ``--max-block-duration``: promtool re-reads its whole input once per block window,
so 2 h blocks over a month would mean hundreds of passes).  :class:`PrometheusServer` starts
``prometheus`` on that directory on 127.0.0.1 with a long retention and no scrape jobs.

Sources: Prometheus docs, "Storage — Backfilling from OpenMetrics format" (``# EOF`` required,
timestamps in seconds, ``--max-block-duration``).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from agent.report.synthetic import Month, write_openmetrics_file


class PromToolError(RuntimeError):
    """``promtool`` or ``prometheus`` failed; the message carries its output."""


def _part(month: Month, part: str, work: str, promtool: str, out_dir: str) -> None:
    src = os.path.join(work, f"{part}.om")
    write_openmetrics_file(month, src, part)
    proc = subprocess.run([promtool, "tsdb", "create-blocks-from", "openmetrics", "--max-block-duration=8760h",
                           src, out_dir], capture_output=True, text=True)
    os.unlink(src)
    if proc.returncode != 0:
        raise PromToolError(f"promtool failed ({proc.returncode}): {proc.stderr[-2000:]}")


def _part_proc(month: Month, part: str, work: str, promtool: str, out_dir: str, q: Any) -> None:
    try:
        _part(month, part, work, promtool, out_dir)
        q.put((part, None))
    except BaseException as exc:  # reported to the parent
        q.put((part, repr(exc)))


def build_tsdb(month: Month, data_dir: str | os.PathLike[str], promtool: str = "promtool",
               parallel: bool = True) -> dict[str, float]:
    """Backfill ``month`` into the Prometheus data directory ``data_dir`` (created).

    Args:
        month: the synthetic month.
        data_dir: becomes ``--storage.tsdb.path`` of :class:`PrometheusServer`.
        promtool: the ``promtool`` executable.
        parallel: build the two parts in two processes (two cores halve the time).

    Returns:
        ``{"seconds": wall time}``.

    Raises:
        PromToolError: promtool failed.
    """
    t0 = time.monotonic()
    data = Path(data_dir)
    data.mkdir(parents=True, exist_ok=True)
    work = tempfile.mkdtemp(prefix="hcc-om-", dir=data.parent)
    try:
        parts = ("month", "recent")
        if parallel:
            ctx = multiprocessing.get_context("fork")
            q = ctx.Queue()
            procs = [ctx.Process(target=_part_proc, args=(month, p, work, promtool, str(data), q)) for p in parts]
            for p in procs:
                p.start()
            errors = [err for _, err in (q.get() for _ in procs) if err]
            for p in procs:
                p.join()
            if errors:
                raise PromToolError("; ".join(errors))
        else:
            for p in parts:
                _part(month, p, work, promtool, str(data))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {"seconds": time.monotonic() - t0}


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (racy by nature; good enough for tests)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrometheusServer:
    """``prometheus`` serving a TSDB directory on 127.0.0.1 (no scrape jobs).

    Args:
        data_dir: ``--storage.tsdb.path``.
        binary: the ``prometheus`` executable.
        rule_files: rule files to load (evaluated from start-up on only; history is not rewritten).
        lookback: ``--query.lookback-delta``.

    Use as a context manager; :attr:`url` is ``http://127.0.0.1:PORT``.

    Raises:
        PromToolError: prometheus did not become ready within 60 s (its log is in the message).
    """

    def __init__(self, data_dir: str | os.PathLike[str], binary: str = "prometheus",
                 rule_files: list[str] | None = None, lookback: str = "5m"):
        self.data_dir = Path(data_dir)
        self.binary = binary
        self.rule_files = rule_files or []
        self.lookback = lookback
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.data_dir.parent / f"prometheus-{self.port}.log"

    def start(self) -> "PrometheusServer":
        cfg = self.data_dir.parent / f"prometheus-{self.port}.yml"
        cfg.write_text(json.dumps({"global": {"scrape_interval": "1m", "evaluation_interval": "1m"},
                                   "rule_files": [str(Path(r).resolve()) for r in self.rule_files],
                                   "scrape_configs": []}))
        log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [self.binary, f"--config.file={cfg}", f"--storage.tsdb.path={self.data_dir}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--storage.tsdb.retention.time=3650d",
             f"--query.lookback-delta={self.lookback}", "--query.max-samples=200000000",
             "--query.timeout=5m", "--web.enable-lifecycle"],
            stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=2) as r:
                    if r.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.2)
        self.stop()
        raise PromToolError("prometheus did not become ready: " + self.log_path.read_text(errors="replace")[-3000:])

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __enter__(self) -> "PrometheusServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


_SHARED: dict[str, Any] = {}


def shared_month(prometheus: str = "prometheus", promtool: str = "promtool") -> tuple[Month, PrometheusServer]:
    """One synthetic month backfilled and served by Prometheus, built once per process (the
    dashboard and report tests share it); stopped and deleted at interpreter exit.

    Raises:
        PromToolError: promtool or prometheus failed.
    """
    if "server" not in _SHARED:
        import atexit

        tmp = tempfile.mkdtemp(prefix="hcc-month-")
        month = Month()
        t0 = time.monotonic()
        build_tsdb(month, os.path.join(tmp, "data"), promtool=promtool)
        server = PrometheusServer(os.path.join(tmp, "data"), binary=prometheus).start()
        _SHARED.update(month=month, server=server, tmp=tmp, seconds=time.monotonic() - t0)

        def cleanup() -> None:
            server.stop()
            shutil.rmtree(tmp, ignore_errors=True)

        atexit.register(cleanup)
    return _SHARED["month"], _SHARED["server"]


def shared_server(key: str, write: Any, prometheus: str = "prometheus",
                  promtool: str = "promtool") -> PrometheusServer:
    """A Prometheus serving a small backfilled data set, built once per process under ``key``
    (tests share it); stopped and deleted at interpreter exit.

    Args:
        key: cache key (one server per key).
        write: ``write(fh)`` writes the OpenMetrics text (ending in ``# EOF``), e.g.
            :meth:`agent.report.synthetic.Day.write_openmetrics`.

    Raises:
        PromToolError: promtool or prometheus failed.
    """
    servers = _SHARED.setdefault("small", {})
    if key not in servers:
        import atexit

        tmp = tempfile.mkdtemp(prefix="hcc-small-")
        src = os.path.join(tmp, "data.om")
        with open(src, "w", encoding="utf-8", buffering=1 << 20) as fh:
            write(fh)
        data = os.path.join(tmp, "data")
        proc = subprocess.run([promtool, "tsdb", "create-blocks-from", "openmetrics", "--max-block-duration=8760h",
                               src, data], capture_output=True, text=True)
        os.unlink(src)
        if proc.returncode != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            raise PromToolError(f"promtool failed ({proc.returncode}): {proc.stderr[-2000:]}")
        server = PrometheusServer(data, binary=prometheus).start()
        servers[key] = server

        def cleanup() -> None:
            server.stop()
            shutil.rmtree(tmp, ignore_errors=True)

        atexit.register(cleanup)
    return servers[key]
