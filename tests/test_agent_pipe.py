"""A closed stdout (`hcc-sentinel … | head -1`) ends a command quietly with exit 141, as a
process killed by SIGPIPE would, instead of a BrokenPipeError traceback."""

from __future__ import annotations

import subprocess
import sys

from test_agent_lib import ENV, ROOT


def run_with_closed_stdout(*args: str, timeout: float = 60) -> tuple[int, str]:
    """Start ``python -m agent ARGS`` and close the read end of its stdout at once (long before
    the interpreter has started and written anything); returns (exit code, stderr)."""
    proc = subprocess.Popen([sys.executable, "-m", "agent", *args], cwd=ROOT, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, encoding="utf-8")
    proc.stdout.close()
    try:
        err = proc.stderr.read()
        proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
    return proc.returncode, err


def _config(tmp_path):
    path = tmp_path / "agent.yaml"
    path.write_text(f"""\
agent:
  id: hcc-26068
  commune: {{code: "26068", name: "Phường Biên Hòa", type: phuong}}
  listen: 127.0.0.1:9
  data_dir: {tmp_path / "data"}
systems:
  - {{id: portal, name: "Cổng", owner: so-khcn}}
targets:
  - id: portal-tcp
    system: portal
    tcp: {{host: 127.0.0.1, port: 9}}
""", encoding="utf-8")
    return path


def test_incidents_into_a_closed_pipe(tmp_path):
    config = _config(tmp_path)
    add = subprocess.run([sys.executable, "-m", "agent", "silence", "add", "-c", str(config), "--author", "t",
                          "--reason", "r", "--duration", "1h", "--target", "portal-tcp"],
                         cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=60)
    assert add.returncode == 0, add.stderr  # creates alerts.db
    code, err = run_with_closed_stdout("incidents", "-c", str(config), "--all")
    assert "Traceback" not in err and "BrokenPipeError" not in err and "Exception ignored" not in err, err
    assert code == 141, err


def test_check_and_help_into_a_closed_pipe(tmp_path):
    code, err = run_with_closed_stdout("check", "-c", str(_config(tmp_path)))
    assert (code, err) == (141, "")
    code, err = run_with_closed_stdout("--help")
    assert err == "" and code in (0, 141)  # argparse itself ignores a failed write of the help
