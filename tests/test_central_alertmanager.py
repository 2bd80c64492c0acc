"""The rendered Alertmanager config, checked with Debian's amtool and a real Alertmanager.

* ``amtool check-config`` on the committed configs/alertmanager/alertmanager.yml;
* ``amtool config routes test`` for every route (each unit's ``owner`` route, the escalation
  routes, the default route);
* inhibition: alerts posted to a real Alertmanager on 127.0.0.1 (API v2), whose
  ``status.inhibitedBy`` must show each inhibit rule at work — amtool cannot test inhibitions.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml

from conftest import require_binary
from tests.ports import free_port as _pick_port

ROOT = Path(__file__).resolve().parents[1]
AM_CONFIG = ROOT / "configs" / "alertmanager" / "alertmanager.yml"

pytestmark = pytest.mark.alertmanager


def _free_port() -> int:
    return _pick_port()


def test_amtool_check_config():
    amtool = require_binary("amtool")
    proc = subprocess.run([amtool, "check-config", str(AM_CONFIG)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout
    assert " - 99 receivers" in proc.stdout
    assert " - 6 inhibit rules" in proc.stdout


def _route(amtool: str, *labels: str) -> str:
    proc = subprocess.run([amtool, "config", "routes", "test", f"--config.file={AM_CONFIG}", *labels],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_amtool_routes_every_unit():
    amtool = require_binary("amtool")
    config = yaml.safe_load(AM_CONFIG.read_text(encoding="utf-8"))
    units = [r["name"] for r in config["receivers"]]
    assert {"so-khcn", "cong-an", "so-tu-phap", "vp-ubnd", "it-26068", "it-25225"} <= set(units)
    for unit in units:
        assert _route(amtool, "alertname=SomeAlert", f"owner={unit}", "severity=page") == unit


@pytest.mark.parametrize("labels, receiver", [
    # procedure systems -> Sở Khoa học và Công nghệ; VNeID -> Công an tỉnh
    (["alertname=SystemOutageCentral", "system=motcua", "owner=so-khcn", "scope=central"], "so-khcn"),
    (["alertname=SystemOutageCentral", "system=vneid-sso", "owner=cong-an", "scope=central"], "cong-an"),
    (["alertname=SystemOutageCentral", "system=hotich", "owner=so-tu-phap", "scope=central"], "so-tu-phap"),
    # the commune's own link -> its IT contact
    (["alertname=CommuneLinkDown", "system=uplink", "commune_code=26068", "owner=it-26068", "scope=commune"], "it-26068"),
    (["alertname=AgentMissing", "commune_code=25225", "owner=it-25225", "scope=commune"], "it-25225"),
    # escalation -> Văn phòng UBND tỉnh (before the owner route), commune escalation -> Sở KH&CN
    (["alertname=Escalation", "escalate_to=vp-ubnd", "owner=so-khcn", "escalated_alertname=SystemOutageCentral"], "vp-ubnd"),
    (["alertname=Escalation", "escalate_to=so-khcn", "owner=it-26068", "escalated_alertname=CommuneLinkDown"], "so-khcn"),
    # no owner (AgentsAbsent, HccSentinelRulesIncomplete) or an unknown one -> the default unit
    (["alertname=AgentsAbsent", "scope=central"], "so-khcn"),
    (["alertname=X", "owner=nobody"], "so-khcn"),
])
def test_amtool_routes(labels, receiver):
    amtool = require_binary("amtool")
    assert _route(amtool, *labels) == receiver


@pytest.fixture
def alertmanager(tmp_path):
    binary = require_binary("prometheus-alertmanager")
    port, dead = _free_port(), _free_port()
    # deliveries go to a closed port: only the inhibition state matters here
    cfg = tmp_path / "alertmanager.yml"
    cfg.write_text(AM_CONFIG.read_text(encoding="utf-8").replace("http://127.0.0.1:9471", f"http://127.0.0.1:{dead}"),
                   encoding="utf-8")
    proc = subprocess.Popen([binary, f"--config.file={cfg}", f"--storage.path={tmp_path / 'data'}",
                             f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=",
                             "--log.level=warn"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("alertmanager did not start: " + (proc.stderr.read().decode() if proc.stderr else ""))
        time.sleep(0.2)
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


def _post(url: str, alerts: list[dict[str, str]]) -> None:
    now = datetime.now(timezone.utc)
    body = [{"labels": labels, "annotations": {"summary": "test"},
             "startsAt": now.isoformat(), "endsAt": (now + timedelta(hours=1)).isoformat()} for labels in alerts]
    req = urllib.request.Request(f"{url}/api/v2/alerts", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 200


def _states(url: str) -> dict[str, bool]:
    """alert id (label 'id') -> inhibited?"""
    with urllib.request.urlopen(f"{url}/api/v2/alerts", timeout=10) as r:
        alerts = json.loads(r.read())
    return {a["labels"]["id"]: bool(a["status"]["inhibitedBy"]) for a in alerts}


def A(id_: str, **labels: str) -> dict[str, str]:
    return {"id": id_, **labels}


SCENARIOS = {
    # A central outage of motcua mutes motcua's per-commune alerts, its slowness and burn alerts
    # and their escalations; not other systems', not its own escalation.
    "central outage": ([
        A("outage", alertname="SystemOutageCentral", system="motcua", owner="so-khcn", scope="central", severity="page"),
        A("local-motcua", alertname="CommuneSystemDown", system="motcua", commune_code="26068", owner="it-26068", scope="commune"),
        A("local-dvcqg", alertname="CommuneSystemDown", system="dvcqg", commune_code="26041", owner="it-26041", scope="commune"),
        A("slow-motcua", alertname="SystemSlow", system="motcua", target="motcua-home", owner="so-khcn", scope="central"),
        A("burn-motcua", alertname="SLOErrorBudgetBurn", system="motcua", owner="so-khcn", scope="central", slo="availability"),
        A("burn-dvcqg", alertname="SLOErrorBudgetBurn", system="dvcqg", owner="so-khcn", scope="central", slo="availability"),
        A("esc-burn", alertname="Escalation", escalated_alertname="SLOErrorBudgetBurn", system="motcua", owner="so-khcn",
          escalate_to="vp-ubnd", scope="central"),
        A("esc-outage", alertname="Escalation", escalated_alertname="SystemOutageCentral", system="motcua", owner="so-khcn",
          escalate_to="vp-ubnd", scope="central"),
    ], {"local-motcua", "slow-motcua", "burn-motcua", "esc-burn"}),
    # A commune's link down mutes that commune's other alerts, not its own escalation, not other
    # communes'.
    "commune link down": ([
        A("link-26017", alertname="CommuneLinkDown", system="uplink", commune_code="26017", owner="it-26017", scope="commune"),
        A("reload-26017", alertname="AgentConfigReloadFailed", commune_code="26017", owner="it-26017", scope="commune"),
        A("local-26017", alertname="CommuneSystemDown", system="hotich", commune_code="26017", owner="it-26017", scope="commune"),
        A("esc-link-26017", alertname="Escalation", escalated_alertname="CommuneLinkDown", system="uplink",
          commune_code="26017", owner="it-26017", escalate_to="so-khcn", scope="commune"),
        A("local-26020", alertname="CommuneSystemDown", system="hotich", commune_code="26020", owner="it-26020", scope="commune"),
    ], {"reload-26017", "local-26017"}),
    # Many agents missing at once: the fleet alert mutes every AgentMissing; an agent missing
    # mutes its commune's other (stale) alerts.
    "agents missing": ([
        A("fleet-scrape", alertname="FleetScrapeOutage", owner="so-khcn", scope="central"),
        A("missing-25993", alertname="AgentMissing", commune_code="25993", owner="it-25993", scope="commune"),
        A("missing-26005", alertname="AgentMissing", commune_code="26005", owner="it-26005", scope="commune"),
        A("link-26005", alertname="CommuneLinkDown", system="uplink", commune_code="26005", owner="it-26005", scope="commune"),
        A("link-26041", alertname="CommuneLinkDown", system="uplink", commune_code="26041", owner="it-26041", scope="commune"),
    ], {"missing-25993", "missing-26005", "link-26005"}),
    # A central uplink outage (provincial WAN / shared DNS) mutes the communes' link alerts.
    "central uplink outage": ([
        A("outage-uplink", alertname="SystemOutageCentral", system="uplink", owner="so-khcn", scope="central"),
        A("link-26080", alertname="CommuneLinkDown", system="uplink", commune_code="26080", owner="it-26080", scope="commune"),
        A("link-26089", alertname="CommuneLinkDown", system="uplink", commune_code="26089", owner="it-26089", scope="commune"),
        A("local-26089", alertname="CommuneSystemDown", system="motcua", commune_code="26089", owner="it-26089", scope="commune"),
    ], {"link-26080", "link-26089", "local-26089"}),
}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_inhibitions_in_a_real_alertmanager(alertmanager, scenario):
    alerts, expected = SCENARIOS[scenario]
    _post(alertmanager, alerts)
    deadline = time.monotonic() + 20
    while True:
        states = _states(alertmanager)
        if (len(states) == len(alerts) and {k for k, v in states.items() if v} == expected) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert {k for k, v in states.items() if v} == expected, json.dumps(states, indent=1)
