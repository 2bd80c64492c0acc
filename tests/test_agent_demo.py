"""``hcc-sentinel demo --duration``: a newcomer sees ok, slow, error and hang within a minute."""

from __future__ import annotations

import re

from test_agent_lib import cli


def test_demo_shows_every_outcome(tmp_path):
    data = tmp_path / "demo"
    res = cli("demo", "--port", "0", "--duration", "40", "--data-dir", str(data), timeout=90)
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert re.search(r"agent metrics: http://127\.0\.0\.1:\d+/metrics", out)
    assert "simulated procedure system: http://127.0.0.1:" in out
    for word in ("bình thường (ok)", "chậm (slow)", "lỗi (error)", "treo (hang)"):
        assert word in out, out
    assert re.search(r"lỗi \(error\)\s+demo-api\s+http_status", out)
    assert re.search(r"lỗi \(error\)\s+demo-home\s+content", out)
    assert re.search(r"treo \(hang\)\s+demo-login\s+timeout_first_byte", out)
    assert "tổng kết / summary" in out
    assert "Traceback" not in res.stderr
    # --data-dir keeps the generated config and the SQLite history
    assert (data / "demo.yaml").exists() and (data / "history.db").exists()
    # only 127.0.0.1 in the generated config
    hosts = set(re.findall(r"https?://([^/:]+)", (data / "demo.yaml").read_text(encoding="utf-8")))
    assert hosts == {"127.0.0.1"}
