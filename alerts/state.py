"""Per-target health state machine with thresholds and Nagios-style flap detection.

Health from a target's own results (the *confirmed* state; transitions only after thresholds):

* ``up`` → ``down`` after ``failure_threshold`` consecutive ``error``/``hang`` results
  (Icinga ``max_check_attempts``, Gatus ``failure-threshold``);
* ``up`` → ``degraded`` after ``degraded_threshold`` consecutive results that are not ``ok``
  (``slow``, ``error`` or ``hang``), when not already ``down``;
* ``down`` → ``degraded``/``up`` after ``success_threshold`` consecutive successes (``ok`` or
  ``slow``): ``degraded`` when the not-ok streak still reaches ``degraded_threshold``;
* ``degraded`` → ``up`` after ``success_threshold`` consecutive ``ok`` results
  (Gatus ``success-threshold``).

So one blip changes nothing and recovery needs consecutive successes.  The engine derives the
exported state from health plus context: ``maintenance`` (a window or maintenance silence is
active), ``unreachable`` (health is bad while a dependency is down), else the health.

Flap detection follows Nagios Core (docs "Detection and Handling of State Flapping";
``flapping.c``): the last 21 results are kept as classes (0 ok, 1 slow, 2 error/hang); each of the
20 transitions between consecutive results that changes class counts with a weight rising
linearly from 0.75 (oldest) to 1.25 (newest); the percent state change is
``100 * sum(weights of changes) / 20``.  Flapping starts when it rises above 20 % and stops when
it falls below 5 % (hysteresis).  As in Nagios, a short history is padded (no changes), so a new
target does not start out flapping.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any

from probes.base import Outcome, ProbeResult


class State(str, enum.Enum):
    """Exported state of a target (``hcc_sentinel_target_state{state}``)."""

    UP = "up"
    DEGRADED = "degraded"
    DOWN = "down"
    MAINTENANCE = "maintenance"
    UNREACHABLE = "unreachable"

    @property
    def vietnamese(self) -> str:
        """bình thường / chậm (suy giảm) / ngừng hoạt động / đang bảo trì / không kiểm tra được."""
        return {
            "up": "bình thường",
            "degraded": "chậm (suy giảm)",
            "down": "ngừng hoạt động",
            "maintenance": "đang bảo trì",
            "unreachable": "không kiểm tra được (mất đường truyền)",
        }[self.value]


STATES: tuple[State, ...] = tuple(State)

#: Weight of the oldest and the newest transition (Nagios ``low_curve_value``/``high_curve_value``).
FLAP_LOW_WEIGHT = 0.75
FLAP_HIGH_WEIGHT = 1.25


def outcome_class(outcome: Outcome) -> int:
    """0 for ok, 1 for slow, 2 for error/hang (the 'state' whose changes count as flaps)."""
    return {Outcome.OK: 0, Outcome.SLOW: 1}.get(Outcome(outcome), 2)


def flap_percent(history: list[int], samples: int = 21) -> float:
    """Nagios weighted percent state change of ``history`` (oldest first), 0..100.

    Args:
        history: outcome classes, oldest first; only the last ``samples`` are used.
        samples: window size (Nagios: 21 results → 20 transitions).

    Returns:
        ``100 * Σ weight_i * changed_i / (samples - 1)`` with ``weight_i`` rising linearly from
        0.75 to 1.25 over transitions i = 1 .. samples-1 (source: Nagios ``flapping.c``).
    """
    hist = history[-samples:]
    transitions = samples - 1
    # pad at the front so the newest transition always has the highest weight
    offset = transitions - (len(hist) - 1) if hist else transitions
    total = 0.0
    for i in range(1, len(hist)):
        x = offset + i  # 1 .. transitions
        if hist[i] != hist[i - 1]:
            total += FLAP_LOW_WEIGHT + (x - 1) * (FLAP_HIGH_WEIGHT - FLAP_LOW_WEIGHT) / max(1, transitions - 1)
    return 100.0 * total / transitions


@dataclasses.dataclass
class Transition:
    """What one observation changed.

    Attributes:
        old: health before; new: health after (``State.UP/DEGRADED/DOWN``).
        flap_started / flap_stopped: the flapping flag was set / cleared by this result.
    """

    old: State
    new: State
    flap_started: bool = False
    flap_stopped: bool = False

    @property
    def changed(self) -> bool:
        return self.old != self.new or self.flap_started or self.flap_stopped


@dataclasses.dataclass
class TargetState:
    """Health of one target from its own results; JSON-persisted by the engine.

    Times are Unix seconds (UTC).  ``bad_since`` is the start of the first result of the
    current not-ok streak (what messages call "since"); ``health_since`` the time of the last
    health change.
    """

    target: str
    health: State = State.UP
    health_since: float | None = None
    ok_streak: int = 0
    success_streak: int = 0
    fail_streak: int = 0
    notok_streak: int = 0
    bad_since: float | None = None
    history: list[int] = dataclasses.field(default_factory=list)
    flapping: bool = False
    flap_percent: float = 0.0
    last_outcome: str | None = None
    last_reason: str | None = None
    last_detail: str | None = None
    last_at: float | None = None
    last_bad_outcome: str | None = None
    last_bad_reason: str | None = None
    last_bad_detail: str | None = None
    results: int = 0

    def observe(self, result: ProbeResult, failure_threshold: int, success_threshold: int,
                degraded_threshold: int, flap_samples: int = 21, flap_start: float = 20.0,
                flap_stop: float = 5.0, flap_enabled: bool = True) -> Transition:
        """Fold one result into the state.

        Args:
            result: the probe result (``started_at`` Unix seconds).
            failure_threshold / success_threshold / degraded_threshold: counts (≥ 1).
            flap_samples / flap_start / flap_stop: Nagios window and thresholds (percent).
            flap_enabled: when false the flapping flag stays off.

        Returns:
            The :class:`Transition` (old and new health, flap start/stop).
        """
        old = self.health
        outcome = Outcome(result.outcome)
        at = float(result.started_at)
        self.results += 1
        self.last_outcome, self.last_reason, self.last_detail, self.last_at = (
            outcome.value, result.reason, result.detail, at)
        if outcome == Outcome.OK:
            self.ok_streak += 1
            self.success_streak += 1
            self.fail_streak = 0
            self.notok_streak = 0
        elif outcome == Outcome.SLOW:
            self.ok_streak = 0
            self.success_streak += 1
            self.fail_streak = 0
            self.notok_streak += 1
        else:
            self.ok_streak = 0
            self.success_streak = 0
            self.fail_streak += 1
            self.notok_streak += 1
        if outcome != Outcome.OK:
            if self.notok_streak == 1:
                self.bad_since = at
            self.last_bad_outcome, self.last_bad_reason, self.last_bad_detail = (
                outcome.value, result.reason, result.detail)

        new = old
        if self.fail_streak >= failure_threshold:
            new = State.DOWN
        elif old == State.DOWN:
            if self.success_streak >= success_threshold:
                # answering again; "up" only when the last successes were all fast
                new = State.UP if self.ok_streak >= success_threshold else State.DEGRADED
        elif old == State.DEGRADED:
            if self.ok_streak >= success_threshold:
                new = State.UP
        else:  # UP
            if self.notok_streak >= degraded_threshold:
                new = State.DEGRADED
        if new != old:
            self.health = new
            self.health_since = at
        if new == State.UP and self.ok_streak > 0:
            self.bad_since = None

        self.history.append(outcome_class(outcome))
        del self.history[:-flap_samples]
        self.flap_percent = flap_percent(self.history, flap_samples)
        started = stopped = False
        if flap_enabled:
            if not self.flapping and self.flap_percent > flap_start:
                self.flapping = started = True
            elif self.flapping and self.flap_percent < flap_stop:
                self.flapping = False
                stopped = True
        elif self.flapping:
            self.flapping, stopped = False, True
        return Transition(old, new, started, stopped)

    @property
    def failing(self) -> bool:
        """The last result was an error or hang (soft or hard failure)."""
        return self.fail_streak > 0

    def to_json(self) -> dict[str, Any]:
        """Plain dict for persistence (``health`` as its string value)."""
        data = dataclasses.asdict(self)
        data["health"] = self.health.value
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "TargetState":
        """Inverse of :meth:`to_json`; unknown keys are ignored (forward compatibility)."""
        fields = {f.name for f in dataclasses.fields(cls)}
        clean = {k: v for k, v in data.items() if k in fields}
        clean["health"] = State(clean.get("health", "up"))
        return cls(**clean)
