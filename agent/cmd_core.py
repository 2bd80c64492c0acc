"""Core sub-commands: ``run``, ``check``, ``probe``, ``demo``.

Exit codes: 0 success; 1 ``probe`` result was error/hang; 2 bad config, unknown target or bad
usage; 3 data_dir used by another agent, or history database unusable (corrupt or locked);
4 listen address unusable; 141 stdout closed by its reader (agent.cli).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from typing import Any

from agent.yamlconf import ConfigError

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(level: str = "info") -> None:
    """One line per event on stderr: ``2026-05-01 08:00:00,123 INFO hcc_sentinel.agent: ...``."""
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), format=LOG_FORMAT,
                        stream=sys.stderr, force=True)
    logging.getLogger("aiohttp").setLevel(logging.WARNING)


def _load(path: str) -> Any:
    """Load a config, or print its problems on stderr and return None."""
    from agent.config import load_config
    try:
        return load_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return None


# -- run ------------------------------------------------------------------------------------
def cmd_run(args: argparse.Namespace) -> int:
    setup_logging(args.log_level)
    from agent.runtime import EXIT_CONFIG, AgentRuntime
    config = _load(args.config)
    if config is None:
        return EXIT_CONFIG
    runtime = AgentRuntime(args.config, config)
    return asyncio.run(runtime.run())


# -- check ----------------------------------------------------------------------------------
def cmd_check(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return 2
    a = config.agent
    n_targets = len(config.targets)
    n_systems = len(config.systems)
    print(f"{args.config}: OK — agent {a.id} ({a.commune.name}), {n_targets} target"
          f"{'s' if n_targets != 1 else ''} in {n_systems} system{'s' if n_systems != 1 else ''}")
    return 0


# -- probe ----------------------------------------------------------------------------------
def cmd_probe(args: argparse.Namespace) -> int:
    setup_logging(args.log_level)
    from agent.runtime import AgentRuntime
    config = _load(args.config)
    if config is None:
        return 2
    target = config.target(args.target)
    if target is None:
        known = ", ".join(t.id for t in config.targets) or "(none)"
        print(f"{args.config}: no target {args.target!r} (targets: {known})", file=sys.stderr)
        return 2
    runtime = AgentRuntime(args.config, config, process_metrics=False, serve=False)
    result = asyncio.run(runtime.probe_once(args.target))
    if args.json:
        out = result.to_json()
        out["target_info"] = {"id": target.id, "kind": result.kind, "name": target.name,
                              "system": target.system, "owner": config.owner_of(target)}
        print(json.dumps(out, ensure_ascii=False, indent=2, default=str))
    else:
        o = result.outcome
        print(f"{result.target}: {o.value} ({o.vietnamese}) reason={result.reason} "
              f"{result.duration_seconds:.3f}s — {result.detail}")
        phases = " ".join(f"{k}={v:.3f}s" for k, v in result.phases.items() if v)
        if phases:
            print(f"  phases: {phases}")
    return 0 if result.success else 1


# -- demo -----------------------------------------------------------------------------------
def cmd_demo(args: argparse.Namespace) -> int:
    from agent.demo import run_demo
    return run_demo(args)


def register(sub: Any) -> None:
    """Add ``run``, ``check``, ``probe`` and ``demo`` to the ``hcc-sentinel`` parser."""
    p = sub.add_parser("run", help="run the agent: probe every target, serve /metrics and the API",
                       description="Run the agent daemon: probe every target of the config on its "
                       "interval, keep history in <data_dir>/history.db and serve /metrics, /healthz, "
                       "/api/* on agent.listen. SIGHUP or POST /-/reload re-reads the config; "
                       "SIGINT/SIGTERM stop cleanly (exit 0). Exit 2: bad config; 3: data_dir used "
                       "by another agent (<data_dir>/agent.lock) or history database unusable; "
                       "4: listen address unusable.")
    p.add_argument("-c", "--config", required=True, metavar="FILE", help="agent config (YAML)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("check", help="validate a config file and exit",
                       description="Validate a config file. Exit 0 and one summary line if it is "
                       "valid; exit 2 and one line per problem (FILE:LINE: field: message) on stderr.")
    p.add_argument("-c", "--config", required=True, metavar="FILE", help="agent config (YAML)")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("probe", help="probe one target now and print the result",
                       description="Run one probe of one target now. Exit 0 if ok/slow, 1 if "
                       "error/hang, 2 if the config is bad or the target unknown.")
    p.add_argument("-c", "--config", required=True, metavar="FILE", help="agent config (YAML)")
    p.add_argument("--target", required=True, metavar="ID", help="target id")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=cmd_probe)

    p = sub.add_parser("demo", help="watch the agent probe a simulated procedure system on 127.0.0.1",
                       description="Start, on 127.0.0.1 only, a simulated commune procedure system "
                       "whose pages switch between ok, slow, error and hang every 12 s, and a real "
                       "agent probing it every few seconds; print each outcome change and serve "
                       "/metrics. Nothing leaves this machine.")
    p.add_argument("--port", type=int, default=9470, help="port of the agent's /metrics and API "
                   "(127.0.0.1; 0 = any free port; default 9470)")
    p.add_argument("--duration", type=float, default=None, metavar="SECONDS",
                   help="stop after this many seconds (default: until Ctrl-C)")
    p.add_argument("--data-dir", default=None, metavar="DIR",
                   help="keep the generated config and history here (default: a temporary directory, removed at exit)")
    p.set_defaults(func=cmd_demo)
