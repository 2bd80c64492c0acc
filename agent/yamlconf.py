"""YAML loading that remembers where every value came from, and secret references.

The agent's config errors must name the file, the line and the field.  PyYAML's composer keeps
each node's start mark; we build plain Python data from the node tree and a map from the
value's path (a tuple of keys and list indices, as pydantic reports ``loc``) to its 1-based line.

Secret references, resolved before validation so that no secret sits in a config file:

* ``${NAME}`` — the environment variable ``NAME`` (an error if unset);
* ``${NAME:-fallback}`` — the variable, or ``fallback`` when unset or empty;
* ``${file:/path/to/secret}`` — the file's content with trailing newlines removed
  (Docker/systemd credentials style).

``$${`` escapes a literal ``${``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

Loc = tuple[str | int, ...]

_REF = re.compile(r"\$\$\{|\$\{(file:(?P<file>[^}]+)|(?P<env>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?)\}")


@dataclass
class ConfigProblem:
    """One problem in a config file: ``file:line: field: message``."""

    file: str
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.field}: {self.message}"


class ConfigError(Exception):
    """A config could not be loaded; ``problems`` lists every problem found (at least one)."""

    def __init__(self, problems: list[ConfigProblem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


@dataclass
class LineMap:
    """Path -> 1-based line of the value at that path (and of its key)."""

    file: str
    lines: dict[Loc, int] = field(default_factory=dict)
    count: int = 0  # values built so far (see MAX_NODES)

    def line_of(self, loc: Loc) -> int:
        """Line of the deepest prefix of ``loc`` that exists in the file (1 if none)."""
        loc = tuple(loc)
        while loc:
            if loc in self.lines:
                return self.lines[loc]
            loc = loc[:-1]
        return self.lines.get((), 1)


def format_loc(loc: Loc) -> str:
    """``("targets", 2, "http", "url")`` -> ``"targets[2].http.url"``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


#: One loader used only to construct scalars with YAML 1.1 resolution (ints, bools, nulls).
_SCALARS = yaml.SafeLoader("")


def _substitute(text: str, file: str, line: int, loc: Loc, problems: list[ConfigProblem],
                env: dict[str, str]) -> str:
    def repl(m: re.Match[str]) -> str:
        if m.group(0) == "$${":
            return "${"
        if m.group("file"):
            path = Path(m.group("file").strip())
            try:
                return path.read_text(encoding="utf-8").rstrip("\r\n")
            except OSError as exc:
                problems.append(ConfigProblem(file, line, format_loc(loc),
                                              f"cannot read secret file {path}: {exc.strerror}"))
                return ""
        name = m.group("env")
        value = env.get(name)
        if value in (None, "") and m.group("default") is not None:
            return m.group("default")
        if value is None:
            problems.append(ConfigProblem(file, line, format_loc(loc),
                                          f"environment variable {name} is not set"))
            return ""
        return value

    return _REF.sub(repl, text)


#: More values than any real config has; a YAML alias "bomb" (anchors referencing anchors,
#: "billion laughs") expands past it and is refused instead of exhausting memory and time.
MAX_NODES = 100_000


class _TooBig(Exception):
    pass


def _build(node: yaml.Node, loc: Loc, lm: LineMap, problems: list[ConfigProblem],
           env: dict[str, str]) -> Any:
    lm.count += 1
    if lm.count > MAX_NODES:
        raise _TooBig
    lm.lines[loc] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                problems.append(ConfigProblem(lm.file, key_node.start_mark.line + 1,
                                              format_loc(loc), "a key must be a plain string"))
                continue
            key = str(key_node.value)
            if key in out:
                problems.append(ConfigProblem(lm.file, key_node.start_mark.line + 1,
                                              format_loc(loc + (key,)),
                                              f"duplicate key (first set on line {lm.lines[loc + (key,)]})"))
                continue
            out[key] = _build(value_node, loc + (key,), lm, problems, env)
            lm.lines[loc + (key,)] = key_node.start_mark.line + 1
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_build(item, loc + (i,), lm, problems, env) for i, item in enumerate(node.value)]
    value = _SCALARS.construct_object(node)
    if isinstance(value, str) and "$" in value:
        value = _substitute(value, lm.file, node.start_mark.line + 1, loc, problems, env)
    return value


def load_yaml(path: str | os.PathLike[str], env: dict[str, str] | None = None) -> tuple[Any, LineMap]:
    """Read a YAML file into plain data and a :class:`LineMap`, resolving secret references.

    Args:
        path: the file.
        env: environment for ``${NAME}`` (default ``os.environ``).

    Returns:
        ``(data, line_map)``; ``data`` is ``{}`` for an empty file.

    Raises:
        ConfigError: unreadable file, YAML syntax error, duplicate key, unset variable,
            unreadable secret file — each with its line.
    """
    file = str(path)
    env = dict(os.environ if env is None else env)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError([ConfigProblem(file, 1, "(file)", f"not UTF-8 text: {exc.reason}")]) from None
    except OSError as exc:
        raise ConfigError([ConfigProblem(file, 1, "(file)", f"cannot read: {exc.strerror}")]) from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        line = min(line, max(1, len(text.splitlines())))  # "end of stream" points past the end
        raise ConfigError([ConfigProblem(file, line, "(syntax)",
                                         f"YAML syntax error: {exc.problem or exc}")]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([ConfigProblem(file, 1, "(syntax)", f"YAML error: {exc}")]) from None
    lm = LineMap(file)
    if node is None:
        return {}, lm
    problems: list[ConfigProblem] = []
    try:
        data = _build(node, (), lm, problems, env)
    except _TooBig:
        raise ConfigError([ConfigProblem(file, 1, "(file)", f"more than {MAX_NODES} values once YAML "
                                         "aliases are expanded; refusing (alias bomb?)")]) from None
    if problems:
        raise ConfigError(problems)
    return data, lm
