"""Config loading: every problem names file, line and field; secrets come from env/files."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from agent.config import load_config
from agent.yamlconf import ConfigError

GOOD = """\
agent:
  id: hcc-26068
  commune: {code: "26068", name: "Phường Biên Hòa", type: phường}
  data_dir: ./state
defaults:
  interval: 30s
  timeout: 5s
  slow_after: 500ms
systems:
  - {id: motcua, name: "Một cửa tỉnh", owner: so-khcn}
  - {id: uplink, name: "Đường truyền", owner: it-xa}
targets:
  - id: gw
    system: uplink
    uplink: true
    tcp: {host: 127.0.0.1, port: 9}
  - id: motcua-tcp
    system: motcua
    interval: 1m
    depends_on: [gw]
    tcp: {host: 127.0.0.1, port: 443, send: "${PROBE_SEND}"}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def problems(path: Path, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        load_config(path, env={} if env is None else env)
    return [str(p) for p in exc.value.problems]


def test_good_config_applies_defaults_env_and_relative_data_dir(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    cfg = load_config(path, env={"PROBE_SEND": "PING\\r\\n"})
    assert cfg.agent.commune.type == "phuong"
    assert cfg.agent.data_dir == (tmp_path / "state").resolve()
    specs = {s.id: s for s in cfg.target_specs()}
    assert specs["gw"].interval == 30.0 and specs["gw"].timeout == 5.0
    assert specs["motcua-tcp"].interval == 60.0 and specs["motcua-tcp"].slow_after == 0.5
    assert specs["motcua-tcp"].kind == "tcp"
    assert specs["motcua-tcp"].options.send == "PING\\r\\n"
    assert cfg.owner_of(cfg.target("motcua-tcp")) == "so-khcn"


def test_unset_env_variable_names_line_and_field(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    assert problems(path) == [f"{path}:21: targets[1].tcp.send: environment variable PROBE_SEND is not set"]


def test_secret_file_reference(tmp_path: Path) -> None:
    secret = tmp_path / "send.txt"
    secret.write_text("HELLO\n", encoding="utf-8")
    path = write(tmp_path, GOOD.replace("${PROBE_SEND}", "${file:" + str(secret) + "}"))
    cfg = load_config(path, env={})
    assert cfg.target("motcua-tcp").tcp.send == "HELLO"


def test_each_problem_has_file_line_field(tmp_path: Path) -> None:
    text = GOOD.replace("interval: 1m", "interval: soon").replace("port: 9}", "port: 99999}")
    text = text.replace("depends_on: [gw]", "depends_on: [gw]\n    colour: red")
    path = write(tmp_path, text)
    found = problems(path, {"PROBE_SEND": "x"})
    assert f"{path}:16: targets[0].tcp.port: Input should be less than or equal to 65535" in found
    assert any(p.startswith(f"{path}:19: targets[1].interval: 'soon' is not a duration") for p in found)
    assert any(p.startswith(f"{path}:21: targets[1].colour: unknown field (not allowed here)") for p in found)
    assert len(found) == 3


def test_cross_checks_unknown_dependency_system_and_duplicates(tmp_path: Path) -> None:
    text = GOOD.replace("depends_on: [gw]", "depends_on: [gateway]").replace("system: motcua", "system: mot-cua")
    text += "  - id: gw\n    tcp: {host: 127.0.0.1, port: 10}\n"
    path = write(tmp_path, text)
    found = problems(path, {"PROBE_SEND": "x"})
    assert f"{path}:22: targets[2].id: duplicate target id 'gw' (also targets[0])" in found
    assert any(p.startswith(f"{path}:18: targets[1].system: unknown system 'mot-cua'") for p in found)
    assert f"{path}:20: targets[1].depends_on[0]: unknown target 'gateway'" in found


def test_dependency_cycle_and_timeout_longer_than_interval(tmp_path: Path) -> None:
    text = GOOD.replace("    uplink: true\n", "    uplink: true\n    depends_on: [motcua-tcp]\n    timeout: 45s\n")
    path = write(tmp_path, text)
    found = problems(path, {"PROBE_SEND": "x"})
    assert any("dependency cycle: gw -> motcua-tcp -> gw" in p for p in found)
    assert any(p.startswith(f"{path}:17: targets[0].timeout: timeout 45s is longer than the interval 30s") for p in found)


def test_target_needs_exactly_one_kind_block(tmp_path: Path) -> None:
    text = GOOD.replace("    tcp: {host: 127.0.0.1, port: 9}\n", "")
    path = write(tmp_path, text)
    found = problems(path, {"PROBE_SEND": "x"})
    assert len(found) == 1 and found[0].startswith(f"{path}:13: targets[0]: needs exactly one probe block")


def test_yaml_syntax_error_and_duplicate_key(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("  listen", "").replace("targets:", "targets: [\n"))
    found = problems(path, {"PROBE_SEND": "x"})
    assert len(found) == 1 and "YAML syntax error" in found[0] and found[0].startswith(f"{path}:")
    path = write(tmp_path, GOOD.replace("  data_dir: ./state\n", "  data_dir: ./state\n  id: again\n"))
    assert problems(path, {"PROBE_SEND": "x"}) == [f"{path}:5: agent.id: duplicate key (first set on line 2)"]


def test_bad_commune_and_timezone(tmp_path: Path) -> None:
    text = GOOD.replace('code: "26068"', 'code: "2606"').replace(
        "  data_dir: ./state\n", "  data_dir: ./state\n  timezone: Asia/Hanoi_City\n")
    path = write(tmp_path, text)
    found = problems(path, {"PROBE_SEND": "x"})
    assert any(p.startswith(f"{path}:3: agent.commune.code: must be the 5-digit") for p in found)
    assert any(p.startswith(f"{path}:5: agent.timezone: unknown IANA time zone") for p in found)


def test_example_config_is_valid() -> None:
    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "example.yaml", env={})
    assert cfg.agent.commune.name == "Phường Biên Hòa"
    kinds = {s.kind for s in cfg.target_specs()}
    assert {"http", "tcp", "dns", "tls", "icmp", "host"} <= kinds
    assert [t.id for t in cfg.targets if t.uplink] == ["uplink-gateway", "uplink-dns"]


def test_broken_message_template_is_a_config_error(tmp_path: Path) -> None:
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "problem.j2").write_text("{% if %}broken\n", encoding="utf-8")
    text = GOOD + "alerting:\n  templates_dir: templates\n"
    path = write(tmp_path, text)
    found = problems(path, {"PROBE_SEND": "x"})
    assert len(found) == 1 and found[0].startswith(f"{path}:23: alerting.templates_dir: template default/problem.j2:")
    (templates / "problem.j2").write_text("{{ subject }}\n", encoding="utf-8")
    cfg = load_config(path, env={"PROBE_SEND": "x"})
    assert cfg.alerting.templates_dir == templates.resolve()


def test_retry_interval_shorter_than_timeout_is_refused(tmp_path: Path) -> None:
    text = GOOD.replace("  slow_after: 500ms\n", "  slow_after: 500ms\n  retry_interval: 3s\n")
    path = write(tmp_path, text)
    found = problems(path, {"PROBE_SEND": "x"})
    assert found == [f"{path}:9: defaults.retry_interval: retry_interval 3s is shorter than the timeout of gw, "
                     "motcua-tcp: every retry of a hanging target would overrun (set a longer retry_interval on those targets)"]
    path = write(tmp_path, GOOD.replace("interval: 1m", "interval: 1m\n    retry_interval: 2s"))
    assert problems(path, {"PROBE_SEND": "x"}) == [
        f"{path}:20: targets[1].retry_interval: retry_interval 2s is shorter than the timeout 5s: "
        "every retry of a hanging target would overrun"]


@pytest.mark.parametrize("bad", ["5 minutes", "1:30", "3 days", "5M", "1e3", "-3s", "1h 30m", "5s30m"])
def test_durations_follow_the_prometheus_grammar(tmp_path: Path, bad: str) -> None:
    path = write(tmp_path, GOOD.replace("interval: 1m", f"interval: '{bad}'"))
    found = problems(path, {"PROBE_SEND": "x"})
    assert len(found) == 1 and found[0].startswith(f"{path}:19: targets[1].interval: ")


def test_yaml_alias_bomb_is_refused_quickly(tmp_path: Path) -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [*a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}]"
              for i in range(1, 9)]
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    found = problems(path)
    assert len(found) == 1 and "alias bomb" in found[0]


def test_syntax_error_at_end_of_file_points_inside_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD + '  - id: "unterminated\n')
    found = problems(path, {"PROBE_SEND": "x"})
    assert len(found) == 1 and "YAML syntax error" in found[0]
    line = int(found[0].split(":")[1])
    assert 1 <= line <= len(path.read_text(encoding="utf-8").splitlines())
