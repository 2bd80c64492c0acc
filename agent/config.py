"""The agent's config: models, validation with file/line/field errors, resolved target specs.

Shape of a config file (see ``configs/example.yaml`` for a full, commented one)::

    agent:                      # identity of this agent and its commune
      id: hcc-26068
      commune: {code: "26068", name: "Phường Biên Hòa", type: phuong}
      listen: 127.0.0.1:9470
      data_dir: /var/lib/hcc-sentinel
    defaults: {interval: 60s, timeout: 10s, slow_after: 3s}
    systems:                    # shared systems the targets belong to
      - {id: dvcqg, name: "Cổng Dịch vụ công quốc gia", owner: vpcp}
    targets:
      - id: dvcqg-home
        system: dvcqg
        http: {url: "https://dichvucong.gov.vn/"}   # the key names the probe kind
    alerting: {...}             # owned by alerts.config.AlertingConfig

Each target has exactly one probe-kind block (``http``, ``tcp``, ``dns``, ``tls``, ``icmp``,
``host``, ``flow``); the block is validated by that kind's ``Options`` model in ``probes/``.
Values in a target override ``defaults``.  Secrets are ``${ENV}`` / ``${file:...}`` references
(see :mod:`agent.yamlconf`).
"""

from __future__ import annotations

import os
import re
import zoneinfo
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, create_model, field_validator, model_validator

import probes
from alerts.config import AlertingConfig
from agent.yamlconf import ConfigError, ConfigProblem, LineMap, format_loc, load_yaml
from probes.base import TargetSpec, nfc
from probes.config_types import STRICT, PositiveDuration

SLUG = r"^[a-z0-9][a-z0-9_.-]{0,62}$"
_SLUG_RE = re.compile(SLUG)


def _slug(value: str) -> str:
    if not _SLUG_RE.match(value):
        raise ValueError("must be lower-case letters, digits, '-', '_' or '.', at most 63 characters")
    return value


def check_listen(value: str, allow_any_port: bool = True) -> str:
    """Validate a ``HOST:PORT`` listen address (``[::1]:9470`` for IPv6); port 0 means any free
    port and is refused when ``allow_any_port`` is false.

    Raises:
        ValueError: not HOST:PORT, or the port is out of range.
    """
    host, sep, port = value.rpartition(":")
    low = 0 if allow_any_port else 1
    if not sep or not host or not port.isdigit() or not low <= int(port) < 65536:
        raise ValueError("must be HOST:PORT, e.g. 127.0.0.1:9470 or 0.0.0.0:9470")
    return value


def listen_parts(value: str) -> tuple[str, int]:
    """``"127.0.0.1:9470"`` -> ``("127.0.0.1", 9470)``; ``"[::1]:9470"`` -> ``("::1", 9470)``."""
    host, _, port = value.rpartition(":")
    return host.strip("[]"), int(port)


class Commune(BaseModel):
    """The commune this agent serves.

    ``type`` accepts ``xa``/``xã`` and ``phuong``/``phường`` and is stored without diacritics.
    """

    model_config = STRICT
    code: str = Field(description="5-digit administrative unit code, e.g. 26068")
    name: str = Field(description="Vietnamese name with diacritics, e.g. 'Phường Biên Hòa'")
    type: Literal["xa", "phuong"]

    @field_validator("code", mode="before")
    @classmethod
    def _code(cls, v: Any) -> str:
        v = str(v)
        if not re.fullmatch(r"\d{5}", v):
            raise ValueError("must be the 5-digit administrative unit code, e.g. '26068'")
        return v

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        v = nfc(v.strip())
        if not v:
            raise ValueError("must not be empty")
        return v

    @field_validator("type", mode="before")
    @classmethod
    def _type(cls, v: Any) -> Any:
        return {"xã": "xa", "phường": "phuong"}.get(nfc(str(v)).lower(), v)


class AgentSection(BaseModel):
    """Identity and runtime settings of the agent."""

    model_config = STRICT
    id: str
    commune: Commune
    listen: str = "127.0.0.1:9470"
    data_dir: Path = Path("./data")
    timezone: str = "Asia/Ho_Chi_Minh"
    max_concurrency: int = Field(8, ge=1, le=256, description="probes running at once, at most")
    retention: PositiveDuration = Field(35 * 86400, description="raw result history kept")
    startup_spread: PositiveDuration | None = Field(
        None, description="first probes after start spread over this long (default: each target's interval)")
    status_url: str | None = Field(None, description="public link to this agent's status page, used in messages")

    _id = field_validator("id")(lambda cls, v: _slug(v))

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        return check_listen(v, allow_any_port=False)

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            zoneinfo.ZoneInfo(v)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown IANA time zone {v!r} (e.g. Asia/Ho_Chi_Minh)") from None
        return v

    @property
    def listen_host(self) -> str:
        return listen_parts(self.listen)[0]

    @property
    def listen_port(self) -> int:
        return listen_parts(self.listen)[1]


class Defaults(BaseModel):
    """Values every target inherits unless it sets its own.

    Thresholds follow the anchors' defaults: down after 3 consecutive failures (Gatus
    ``failure-threshold``, Icinga ``max_check_attempts``), up after 2 successes (Gatus
    ``success-threshold``), 1 m retry interval while failing (Icinga ``retry_interval``).
    """

    model_config = STRICT
    interval: PositiveDuration = 60.0
    timeout: PositiveDuration = 10.0
    slow_after: PositiveDuration = 3.0
    retry_interval: PositiveDuration | None = None
    failure_threshold: int = Field(3, ge=1, le=100)
    success_threshold: int = Field(2, ge=1, le=100)
    degraded_threshold: int = Field(3, ge=1, le=100)


class SystemDef(BaseModel):
    """A shared system (procedure system, portal, SSO, registry) that targets belong to."""

    model_config = STRICT
    id: str
    name: str = Field(description="Vietnamese name, e.g. 'Hệ thống thông tin giải quyết TTHC tỉnh'")
    name_en: str | None = None
    owner: str | None = Field(None, description="id of the responsible unit")
    objective: float = Field(0.995, gt=0, lt=1, description="availability SLO, e.g. 0.995")

    _id = field_validator("id")(lambda cls, v: _slug(v))
    _name = field_validator("name")(lambda cls, v: nfc(v))


class TargetBase(BaseModel):
    """Fields common to every target; the kind block is added per kind by :func:`target_model`."""

    model_config = STRICT
    id: str
    kind: str | None = Field(None, description="optional; must match the kind block if given")
    name: str | None = Field(None, description="display name (Vietnamese)")
    system: str | None = None
    owner: str | None = Field(None, description="responsible unit id (default: the system's owner)")
    interval: PositiveDuration | None = None
    timeout: PositiveDuration | None = None
    slow_after: PositiveDuration | None = None
    retry_interval: PositiveDuration | None = None
    failure_threshold: int | None = Field(None, ge=1, le=100)
    success_threshold: int | None = Field(None, ge=1, le=100)
    degraded_threshold: int | None = Field(None, ge=1, le=100)
    depends_on: list[str] = Field(default_factory=list)
    uplink: bool = Field(False, description="this target checks the commune's own link")
    labels: dict[str, str] = Field(default_factory=dict)

    _id = field_validator("id")(lambda cls, v: _slug(v))

    @field_validator("name")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        return nfc(v) if v is not None else None

    @property
    def probe_kind(self) -> str:
        for kind in probes.kinds():
            if getattr(self, kind, None) is not None:
                return kind
        raise AssertionError("validated target without a kind block")

    @property
    def options(self) -> Any:
        return getattr(self, self.probe_kind)

    @model_validator(mode="after")
    def _one_kind(self) -> "TargetBase":
        present = [k for k in probes.kinds() if getattr(self, k, None) is not None]
        if len(present) != 1:
            raise ValueError(
                "needs exactly one probe block, one of: " + ", ".join(probes.kinds())
                + (f" (found {', '.join(present)})" if present else ""))
        if self.kind is not None and self.kind != present[0]:
            raise ValueError(f"kind is {self.kind!r} but the probe block is {present[0]!r}")
        return self


_TARGET_MODEL: type[TargetBase] | None = None


def target_model() -> type[TargetBase]:
    """The target model with one optional field per probe kind (``http: probes.http.Options``)."""
    global _TARGET_MODEL
    if _TARGET_MODEL is None:
        fields: dict[str, Any] = {kind: (mod.Options | None, None) for kind, mod in probes.kinds().items()}
        _TARGET_MODEL = create_model("Target", __base__=TargetBase, **fields)
    return _TARGET_MODEL


class ConfigBase(BaseModel):
    """The whole config; ``targets`` is typed per kind by :func:`config_model`."""

    # hide_input_in_errors: a ValidationError's text must not echo secrets (apprise URLs, tokens)
    model_config = {**STRICT, "hide_input_in_errors": True}
    agent: AgentSection
    defaults: Defaults = Field(default_factory=Defaults)
    systems: list[SystemDef] = Field(default_factory=list)
    alerting: AlertingConfig = Field(default_factory=AlertingConfig)

    def system(self, system_id: str | None) -> SystemDef | None:
        return next((s for s in self.systems if s.id == system_id), None)

    def effective(self, target: TargetBase, name: str) -> Any:
        """A target's own value for ``name`` or, when unset, the default."""
        value = getattr(target, name)
        return getattr(self.defaults, name) if value is None else value

    def owner_of(self, target: TargetBase) -> str | None:
        """The target's responsible unit: its own ``owner`` or its system's."""
        if target.owner:
            return target.owner
        system = self.system(target.system)
        return system.owner if system else None

    def target_specs(self) -> list[TargetSpec]:
        """Resolved :class:`probes.base.TargetSpec` for every target, defaults applied."""
        return [
            TargetSpec(
                id=t.id,
                kind=t.probe_kind,
                timeout=self.effective(t, "timeout"),
                slow_after=self.effective(t, "slow_after"),
                options=t.options,
                interval=self.effective(t, "interval"),
            )
            for t in self.targets  # type: ignore[attr-defined]
        ]

    def target(self, target_id: str) -> TargetBase | None:
        return next((t for t in self.targets if t.id == target_id), None)  # type: ignore[attr-defined]

    @model_validator(mode="after")
    def _cross_checks(self) -> "ConfigBase":
        targets = self.targets  # type: ignore[attr-defined]
        problems: list[tuple[tuple[Any, ...], str]] = []
        seen: dict[str, int] = {}
        for i, t in enumerate(targets):
            if t.id in seen:
                problems.append((("targets", i, "id"), f"duplicate target id {t.id!r} (also targets[{seen[t.id]}])"))
            seen.setdefault(t.id, i)
        system_ids = {s.id for s in self.systems}
        if len(system_ids) != len(self.systems):
            problems.append((("systems",), "duplicate system id"))
        short_retry: list[str] = []
        for i, t in enumerate(targets):
            if t.system is not None and self.systems and t.system not in system_ids:
                problems.append((("targets", i, "system"), f"unknown system {t.system!r} (known: {', '.join(sorted(system_ids))})"))
            for j, dep in enumerate(t.depends_on):
                if dep not in seen:
                    problems.append((("targets", i, "depends_on", j), f"unknown target {dep!r}"))
                elif dep == t.id:
                    problems.append((("targets", i, "depends_on", j), "a target cannot depend on itself"))
            timeout, interval = self.effective(t, "timeout"), self.effective(t, "interval")
            if timeout > interval:
                problems.append((("targets", i, "timeout"), f"timeout {timeout:g}s is longer than the interval {interval:g}s"))
            retry = self.effective(t, "retry_interval")
            if retry is not None and retry < timeout:
                if t.retry_interval is not None:
                    problems.append((("targets", i, "retry_interval"), f"retry_interval {retry:g}s is shorter "
                                     f"than the timeout {timeout:g}s: every retry of a hanging target would overrun"))
                else:
                    short_retry.append(t.id)
            if self.effective(t, "slow_after") >= timeout:
                problems.append((("targets", i, "slow_after"), "slow_after must be shorter than timeout"))
        if short_retry:
            problems.append((("defaults", "retry_interval"), f"retry_interval {self.defaults.retry_interval:g}s is "
                             f"shorter than the timeout of {', '.join(short_retry)}: every retry of a hanging target "
                             "would overrun (set a longer retry_interval on those targets)"))
        cycle = _find_cycle({t.id: list(t.depends_on) for t in targets})
        if cycle:
            problems.append((("targets",), "dependency cycle: " + " -> ".join(cycle)))
        if problems:
            raise _CrossCheckError(problems)
        return self


class _CrossCheckError(ValueError):
    def __init__(self, problems: list[tuple[tuple[Any, ...], str]]):
        self.problems = problems
        super().__init__("; ".join(m for _, m in problems))


def _find_cycle(graph: dict[str, list[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in graph.get(node, []):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt in graph and state.get(nxt) is None:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in graph:
        if state.get(node) is None:
            found = visit(node)
            if found:
                return found
    return None


_CONFIG_MODEL: type[ConfigBase] | None = None


def config_model() -> type[ConfigBase]:
    """The full config model (targets typed with every available probe kind)."""
    global _CONFIG_MODEL
    if _CONFIG_MODEL is None:
        _CONFIG_MODEL = create_model(
            "Config", __base__=ConfigBase, targets=(list[target_model()], Field(default_factory=list)))  # type: ignore[valid-type]
    return _CONFIG_MODEL


Config = ConfigBase  # type for annotations; instances come from config_model()


def validate_data(data: Any, lm: LineMap) -> ConfigBase:
    """Validate already-loaded data.

    Raises:
        ConfigError: with one :class:`ConfigProblem` per pydantic error, each with its line.
    """
    if not isinstance(data, dict):
        raise ConfigError([ConfigProblem(lm.file, 1, "(top level)", "the config must be a mapping with agent: and targets:")])
    try:
        return config_model().model_validate(data)
    except ValidationError as exc:
        problems: list[ConfigProblem] = []
        for err in exc.errors(include_url=False):
            loc = tuple(err["loc"])
            ctx_err = (err.get("ctx") or {}).get("error")
            if isinstance(ctx_err, _CrossCheckError):
                for sub_loc, msg in ctx_err.problems:
                    problems.append(ConfigProblem(lm.file, lm.line_of(sub_loc), format_loc(sub_loc), msg))
                continue
            # drop pydantic's union/function tags such as 'function-after[...]'
            clean = tuple(p for p in loc if not (isinstance(p, str) and ("[" in p or p.startswith("function-"))))
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown field (not allowed here)"
                if len(clean) == 3 and clean[0] == "targets":
                    msg += "; a target's probe block is one of: " + ", ".join(probes.kinds())
            problems.append(ConfigProblem(lm.file, lm.line_of(clean), format_loc(clean), msg))
        problems.sort(key=lambda p: p.line)
        raise ConfigError(problems) from None


def load_config(path: str | os.PathLike[str], env: dict[str, str] | None = None) -> ConfigBase:
    """Load and validate a config file.

    Args:
        path: YAML file.
        env: environment for ``${NAME}`` references (default ``os.environ``).

    Returns:
        A validated config (an instance of :func:`config_model`).

    Raises:
        ConfigError: every problem found, each as ``file:line: field: message``.
    """
    data, lm = load_yaml(path, env)
    config = validate_data(data, lm)
    base = Path(path).resolve().parent
    # relative paths are relative to the config file, not to the working directory
    if not config.agent.data_dir.is_absolute():
        agent = config.agent.model_copy(update={"data_dir": (base / config.agent.data_dir).resolve()})
        config = config.model_copy(update={"agent": agent})
    templates_dir = config.alerting.templates_dir
    if templates_dir is not None:
        if not templates_dir.is_absolute():
            templates_dir = (base / templates_dir).resolve()
            alerting = config.alerting.model_copy(update={"templates_dir": templates_dir})
            config = config.model_copy(update={"alerting": alerting})
        _check_templates(config, lm)
    return config


def _check_templates(config: ConfigBase, lm: LineMap) -> None:
    """Compile the message templates so a broken override is refused like any config error.

    Raises:
        ConfigError: the directory is missing or a template does not compile.
    """
    from alerts.templates import Renderer

    loc = ("alerting", "templates_dir")
    directory = config.alerting.templates_dir
    if directory is None:
        return
    if not directory.is_dir():
        raise ConfigError([ConfigProblem(lm.file, lm.line_of(loc), format_loc(loc), f"{directory} is not a directory")])
    problems = Renderer(directory).check()
    if problems:
        raise ConfigError([ConfigProblem(lm.file, lm.line_of(loc), format_loc(loc), f"template {p}") for p in problems])
