"""``hcc-sentinel report sla``: the monthly uptime/SLA report.

Usage::

    hcc-sentinel report sla --from 2026-11-01 --to 2026-11-30 --prometheus http://prometheus:9090 \
        [-c configs/example.yaml] --out reports/2026-11 --format html,csv,json
    hcc-sentinel report sla --from 2026-11-01 --to 2026-11-30 --local -c /etc/hcc-sentinel/agent.yaml

``--from``/``--to`` are local dates (Asia/Ho_Chi_Minh), both included.  With ``--prometheus`` the
data come from the central Prometheus (every commune; ``-c`` optionally supplies the systems'
Vietnamese names and objectives); with ``--local`` from the agent's own history and alerts
database under the config's ``data_dir``.  The method is described in
:mod:`agent.report.accounting` and on the report's first page.

Exit codes: 0 written; 2 bad arguments or config, or ``--out`` cannot be used or written (one
line on stderr); 3 the data source failed (Prometheus unreachable or without data, history
missing).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import sys
from zoneinfo import ZoneInfo

LOCAL_TZ = ZoneInfo("Asia/Ho_Chi_Minh")


def period(date_from: str, date_to: str) -> tuple[int, int]:
    """``[start, end)`` Unix seconds of the local dates ``date_from`` .. ``date_to`` (inclusive).

    Raises:
        ValueError: a date is not ``YYYY-MM-DD`` or ``to`` is before ``from``.
    """
    try:
        a = dt.date.fromisoformat(date_from)
        b = dt.date.fromisoformat(date_to)
    except ValueError:
        raise ValueError("dates must be YYYY-MM-DD (local dates, e.g. 2026-11-01)") from None
    if b < a:
        raise ValueError("--to is before --from")
    start = dt.datetime(a.year, a.month, a.day, tzinfo=LOCAL_TZ)
    end = dt.datetime(b.year, b.month, b.day, tzinfo=LOCAL_TZ) + dt.timedelta(days=1)
    return int(start.timestamp()), int(end.timestamp())


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``report sla`` to the CLI."""
    report = subparsers.add_parser("report", help="monthly uptime/SLA report (HTML, CSV, JSON)",
                                   description="Reports computed from probe history.")
    sub = report.add_subparsers(dest="report_command", metavar="REPORT")
    sla = sub.add_parser(
        "sla", help="availability per system (quorum) and per commune, incidents, error budget",
        description="Uptime/SLA report for a period of local dates. Accounting method: see docs/sla.md.")
    sla.add_argument("--from", dest="date_from", required=True, metavar="DATE", help="first local date, YYYY-MM-DD")
    sla.add_argument("--to", dest="date_to", required=True, metavar="DATE", help="last local date (included)")
    src = sla.add_mutually_exclusive_group(required=True)
    src.add_argument("--prometheus", metavar="URL", help="central Prometheus base URL")
    src.add_argument("--local", action="store_true", help="the agent's own history (needs -c)")
    sla.add_argument("-c", "--config", metavar="FILE",
                     help="agent config: data_dir for --local; system names and objectives for both")
    sla.add_argument("--out", default=".", metavar="DIR", help="output directory (default: .)")
    sla.add_argument("--format", default="html,csv", metavar="LIST", help="comma list of html,csv,json")
    sla.add_argument("--quorum", type=float, default=0.5,
                     help="share of healthy-link communes that must fail for a system minute to be down (0.5)")
    sla.add_argument("--min-vantage", type=int, default=3, help="fewest healthy-link communes for a known minute")
    sla.add_argument("--carry-minutes", type=int, default=5, help="minutes a result is carried when no probe ran")
    sla.add_argument("--merge-gap", type=int, default=2, help="down runs this close are one incident (minutes)")
    sla.add_argument("--min-local-minutes", type=int, default=5, help="shortest local incident listed (minutes)")
    sla.add_argument("--timeout", type=float, default=300.0, help="seconds per Prometheus request")
    sla.set_defaults(func=run_sla)
    report.set_defaults(func=lambda _args: (report.print_help(), 2)[1])


def run_sla(args: argparse.Namespace) -> int:
    """Run ``report sla``; returns the exit code (see module docstring)."""
    from agent.report import accounting, render

    try:
        start, end = period(args.date_from, args.date_to)
        formats = tuple(f.strip() for f in args.format.split(",") if f.strip())
        bad = [f for f in formats if f not in render.FORMATS]
        if bad or not formats:
            raise ValueError(f"--format: unknown {', '.join(bad) or '(empty)'}; use html,csv,json")
        method = accounting.Method(quorum=args.quorum, min_vantage=args.min_vantage,
                                   carry_minutes=args.carry_minutes, merge_gap=args.merge_gap,
                                   min_local_minutes=args.min_local_minutes)
        render.prepare_out_dir(args.out)  # before the (possibly long) data fetch
    except (ValueError, OSError) as exc:
        print(f"hcc-sentinel report sla: {exc}", file=sys.stderr)
        return 2
    config = None
    if args.config:
        from agent.config import load_config
        from agent.yamlconf import ConfigError

        try:
            config = load_config(args.config)
        except ConfigError as exc:
            print(f"hcc-sentinel report sla: config error:\n{exc}", file=sys.stderr)
            return 2
        except OSError as exc:
            print(f"hcc-sentinel report sla: {exc}", file=sys.stderr)
            return 2
    if args.local and config is None:
        print("hcc-sentinel report sla: --local needs -c FILE (the agent config)", file=sys.stderr)
        return 2
    try:
        if args.local:
            from agent.report import localsource

            obs = localsource.load(config, start, end)
        else:
            from agent.report import localsource, promsource

            systems = localsource.systems_from_config(config) if config is not None else None
            obs = asyncio.run(promsource.fetch(args.prometheus, start, end, systems=systems, timeout=args.timeout,
                                               carry_minutes=args.carry_minutes))
    except Exception as exc:  # noqa: BLE001 - reported as one line, exit 3
        from agent.report.localsource import LocalSourceError
        from agent.report.promsource import PrometheusError

        if isinstance(exc, (LocalSourceError, PrometheusError)):
            print(f"hcc-sentinel report sla: {exc}", file=sys.stderr)
            return 3
        raise
    report = accounting.compute(obs, method)
    try:
        paths = render.write(report, args.out, formats)
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"hcc-sentinel report sla: cannot write the report: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
    for p in paths:
        print(p)
    return 0
