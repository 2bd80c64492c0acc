"""Probe kinds, one module per kind (like blackbox_exporter's ``prober/``).

A module ``probes/<kind>.py`` that defines ``KIND``, ``Options`` and ``probe`` is a kind; adding a
kind is adding one file and naming it in :data:`KIND_MODULES`.  ``probes`` imports neither
``agent`` nor ``alerts``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from probes.base import PHASES, REASONS, Outcome, ProbeContext, ProbeResult, TargetSpec

#: Kinds shipped with the package, in documentation order.
KIND_MODULES: tuple[str, ...] = ("http", "tcp", "dns", "tls", "icmp", "host", "flow")

__all__ = ["PHASES", "REASONS", "Outcome", "ProbeContext", "ProbeResult", "TargetSpec", "kinds"]


def kinds() -> dict[str, ModuleType]:
    """Map kind name -> module, for every kind module that exists.

    Raises:
        ImportError: a listed module exists but fails to import (a bug, never hidden).
    """
    found: dict[str, ModuleType] = {}
    for name in KIND_MODULES:
        try:
            module = importlib.import_module(f"probes.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"probes.{name}":
                continue  # kind not built yet
            raise
        found[module.KIND] = module
    return found
