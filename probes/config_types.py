"""Config value types shared by every package's config models (probes, alerts, agent).

Durations are written Prometheus-style in YAML (``500ms``, ``30s``, ``5m``, ``1h30m``, ``35d``)
and become float seconds in code.  Parsing is done by the ``pytimeparse2`` library; a bare number
is taken as seconds.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator, ConfigDict, SecretStr
from pytimeparse2 import parse as _parse_time


def parse_duration(value: Any) -> float:
    """Parse ``"30s"``/``"5m"``/``"1h30m"``/``"500ms"``/``12`` into seconds (float, >= 0).

    Raises:
        ValueError: not a duration, or negative.
    """
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30s or 5m")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        parsed = _parse_time(value.strip())
        if parsed is None:
            raise ValueError(f"{value!r} is not a duration (write e.g. 500ms, 30s, 5m, 1h30m, 7d)")
        seconds = float(parsed)
    else:
        raise ValueError("expected a duration such as 30s or 5m")
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


def _positive(value: float) -> float:
    if value <= 0:
        raise ValueError("must be greater than zero")
    return value


#: Duration in seconds, >= 0.
Duration = Annotated[float, BeforeValidator(parse_duration)]
#: Duration in seconds, > 0.
PositiveDuration = Annotated[float, BeforeValidator(lambda v: _positive(parse_duration(v)))]
#: A secret value (password, token, apprise URL): never printed by repr/str/logs.
Secret = SecretStr

#: Base model config for every config section: unknown fields are errors.
STRICT = ConfigDict(extra="forbid", frozen=True)
