"""Routing of a notice to responsible units: an Alertmanager-style tree over target facts.

Facts of one incident (keys of :data:`alerts.config.MATCH_KEYS`): ``target``, ``system``,
``owner``, ``commune``, ``outcome`` (error/hang/slow), ``severity`` (critical/warning),
``cause`` (system/local_link) and ``kind`` (down/degraded/flapping/link).

Tree walk (source: Alertmanager configuration docs, "route"; Alertmanager ``dispatch/route.go``
``Match``): the root always matches; for a matching node, its children are tried in order;
every matching child is walked recursively and the walk stops after the first matching child
unless that child has ``continue: true``; a node none of whose children match is itself a
result.  The units of all results are unioned, in order, without duplicates.
"""

from __future__ import annotations

from typing import Iterable

from alerts.config import Route, Unit


class Router:
    """Resolves facts to unit ids.

    Args:
        route: the root :class:`alerts.config.Route`.
        units: the configured units (unknown ids, e.g. an owner that is not a unit, are dropped).
    """

    def __init__(self, route: Route, units: Iterable[Unit]) -> None:
        self.root = route
        self.known = {u.id for u in units}

    def match_nodes(self, facts: dict[str, str | None]) -> list[Route]:
        """The result nodes of the tree walk for ``facts`` (at least the root)."""

        def walk(node: Route) -> list[Route]:
            found: list[Route] = []
            for child in node.routes:
                if child.matches(facts):
                    found.extend(walk(child))
                    if not child.continue_:
                        break
            return found or [node]

        return walk(self.root)

    def units_for(self, facts: dict[str, str | None]) -> list[str]:
        """Unit ids to notify for ``facts``, ordered, unique, only configured units.

        A node with ``to_owner: true`` adds ``facts["owner"]`` when that is a configured unit.
        """
        out: list[str] = []
        for node in self.match_nodes(facts):
            ids = list(node.units)
            if node.to_owner and facts.get("owner"):
                ids.append(str(facts["owner"]))
            for unit_id in ids:
                if unit_id in self.known and unit_id not in out:
                    out.append(unit_id)
        return out
