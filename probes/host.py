"""Host probe: the health of the agent's own machine, read with psutil (like node_exporter's
cpu, loadavg, meminfo, filesystem, netdev, stat and timex collectors, reduced to what a commune
IT contact needs).

Every value comes from a fast kernel read (``/proc``, ``statvfs``, ``adjtimex``) done inline;
no threads.  (``statvfs`` on a hung network mount can block: list only local paths.)

CPU usage is the busy share of all CPUs since the previous probe *of the same target*
(``1 - Δidle/Δtotal`` over ``psutil.cpu_times()``, the rule of
``psutil.cpu_percent(interval=None)``), with the state kept here per target rather than in
psutil's module-global state, so another caller of ``cpu_percent`` cannot shorten the window.
The first probe of a target has no previous sample: it samples twice 0.2 s apart (an
``asyncio.sleep``, never blocking the loop); a window shorter than 0.2 s is stretched the same
way, since the kernel counts CPU time in 10 ms ticks.

Options (YAML key ``host``)::

    disk_paths: ["/", "/var/lib/hcc-sentinel"]   # default ["/"]
    cpu_max: 0.95        # ratios 0..1; a value ABOVE the maximum -> error threshold
    memory_max: 0.90     # (total - available) / total, as free(1)'s "available"
    swap_max: 0.80
    disk_max: 0.90       # used / (used + available to unprivileged users), as df(1)
    load1_per_cpu_max: 2.0   # 1-minute load average divided by the logical CPU count

Each threshold is off when absent.  A maximum of 1.0 can never trip; 0.0 always trips as soon
as anything is in use.
"""

from __future__ import annotations

import asyncio
import functools
import os
import time
from typing import Any

from pydantic import BaseModel, Field, field_validator

from probes.base import Clock, ProbeContext, ProbeResult, TargetSpec, make_result
from probes.config_types import STRICT

KIND = "host"

Ratio = float


class Options(BaseModel):
    """Options of the ``host`` kind (see the module docstring)."""

    model_config = STRICT

    disk_paths: list[str] = Field(default_factory=lambda: ["/"], min_length=1)
    cpu_max: Ratio | None = Field(default=None, ge=0.0, le=1.0)
    memory_max: Ratio | None = Field(default=None, ge=0.0, le=1.0)
    swap_max: Ratio | None = Field(default=None, ge=0.0, le=1.0)
    disk_max: Ratio | None = Field(default=None, ge=0.0, le=1.0)
    load1_per_cpu_max: float | None = Field(default=None, ge=0.0)

    @field_validator("disk_paths")
    @classmethod
    def _absolute(cls, value: list[str]) -> list[str]:
        for path in value:
            if not os.path.isabs(path):
                raise ValueError(f"disk path {path!r} must be absolute")
        return value


# --------------------------------------------------------------------------------------------
# CPU usage with per-target state
# --------------------------------------------------------------------------------------------

_last_cpu: dict[str, tuple[float, Any]] = {}  # target id -> (monotonic time, cpu_times)
_FIRST_SAMPLE_GAP = 0.2


def _busy_ratio(before: Any, after: Any) -> float:
    """Busy share between two ``psutil.cpu_times()`` samples, 0..1 (psutil's rule: idle
    includes iowait; guest time is already inside user/nice on Linux and is not added again)."""

    def split(sample: Any) -> tuple[float, float]:
        fields = sample._asdict()
        total = sum(v for k, v in fields.items() if k not in ("guest", "guest_nice"))
        idle = fields.get("idle", 0.0) + fields.get("iowait", 0.0)
        return total, idle

    total_a, idle_a = split(before)
    total_b, idle_b = split(after)
    delta_total = total_b - total_a
    if delta_total <= 0:
        return 0.0
    busy = delta_total - max(0.0, idle_b - idle_a)
    return min(1.0, max(0.0, busy / delta_total))


async def cpu_usage_ratio(key: str, max_wait: float) -> float:
    """CPU busy ratio (0..1) since the previous call with the same ``key``; on the first call
    (or when the previous one is less than 0.2 s old) the window is made ``min(0.2 s,
    max_wait)`` long with a non-blocking sleep."""
    import psutil  # here, not at module level: ~1 MiB RSS (with ctypes) that agents without a host target never need

    stored = _last_cpu.get(key)
    if stored is None:
        stored = (time.monotonic(), psutil.cpu_times())
        await asyncio.sleep(max(0.01, min(_FIRST_SAMPLE_GAP, max_wait)))
    else:
        # The kernel counts CPU time in ticks (USER_HZ, usually 10 ms): a window much shorter
        # than that reads as 0 %.  Stretch a very short window to 0.2 s.
        gap = _FIRST_SAMPLE_GAP - (time.monotonic() - stored[0])
        if gap > 0:
            await asyncio.sleep(max(0.0, min(gap, max_wait)))
    current = psutil.cpu_times()
    _last_cpu[key] = (time.monotonic(), current)
    return _busy_ratio(stored[1], current)


def reset_cpu_state() -> None:
    """Forget every target's previous CPU sample (tests, config reload)."""
    _last_cpu.clear()


# --------------------------------------------------------------------------------------------
# Clock: adjtimex(2), read-only
# --------------------------------------------------------------------------------------------


_TIME_ERROR = 5  # adjtimex return value: clock not synchronised
_STA_UNSYNC = 0x0040
_STA_NANO = 0x2000


@functools.lru_cache(maxsize=1)
def _adjtimex() -> tuple[Any, Any]:
    """``(libc, struct timex type)``, made at the first host probe (ctypes is not imported by
    agents without a host target)."""
    import ctypes
    import ctypes.util

    class _Timeval(ctypes.Structure):
        _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long)]

    class _Timex(ctypes.Structure):
        """``struct timex`` of <sys/timex.h> (Linux)."""

        _fields_ = [
            ("modes", ctypes.c_uint), ("offset", ctypes.c_long), ("freq", ctypes.c_long),
            ("maxerror", ctypes.c_long), ("esterror", ctypes.c_long), ("status", ctypes.c_int),
            ("constant", ctypes.c_long), ("precision", ctypes.c_long), ("tolerance", ctypes.c_long),
            ("time", _Timeval), ("tick", ctypes.c_long), ("ppsfreq", ctypes.c_long),
            ("jitter", ctypes.c_long), ("shift", ctypes.c_int), ("stabil", ctypes.c_long),
            ("jitcnt", ctypes.c_long), ("calcnt", ctypes.c_long), ("errcnt", ctypes.c_long),
            ("stbcnt", ctypes.c_long), ("tai", ctypes.c_int), ("_reserved", ctypes.c_int * 11),
        ]

    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True), _Timex


def clock_facts() -> dict[str, Any]:
    """Kernel clock discipline state via ``adjtimex(2)`` with ``modes = 0`` (read only, no
    privilege), as node_exporter's timex collector.

    Returns:
        ``host_clock_synchronized`` (bool: the kernel's NTP state is not TIME_ERROR / STA_UNSYNC),
        ``host_clock_offset_seconds`` (float), ``host_clock_max_error_seconds`` (float); an
        empty dict where ``adjtimex`` is not available (non-Linux).
    """
    try:
        import ctypes

        libc, timex_type = _adjtimex()
        timex = timex_type()
        state = libc.adjtimex(ctypes.byref(timex))
    except (OSError, AttributeError):
        return {}
    if state < 0:
        return {}
    offset_unit = 1e-9 if timex.status & _STA_NANO else 1e-6
    return {
        "host_clock_synchronized": state != _TIME_ERROR and not (timex.status & _STA_UNSYNC),
        "host_clock_offset_seconds": timex.offset * offset_unit,
        "host_clock_max_error_seconds": timex.maxerror * 1e-6,
    }


# --------------------------------------------------------------------------------------------
# The probe
# --------------------------------------------------------------------------------------------


async def probe(spec: TargetSpec, ctx: ProbeContext) -> ProbeResult:
    """Read the machine's health and compare it with the thresholds.

    Returns:
        A :class:`ProbeResult`.  Reasons: ``threshold`` (the detail and the fact
        ``host_thresholds_exceeded`` name each resource above its maximum: ``cpu``, ``memory``,
        ``swap``, ``load1``, ``disk:<path>``), ``permission`` / ``internal`` (a disk path cannot
        be read: missing or forbidden).  Facts (all JSON-serialisable): ``host_cpu_usage_ratio``,
        ``host_cpu_count``, ``host_load1`` / ``host_load5`` / ``host_load15``,
        ``host_memory_used_ratio``, ``host_memory_total_bytes``,
        ``host_memory_available_bytes``, ``host_swap_used_ratio``, ``host_swap_total_bytes``,
        ``host_disk_used_ratio`` / ``host_disk_free_bytes`` / ``host_disk_total_bytes``
        (dict path -> value), ``host_network_errors_total`` / ``host_network_drops_total``
        (dict interface -> {"rx": n, "tx": n}, counters since boot), ``host_boot_time``
        (Unix seconds), ``host_uptime_seconds``, ``host_time`` (Unix seconds at the probe),
        ``host_clock_synchronized`` / ``host_clock_offset_seconds`` /
        ``host_clock_max_error_seconds`` (Linux), ``host_thresholds_exceeded`` (list of str).
    """
    opts: Options = spec.options
    clock = Clock()
    facts: dict[str, Any] = {}

    def result(reason: str | None, detail: str) -> ProbeResult:
        return make_result(spec, clock, reason, detail, {}, facts)

    import psutil

    try:
        cpu = await cpu_usage_ratio(spec.id, clock.remaining(spec.timeout) / 2)
        cpu_count = psutil.cpu_count(logical=True) or 1
        facts["host_cpu_usage_ratio"] = round(cpu, 6)
        facts["host_cpu_count"] = cpu_count
        load1, load5, load15 = psutil.getloadavg()
        facts.update(host_load1=load1, host_load5=load5, host_load15=load15)

        memory = psutil.virtual_memory()
        memory_ratio = (memory.total - memory.available) / memory.total if memory.total else 0.0
        facts["host_memory_used_ratio"] = round(memory_ratio, 6)
        facts["host_memory_total_bytes"] = int(memory.total)
        facts["host_memory_available_bytes"] = int(memory.available)
        swap = psutil.swap_memory()
        swap_ratio = swap.used / swap.total if swap.total else 0.0
        facts["host_swap_used_ratio"] = round(swap_ratio, 6)
        facts["host_swap_total_bytes"] = int(swap.total)

        disk_ratio: dict[str, float] = {}
        disk_free: dict[str, int] = {}
        disk_total: dict[str, int] = {}
        disk_problem: tuple[str, str] | None = None
        for path in opts.disk_paths:
            try:
                usage = psutil.disk_usage(path)
            except PermissionError as exc:
                disk_problem = disk_problem or ("permission", f"disk path {path}: {exc.strerror or exc}")
                continue
            except OSError as exc:
                disk_problem = disk_problem or ("internal", f"disk path {path}: {exc.strerror or exc}")
                continue
            room = usage.used + usage.free
            disk_ratio[path] = round(usage.used / room, 6) if room else 0.0
            disk_free[path] = int(usage.free)
            disk_total[path] = int(usage.total)
        facts["host_disk_used_ratio"] = disk_ratio
        facts["host_disk_free_bytes"] = disk_free
        facts["host_disk_total_bytes"] = disk_total

        errors: dict[str, dict[str, int]] = {}
        drops: dict[str, dict[str, int]] = {}
        for name, counters in sorted(psutil.net_io_counters(pernic=True).items()):
            errors[name] = {"rx": int(counters.errin), "tx": int(counters.errout)}
            drops[name] = {"rx": int(counters.dropin), "tx": int(counters.dropout)}
        facts["host_network_errors_total"] = errors
        facts["host_network_drops_total"] = drops

        boot = psutil.boot_time()
        now = time.time()
        facts["host_boot_time"] = boot
        facts["host_uptime_seconds"] = round(now - boot, 3)
        facts["host_time"] = now
        facts.update(clock_facts())

        exceeded: list[str] = []
        notes: list[str] = []

        def check(name: str, value: float, maximum: float | None) -> None:
            if maximum is not None and value > maximum:
                exceeded.append(name)
                notes.append(f"{name} {value:.2f} > {maximum:.2f}")

        check("cpu", cpu, opts.cpu_max)
        check("memory", memory_ratio, opts.memory_max)
        check("swap", swap_ratio, opts.swap_max)
        check("load1", load1 / cpu_count, opts.load1_per_cpu_max)
        for path, ratio in disk_ratio.items():
            check(f"disk:{path}", ratio, opts.disk_max)
        facts["host_thresholds_exceeded"] = exceeded

        if disk_problem is not None:
            return result(*disk_problem)
        if exceeded:
            return result("threshold", "above threshold: " + "; ".join(notes))
        disks = ", ".join(f"{p} {r:.0%}" for p, r in disk_ratio.items())
        return result(None, f"cpu {cpu:.0%}, memory {memory_ratio:.0%}, load1 {load1:.2f}, disk {disks}")
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001 - a probe never raises
        return result("internal", f"unexpected {type(exc).__name__}: {exc}")
