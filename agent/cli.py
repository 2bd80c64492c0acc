"""``hcc-sentinel`` command line.

Sub-commands live in their own modules, each exposing ``register(subparsers)`` which adds its
parsers and sets ``func`` (a callable taking the parsed ``argparse.Namespace`` and returning the
exit code).  :data:`COMMAND_MODULES` lists them in ``--help`` order.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from agent import __version__

#: Modules that register sub-commands (a module not written yet is skipped; a broken one fails).
COMMAND_MODULES: tuple[str, ...] = (
    "agent.cmd_core",      # run, check, probe, demo
    "agent.cmd_alerts",    # ack, silence, incidents, outbox
    "agent.cmd_fleet",     # fleet render, relay
    "agent.cmd_report",    # report sla
)

#: Exit code when stdout is closed by its reader (as for a process killed by SIGPIPE: 128 + 13).
EXIT_BROKEN_PIPE = 141


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every available sub-command."""
    parser = argparse.ArgumentParser(
        prog="hcc-sentinel",
        description="Uptime and health monitoring of the shared administrative-procedure systems "
        "used by commune public-administration service centres (agent, alerts, central tools).",
    )
    parser.add_argument("--version", action="version", version=f"hcc-sentinel {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``hcc-sentinel`` console script; returns the process exit code."""
    parser = build_parser()
    try:
        try:
            args = parser.parse_args(argv)
            if not getattr(args, "func", None):
                parser.print_help()
                return 2
            return int(args.func(args) or 0)
        finally:
            sys.stdout.flush()
    except BrokenPipeError:
        # the reader went away (`hcc-sentinel incidents --all | head -1`): no traceback; point
        # stdout at /dev/null so the interpreter's final flush cannot fail again, and exit like a
        # process killed by SIGPIPE (128 + 13). See "Note on SIGPIPE" in the signal module docs.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):  # stdout is not a real file (embedded use)
            pass
        return EXIT_BROKEN_PIPE


if __name__ == "__main__":
    sys.exit(main())
