"""What the alerts engine knows about the monitored targets and the site, independent of ``agent``.

The agent builds these from its config (``agent.api_alerts.build_engine``); the central relay
or a test can build them directly.  ``alerts`` never imports ``agent``.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping


@dataclasses.dataclass(frozen=True)
class AlertTarget:
    """One monitored target as the alerting engine sees it.

    Attributes:
        id: target id (slug).
        name: display name (Vietnamese), or ``None`` to show the id.
        system: id of the shared system the target belongs to.
        system_name: Vietnamese name of that system; system_name_en: English name.
        owner: id of the responsible unit (the target's own ``owner`` or its system's).
        depends_on: ids of targets this one depends on (typically the commune uplink).
        uplink: this target checks the commune's own link.
        interval: normal probe interval, seconds.
        retry_interval: shorter interval while the target is failing, seconds (``None``: none).
        failure_threshold: consecutive error/hang results before ``down``.
        success_threshold: consecutive ok results before ``up`` again.
        degraded_threshold: consecutive not-ok results (slow or worse) before ``degraded``.
        labels: free labels from the config (``severity`` overrides the computed one).
    """

    id: str
    name: str | None = None
    system: str | None = None
    system_name: str | None = None
    system_name_en: str | None = None
    owner: str | None = None
    depends_on: tuple[str, ...] = ()
    uplink: bool = False
    interval: float = 60.0
    retry_interval: float | None = None
    failure_threshold: int = 3
    success_threshold: int = 2
    degraded_threshold: int = 3
    labels: Mapping[str, str] = dataclasses.field(default_factory=dict)

    @property
    def display_name(self) -> str:
        """``name`` or, when unset, the id."""
        return self.name or self.id


@dataclasses.dataclass(frozen=True)
class Site:
    """The agent's identity as shown in messages.

    Attributes:
        agent_id: the agent's id.
        commune_code: 5-digit administrative unit code; commune_name: Vietnamese name
            (e.g. "Phường Biên Hòa"); commune_type: ``xa`` or ``phuong``.
        timezone: IANA zone for windows and message times (Asia/Ho_Chi_Minh).
        status_url: link to the agent's status page, or ``None``.
        config_path: absolute path of the agent's config file, for the ``hcc-sentinel ack ...
            -c <config>`` hint printed in messages (``None``: a placeholder is printed).
    """

    agent_id: str
    commune_code: str
    commune_name: str
    commune_type: str = "xa"
    timezone: str = "Asia/Ho_Chi_Minh"
    status_url: str | None = None
    config_path: str | None = None
