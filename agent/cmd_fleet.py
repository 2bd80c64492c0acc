"""Central sub-commands: ``fleet render`` and ``relay``.

``hcc-sentinel fleet render --inventory configs/communes.csv --template configs/fleet/agent.template.yaml
[--overrides configs/fleet/overrides.yaml] [--central configs/fleet/central.yaml] --out DIR``
renders one agent config per commune plus the Prometheus file_sd targets, the generated rule
constants, the Alertmanager config and the relay config (see :mod:`agent.fleet`).

``hcc-sentinel relay --config DIR/relay/relay.yaml`` serves the Alertmanager webhook
(see :mod:`agent.relay`).

Exit codes: 0 success; 1 rendering refused (problems on stderr, nothing written); 2 bad usage
or config, or ``--out`` cannot be written (one line on stderr); 4 listen address unusable.
"""

from __future__ import annotations

import argparse
import os
import sys


def _out_problem(out: str, exc: OSError | None = None) -> str:
    """One line for an unusable ``--out``: ``fleet render: cannot write under OUT: why (path)``."""
    if exc is None:
        return f"fleet render: cannot write under {out}: it is not a directory"
    where = f" ({exc.filename})" if exc.filename and str(exc.filename) != out else ""
    return f"fleet render: cannot write under {out}: {exc.strerror or exc}{where}"


def cmd_render(args: argparse.Namespace) -> int:
    from agent.fleet import FleetError, render_fleet, summary

    if not args.check and os.path.exists(args.out) and not os.path.isdir(args.out):
        print(_out_problem(args.out), file=sys.stderr)  # before the (slow) render
        return 2
    try:
        render = render_fleet(args.inventory, args.template, args.overrides, args.central, edition=args.edition,
                              agent_files=not args.central_only)
    except FleetError as exc:
        print(f"fleet render refused ({len(exc.problems)} problem{'s' if len(exc.problems) != 1 else ''}):",
              file=sys.stderr)
        for p in exc.problems:
            print(f"  {p}", file=sys.stderr)
        return 1
    if args.check:
        print(f"OK: {summary(render)} (nothing written: --check)")
        return 0
    try:
        written = render.write(args.out)
    except OSError as exc:
        print(_out_problem(args.out, exc), file=sys.stderr)
        return 2
    print(f"OK: {summary(render)} written under {args.out}")
    if args.verbose:
        for path in written:
            print(f"  {path}")
    return 0


def cmd_relay(args: argparse.Namespace) -> int:
    from agent.cmd_core import setup_logging
    from agent.relay import run

    setup_logging(args.log_level)
    return run(args.config, args.listen)


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``fleet`` (with ``render``) and ``relay`` to the ``hcc-sentinel`` parser."""
    fleet = subparsers.add_parser("fleet", help="render the commune fleet's configs (central tools)",
                                  description="Fleet tools for the central Prometheus/Alertmanager.")
    fsub = fleet.add_subparsers(dest="fleet_command", metavar="FLEET_COMMAND")
    render = fsub.add_parser(
        "render", help="one agent config per commune + file_sd, rules, Alertmanager and relay configs",
        description="Render the fleet from the inventory and the template; nothing is written unless "
        "every commune renders and validates.")
    render.add_argument("--inventory", required=True, help="communes CSV (configs/communes.csv)")
    render.add_argument("--template", required=True, help="agent config template (configs/fleet/agent.template.yaml)")
    render.add_argument("--overrides", help="per-commune overrides YAML (configs/fleet/overrides.yaml)")
    render.add_argument("--central", help="central settings YAML (configs/fleet/central.yaml)")
    render.add_argument("--edition", choices=("2025", "2026"), default="2026",
                        help="names/types as of 1 July 2025 or after 30 April 2026 (default 2026)")
    render.add_argument("--out", default="build/fleet", help="output directory (default build/fleet)")
    render.add_argument("--check", action="store_true", help="validate only, write nothing")
    render.add_argument("--central-only", action="store_true",
                        help="write only the central files (prometheus/, alertmanager/, relay/); the agent "
                        "configs are still rendered and validated. `--out configs --central-only` refreshes "
                        "the committed copies")
    render.add_argument("-v", "--verbose", action="store_true", help="list the files written")
    render.set_defaults(func=cmd_render)
    fleet.set_defaults(func=lambda _a: (fleet.print_help(), 2)[1])

    relay = subparsers.add_parser(
        "relay", help="Alertmanager webhook -> Vietnamese messages via the durable outbox",
        description="Serve POST /alertmanager/<unit> (Alertmanager webhook v4), render messages with the "
        "alert templates and deliver them through the outbox to the units' apprise URLs.")
    relay.add_argument("-c", "--config", required=True, help="relay config (relay/relay.yaml from fleet render)")
    relay.add_argument("--listen", help="override HOST:PORT")
    relay.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    relay.set_defaults(func=cmd_relay)
