"""Shared test helpers.

Tests that need a Debian binary (prometheus, promtool, alertmanager, amtool, chromium,
prometheus-blackbox-exporter) skip with a message when it is absent on a developer's machine, but
FAIL under CI (``CI=true``), where ``.ci/run`` installs them: a green CI never hides a skipped
integration test.
"""

from __future__ import annotations

import os
import shutil

import pytest


def require_binary(name: str) -> str:
    """Path of the executable ``name``; skip the test (fail under ``CI=true``) when absent."""
    path = shutil.which(name) or (f"/usr/bin/{name}" if os.path.exists(f"/usr/bin/{name}") else None)
    if path:
        return path
    message = f"{name} is not installed (apt-get install it; .ci/run does)"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(message)
    pytest.skip(message)
