"""Fleet inventory and ``hcc-sentinel fleet render`` (agent/fleet.py, agent/cmd_fleet.py).

The inventory is the real one (configs/communes.csv, 95 communes); rendered agent configs are
validated with the agent's own loader (agent.config.load_config) after giving their secret
references real files, as an agent host would.
"""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
import unicodedata
from collections import Counter
from pathlib import Path

import pytest
import yaml

from agent.config import load_config
from agent.fleet import (FleetError, load_inventory, name_key, prom_duration, render_fleet)

ROOT = Path(__file__).resolve().parents[1]
INVENTORY = ROOT / "configs" / "communes.csv"
TEMPLATE = ROOT / "configs" / "fleet" / "agent.template.yaml"
OVERRIDES = ROOT / "configs" / "fleet" / "overrides.yaml"
CENTRAL = ROOT / "configs" / "fleet" / "central.yaml"
SOURCE = Path("/work/shared/communes/dong_nai_communes.csv")


@pytest.fixture(scope="module")
def render():
    return render_fleet(INVENTORY, TEMPLATE, OVERRIDES, CENTRAL)


# ---------------------------------------------------------------------------------------------
# inventory
# ---------------------------------------------------------------------------------------------


def test_inventory_counts_and_types():
    c2026 = load_inventory(INVENTORY, "2026")
    c2025 = load_inventory(INVENTORY, "2025")
    assert len(c2026) == len(c2025) == 95
    assert Counter(c.type for c in c2025) == {"xa": 72, "phuong": 23}
    assert Counter(c.type for c in c2026) == {"xa": 62, "phuong": 33}
    assert sum(c.changed_2026 for c in c2026) == 10
    assert len({c.code for c in c2026}) == 95
    assert Counter(c.former_province for c in c2026) == {"Đồng Nai": 55, "Bình Phước": 40}
    for c in c2026:
        assert re.fullmatch(r"\d{5}", c.code)
        assert unicodedata.normalize("NFC", c.name) == c.name
        assert c.name.startswith("Xã " if c.type == "xa" else "Phường ")


def test_inventory_matches_the_shared_source():
    if not SOURCE.exists():
        pytest.skip("shared inventory source not mounted")
    src = {r["code"]: r for r in csv.DictReader(SOURCE.open(encoding="utf-8"))}
    ours = {c.code: c for c in load_inventory(INVENTORY, "2025")}
    assert set(src) == set(ours)
    for code, r in src.items():
        assert name_key(r["name"]) == name_key(ours[code].name)
        assert r["type"] == ours[code].type


def test_name_key_treats_old_and_new_tone_placement_alike():
    assert name_key("Phường Biên Hòa") == name_key("Phường Biên Hoà") == name_key("PHƯỜNG BIÊN HOÀ")
    assert name_key("Xã Tân Hòa") != name_key("Xã Tân Hóa")
    nfd = unicodedata.normalize("NFD", "Xã Thủy Lợi")
    assert name_key(nfd) == name_key("Xã Thuỷ Lợi")


def _csv(tmp_path: Path, rows: list[str], header: str = "code,name,type,former_province") -> Path:
    p = tmp_path / "communes.csv"
    p.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return p


def test_inventory_refuses_duplicate_code_with_its_line(tmp_path):
    p = _csv(tmp_path, ["26068,Phường Biên Hòa,phuong,Đồng Nai", "26041,Phường Trấn Biên,phuong,Đồng Nai",
                        "26068,Phường Khác,phuong,Đồng Nai"])
    with pytest.raises(FleetError) as e:
        load_inventory(p)
    assert e.value.problems == [f"{p}:4: duplicate code 26068 (first on line 2)"]


def test_inventory_refuses_bad_rows_with_line_numbers(tmp_path):
    p = _csv(tmp_path, ["26068,Phường Biên Hòa,phuong,Đồng Nai", "2604,Phường Trấn Biên,phuong,Đồng Nai",
                        "26017,,phuong,Đồng Nai", "26020,Phường Long Bình,thon,Đồng Nai", "26021,Xã A,xa"])
    with pytest.raises(FleetError) as e:
        load_inventory(p)
    msgs = e.value.problems
    assert msgs[0].startswith(f"{p}:3: code '2604' is not a 5-digit")
    assert msgs[1] == f"{p}:4: name is empty"
    assert msgs[2].startswith(f"{p}:5: type 'thon' is not xa/xã or phuong/phường")
    assert msgs[3] == f"{p}:6: row has 3 fields, the header has 4"


def test_inventory_refuses_duplicate_names_across_tone_placements(tmp_path):
    p = _csv(tmp_path, ["26068,Phường Biên Hòa,phuong,Đồng Nai", "26041,Phường Biên Hoà,phuong,Đồng Nai"])
    with pytest.raises(FleetError, match=r":3: duplicate name 'Phường Biên Hoà' \(first on line 2\)"):
        load_inventory(p)


def test_inventory_accepts_vietnamese_type_words_and_nfd(tmp_path):
    nfd = unicodedata.normalize("NFD", "Xã Phú Lý")
    p = _csv(tmp_path, [f"26173,{nfd},xã,Đồng Nai", "26068,Phường Biên Hòa,phường,Đồng Nai"])
    cs = load_inventory(p)
    assert [(c.name, c.type) for c in cs] == [("Xã Phú Lý", "xa"), ("Phường Biên Hòa", "phuong")]


def test_inventory_missing_column(tmp_path):
    p = _csv(tmp_path, ["26068,Phường Biên Hòa"], header="code,name")
    with pytest.raises(FleetError, match=r":1: missing column\(s\) type"):
        load_inventory(p)


# ---------------------------------------------------------------------------------------------
# render: the real fleet
# ---------------------------------------------------------------------------------------------


def test_render_95_communes_every_config_loads(render, tmp_path):
    """Each rendered config loads with agent.config.load_config once its secrets exist."""
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    agents = {k: v for k, v in render.files.items() if k.startswith("agents/")}
    assert len(agents) == 95
    for rel, text in agents.items():
        text = text.replace("/etc/hcc-sentinel/secrets/", f"{secrets}/")
        for ref in re.findall(r"\$\{file:([^}]+)\}", text):
            Path(ref).write_text(f"json://127.0.0.1:9/{Path(ref).stem}\n", encoding="utf-8")
        path = tmp_path / rel
        path.parent.mkdir(exist_ok=True)
        path.write_text(text, encoding="utf-8")
        config = load_config(path)
        code = Path(rel).stem
        assert config.agent.commune.code == code
        assert config.agent.id == f"hcc-{code}"
        assert any(t.system == "uplink" for t in config.targets)
        assert {u.id for u in config.alerting.units} >= {f"it-{code}", "so-khcn", "cong-an", "vp-ubnd"}
        assert all(u.urls for u in config.alerting.units)


def test_render_uses_overrides_and_2026_names(render):
    c = yaml.safe_load(render.files["agents/26068.yaml"])
    assert c["agent"]["commune"] == {"code": "26068", "name": "Phường Biên Hoà", "type": "phuong"}
    assert c["agent"]["status_url"] == "http://10.75.68.10:9470/status"
    gw = next(t for t in c["targets"] if t["id"] == "uplink-gateway")
    assert gw["icmp"]["host"] == "10.75.68.1"
    assert all(t.get("depends_on") in (None, ["uplink-gateway"]) for t in c["targets"])
    unit = next(u for u in c["alerting"]["units"] if u["id"] == "it-26068")
    assert unit["urls"] == ["${file:/etc/hcc-sentinel/secrets/it-26068.url}"]  # never resolved
    assert unit["contact"] == "Tổ CNTT phường, ĐT 0251 3822 000"
    # a commune without its own overrides: defaults (no gateway, link checks via the internet)
    other = yaml.safe_load(render.files["agents/26041.yaml"])
    assert not any(t["id"] == "uplink-gateway" for t in other["targets"])
    # a xã that became a phường in 2026
    changed = [a for a in render.agents if a.commune.changed_2026]
    assert len(changed) == 10 and all(a.config.agent.commune.type == "phuong" for a in changed)
    assert render_fleet(INVENTORY, TEMPLATE, OVERRIDES, CENTRAL, edition="2025").agents[0].commune.type_2025


def test_file_sd_labels(render):
    groups = json.loads(render.files["prometheus/file_sd/hcc-sentinel.json"])
    assert len(groups) == 95
    by_code = {g["labels"]["commune_code"]: g for g in groups}
    assert by_code["26068"] == {"targets": ["10.75.68.10:9470"], "labels": {
        "commune_code": "26068", "commune_name": "Phường Biên Hoà", "commune_type": "phuong",
        "agent_id": "hcc-26068", "isp": "vnpt"}}
    assert by_code["26041"]["targets"] == ["hcc-26041.giamsat.dongnai.gov.vn:9470"]
    assert Counter(g["labels"]["commune_type"] for g in groups) == {"xa": 62, "phuong": 33}
    assert len({g["targets"][0] for g in groups}) == 95


def test_alertmanager_config_from_the_units(render):
    am = yaml.safe_load(render.files["alertmanager/alertmanager.yml"])
    receivers = {r["name"]: r for r in am["receivers"]}
    assert len(receivers) == 99  # 4 provincial units + 95 communes' IT units
    assert receivers["it-26068"]["webhook_configs"][0]["url"] == "http://127.0.0.1:9471/alertmanager/it-26068"
    routes = am["route"]["routes"]
    assert routes[0]["matchers"] == ['escalate_to="so-khcn"'] and routes[1]["matchers"] == ['escalate_to="vp-ubnd"']
    owners = [r["matchers"][0] for r in routes[2:]]
    assert owners[:4] == ['owner="so-khcn"', 'owner="cong-an"', 'owner="so-tu-phap"', 'owner="vp-ubnd"']
    assert am["route"]["receiver"] == "so-khcn"
    # no secret in the Alertmanager config: apprise URLs stay with the relay
    assert "secrets" not in render.files["alertmanager/alertmanager.yml"]


def test_generated_rules_constants(render):
    rules = yaml.safe_load(render.files["prometheus/rules/fleet.rules.yml"])
    consts = rules["groups"][0]["rules"]
    by = Counter(r["record"] for r in consts)
    assert by["hcc:commune:info"] == 95
    info = {r["labels"]["system"]: r["labels"] for r in consts if r["record"] == "hcc:system:info"}
    assert info["motcua"]["owner"] == "so-khcn" and info["vneid-sso"]["owner"] == "cong-an"
    assert info["uplink"] == {"system": "uplink", "owner": "so-khcn", "system_name": "Đường truyền các xã, phường",
                              "system_name_en": "Commune uplink"}
    obj = {r["labels"]["system"]: r["expr"] for r in consts if r["record"] == "hcc:slo:objective"}
    assert obj["motcua"] == "vector(0.995)" and obj["uplink"] == "vector(0.99)"
    esc = rules["groups"][1]["rules"]
    assert {(r["labels"]["escalate_to"], r["for"]) for r in esc} == {("vp-ubnd", "1h"), ("so-khcn", "4h")}


def test_committed_copies_are_up_to_date():
    """configs/{alertmanager,prometheus,relay} hold the render of the committed inputs:
    refresh with `hcc-sentinel fleet render ... --out configs --central-only`."""
    fresh = render_fleet(INVENTORY, TEMPLATE, OVERRIDES, CENTRAL, agent_files=False)
    for rel, text in fresh.files.items():
        committed = (ROOT / "configs" / rel).read_text(encoding="utf-8")
        assert committed == text, f"configs/{rel} is stale: re-run fleet render --out configs --central-only"


def test_prom_duration():
    assert [prom_duration(x) for x in (0, 0.5, 30, 90, 3600, 4 * 3600, 86400 + 61)] == [
        "0s", "500ms", "30s", "1m30s", "1h", "4h", "1d1m1s"]


# ---------------------------------------------------------------------------------------------
# render: refusals
# ---------------------------------------------------------------------------------------------

SMALL = ["26068,Phường Biên Hòa,phuong,Đồng Nai", "26041,Phường Trấn Biên,phuong,Đồng Nai"]


def _small_render(tmp_path, template_text=None, overrides_text=None, central_text=None, rows=None):
    inv = _csv(tmp_path, rows or SMALL)
    tpl = tmp_path / "agent.template.yaml"
    tpl.write_text(template_text if template_text is not None else TEMPLATE.read_text(encoding="utf-8"), encoding="utf-8")
    ov = tmp_path / "overrides.yaml"
    ov.write_text(overrides_text if overrides_text is not None
                  else 'defaults:\n  scrape_address: "hcc-{{ commune.code }}.test:9470"\n', encoding="utf-8")
    ce = tmp_path / "central.yaml"
    ce.write_text(central_text if central_text is not None else CENTRAL.read_text(encoding="utf-8"), encoding="utf-8")
    return render_fleet(inv, tpl, ov, ce)


def test_small_render_ok(tmp_path):
    r = _small_render(tmp_path)
    assert sorted(r.files) == ["agents/26041.yaml", "agents/26068.yaml", "alertmanager/alertmanager.yml",
                               "prometheus/file_sd/hcc-sentinel.json", "prometheus/rules/fleet.rules.yml",
                               "relay/relay.yaml"]


def test_refuses_unknown_placeholder_with_template_line(tmp_path):
    text = TEMPLATE.read_text(encoding="utf-8").replace("  timezone: Asia/Ho_Chi_Minh",
                                                        "  timezone: {{ commune.province_timezone }}")
    line = next(i for i, l in enumerate(text.splitlines(), 1) if "province_timezone" in l)
    with pytest.raises(FleetError) as e:
        _small_render(tmp_path, template_text=text)
    assert len(e.value.problems) == 1
    msg = e.value.problems[0]
    assert msg.startswith(f"{tmp_path / 'agent.template.yaml'}:{line}: ")
    assert "province_timezone" in msg and "in 2 of 2 communes" in msg


def test_refuses_unknown_config_field_in_template(tmp_path):
    text = TEMPLATE.read_text(encoding="utf-8").replace("  max_concurrency: 8", "  max_concurrency: 8\n  max_concurency: 4")
    with pytest.raises(FleetError) as e:
        _small_render(tmp_path, template_text=text)
    assert len(e.value.problems) == 1
    assert re.match(r"agents/26068\.yaml:\d+: agent\.max_concurency: unknown field \(not allowed here\) "
                    r"\(in 2 of 2 communes", e.value.problems[0])


def test_refuses_template_syntax_error(tmp_path):
    with pytest.raises(FleetError, match=r"agent\.template\.yaml:3: template syntax error"):
        _small_render(tmp_path, template_text="agent:\n  id: x\n  {% if %}\n")


def test_refuses_override_for_unknown_code_and_unknown_key(tmp_path):
    with pytest.raises(FleetError, match=r"communes\.99999: code 99999 is not in the inventory"):
        _small_render(tmp_path, overrides_text='defaults: {scrape_address: "a:1"}\ncommunes:\n  "99999": {uplink_gateway: 10.0.0.1}\n')
    with pytest.raises(FleetError, match=r"overrides\.yaml:3: communes\.26068\.gatway: unknown field"):
        _small_render(tmp_path, overrides_text='defaults: {scrape_address: "a{{ commune.code }}:1"}\ncommunes:\n  "26068": {gatway: 10.0.0.1}\n')


def test_refuses_duplicate_agent_id(tmp_path):
    text = TEMPLATE.read_text(encoding="utf-8").replace("  id: {{ agent_id }}", "  id: hcc-same")
    with pytest.raises(FleetError, match=r"agents/26041\.yaml: duplicate agent id 'hcc-same' \(also commune 26068\)"):
        _small_render(tmp_path, template_text=text)


def test_refuses_unit_defined_differently_per_commune(tmp_path):
    text = TEMPLATE.read_text(encoding="utf-8").replace('      name: "Sở Khoa học và Công nghệ"',
                                                        '      name: "Sở KH&CN {{ commune.code }}"')
    with pytest.raises(FleetError, match=r"unit 'so-khcn' differs from the one rendered for commune 26068"):
        _small_render(tmp_path, template_text=text)


def test_refuses_missing_scrape_address_and_unknown_default_unit(tmp_path):
    with pytest.raises(FleetError, match=r"commune 26068: no scrape_address"):
        _small_render(tmp_path, overrides_text="defaults: {}\n")
    with pytest.raises(FleetError, match=r"default_unit 'nobody' is not a unit"):
        _small_render(tmp_path, central_text="default_unit: nobody\nsystem_owners: {uplink: so-khcn, host: so-khcn}\n")


def test_refuses_per_commune_owner_without_central_owner(tmp_path):
    with pytest.raises(FleetError, match=r"system 'uplink' has different owners across communes"):
        _small_render(tmp_path, central_text="default_unit: so-khcn\nsystem_owners: {host: so-khcn}\n")


def test_refuses_commune_without_uplink_target(tmp_path):
    text = TEMPLATE.read_text(encoding="utf-8").replace("    system: uplink\n    uplink: true\n", "    system: dvcqg\n")
    with pytest.raises(FleetError, match=r"no target with system 'uplink'"):
        _small_render(tmp_path, template_text=text)


def test_refusal_writes_nothing(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "agent", "fleet", "render", "--inventory",
                           str(_csv(tmp_path, SMALL + ["26068,Phường X,phuong,Đồng Nai"])),
                           "--template", str(TEMPLATE), "--central", str(CENTRAL), "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert ":4: duplicate code 26068 (first on line 2)" in proc.stderr
    assert not out.exists()


@pytest.mark.parametrize("where", ["file", "under_file", "proc"])
def test_cli_render_unwritable_out_is_one_line_exit_2(tmp_path, where):
    """`--out /etc/passwd` (a file), a path under a file, `--out /proc/…`: one line, exit 2, no
    traceback, nothing written (documented in docs/central.md)."""
    afile = tmp_path / "a-file"
    afile.write_text("x\n", encoding="utf-8")
    out = {"file": str(afile), "under_file": str(afile / "fleet"), "proc": "/proc/hcc-sentinel-test-nope"}[where]
    ov = tmp_path / "overrides.yaml"
    ov.write_text('defaults:\n  scrape_address: "hcc-{{ commune.code }}.test:9470"\n', encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "agent", "fleet", "render", "--inventory", str(_csv(tmp_path, SMALL)),
                           "--template", str(TEMPLATE), "--overrides", str(ov), "--central", str(CENTRAL),
                           "--out", out], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"fleet render: cannot write under {out}: "), proc.stderr
    assert proc.stdout == ""
    assert afile.read_text(encoding="utf-8") == "x\n"


def test_cli_render_writes_the_fleet(tmp_path):
    out = tmp_path / "fleet"
    proc = subprocess.run([sys.executable, "-m", "agent", "fleet", "render", "--inventory", str(INVENTORY),
                           "--template", str(TEMPLATE), "--overrides", str(OVERRIDES), "--central", str(CENTRAL),
                           "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "95 communes (33 phuong, 62 xa), 99 units" in proc.stdout
    assert len(list((out / "agents").glob("*.yaml"))) == 95
    # the agent's own check command accepts a rendered config (secrets given as files)
    secrets = tmp_path / "s"
    secrets.mkdir()
    text = (out / "agents" / "25195.yaml").read_text(encoding="utf-8").replace("/etc/hcc-sentinel/secrets/", f"{secrets}/")
    for ref in re.findall(r"\$\{file:([^}]+)\}", text):
        Path(ref).write_text("json://127.0.0.1:9/x\n", encoding="utf-8")
    cfg = tmp_path / "25195.yaml"
    cfg.write_text(text, encoding="utf-8")
    check = subprocess.run([sys.executable, "-m", "agent", "check", "-c", str(cfg)], cwd=ROOT,
                           capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stderr
    assert "hcc-25195" in check.stdout
