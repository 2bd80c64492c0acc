"""Prometheus metrics of the agent: a custom collector over the runtime's current state.

Names and meanings follow blackbox_exporter (BBE) where a metric exists there
(https://github.com/prometheus/blackbox_exporter, ``prober/*.go``) with an extra ``target`` label,
because one agent exposes many targets:

=====================================  ==========================================================
``probe_success``                      1 if the last probe succeeded (ok or slow), else 0
``probe_duration_seconds``             wall time of the last probe, seconds
``probe_http_duration_seconds{phase}``  last HTTP probe's phases: resolve, connect, tls,
                                        processing, transfer (seconds)
``probe_http_status_code``             last HTTP status code (0 when none was received)
``probe_http_content_length``          ``Content-Length`` of the last response (-1 unknown)
``probe_http_uncompressed_body_length``  bytes of body read (after decompression)
``probe_http_redirects``               redirects followed
``probe_http_ssl``                     1 if the final request used TLS
``probe_http_version``                 HTTP version of the response, e.g. 1.1
``probe_failed_due_to_regex``          1 if a body content check failed
``probe_ssl_earliest_cert_expiry``     earliest ``notAfter`` of the peer chain, Unix seconds
``probe_tls_version_info{version}``    1, labelled with the negotiated TLS version
``probe_dns_lookup_time_seconds``      name resolution time of the last probe, seconds
``probe_dns_answer_rrs`` / ``_authority_rrs`` / ``_additional_rrs``  DNS probe section sizes
``probe_icmp_duration_seconds{phase}``  ICMP phases (``rtt`` = average round-trip time)
``probe_icmp_packet_loss_ratio``       share of echo requests lost, 0..1 (not in BBE)
``probe_ip_protocol``                  4 or 6
``probe_ip_addr_hash``                 FNV-1a 32-bit hash of the address probed (BBE: detects
                                        DNS/load-balancer changes)
=====================================  ==========================================================

Added here (scrape-time gauges lose what happened between scrapes; these do not):

* ``probe_outcomes_total{target,outcome,reason}`` — counter, +1 per probe.
* ``probe_latency_seconds{target}`` — histogram of probe durations (every outcome).
* ``probe_outcome{target,outcome}`` — 1 for the last probe's outcome, 0 for the three others.
* ``probe_last_result_timestamp_seconds{target}`` — start of the last probe, Unix seconds.
* ``probe_interval_seconds`` / ``probe_timeout_seconds{target}`` — interval in force, deadline.
* ``probe_target_info{target,kind,system,owner,name}`` — 1; joins targets to systems/owners.
* ``hcc_sentinel_agent_info{agent_id,commune_code,commune_name,commune_type}``,
  ``hcc_sentinel_build_info{version,python_version}``,
  ``hcc_sentinel_config_last_reload_successful``,
  ``hcc_sentinel_config_last_reload_success_timestamp_seconds`` (Prometheus' own names),
  ``hcc_sentinel_scheduler_lag_seconds`` (histogram: actual − planned start),
  ``hcc_sentinel_probes_in_flight``, ``hcc_sentinel_probe_overruns_total{target}``,
  ``hcc_sentinel_probe_skipped_slots_total{target}``,
  ``hcc_sentinel_store_*`` (history database), and host metrics from the last ``host`` probe
  (all with ``target``): ``hcc_sentinel_host_cpu_usage_ratio``, ``_cpu_count``, ``_load1/5/15``,
  ``_memory_used_ratio``, ``_memory_total_bytes``, ``_memory_available_bytes``,
  ``_swap_used_ratio``, ``_swap_total_bytes``, ``_disk_used_ratio{path}``,
  ``_disk_free_bytes{path}``, ``_disk_total_bytes{path}``,
  ``_network_errors_total{interface,direction}``, ``_network_drops_total{interface,direction}``
  (direction ``rx``/``tx``), ``_boot_time_seconds``, ``_uptime_seconds``,
  ``_clock_synchronized``, ``_clock_offset_seconds``, ``_clock_max_error_seconds``,
  ``_thresholds_exceeded``.

Because the collector reads the current state at scrape time, a target removed by a reload
disappears from ``/metrics`` at once, while a target that stays keeps its counters.  Label
values are NFC-normalised UTF-8 (Vietnamese names), as the exposition formats require UTF-8.
"""

from __future__ import annotations

import bisect
import dataclasses
import ipaddress
import platform
import time
from typing import Any, Callable, Iterable

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder

from agent import __version__
from probes.base import PHASES, Outcome, ProbeResult, nfc

#: Buckets of ``probe_latency_seconds`` (seconds): 50 ms .. 60 s.
LATENCY_BUCKETS: tuple[float, ...] = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 15.0, 30.0, 60.0)
#: Buckets of ``hcc_sentinel_scheduler_lag_seconds`` (seconds).
LAG_BUCKETS: tuple[float, ...] = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

OUTCOMES: tuple[str, ...] = tuple(o.value for o in Outcome)


def fnv1a32(text: str) -> int:
    """FNV-1a 32-bit hash of a string's UTF-8 bytes (blackbox_exporter's ``probe_ip_addr_hash``)."""
    h = 0x811C9DC5
    for byte in text.encode("utf-8"):
        h ^= byte
        h = (h * 0x01000193) & 0xFFFFFFFF
    return h


class Histogram:
    """A cumulative histogram (bucket upper bounds in seconds) kept outside prometheus-client."""

    __slots__ = ("bounds", "counts", "sum", "count")

    def __init__(self, bounds: tuple[float, ...]):
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # last: +Inf only
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def buckets(self) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        acc = 0
        for bound, n in zip(self.bounds, self.counts):
            acc += n
            out.append((_fmt_bound(bound), acc))
        out.append(("+Inf", self.count))
        return out


def _fmt_bound(b: float) -> str:
    return repr(float(b))


@dataclasses.dataclass
class TargetMeta:
    """What ``probe_target_info`` says about a target (all strings, '' when unset)."""

    kind: str
    system: str = ""
    owner: str = ""
    name: str = ""
    interval: float = 60.0
    timeout: float = 10.0


@dataclasses.dataclass
class _TargetCounters:
    outcomes: dict[tuple[str, str], int] = dataclasses.field(default_factory=dict)
    latency: Histogram = dataclasses.field(default_factory=lambda: Histogram(LATENCY_BUCKETS))
    overruns: int = 0
    skipped: int = 0
    last: ProbeResult | None = None
    created: float = dataclasses.field(default_factory=time.time)


class MetricsState:
    """Everything ``/metrics`` shows, updated by the runtime and read at scrape time.

    Use :meth:`observe` as a result listener; call :meth:`set_targets` on start and reload.
    """

    def __init__(self) -> None:
        self.targets: dict[str, TargetMeta] = {}
        self.counters: dict[str, _TargetCounters] = {}
        self.agent_labels: dict[str, str] = {}
        self.reload_ok: bool = True
        self.reload_success_ts: float = 0.0
        self.lag = Histogram(LAG_BUCKETS)
        self.in_flight: Callable[[], int] = lambda: 0
        self.intervals: Callable[[str], float | None] = lambda _t: None
        self.store_stats: Callable[[], dict[str, float]] | None = None

    # -- updates ---------------------------------------------------------------------------
    def set_agent(self, agent_id: str, commune_code: str, commune_name: str, commune_type: str) -> None:
        self.agent_labels = {"agent_id": agent_id, "commune_code": commune_code,
                             "commune_name": nfc(commune_name), "commune_type": commune_type}

    def set_targets(self, targets: dict[str, TargetMeta]) -> None:
        """Replace the target set: counters of targets that stay are kept, removed ones dropped."""
        self.targets = dict(targets)
        for t in list(self.counters):
            if t not in self.targets:
                del self.counters[t]
        for t in self.targets:
            self.counters.setdefault(t, _TargetCounters())

    def set_reload(self, ok: bool, when: float | None = None) -> None:
        self.reload_ok = ok
        if ok:
            self.reload_success_ts = time.time() if when is None else when

    def observe_lag(self, _target: str, seconds: float) -> None:
        self.lag.observe(seconds)

    def observe_overrun(self, target: str, skipped: int) -> None:
        c = self.counters.get(target)
        if c is not None:
            c.overruns += 1
            c.skipped += skipped

    async def observe(self, result: ProbeResult) -> None:
        """Result listener: count the outcome, observe the latency, keep the last result."""
        c = self.counters.get(result.target)
        if c is None:  # a result of a target removed meanwhile
            return
        key = (result.outcome.value, result.reason)
        c.outcomes[key] = c.outcomes.get(key, 0) + 1
        c.latency.observe(result.duration_seconds)
        c.last = result


def _label(value: Any) -> str:
    return nfc("" if value is None else str(value))


class RuntimeCollector:
    """prometheus-client collector yielding every family from a :class:`MetricsState`."""

    def __init__(self, state: MetricsState):
        self.state = state

    def describe(self) -> Iterable[Metric]:  # no fixed description: families depend on state
        return []

    def collect(self) -> Iterable[Metric]:  # noqa: C901 - one flat list of families
        st = self.state
        yield from self._agent_families()

        info = GaugeMetricFamily("probe_target_info", "Targets probed by this agent (value 1).",
                                 labels=["target", "kind", "system", "owner", "name"])
        interval = GaugeMetricFamily("probe_interval_seconds", "Probe interval in force (seconds).",
                                     labels=["target"])
        timeout = GaugeMetricFamily("probe_timeout_seconds", "Deadline of one probe (seconds).",
                                    labels=["target"])
        outcomes = CounterMetricFamily("probe_outcomes", "Probes by outcome and reason code.",
                                       labels=["target", "outcome", "reason"])
        latency = HistogramMetricFamily("probe_latency_seconds", "Probe duration (seconds), every outcome.",
                                        labels=["target"])
        overruns = CounterMetricFamily("hcc_sentinel_probe_overruns",
                                       "Probes that outlasted their interval (next run skipped).",
                                       labels=["target"])
        skipped = CounterMetricFamily("hcc_sentinel_probe_skipped_slots",
                                      "Planned probe runs skipped because of overruns.", labels=["target"])
        for tid, meta in sorted(st.targets.items()):
            info.add_metric([tid, meta.kind, _label(meta.system), _label(meta.owner), _label(meta.name)], 1)
            current = st.intervals(tid)
            interval.add_metric([tid], current if current else meta.interval)
            timeout.add_metric([tid], meta.timeout)
            c = st.counters.get(tid)
            if c is None:
                continue
            for (outcome, reason), n in sorted(c.outcomes.items()):
                outcomes.add_metric([tid, outcome, reason], n, created=c.created)
            latency.add_metric([tid], c.latency.buckets(), c.latency.sum)
            overruns.add_metric([tid], c.overruns)
            skipped.add_metric([tid], c.skipped)
        yield from (info, interval, timeout, outcomes, latency, overruns, skipped)
        yield from self._last_result_families()

    # -- agent self-metrics ----------------------------------------------------------------
    def _agent_families(self) -> Iterable[Metric]:
        st = self.state
        if st.agent_labels:
            agent = InfoMetricFamily("hcc_sentinel_agent", "Identity of this agent and its commune.")
            agent.add_metric([], st.agent_labels)
            yield agent
        build = InfoMetricFamily("hcc_sentinel_build", "Build of the hcc-sentinel agent.")
        build.add_metric([], {"version": __version__, "python_version": platform.python_version()})
        yield build
        yield GaugeMetricFamily("hcc_sentinel_config_last_reload_successful",
                                "Whether the last configuration reload attempt was successful.",
                                value=1 if st.reload_ok else 0)
        yield GaugeMetricFamily("hcc_sentinel_config_last_reload_success_timestamp_seconds",
                                "Timestamp of the last successful configuration reload.",
                                value=st.reload_success_ts)
        lag = HistogramMetricFamily("hcc_sentinel_scheduler_lag_seconds",
                                    "Actual minus planned start of probes (seconds), including the "
                                    "wait for a concurrency slot.")
        lag.add_metric([], st.lag.buckets(), st.lag.sum)
        yield lag
        yield GaugeMetricFamily("hcc_sentinel_probes_in_flight", "Probes running now.", value=st.in_flight())
        if st.store_stats is not None:
            s = st.store_stats()
            yield CounterMetricFamily("hcc_sentinel_store_rows_written", "Results written to the history DB.",
                                      value=s.get("rows_written", 0))
            yield CounterMetricFamily("hcc_sentinel_store_write_errors",
                                      "Failed writes of the history DB (rows kept and retried).",
                                      value=s.get("write_errors", 0))
            yield GaugeMetricFamily("hcc_sentinel_store_pending_rows", "Results waiting to be written.",
                                    value=s.get("pending", 0))
            yield CounterMetricFamily("hcc_sentinel_store_rows_pruned", "Rows removed by retention.",
                                      value=s.get("rows_pruned", 0))

    # -- blackbox_exporter-style gauges of the last result --------------------------------
    def _last_result_families(self) -> Iterable[Metric]:  # noqa: C901
        st = self.state
        fams: dict[str, GaugeMetricFamily] = {}

        def g(name: str, doc: str, labels: list[str], values: list[str], value: float) -> None:
            fam = fams.get(name)
            if fam is None:
                fam = fams[name] = GaugeMetricFamily(name, doc, labels=["target"] + labels)
            fam.add_metric(values, float(value))

        host_counters: dict[str, CounterMetricFamily] = {}

        def hc(name: str, doc: str, labels: list[str], values: list[str], value: float) -> None:
            fam = host_counters.get(name)
            if fam is None:
                fam = host_counters[name] = CounterMetricFamily(name, doc, labels=labels)
            fam.add_metric(values, float(value))

        for tid in sorted(st.targets):
            c = st.counters.get(tid)
            r = c.last if c else None
            if r is None:
                continue
            f = r.facts
            g("probe_success", "Displays whether or not the probe was a success", [], [tid], 1 if r.success else 0)
            g("probe_duration_seconds", "Returns how long the probe took to complete in seconds", [], [tid],
              r.duration_seconds)
            g("probe_last_result_timestamp_seconds", "Start of the last probe (Unix seconds).", [], [tid],
              r.started_at)
            for o in OUTCOMES:
                g("probe_outcome", "1 for the outcome of the last probe (ok/slow/error/hang), 0 for the others.",
                  ["outcome"], [tid, o], 1 if r.outcome.value == o else 0)
            if "resolve" in r.phases:
                g("probe_dns_lookup_time_seconds", "Returns the time taken for probe dns lookup in seconds",
                  [], [tid], r.phases["resolve"])
            if r.kind in ("http", "flow"):
                for phase in PHASES:
                    g("probe_http_duration_seconds", "Duration of http request by phase, summed over all redirects",
                      ["phase"], [tid, phase], r.phases.get(phase, 0.0))
                g("probe_http_status_code", "Response HTTP status code", [], [tid],
                  _num(f.get("http_status_code"), 0))
                if "content_length" in f:
                    g("probe_http_content_length", "Length of http content response", [], [tid],
                      _num(f.get("content_length"), -1))
                if "body_bytes" in f:
                    g("probe_http_uncompressed_body_length", "Length of uncompressed response body", [], [tid],
                      _num(f.get("body_bytes"), 0))
                if "redirects" in f:
                    g("probe_http_redirects", "The number of redirects", [], [tid], _num(f.get("redirects"), 0))
                if "http_ssl" in f or "final_url" in f or "url" in f:
                    ssl = f.get("http_ssl")
                    if ssl is None:
                        ssl = str(f.get("final_url") or f.get("url") or "").startswith("https:")
                    g("probe_http_ssl", "Indicates if SSL was used for the final redirect", [], [tid], 1 if ssl else 0)
                if "http_version" in f:
                    g("probe_http_version", "Returns the version of HTTP of the probe response", [], [tid],
                      _num(f.get("http_version"), 0))
                g("probe_failed_due_to_regex", "Indicates if probe failed due to regex", [], [tid],
                  1 if r.reason == "content" else 0)
            if r.kind == "flow":  # per journey step (facts of probes.flow); steps not reached: success 0
                ran = {s.get("name"): s for s in f.get("flow_steps") or [] if isinstance(s, dict)}
                for step in f.get("flow_step_names") or list(ran):
                    s = ran.get(step)
                    g("probe_flow_step_success", "1 if the journey step succeeded in the last probe, "
                      "0 if it failed or was not reached", ["step"], [tid, _label(str(step))],
                      1 if s and s.get("outcome") in ("ok", "slow") else 0)
                    if s and s.get("duration_seconds") is not None:
                        g("probe_flow_step_duration_seconds", "Duration of the journey step in the last probe, "
                          "seconds", ["step"], [tid, _label(str(step))], _num(s.get("duration_seconds"), 0))
            if "cert_not_after" in f:
                g("probe_ssl_earliest_cert_expiry", "Returns last SSL chain expiry in unixtime", [], [tid],
                  _num(f.get("cert_not_after"), 0))
            if f.get("tls_version"):
                g("probe_tls_version_info", "Returns the TLS version used or NaN when unknown", ["version"],
                  [tid, _label(f["tls_version"])], 1)
            for key in ("dns_answer_rrs", "dns_authority_rrs", "dns_additional_rrs"):
                if key in f:
                    g("probe_" + key, f"Returns number of entries in the {key[4:-4]} resource record list",
                      [], [tid], _num(f[key], 0))
            if r.kind == "icmp":
                for phase in ("resolve", "setup", "rtt"):
                    value = r.phases.get(phase)
                    if value is None and phase == "rtt":
                        value = f.get("icmp_rtt_avg_seconds")
                    if value is not None:
                        g("probe_icmp_duration_seconds", "Duration of icmp request by phase", ["phase"],
                          [tid, phase], _num(value, 0))
                loss = f.get("icmp_loss_ratio")
                if loss is not None:
                    g("probe_icmp_packet_loss_ratio", "Share of ICMP echo requests without a reply (0..1)",
                      [], [tid], _num(loss, 0))
                if "icmp_reply_hop_limit" in f:
                    g("probe_icmp_reply_hop_limit", "Replied packet hop limit (TTL for ipv4)", [], [tid],
                      _num(f["icmp_reply_hop_limit"], 0))
            ip = f.get("ip_address")
            if ip:
                try:
                    version = ipaddress.ip_address(str(ip).split("%")[0]).version
                except ValueError:
                    version = 0
                if version:
                    g("probe_ip_protocol", "Specifies whether probe ip protocol is IP4 or IP6", [], [tid], version)
                g("probe_ip_addr_hash", "Specifies the hash of IP address. It's useful to detect if the IP "
                  "address changes.", [], [tid], fnv1a32(str(ip)))
            if r.kind == "host":
                self._host(tid, f, g, hc)
        yield from fams.values()
        yield from host_counters.values()

    @staticmethod
    def _host(tid: str, f: dict[str, Any], g: Callable[..., None], hc: Callable[..., None]) -> None:
        """Facts of the ``host`` kind (``probes.host``, ``host_*``) -> ``hcc_sentinel_host_*``."""
        simple = {
            "host_cpu_usage_ratio": ("cpu_usage_ratio", "CPU busy share since the previous host probe (0..1)"),
            "host_cpu_count": ("cpu_count", "Logical CPUs"),
            "host_load1": ("load1", "1-minute load average"),
            "host_load5": ("load5", "5-minute load average"),
            "host_load15": ("load15", "15-minute load average"),
            "host_memory_used_ratio": ("memory_used_ratio", "Memory in use, (total - available) / total"),
            "host_memory_total_bytes": ("memory_total_bytes", "Memory installed (bytes)"),
            "host_memory_available_bytes": ("memory_available_bytes", "Memory available (bytes)"),
            "host_swap_used_ratio": ("swap_used_ratio", "Swap in use (0..1)"),
            "host_swap_total_bytes": ("swap_total_bytes", "Swap size (bytes)"),
            "host_boot_time": ("boot_time_seconds", "Boot time (Unix seconds)"),
            "host_uptime_seconds": ("uptime_seconds", "Seconds since boot"),
            "host_clock_synchronized": ("clock_synchronized", "1 if the kernel clock is NTP-synchronised"),
            "host_clock_offset_seconds": ("clock_offset_seconds", "Kernel clock offset from its NTP source (seconds)"),
            "host_clock_max_error_seconds": ("clock_max_error_seconds", "Kernel clock maximum error (seconds)"),
        }
        for fact, (name, doc) in simple.items():
            value = f.get(fact)
            if isinstance(value, (int, float)):  # bool is an int: 1/0
                g("hcc_sentinel_host_" + name, doc, [], [tid], float(value))
        for fact, name, doc in (("host_disk_used_ratio", "disk_used_ratio", "Disk space in use, as df(1) (0..1)"),
                                ("host_disk_free_bytes", "disk_free_bytes", "Disk space free (bytes)"),
                                ("host_disk_total_bytes", "disk_total_bytes", "Disk size (bytes)")):
            per_path = f.get(fact)
            if isinstance(per_path, dict):
                for path, value in sorted(per_path.items()):
                    if isinstance(value, (int, float)):
                        g("hcc_sentinel_host_" + name, doc, ["path"], [tid, _label(path)], value)
        for fact, name, doc in (("host_network_errors_total", "hcc_sentinel_host_network_errors",
                                 "Network interface errors since boot"),
                                ("host_network_drops_total", "hcc_sentinel_host_network_drops",
                                 "Network interface dropped packets since boot")):
            per_nic = f.get(fact)
            if isinstance(per_nic, dict):
                for iface, directions in sorted(per_nic.items()):
                    if not isinstance(directions, dict):
                        continue
                    for direction, value in sorted(directions.items()):
                        if isinstance(value, (int, float)):
                            hc(name, doc, ["target", "interface", "direction"],
                               [tid, _label(iface), _label(direction)], value)
        exceeded = f.get("host_thresholds_exceeded")
        if isinstance(exceeded, list):
            g("hcc_sentinel_host_thresholds_exceeded", "Resources above their configured maximum", [], [tid],
              len(exceeded))


def _num(value: Any, default: float) -> float:
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        return float(default)


def make_registry(state: MetricsState, process_metrics: bool = True) -> CollectorRegistry:
    """A registry with the runtime collector and, optionally, process/platform/GC collectors.

    Extra collectors (the alerts engine's) are added with ``registry.register(collector)``.
    """
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RuntimeCollector(state))
    if process_metrics:
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
    return registry


def exposition(registry: CollectorRegistry, accept: str | None) -> tuple[bytes, str]:
    """Render the registry in the format the scraper asked for (``Accept`` header).

    Uses :func:`prometheus_client.exposition.choose_encoder`: OpenMetrics 1.0 when the header
    accepts ``application/openmetrics-text``, else the Prometheus text format 0.0.4.

    Returns:
        ``(body, content_type)``.
    """
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type
