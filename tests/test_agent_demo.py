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


def test_demo_into_a_closed_pipe_removes_its_temporary_dir(tmp_path):
    """`hcc-sentinel demo --duration 8 | head -3`: no traceback, exit 141 (as for SIGPIPE), and
    the temporary data dir is removed."""
    import os
    import subprocess
    import sys

    from test_agent_lib import ENV, ROOT

    tmp = tmp_path / "tmp"
    tmp.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "agent", "demo", "--port", "0", "--duration", "8"], cwd=ROOT,
                            env={**ENV, "TMPDIR": str(tmp)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, encoding="utf-8")
    try:
        lines = [proc.stdout.readline() for _ in range(3)]  # what `head -3` reads, then it exits
        proc.stdout.close()
        err = proc.stderr.read()
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
    assert lines[0].startswith("hcc-sentinel demo"), lines
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
    assert proc.returncode == 141, err
    assert os.listdir(tmp) == []


def test_demo_help_tells_the_scene_length():
    from agent.demo_app import DemoSystem

    res = cli("demo", "--help")
    assert res.returncode == 0
    text = " ".join(res.stdout.split())
    assert f"every {DemoSystem().scene_seconds:g} s" in text, text
