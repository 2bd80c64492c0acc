"""Config value types shared by every package's config models (probes, alerts, agent).

Durations are written Prometheus-style in YAML (``500ms``, ``30s``, ``5m``, ``1h30m``, ``35d``;
units ``y w d h m s ms`` largest first, as in the Prometheus docs "Time durations", decimals
allowed) and become float seconds in code.  The arithmetic is done by the ``pytimeparse2``
library; a bare YAML number is taken as seconds.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BeforeValidator, ConfigDict, SecretStr
from pytimeparse2 import parse as _parse_time


_PROM_DURATION = re.compile(
    r"0|(?:(?:\d+(?:\.\d+)?)y)?(?:(?:\d+(?:\.\d+)?)w)?(?:(?:\d+(?:\.\d+)?)d)?(?:(?:\d+(?:\.\d+)?)h)?"
    r"(?:(?:\d+(?:\.\d+)?)m(?!s))?(?:(?:\d+(?:\.\d+)?)s)?(?:(?:\d+(?:\.\d+)?)ms)?")


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
        text = value.strip()
        # the grammar is Prometheus' (units y w d h m s ms, largest first, e.g. 1h30m), with
        # decimals allowed (1.5s); the arithmetic is pytimeparse2's
        parsed = _parse_time(text) if _PROM_DURATION.fullmatch(text) else None
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
