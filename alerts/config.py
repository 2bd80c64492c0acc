"""Config models of the ``alerting:`` section (owned by the alerts package).

PLACEHOLDER written by the lead so the agent config composes; the alerting engineer replaces it
with units, routes, maintenance windows, silences, outbox and template settings.
"""

from __future__ import annotations

from pydantic import BaseModel

from probes.config_types import STRICT


class AlertingConfig(BaseModel):
    """The ``alerting:`` section. Empty means: the agent sends no notifications."""

    model_config = STRICT
    enabled: bool = True
