"""The committed dashboards are exactly what grafana/build.py generates, and they are well-formed."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
VI = re.compile(r"[ăâđêôơưàảãáạằẳẵắặầẩẫấậèẻẽéẹềểễếệìỉĩíịòỏõóọồổỗốộờởỡớợùủũúụừửữứựỳỷỹýỵ]", re.I)


def load_build():
    spec = importlib.util.spec_from_file_location("grafana_build", ROOT / "grafana" / "build.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_regeneration_matches_committed_json():
    build = load_build()
    for name in build.DASHBOARDS:
        path = ROOT / "grafana" / "dashboards" / f"{name}.json"
        assert path.exists(), f"{path} missing: run python3 grafana/build.py"
        assert path.read_text(encoding="utf-8") == build.render(name), f"{path} is stale: run python3 grafana/build.py"
    assert build.main(["--check"]) == 0


def test_dashboards_are_vietnamese_templated_and_use_the_datasource_variable():
    build = load_build()
    uids = set()
    for name in build.DASHBOARDS:
        d = json.loads((ROOT / "grafana" / "dashboards" / f"{name}.json").read_text(encoding="utf-8"))
        uids.add(d["uid"])
        assert d["timezone"] == "Asia/Ho_Chi_Minh"
        names = [v["name"] for v in d["templating"]["list"]]
        assert "datasource" in names
        assert d["panels"], name
        for p in d["panels"]:
            assert VI.search(p["title"]), f"{name}: panel title not Vietnamese: {p['title']}"
            assert p.get("description") and VI.search(p["description"]), f"{name}: {p['title']} lacks a description"
            assert p["targets"], p["title"]
            for t in p["targets"]:
                assert t["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
                assert t["expr"].strip()
    assert uids == {"hcc-overview", "hcc-system", "hcc-commune", "hcc-sla", "hcc-fleet"}
    system = json.loads((ROOT / "grafana" / "dashboards" / "system.json").read_text(encoding="utf-8"))
    assert "system" in [v["name"] for v in system["templating"]["list"]]
    commune = json.loads((ROOT / "grafana" / "dashboards" / "commune.json").read_text(encoding="utf-8"))
    assert "commune" in [v["name"] for v in commune["templating"]["list"]]
    kinds = {p["type"] for n in build.DASHBOARDS
             for p in json.loads((ROOT / "grafana" / "dashboards" / f"{n}.json").read_text())["panels"]}
    assert {"state-timeline", "heatmap", "table", "timeseries", "bargauge", "stat"} <= kinds


def test_provisioning_files():
    ds = yaml.safe_load((ROOT / "grafana/provisioning/datasources/hcc-sentinel.yaml").read_text())
    assert ds["apiVersion"] == 1 and ds["datasources"][0]["type"] == "prometheus"
    prov = yaml.safe_load((ROOT / "grafana/provisioning/dashboards/hcc-sentinel.yaml").read_text())
    assert prov["providers"][0]["type"] == "file" and prov["providers"][0]["options"]["path"]
