"""The ``host`` probe on this machine (psutil): facts, thresholds, CPU state across calls."""

from __future__ import annotations

import json
import time

import pytest

from probes import host
from probes.base import Outcome, ProbeContext, TargetSpec

MARGIN = 1.5  # seconds: shared 2-core machine, never assert tight timings


def spec(target_id: str = "host-test", timeout: float = 3.0, **options) -> TargetSpec:
    return TargetSpec(id=target_id, kind="host", timeout=timeout, slow_after=2.0, options=host.Options(**options))


async def run(target: TargetSpec):
    started = time.perf_counter()
    result = await host.probe(target, ProbeContext())
    elapsed = time.perf_counter() - started
    assert elapsed <= target.timeout + MARGIN, f"probe took {elapsed:.2f}s"
    return result


def burn_cpu(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        sum(range(1000))


@pytest.fixture(autouse=True)
def fresh_cpu_state():
    host.reset_cpu_state()
    yield
    host.reset_cpu_state()


async def test_facts_ok_and_json():
    result = await run(spec(disk_paths=["/", "/tmp"]))
    assert result.outcome is Outcome.OK and result.reason == "ok", result.detail
    facts = result.facts
    json.dumps(result.to_json())
    assert 0.0 <= facts["host_cpu_usage_ratio"] <= 1.0
    assert facts["host_cpu_count"] >= 1
    assert 0.0 < facts["host_memory_used_ratio"] < 1.0
    assert facts["host_memory_total_bytes"] > facts["host_memory_available_bytes"] > 0
    assert 0.0 <= facts["host_swap_used_ratio"] <= 1.0
    assert set(facts["host_disk_used_ratio"]) == {"/", "/tmp"}
    assert all(0.0 < r < 1.0 for r in facts["host_disk_used_ratio"].values())
    assert facts["host_disk_free_bytes"]["/"] > 0 and facts["host_disk_total_bytes"]["/"] > 0
    assert "lo" in facts["host_network_errors_total"]
    assert set(facts["host_network_errors_total"]["lo"]) == {"rx", "tx"}
    assert set(facts["host_network_drops_total"]["lo"]) == {"rx", "tx"}
    assert facts["host_boot_time"] < time.time() and facts["host_uptime_seconds"] > 0
    assert abs(facts["host_time"] - time.time()) < 60
    assert facts["host_load1"] >= 0 and facts["host_load15"] >= 0
    if "host_clock_synchronized" in facts:  # Linux adjtimex
        assert isinstance(facts["host_clock_synchronized"], bool)
        assert facts["host_clock_max_error_seconds"] >= 0
    assert facts["host_thresholds_exceeded"] == []
    assert result.duration_seconds < 1.0


async def test_thresholds_at_one_never_trip():
    result = await run(spec(cpu_max=1.0, memory_max=1.0, swap_max=1.0, disk_max=1.0))
    assert result.reason == "ok", result.detail


async def test_thresholds_at_zero_trip_and_are_named():
    target = spec(cpu_max=0.0, memory_max=0.0, disk_max=0.0)
    await run(target)  # first sample of this target
    burn_cpu(0.3)  # make sure the CPU was busy during the next window
    result = await run(target)
    assert result.outcome is Outcome.ERROR and result.reason == "threshold", result.detail
    exceeded = result.facts["host_thresholds_exceeded"]
    assert {"cpu", "memory", "disk:/"} <= set(exceeded)
    assert "memory" in result.detail and "disk:/" in result.detail and "cpu" in result.detail


async def test_single_threshold_named():
    result = await run(spec(memory_max=0.0))
    assert result.reason == "threshold"
    assert result.facts["host_thresholds_exceeded"] == ["memory"]


async def test_cpu_state_kept_per_target():
    first = await run(spec("a"))
    burn_cpu(0.3)
    second = await run(spec("a"))
    assert second.facts["host_cpu_usage_ratio"] > 0.0  # the window covered the busy loop
    assert first.facts["host_cpu_usage_ratio"] >= 0.0
    assert "a" in host._last_cpu and "b" not in host._last_cpu


async def test_missing_disk_path():
    result = await run(spec(disk_paths=["/definitely/not/here"]))
    assert result.outcome is Outcome.ERROR and result.reason == "internal"
    assert "/definitely/not/here" in result.detail


def test_options_validation():
    with pytest.raises(ValueError):
        host.Options(cpu_max=1.5)
    with pytest.raises(ValueError):
        host.Options(disk_paths=["relative/path"])
    with pytest.raises(ValueError):
        host.Options(disk_max=0.9, extra=True)
    assert host.Options().disk_paths == ["/"]
