"""Alert sub-commands: ``ack``, ``silence add|list|expire``, ``incidents``, ``outbox``.

They act on ``<data_dir>/alerts.db`` directly (SQLite in WAL mode), so they work whether or not
the agent is running: the daemon picks up acks and silences at its next tick (about a second).
Only ``agent.data_dir``, ``agent.timezone`` and the units' names are read from the config file,
without resolving ``${ENV}`` secrets, so the operator does not need the daemon's secrets.

Exit codes: 0 success; 1 nothing done (unknown incident or silence, silence already ended);
2 bad usage or config; 3 no alerts database yet (the agent has never run with this config).
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from alerts import db as adb
from alerts.templates import fmt_time

_MATCH_KEYS = ("target", "system", "owner", "commune", "outcome", "severity", "cause", "kind")


class _Usage(Exception):
    pass


def _site(config_file: str) -> tuple[Path, str, dict[str, str]]:
    """``(data_dir, timezone, {unit_id: name})`` from the raw YAML (no secret resolution)."""
    try:
        data = yaml.safe_load(Path(config_file).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise _Usage(f"{config_file}: cannot read: {exc}") from None
    agent = data.get("agent") or {}
    data_dir = Path(str(agent.get("data_dir") or "./data"))
    if not data_dir.is_absolute():
        data_dir = (Path(config_file).resolve().parent / data_dir).resolve()
    tz = str(agent.get("timezone") or "Asia/Ho_Chi_Minh")
    units = {}
    for u in ((data.get("alerting") or {}).get("units") or []):
        if isinstance(u, dict) and "id" in u:
            units[str(u["id"])] = str(u.get("name") or u["id"])
    return data_dir, tz, units


def _open(config_file: str) -> tuple[Any, str, dict[str, str]]:
    data_dir, tz, units = _site(config_file)
    path = adb.db_path(data_dir)
    if not path.exists():
        print(f"{path}: no alerts database yet (has the agent run with {config_file}?)", file=sys.stderr)
        raise SystemExit(3)
    return adb.connect(path, create=False), tz, units


def _who(args: argparse.Namespace) -> str:
    if getattr(args, "by", None):
        return str(args.by)
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no login name in containers
        return "cli"


def _incident_ids(text: str) -> list[int]:
    """``"12"`` -> ``[12]``; ``"3-6"`` -> ``[3, 4, 5, 6]`` (the ranges messages print)."""
    first, sep, last = text.partition("-")
    try:
        lo, hi = int(first), int(last if sep else first)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an incident id or range (12, 3-6): {text!r}") from None
    if lo < 1 or hi < lo or hi - lo > 10000:
        raise argparse.ArgumentTypeError(f"bad incident range: {text!r}")
    return list(range(lo, hi + 1))


def cmd_ack(args: argparse.Namespace) -> int:
    conn, tz, _ = _open(args.config)
    rc = 0
    ids = sorted({i for group in args.incident for i in group})
    for incident_id in ids:
        try:
            row = adb.ack_incident(conn, incident_id, _who(args), args.note, time.time())
        except KeyError:
            print(f"no incident {incident_id}", file=sys.stderr)
            rc = 1
            continue
        print(f"incident {incident_id} ({row['target']}) acknowledged by {row['acked_by']} "
              f"at {fmt_time(row['acked_at'], tz)}")
    conn.close()
    return rc


def _parse_match(args: argparse.Namespace) -> dict[str, list[str]]:
    match: dict[str, list[str]] = {}
    for key in ("target", "system", "owner"):
        values = getattr(args, key, None) or []
        if values:
            match[key] = list(values)
    for item in args.match or []:
        key, sep, value = item.partition("=")
        if not sep or key not in _MATCH_KEYS:
            raise _Usage(f"--match {item!r}: expected KEY=VALUE with KEY one of {', '.join(_MATCH_KEYS)}")
        match.setdefault(key, []).append(value)
    return match


def cmd_silence_add(args: argparse.Namespace) -> int:
    from agent.api_alerts import parse_when
    from probes.config_types import parse_duration

    data_dir, tz, _ = _site(args.config)
    now = time.time()
    try:
        starts = parse_when(args.start, tz, now)
        if args.end:
            ends = parse_when(args.end, tz, now)
        elif args.duration:
            ends = starts + parse_duration(args.duration)
        else:
            raise _Usage("give --duration or --end")
        match = _parse_match(args)
        conn = adb.connect(adb.db_path(data_dir))
        sid = adb.add_silence(conn, author=args.author, reason=args.reason, starts_at=starts, ends_at=ends,
                              match=match, maintenance=args.maintenance, now=now)
        conn.close()
    except ValueError as exc:
        raise _Usage(str(exc).splitlines()[0]) from None
    what = ", ".join(f"{k}={'|'.join(v)}" for k, v in match.items()) or "every target"
    print(f"silence {sid} added: {what}, from {fmt_time(starts, tz)} to {fmt_time(ends, tz)}"
          f"{' (maintenance)' if args.maintenance else ''}")
    return 0


def cmd_silence_list(args: argparse.Namespace) -> int:
    conn, tz, _ = _open(args.config)
    now = time.time()
    rows = adb.load_silences(conn, now=now, include_ended=args.all)
    conn.close()
    if args.json:
        print(json.dumps([s.to_json(tz) for s in rows], ensure_ascii=False, indent=2))
        return 0
    if not rows:
        print("no silences")
        return 0
    for s in rows:
        state = "active" if s.active(now) else ("expired" if s.expired_at else ("ended" if s.ends_at <= now else "pending"))
        match = ", ".join(f"{k}={'|'.join(v)}" for k, v in s.matchers.match.items())
        match += "".join(f", {k}=~{v}" for k, v in s.matchers.match_re.items())
        print(f"#{s.id} [{state}] {fmt_time(s.starts_at, tz)} → {fmt_time(s.ends_at, tz)}"
              f"{' maintenance' if s.maintenance else ''} — {match or 'every target'} — {s.author}: {s.reason}")
    return 0


def cmd_silence_expire(args: argparse.Namespace) -> int:
    conn, _, _ = _open(args.config)
    try:
        done = adb.expire_silence(conn, args.silence, _who(args), time.time())
    except KeyError:
        print(f"no silence {args.silence}", file=sys.stderr)
        return 1
    finally:
        conn.close()
    print(f"silence {args.silence} {'expired' if done else 'had already ended'}")
    return 0 if done else 1


def cmd_incidents(args: argparse.Namespace) -> int:
    conn, tz, units = _open(args.config)
    rows = adb.list_incidents(conn, open_only=not args.all, limit=args.limit)
    conn.close()
    if args.json:
        print(json.dumps(rows, ensure_ascii=False, indent=2, default=str))
        return 0
    if not rows:
        print("no open incidents" if not args.all else "no incidents")
        return 0
    now = time.time()
    for r in rows:
        state = "resolved" if r["resolved_at"] else ("acked" if r["acked_at"] else "open")
        until = r["resolved_at"] or now
        told = ", ".join(f"{units.get(u['unit_id'], u['unit_id'])}{' (esc. ' + str(u['level']) + ')' if u['level'] else ''}"
                         for u in r["units"]) or "nobody"
        print(f"#{r['id']} [{state}] {r['target']} {r['current']} cause={r['cause']} since {fmt_time(r['opened_at'], tz)}"
              f" ({int((until - r['opened_at']) // 60)} min) — {r['last_reason'] or ''} {r['last_detail'] or ''}".rstrip())
        print(f"    told: {told}" + (f"; acked by {r['acked_by']}" if r["acked_by"] else ""))
    return 0


def cmd_outbox(args: argparse.Namespace) -> int:
    conn, tz, units = _open(args.config)
    rows = adb.pending_deliveries(conn)
    conn.close()
    if args.json:
        print(json.dumps(rows, ensure_ascii=False, indent=2, default=str))
        return 0
    if not rows:
        print("outbox empty: every message was delivered (or given up)")
        return 0
    now = time.time()
    print(f"{len({r['message_id'] for r in rows})} message(s), {len(rows)} delivery(ies) pending")
    for r in rows:
        print(f"msg {r['message_id']} → {units.get(r['unit_id'], r['unit_id'])} via {r['scheme']} "
              f"[{r['kind']}] age {int(now - r['created_at'])} s, attempts {r['attempts']}, "
              f"next {fmt_time(r['next_attempt_at'], tz)} — {r['subject']}"
              + (f"\n    last error: {r['last_error']}" if r["last_error"] else ""))
    return 0


def _wrap(fn: Any) -> Any:
    def run(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except _Usage as exc:
            print(f"hcc-sentinel {args.command}: {exc}", file=sys.stderr)
            return 2
    return run


def register(sub: Any) -> None:
    """Add ``ack``, ``silence``, ``incidents`` and ``outbox`` to the ``hcc-sentinel`` parser."""
    where = (" Acts on <data_dir>/alerts.db directly (works while the agent runs; it sees the "
             "change within a second).")
    p = sub.add_parser("ack", help="acknowledge incidents (stops reminders and escalation)",
                       description="Acknowledge one or more incidents: reminders and escalation stop; "
                       "the resolved notice still goes out." + where)
    p.add_argument("incident", nargs="+", type=_incident_ids, metavar="INCIDENT",
                   help="incident id or range, e.g. 12 or 3-6 (from messages or 'incidents')")
    p.add_argument("-c", "--config", required=True, metavar="FILE", help="agent config (YAML)")
    p.add_argument("--by", default=None, help="who acknowledges (default: the login name)")
    p.add_argument("--note", default=None, help="free text stored with the ack")
    p.set_defaults(func=_wrap(cmd_ack))

    p = sub.add_parser("silence", help="add, list or expire silences",
                       description="Silences mute notifications for matching targets for a while; "
                       "with --maintenance the targets are also shown as in maintenance." + where)
    ssub = p.add_subparsers(dest="silence_command", metavar="ACTION", required=True)
    a = ssub.add_parser("add", help="add a silence")
    a.add_argument("-c", "--config", required=True, metavar="FILE")
    a.add_argument("--author", required=True, help="who adds it")
    a.add_argument("--reason", required=True, help="why (shown on the status page)")
    a.add_argument("--start", default="now", help="start: 'now' (default), 'now+30m', ISO 8601 or "
                   "'2026-05-02 22:00' (local time of the agent)")
    a.add_argument("--end", default=None, help="end (same forms as --start)")
    a.add_argument("--duration", default=None, help="length, e.g. 2h (instead of --end)")
    a.add_argument("--target", action="append", help="target id (repeatable)")
    a.add_argument("--system", action="append", help="system id (repeatable)")
    a.add_argument("--owner", action="append", help="owner unit id (repeatable)")
    a.add_argument("--match", action="append", metavar="KEY=VALUE",
                   help=f"other matcher, KEY one of {', '.join(_MATCH_KEYS)} (repeatable)")
    a.add_argument("--maintenance", action="store_true", help="planned work: state 'maintenance' too")
    a.set_defaults(func=_wrap(cmd_silence_add))
    lst = ssub.add_parser("list", help="list silences")
    lst.add_argument("-c", "--config", required=True, metavar="FILE")
    lst.add_argument("--all", action="store_true", help="include ended and expired ones")
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(func=_wrap(cmd_silence_list))
    e = ssub.add_parser("expire", help="end a silence now")
    e.add_argument("silence", type=int, metavar="ID")
    e.add_argument("-c", "--config", required=True, metavar="FILE")
    e.add_argument("--by", default=None, help="who expires it (default: the login name)")
    e.set_defaults(func=_wrap(cmd_silence_expire))

    p = sub.add_parser("incidents", help="list incidents", description="List open incidents (all with --all)." + where)
    p.add_argument("-c", "--config", required=True, metavar="FILE")
    p.add_argument("--all", action="store_true", help="include resolved incidents")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_wrap(cmd_incidents))

    p = sub.add_parser("outbox", help="show notifications waiting for delivery",
                       description="Show the deliveries still pending in the outbox (per channel; the "
                       "channel is shown by scheme only, never its URL)." + where)
    p.add_argument("-c", "--config", required=True, metavar="FILE")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_wrap(cmd_outbox))
