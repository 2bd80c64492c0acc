"""Fleet inventory and rendering: one agent config per commune, and the central configs.

``hcc-sentinel fleet render`` (see :mod:`agent.cmd_fleet`) reads

* the **inventory** (``configs/communes.csv``): one row per commune-level unit — ``code``,
  ``name``, ``type`` (``xa``/``phuong``, as set on 1 July 2025), ``former_province`` and, when
  present, the 2026 columns ``type_2026``, ``name_2026``, ``changed_2026``, ``name_en_2026``;
* the **template** (``configs/fleet/agent.template.yaml``): an agent config written as a Jinja2
  template (``StrictUndefined``: an unknown placeholder is an error, never an empty string);
* optional **overrides** (``configs/fleet/overrides.yaml``): per-commune values keyed by code
  (scrape address, uplink gateway, contacts, extra labels, free ``vars``) over ``defaults``;
* optional **central settings** (``configs/fleet/central.yaml``): outage thresholds, hold-down,
  relay URL, Alertmanager timings, central owners of per-commune systems.

and writes, all from the same data (one source of truth)::

    OUT/agents/<code>.yaml                    one validated agent config per commune
    OUT/prometheus/file_sd/hcc-sentinel.json  Prometheus file_sd targets, labelled per commune
    OUT/prometheus/rules/fleet.rules.yml      constants (thresholds, objectives, owners,
                                              expected communes) and escalation alerts
    OUT/alertmanager/alertmanager.yml         routes/receivers per responsible unit, inhibitions
    OUT/relay/relay.yaml                      the relay's units (``alerting.units``), listen, data

Nothing is written unless every commune renders and validates.  Refusals (:class:`FleetError`)
name the file and line: a bad inventory row (its line), a duplicate code / agent id / unit id, an
unknown placeholder or an unknown config field in the template, an override for a code not in
the inventory.

Sources: Prometheus ``file_sd_configs`` and recording-rule naming
(prometheus.io/docs/prometheus/latest/configuration/configuration/#file_sd_config,
prometheus.io/docs/practices/rules/); Alertmanager routes, receivers, ``inhibit_rules`` and the
webhook receiver (prometheus.io/docs/alerting/latest/configuration/).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import re
import tempfile
import unicodedata
from pathlib import Path
from typing import Any, Literal

import jinja2
import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator

from agent.config import ConfigBase, validate_data
from agent.yamlconf import ConfigError, ConfigProblem, LineMap, load_yaml
from probes.base import nfc
from probes.config_types import STRICT, PositiveDuration

#: Prometheus job name of the agents (used by the rules and the scrape config).
JOB = "hcc-sentinel"
#: Labels every file_sd group carries; an override may not redefine them.
COMMUNE_LABELS: tuple[str, ...] = ("commune_code", "commune_name", "commune_type", "agent_id")
#: Editions of the inventory's name/type columns.
Edition = Literal["2025", "2026"]
#: Placeholder used for an apprise URL secret reference while validating (never written out).
_URL_PLACEHOLDER = "json://localhost/hcc-sentinel-render-check"
_REF = re.compile(r"\$\{[^}]*\}")
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_HOSTPORT = re.compile(r"^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9_.-]+):(\d{1,5})$")


class FleetError(Exception):
    """Rendering refused; ``problems`` lists every problem found (``file:line: message``)."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


# ---------------------------------------------------------------------------------------------
# Inventory
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Commune:
    """One row of the inventory, with the edition's name and type chosen.

    Attributes:
        code: 5-digit administrative unit code (unchanged by renamings).
        name: NFC name with diacritics in the chosen edition, e.g. ``"Phường Biên Hòa"``.
        type: ``xa`` or ``phuong`` in the chosen edition.
        former_province: ``Đồng Nai`` / ``Bình Phước`` or ``""``.
        name_en: English name (2026 column) or ``""``.
        name_2025, type_2025: the 1 July 2025 name and type.
        changed_2026: the unit was re-typed xã -> phường in 2026.
        line: line of the row in the CSV file (header = line 1).
    """

    code: str
    name: str
    type: str
    former_province: str = ""
    name_en: str = ""
    name_2025: str = ""
    type_2025: str = ""
    changed_2026: bool = False
    line: int = 0

    @property
    def type_vi(self) -> str:
        """``"xã"`` or ``"phường"``."""
        return {"xa": "xã", "phuong": "phường"}[self.type]

    @property
    def agent_id(self) -> str:
        """Default agent id: ``hcc-<code>``."""
        return f"hcc-{self.code}"

    @property
    def unit_id(self) -> str:
        """Default id of the commune's own IT unit: ``it-<code>``."""
        return f"it-{self.code}"

    def as_context(self) -> dict[str, Any]:
        """The ``commune`` object templates see."""
        d = dataclasses.asdict(self)
        d["type_vi"] = self.type_vi
        return d


def _type_value(raw: str) -> str | None:
    v = nfc(raw.strip()).lower()
    return {"xa": "xa", "xã": "xa", "phuong": "phuong", "phường": "phuong"}.get(v)


_TONES = {"\u0300", "\u0301", "\u0303", "\u0309", "\u0323"}


def name_key(name: str) -> str:
    """Comparison key of a Vietnamese name: NFC, case-folded, with the old/new tone-mark
    placement made equal (``Hoà`` = ``Hòa``, ``Thuỷ`` = ``Thủy``) but different tones kept apart
    (``Hòa`` != ``Hóa``): each syllable becomes its letters without the tone mark plus the tone.
    """
    out = []
    for syllable in nfc(name).casefold().split():
        decomposed = unicodedata.normalize("NFD", syllable)
        tone = "".join(ch for ch in decomposed if ch in _TONES)
        base = unicodedata.normalize("NFC", "".join(ch for ch in decomposed if ch not in _TONES))
        out.append(base + ("/" + tone if tone else ""))
    return " ".join(out)


def load_inventory(path: str | os.PathLike[str], edition: Edition = "2026") -> list[Commune]:
    """Read and check the commune inventory CSV (UTF-8, optional BOM, header row).

    Required columns: ``code``, ``name``, ``type``.  Optional: ``former_province``,
    ``type_2026``, ``name_2026``, ``changed_2026``, ``name_en_2026`` (other columns are ignored).
    With ``edition="2026"`` the 2026 name/type are used where the row has them.

    Args:
        path: the CSV file.
        edition: which name/type columns become :attr:`Commune.name`/:attr:`Commune.type`.

    Returns:
        The communes in file order, names NFC-normalised.

    Raises:
        FleetError: unreadable file, missing column, bad row (``file:line: ...`` for each: code
            not 5 digits, empty name, type not xa/phuong, wrong field count), duplicate code or
            duplicate name (names compared NFC, case-folded, ``Hoà`` = ``Hòa``).
    """
    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise FleetError([f"{file}:1: cannot read the inventory: {exc}"]) from None
    reader = csv.reader(io.StringIO(text))
    try:
        header = next(reader)
    except StopIteration:
        raise FleetError([f"{file}:1: the inventory is empty (expected a header row)"]) from None
    header = [h.strip() for h in header]
    missing = [c for c in ("code", "name", "type") if c not in header]
    if missing:
        raise FleetError([f"{file}:1: missing column(s) {', '.join(missing)} (header: {', '.join(header)})"])
    problems: list[str] = []
    out: list[Commune] = []
    seen_code: dict[str, int] = {}
    seen_name: dict[str, int] = {}
    for fields in reader:
        line = reader.line_num
        if not any(f.strip() for f in fields):
            continue
        if len(fields) != len(header):
            problems.append(f"{file}:{line}: row has {len(fields)} fields, the header has {len(header)}")
            continue
        row = {h: nfc(v.strip()) for h, v in zip(header, fields)}
        bad: list[str] = []
        code = row["code"]
        if not re.fullmatch(r"\d{5}", code):
            bad.append(f"code {code!r} is not a 5-digit administrative unit code")
        name = row["name"]
        if not name:
            bad.append("name is empty")
        typ = _type_value(row["type"])
        if typ is None:
            bad.append(f"type {row['type']!r} is not xa/xã or phuong/phường")
        name26, type26 = row.get("name_2026", ""), row.get("type_2026", "")
        typ26 = _type_value(type26) if type26 else None
        if type26 and typ26 is None:
            bad.append(f"type_2026 {type26!r} is not xa/xã or phuong/phường")
        changed = row.get("changed_2026", "").lower() in ("yes", "true", "1", "x", "có")
        if bad:
            problems.append(f"{file}:{line}: " + "; ".join(bad))
            continue
        assert typ is not None
        if code in seen_code:
            problems.append(f"{file}:{line}: duplicate code {code} (first on line {seen_code[code]})")
            continue
        seen_code[code] = line
        use_name = name26 if edition == "2026" and name26 else name
        use_type = typ26 if edition == "2026" and typ26 else typ
        key = name_key(use_name)
        if key in seen_name:
            problems.append(f"{file}:{line}: duplicate name {use_name!r} (first on line {seen_name[key]})")
        seen_name.setdefault(key, line)
        out.append(Commune(code=code, name=use_name, type=use_type,
                           former_province=row.get("former_province", ""),
                           name_en=row.get("name_en_2026", ""), name_2025=name, type_2025=typ,
                           changed_2026=changed, line=line))
    if problems:
        raise FleetError(problems)
    if not out:
        raise FleetError([f"{file}:2: the inventory has no commune rows"])
    return out


# ---------------------------------------------------------------------------------------------
# Overrides and central settings
# ---------------------------------------------------------------------------------------------


class CommuneOverrides(BaseModel):
    """Per-commune values the template uses (every string may itself hold ``{{ ... }}``).

    Attributes:
        scrape_address: ``host:port`` at which the central Prometheus scrapes this agent.
        listen: the agent's ``agent.listen``.
        uplink_gateway: address of the commune's gateway (an ``icmp`` uplink check), optional.
        website: the commune's own website URL (an ``http`` check), optional.
        contacts: apprise URLs of the commune IT contact — write them as ``${ENV}`` /
            ``${file:...}`` references; they are copied into the agent config unresolved.
        contact: human contact line shown in messages (a phone number), optional.
        status_url: public link to the agent's status page.
        labels: extra Prometheus target labels (e.g. ``isp: vnpt``).
        vars: free values for the template (``{{ o.vars.x }}``).
    """

    model_config = STRICT
    scrape_address: str | None = None
    listen: str | None = None
    uplink_gateway: str | None = None
    website: str | None = None
    contacts: list[str] | None = None
    contact: str | None = None
    status_url: str | None = None
    labels: dict[str, str] | None = None
    vars: dict[str, Any] | None = None

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: dict[str, str] | None) -> dict[str, str] | None:
        for name in v or {}:
            if not _LABEL_NAME.match(name) or name.startswith("__"):
                raise ValueError(f"{name!r} is not a valid Prometheus label name")
            if name in COMMUNE_LABELS or name in ("job", "instance"):
                raise ValueError(f"label {name!r} is set by fleet render and cannot be overridden")
        return v


class OverridesFile(BaseModel):
    """``overrides.yaml``: ``defaults`` for every commune, ``communes`` keyed by code."""

    model_config = STRICT
    defaults: CommuneOverrides = Field(default_factory=CommuneOverrides)
    communes: dict[str, CommuneOverrides] = Field(default_factory=dict)

    @field_validator("communes", mode="before")
    @classmethod
    def _codes(cls, v: Any) -> Any:
        if isinstance(v, dict):
            return {str(k): ({} if x is None else x) for k, x in v.items()}
        return v


class AlertmanagerSettings(BaseModel):
    """Alertmanager route timings (defaults are Alertmanager's own, ANCHORS §10.3)."""

    model_config = STRICT
    group_wait: PositiveDuration = 30.0
    group_interval: PositiveDuration = 300.0
    repeat_interval: PositiveDuration = 4 * 3600.0
    resolve_timeout: PositiveDuration = 300.0


class RelaySettings(BaseModel):
    """Where ``hcc-sentinel relay`` listens and keeps its outbox."""

    model_config = STRICT
    listen: str = "127.0.0.1:9471"
    data_dir: str = "/var/lib/hcc-sentinel-relay"
    timezone: str = "Asia/Ho_Chi_Minh"


class CentralSettings(BaseModel):
    """``central.yaml``: the central Prometheus/Alertmanager settings that are data.

    Attributes:
        default_unit: receives alerts whose ``owner`` matches no unit (must be a known unit).
        relay_url: base URL at which Alertmanager reaches ``hcc-sentinel relay``.
        outage_min_share: a system is in central outage when at least this share of the
            communes whose uplink is healthy see it failing ...
        outage_min_communes: ... and at least this many of them (both must hold).
        system_owners: central owner for systems whose owner differs per commune (the uplink,
            the agent host): e.g. ``{uplink: so-khcn}``.
        system_names: central display name for systems whose name differs per commune
            (``{uplink: "Đường truyền các xã, phường"}``).
        page_severity: alerts with this ``severity`` label escalate along the units' chains.
        alertmanager: route timings; relay: listen address and data directory of the relay.
    """

    model_config = STRICT
    default_unit: str
    relay_url: str = "http://127.0.0.1:9471"
    outage_min_share: float = Field(0.3, gt=0, le=1)
    outage_min_communes: int = Field(5, ge=1)
    system_owners: dict[str, str] = Field(default_factory=dict)
    system_names: dict[str, str] = Field(default_factory=dict)
    page_severity: str = "page"
    alertmanager: AlertmanagerSettings = Field(default_factory=AlertmanagerSettings)
    relay: RelaySettings = Field(default_factory=RelaySettings)

    @field_validator("relay_url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not re.match(r"^https?://[^/\s]+", v):
            raise ValueError("must be an http(s) URL, e.g. http://127.0.0.1:9471")
        return v.rstrip("/")


def _escape_refs(text: str) -> str:
    """Turn every ``${...}`` secret reference into its escaped form ``$${...}`` so that
    :func:`agent.yamlconf.load_yaml` keeps it verbatim instead of resolving it."""
    return re.sub(r"(?<!\$)\$\{", "$${", text)


def load_yaml_verbatim(path: str | os.PathLike[str] | None, text: str | None = None,
                       name: str | None = None) -> tuple[Any, LineMap]:
    """Load YAML with line numbers but without resolving secret references.

    Args:
        path: file to read (or ``None`` with ``text``).
        text: YAML text (read from ``path`` when ``None``).
        name: file name used in problems (default ``path``).

    Returns:
        ``(data, line_map)``; ``${...}`` references stay literal strings.

    Raises:
        ConfigError: syntax error or duplicate key, naming ``name`` and the line.
    """
    name = name or str(path)
    if text is None:
        try:
            text = Path(path).read_text(encoding="utf-8")  # type: ignore[arg-type]
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError([ConfigProblem(name, 1, "(file)", f"cannot read: {exc}")]) from None
    with tempfile.TemporaryDirectory(prefix="hcc-fleet-") as tmp:
        tmp_file = Path(tmp) / "verbatim.yaml"
        tmp_file.write_text(_escape_refs(text), encoding="utf-8")
        try:
            data, lm = load_yaml(tmp_file, env={})
        except ConfigError as exc:
            for p in exc.problems:
                p.file = name
            raise ConfigError(exc.problems) from None
    lm.file = name
    return data, lm


def _model_problems(file: str, lm: LineMap, exc: ValidationError, prefix: tuple[Any, ...] = ()) -> list[str]:
    out = []
    for err in exc.errors(include_url=False):
        loc = prefix + tuple(p for p in err["loc"] if not (isinstance(p, str) and "[" in p))
        msg = "unknown field (not allowed here)" if err["type"] == "extra_forbidden" else err["msg"].removeprefix("Value error, ")
        field = ".".join(str(p) for p in loc) or "(top level)"
        out.append(f"{file}:{lm.line_of(loc)}: {field}: {msg}")
    return out


def load_overrides(path: str | os.PathLike[str] | None) -> OverridesFile:
    """Load ``overrides.yaml`` (``None``: no overrides).  Secret references stay verbatim.

    Raises:
        FleetError: syntax error, unknown key (with its line), bad label name.
    """
    if path is None:
        return OverridesFile()
    try:
        data, lm = load_yaml_verbatim(path)
    except ConfigError as exc:
        raise FleetError([str(p) for p in exc.problems]) from None
    try:
        return OverridesFile.model_validate(data or {})
    except ValidationError as exc:
        raise FleetError(_model_problems(str(path), lm, exc)) from None


def load_central(path: str | os.PathLike[str] | None, default_unit: str | None = None) -> CentralSettings:
    """Load ``central.yaml``; without a file, defaults with ``default_unit``.

    Raises:
        FleetError: syntax error or invalid value (with its line), or no default unit at all.
    """
    if path is None:
        if not default_unit:
            raise FleetError(["no central settings given and no unit to use as default_unit"])
        return CentralSettings(default_unit=default_unit)
    try:
        data, lm = load_yaml(path)
    except ConfigError as exc:
        raise FleetError([str(p) for p in exc.problems]) from None
    try:
        return CentralSettings.model_validate(data or {})
    except ValidationError as exc:
        raise FleetError(_model_problems(str(path), lm, exc)) from None


# ---------------------------------------------------------------------------------------------
# Template rendering and validation
# ---------------------------------------------------------------------------------------------


def _q(value: Any) -> str:
    """Jinja filter ``q``: a YAML double-quoted scalar (JSON string syntax, UTF-8 kept)."""
    return json.dumps("" if value is None else str(value), ensure_ascii=False)


def make_environment() -> jinja2.Environment:
    """The Jinja2 environment of fleet templates: ``StrictUndefined`` (an unknown variable or
    attribute raises), no autoescaping (the output is YAML), trailing newline kept, and the
    ``q`` filter for quoted YAML strings."""
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False,
                             keep_trailing_newline=True)
    env.filters["q"] = _q
    return env


def _template_line(exc: BaseException, template_name: str) -> int | None:
    """Line in the template at which a rendering error happened (from the traceback)."""
    tb = exc.__traceback__
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == template_name:
            line = tb.tb_lineno
        tb = tb.tb_next
    return getattr(exc, "lineno", None) or line


def _render_strings(value: Any, env: jinja2.Environment, ctx: dict[str, Any]) -> Any:
    if isinstance(value, str) and "{{" in value or isinstance(value, str) and "{%" in value:
        return env.from_string(value).render(ctx)
    if isinstance(value, list):
        return [_render_strings(v, env, ctx) for v in value]
    if isinstance(value, dict):
        return {k: _render_strings(v, env, ctx) for k, v in value.items()}
    return value


def merged_overrides(ov: OverridesFile, commune: Commune, env: jinja2.Environment) -> dict[str, Any]:
    """``defaults`` then the commune's own values (a set field replaces; ``labels``/``vars``
    are merged key by key), every string rendered with the commune's context.

    Raises:
        jinja2.TemplateError: a string refers to an unknown variable.
    """
    out: dict[str, Any] = {name: None for name in CommuneOverrides.model_fields}
    out.update({"listen": "0.0.0.0:9470", "contacts": [], "labels": {}, "vars": {}})
    for layer in (ov.defaults, ov.communes.get(commune.code)):
        if layer is None:
            continue
        for name in layer.model_fields_set:
            value = getattr(layer, name)
            if value is None:
                continue
            if name in ("labels", "vars"):
                out[name] = {**out[name], **value}
            else:
                out[name] = value
    ctx = {"commune": commune.as_context(), "agent_id": commune.agent_id, "unit_id": commune.unit_id}
    return _render_strings(out, env, ctx)


def _placeholders(value: Any, loc: tuple[Any, ...] = ()) -> Any:
    """Replace secret references by neutral placeholders for validation: a value that is one
    whole reference inside a ``urls`` list becomes a valid ``json://`` URL, any other reference
    the text ``placeholder``."""
    if isinstance(value, str) and "${" in value:
        if len(loc) >= 2 and loc[-2] == "urls" and _REF.fullmatch(value.strip()):
            return _URL_PLACEHOLDER
        return _REF.sub("placeholder", value)
    if isinstance(value, list):
        return [_placeholders(v, loc + (i,)) for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {k: _placeholders(v, loc + (k,)) for k, v in value.items()}
    return value


def validate_rendered(text: str, name: str) -> tuple[ConfigBase, dict[str, Any]]:
    """Validate a rendered agent config without resolving its secrets.

    Args:
        text: the rendered YAML.
        name: file name used in problems (e.g. ``agents/26068.yaml``).

    Returns:
        ``(config, raw)``: the validated config (secrets replaced by placeholders) and the raw
        data with the references verbatim.

    Raises:
        ConfigError: every problem, as ``name:line: field: message``.
    """
    raw, lm = load_yaml_verbatim(None, text=text, name=name)
    config = validate_data(_placeholders(raw), lm)
    return config, raw


@dataclasses.dataclass
class RenderedAgent:
    """One commune's rendered config."""

    commune: Commune
    text: str
    config: ConfigBase
    raw: dict[str, Any]
    overrides: dict[str, Any]

    @property
    def unit_id(self) -> str | None:
        """The commune's own unit: the owner of its first uplink target (``None`` if none)."""
        for t in self.config.targets:  # type: ignore[attr-defined]
            if t.system == "uplink" or t.uplink:
                return self.config.owner_of(t)
        return None


def render_agents(communes: list[Commune], template_path: str | os.PathLike[str],
                  overrides: OverridesFile) -> list[RenderedAgent]:
    """Render and validate one agent config per commune.

    Raises:
        FleetError: template syntax error or unknown placeholder (template file and line), an
            override keyed by a code not in the inventory, an invalid rendered config (problems
            shared by many communes reported once, with the count), a commune code or agent id
            that does not match its row, duplicate agent ids, a commune without an uplink target,
            ``uplink: true`` on a target whose system is not ``uplink`` (or the reverse), an
            ``owner`` naming no unit in ``alerting.units``.
    """
    template_name = str(template_path)
    env = make_environment()
    try:
        source = Path(template_path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise FleetError([f"{template_name}:1: cannot read the template: {exc}"]) from None
    env.loader = jinja2.FunctionLoader(lambda _name: (source, template_name, lambda: True))
    try:
        template = env.get_template(template_name)
    except jinja2.TemplateSyntaxError as exc:
        raise FleetError([f"{template_name}:{exc.lineno}: template syntax error: {exc.message}"]) from None

    codes = {c.code for c in communes}
    problems: list[str] = []
    for code in overrides.communes:
        if code not in codes:
            problems.append(f"overrides: communes.{code}: code {code} is not in the inventory")
    if problems:
        raise FleetError(problems)

    rendered: list[RenderedAgent] = []
    grouped: dict[str, list[str]] = {}
    seen_agent: dict[str, str] = {}
    for commune in communes:
        fname = f"agents/{commune.code}.yaml"
        try:
            o = merged_overrides(overrides, commune, env)
            ctx = {"commune": commune.as_context(), "agent_id": commune.agent_id,
                   "unit_id": commune.unit_id, "o": o}
            text = template.render(ctx)
        except jinja2.TemplateError as exc:
            line = _template_line(exc, template_name)
            msg = getattr(exc, "message", None) or str(exc)
            key = f"{template_name}:{line or '?'}: {msg}"
            grouped.setdefault(key, []).append(commune.code)
            continue
        try:
            config, raw = validate_rendered(text, fname)
        except ConfigError as exc:
            for p in exc.problems:
                grouped.setdefault(f"\0{p.line}\0{p.field}: {p.message}", []).append(commune.code)
            continue
        own: list[str] = []
        if config.agent.commune.code != commune.code:
            own.append(f"{fname}: agent.commune.code is {config.agent.commune.code}, the inventory row "
                       f"(line {commune.line}) says {commune.code}")
        if config.agent.id in seen_agent:
            own.append(f"{fname}: duplicate agent id {config.agent.id!r} (also commune {seen_agent[config.agent.id]})")
        seen_agent.setdefault(config.agent.id, commune.code)
        targets = config.targets  # type: ignore[attr-defined]
        if not any(t.system == "uplink" for t in targets):
            own.append(f"{fname}: no target with system 'uplink' (central availability needs each "
                       "commune's own link check)")
        for i, t in enumerate(targets):
            if t.uplink != (t.system == "uplink"):
                own.append(f"{fname}: targets[{i}] ({t.id}): uplink: true must go with system: uplink "
                           "(the central rules find uplink checks by system)")
        units = {u.id for u in config.alerting.units}
        for i, s in enumerate(config.systems):
            if s.owner and s.owner not in units:
                own.append(f"{fname}: systems[{i}] ({s.id}): owner {s.owner!r} is not a unit in alerting.units")
        for i, t in enumerate(targets):
            if t.owner and t.owner not in units:
                own.append(f"{fname}: targets[{i}] ({t.id}): owner {t.owner!r} is not a unit in alerting.units")
        problems.extend(own)
        rendered.append(RenderedAgent(commune, text, config, raw, o))

    for key, codes_ in grouped.items():
        if key.startswith("\0"):  # a config problem: named after the first commune's file
            _, line, msg = key.split("\0", 2)
            problems.append(_grouped_message(f"agents/{codes_[0]}.yaml:{line}: {msg}", codes_, len(communes)))
        else:
            problems.append(_grouped_message(key, codes_, len(communes)))
    if problems:
        raise FleetError(problems)
    return rendered


def _grouped_message(msg: str, codes: list[str], total: int) -> str:
    if len(codes) == 1:
        return f"{msg} (commune {codes[0]})"
    return f"{msg} (in {len(codes)} of {total} communes, e.g. {', '.join(codes[:3])})"


# ---------------------------------------------------------------------------------------------
# Central outputs
# ---------------------------------------------------------------------------------------------


def prom_duration(seconds: float) -> str:
    """Seconds -> the shortest exact Prometheus duration (``90`` -> ``1m30s``, ``0.5`` -> ``500ms``).

    Raises:
        ValueError: negative or sub-millisecond value.
    """
    if seconds < 0:
        raise ValueError("negative duration")
    ms = round(seconds * 1000)
    if ms == 0:
        return "0s"
    if abs(ms - seconds * 1000) > 1e-6 * max(1.0, seconds):
        raise ValueError(f"{seconds}s is not a whole number of milliseconds")
    out = ""
    for unit, size in (("d", 86400000), ("h", 3600000), ("m", 60000), ("s", 1000), ("ms", 1)):
        if ms >= size:
            out += f"{ms // size}{unit}"
            ms %= size
    return out


@dataclasses.dataclass
class FleetRender:
    """The result of :func:`render_fleet`: file path (relative to OUT) -> text."""

    files: dict[str, str]
    agents: list[RenderedAgent]
    units: list[dict[str, Any]]

    def write(self, out_dir: str | os.PathLike[str]) -> list[Path]:
        """Write every file under ``out_dir`` (each atomically: temp file + rename).

        Every directory is created first, so an unusable ``out_dir`` (a file, a path under
        ``/proc``, no permission) fails before any file is written.

        Returns:
            The paths written.

        Raises:
            OSError: a directory or file cannot be created.
        """
        written = []
        for parent in sorted({(Path(out_dir) / rel).parent for rel in self.files}):
            parent.mkdir(parents=True, exist_ok=True)
        for rel, text in sorted(self.files.items()):
            path = Path(out_dir) / rel
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
            written.append(path)
        return written


def collect_units(agents: list[RenderedAgent]) -> list[dict[str, Any]]:
    """The union of every rendered config's ``alerting.units`` (raw, secrets verbatim).

    Raises:
        FleetError: the same unit id rendered differently for two communes.
    """
    units: dict[str, tuple[dict[str, Any], str]] = {}
    problems = []
    for a in agents:
        for u in (a.raw.get("alerting") or {}).get("units") or []:
            uid = u.get("id")
            if uid in units and units[uid][0] != u:
                problems.append(f"agents/{a.commune.code}.yaml: unit {uid!r} differs from the one rendered for "
                                f"commune {units[uid][1]} (a unit id must mean one unit across the fleet)")
            units.setdefault(uid, (u, a.commune.code))
    if problems:
        raise FleetError(problems)
    count: dict[str, int] = {}
    for a in agents:
        for u in (a.raw.get("alerting") or {}).get("units") or []:
            count[u.get("id")] = count.get(u.get("id"), 0) + 1
    order = list(units)
    # units in every commune's config (the provincial ones) first, in template order; then the
    # communes' own units in inventory order
    shared = [uid for uid in order if count[uid] == len(agents)]
    own = [uid for uid in order if count[uid] != len(agents)]
    return [units[uid][0] for uid in shared + own]


def file_sd_groups(agents: list[RenderedAgent]) -> list[dict[str, Any]]:
    """Prometheus file_sd target groups: one per commune, labelled with its code, name, type,
    agent id and the override ``labels``.

    Raises:
        FleetError: a commune without ``scrape_address`` or with a malformed one, or two
            communes with the same address.
    """
    groups, problems, seen = [], [], {}
    for a in agents:
        addr = a.overrides.get("scrape_address")
        if not addr:
            problems.append(f"commune {a.commune.code}: no scrape_address (set it in overrides defaults or per commune)")
            continue
        m = _HOSTPORT.match(addr)
        if not m or not 0 < int(m.group(2)) < 65536:
            problems.append(f"commune {a.commune.code}: scrape_address {addr!r} is not HOST:PORT")
            continue
        if addr in seen:
            problems.append(f"commune {a.commune.code}: scrape_address {addr} is also commune {seen[addr]}'s")
        seen.setdefault(addr, a.commune.code)
        c = a.config.agent.commune
        labels = {"commune_code": c.code, "commune_name": c.name, "commune_type": c.type,
                  "agent_id": a.config.agent.id}
        labels.update(a.overrides.get("labels") or {})
        groups.append({"targets": [addr], "labels": labels})
    if problems:
        raise FleetError(problems)
    return groups


def _system_table(agents: list[RenderedAgent], central: CentralSettings, unit_ids: set[str]) -> list[dict[str, Any]]:
    by_id: dict[str, dict[str, Any]] = {}
    for a in agents:
        for s in a.config.systems:
            entry = by_id.setdefault(s.id, {"names": set(), "names_en": set(), "owners": set(), "objectives": set()})
            entry["names"].add(s.name)
            entry["names_en"].add(s.name_en or "")
            entry["owners"].add(s.owner)
            entry["objectives"].add(s.objective)
    problems, out = [], []
    for sid, e in sorted(by_id.items()):
        if sid in central.system_owners:
            owner = central.system_owners[sid]
        elif len(e["owners"]) == 1:
            owner = next(iter(e["owners"]))
        else:
            problems.append(f"system {sid!r} has different owners across communes ({', '.join(sorted(map(str, e['owners'])))}): "
                            f"set central.yaml system_owners.{sid} to the unit that answers for it centrally")
            continue
        if owner and owner not in unit_ids:
            problems.append(f"system {sid!r}: owner {owner!r} is not a unit")
        if len(e["objectives"]) != 1:
            problems.append(f"system {sid!r} has different objectives across communes: {sorted(e['objectives'])}")
            continue
        name = central.system_names.get(sid) or sorted(e["names"])[0]
        out.append({"id": sid, "name": name, "name_en": sorted(e["names_en"])[-1],
                    "owner": owner or central.default_unit, "objective": next(iter(e["objectives"]))})
    for field in ("system_owners", "system_names"):
        for sid in getattr(central, field):
            if sid not in by_id:
                problems.append(f"central.yaml {field}: unknown system {sid!r}")
    if problems:
        raise FleetError(problems)
    return out


def _latency_objectives(agents: list[RenderedAgent]) -> dict[str, tuple[str, float]]:
    """target id -> (system, slow_after seconds); the largest slow_after if communes differ."""
    out: dict[str, tuple[str, float]] = {}
    for a in agents:
        for t in a.config.targets:  # type: ignore[attr-defined]
            if t.system is None:
                continue
            slow = float(a.config.effective(t, "slow_after"))
            prev = out.get(t.id)
            out[t.id] = (t.system, max(slow, prev[1]) if prev else slow)
    return out


def _const(record: str, value: float, labels: dict[str, str] | None = None) -> dict[str, Any]:
    rule: dict[str, Any] = {"record": record, "expr": f"vector({value:g})"}
    if labels:
        rule["labels"] = labels
    return rule


def render_rules(agents: list[RenderedAgent], systems: list[dict[str, Any]], units: list[dict[str, Any]],
                 central: CentralSettings) -> dict[str, Any]:
    """The generated rule file: constants the static rules join on, and escalation alerts.

    Series (all value 1 unless said): ``hcc:config:outage_min_share`` / ``_min_communes``
    (values); ``hcc:system:info{system,owner,system_name,system_name_en}``;
    ``hcc:slo:objective{system}`` (value, e.g. 0.995);
    ``hcc:target:latency_objective_seconds{target,system}`` (value: the target's ``slow_after``);
    ``hcc:commune:info{commune_code,commune_name,commune_type,agent_id,owner}`` (the expected
    communes and their own unit); ``hcc:fleet:communes_expected`` (value).

    Escalation: each unit's chain ``escalation: [{after, units}]`` becomes alerts ``Escalation``
    over ``ALERTS{alertstate="firing", severity=<page_severity>, owner=~<units>}`` with
    ``for: <after>`` — one rule per (step, delay, receiving unit), the owners sharing it joined in
    one regex — labelled ``escalate_to``, ``escalation_step``, ``escalation_after``, and
    ``escalated_alertname`` / ``escalated_from`` copied from the original alert; Alertmanager
    routes it to ``escalate_to``.  "Unacknowledged" centrally means "still firing and not
    silenced": a silence that acknowledges an incident must match its escalation too (e.g.
    ``system="motcua"`` rather than ``alertname=...``, see docs/central.md).  Prometheus restores ``for`` state after a restart from
    ``ALERTS_FOR_STATE``.  Source: Prometheus alerting rules and the ``ALERTS`` series
    (prometheus.io/docs/prometheus/latest/configuration/alerting_rules/).

    Raises:
        ValueError: an escalation ``after`` that is not a duration.
    """
    consts: list[dict[str, Any]] = [
        _const("hcc:config:outage_min_share", central.outage_min_share),
        _const("hcc:config:outage_min_communes", central.outage_min_communes),
        _const("hcc:fleet:communes_expected", len(agents)),
    ]
    for s in systems:
        labels = {"system": s["id"], "owner": s["owner"], "system_name": s["name"]}
        if s["name_en"]:
            labels["system_name_en"] = s["name_en"]
        consts.append(_const("hcc:system:info", 1, labels))
    for s in systems:
        consts.append(_const("hcc:slo:objective", s["objective"], {"system": s["id"]}))
    for tid, (sid, slow) in sorted(_latency_objectives(agents).items()):
        consts.append(_const("hcc:target:latency_objective_seconds", slow, {"target": tid, "system": sid}))
    for a in agents:
        c = a.config.agent.commune
        labels = {"commune_code": c.code, "commune_name": c.name, "commune_type": c.type,
                  "agent_id": a.config.agent.id}
        if a.unit_id:
            labels["owner"] = a.unit_id
        consts.append(_const("hcc:commune:info", 1, labels))
    # One rule per (step, delay, receiving unit); the owners sharing it are one regex (95
    # commune units escalating alike stay one rule).
    chains: dict[tuple[int, float, str], list[dict[str, Any]]] = {}
    for u in units:
        for j, step in enumerate(u.get("escalation") or []):
            for target_unit in step.get("units") or []:
                chains.setdefault((j + 1, _seconds(step.get("after")), target_unit), []).append(u)
    escalations: list[dict[str, Any]] = []
    for (step_no, after, target_unit), owners in sorted(chains.items()):
        # unit ids are slugs ([a-z0-9_.-]); only '.' is special in a regex (escaped as \\. in
        # the PromQL string literal)
        owner_re = "|".join(str(u["id"]).replace(".", "\\\\.") for u in owners)
        expr = ('label_replace(label_replace(label_replace(ALERTS{alertstate="firing", alertname!="Escalation", '
                f'severity="{central.page_severity}", owner=~"{owner_re}"}}, '
                '"escalated_alertname", "$1", "alertname", "(.+)"), "escalated_from", "$1", "owner", "(.+)"), '
                '"alertstate", "", "alertstate", ".*")')
        who = _unit_name(owners[0]) if len(owners) == 1 else "{{ $labels.owner }}"
        escalations.append({
            "alert": "Escalation",
            "expr": expr,
            "for": prom_duration(after),
            "labels": {"escalate_to": target_unit, "escalation_step": str(step_no),
                       "escalation_after": prom_duration(after)},
            "annotations": {
                "summary": ("Chuyển cấp: {{ $labels.escalated_alertname }} của " + who
                            + f" chưa được xử lý sau {prom_duration(after)}"),
                "summary_en": ("Escalated: {{ $labels.escalated_alertname }} owned by {{ $labels.owner }}"
                               + f" still firing after {prom_duration(after)}"),
            },
        })
    groups = [{"name": "hcc-sentinel-fleet-constants", "interval": "1m", "rules": consts}]
    if escalations:
        groups.append({"name": "hcc-sentinel-escalation", "interval": "1m", "rules": escalations})
    return {"groups": groups}


def _unit_name(u: dict[str, Any]) -> str:
    return str(u.get("name") or u.get("id"))


def _seconds(value: Any) -> float:
    from probes.config_types import parse_duration

    return parse_duration(value)


def render_alertmanager(units: list[dict[str, Any]], central: CentralSettings) -> dict[str, Any]:
    """Alertmanager config: one receiver per unit (a webhook to the relay,
    ``<relay_url>/alertmanager/<unit id>``), routes by ``escalate_to`` then ``owner``, grouping
    by alert name, system and commune, and the inhibitions:

    * ``SystemOutageCentral`` mutes per-commune alerts of the same system (``equal: [system]``)
      and that system's ``SystemSlow`` and SLO burn alerts (and their escalations);
    * ``CommuneLinkDown`` mutes the other per-commune alerts of that commune
      (``equal: [commune_code]``), except escalations of the link alert itself;
    * ``AgentMissing`` mutes that commune's other per-commune alerts (stale data);
    * ``FleetScrapeOutage`` mutes every ``AgentMissing``.

    Source: prometheus.io/docs/alerting/latest/configuration/ (route, receiver,
    webhook_config, inhibit_rule).
    """
    am = central.alertmanager
    routes: list[dict[str, Any]] = []
    esc_targets = sorted({t for u in units for s in (u.get("escalation") or []) for t in (s.get("units") or [])})
    for uid in esc_targets:
        routes.append({"receiver": uid, "matchers": [f'escalate_to="{uid}"'],
                       "group_by": ["alertname", "escalated_alertname", "system", "commune_code"]})
    for u in units:
        routes.append({"receiver": u["id"], "matchers": [f'owner="{u["id"]}"']})
    receivers = []
    for u in units:
        receivers.append({"name": u["id"], "webhook_configs": [{
            "url": f"{central.relay_url}/alertmanager/{u['id']}",
            "send_resolved": bool(u.get("send_resolved", True)),
            "max_alerts": 0,
        }]})
    inhibit = [
        {"source_matchers": ['alertname="SystemOutageCentral"'],
         "target_matchers": ['scope="commune"'], "equal": ["system"]},
        {"source_matchers": ['alertname="SystemOutageCentral"'],
         "target_matchers": ['alertname=~"SystemSlow|SLOErrorBudgetBurn|SLOErrorBudgetBurnSlow"'],
         "equal": ["system"]},
        {"source_matchers": ['alertname="SystemOutageCentral"'],
         "target_matchers": ['escalated_alertname=~"SystemSlow|SLOErrorBudgetBurn|SLOErrorBudgetBurnSlow"'],
         "equal": ["system"]},
        {"source_matchers": ['alertname="CommuneLinkDown"'],
         "target_matchers": ['scope="commune"', 'alertname!="CommuneLinkDown"',
                             'escalated_alertname!="CommuneLinkDown"'],
         "equal": ["commune_code"]},
        {"source_matchers": ['alertname="AgentMissing"'],
         "target_matchers": ['scope="commune"', 'alertname!="AgentMissing"',
                             'escalated_alertname!="AgentMissing"'],
         "equal": ["commune_code"]},
        {"source_matchers": ['alertname="FleetScrapeOutage"'],
         "target_matchers": ['alertname="AgentMissing"']},
    ]
    return {
        "global": {"resolve_timeout": prom_duration(am.resolve_timeout)},
        "route": {
            "receiver": central.default_unit,
            "group_by": ["alertname", "system", "commune_code"],
            "group_wait": prom_duration(am.group_wait),
            "group_interval": prom_duration(am.group_interval),
            "repeat_interval": prom_duration(am.repeat_interval),
            "routes": routes,
        },
        "receivers": receivers,
        "inhibit_rules": inhibit,
    }


def render_relay_config(units: list[dict[str, Any]], central: CentralSettings,
                        systems: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The relay's config (:class:`agent.relay.RelayConfig`): listen address, data directory,
    default unit, system names and the units (secret references verbatim; the relay resolves
    them when it loads the file)."""
    out: dict[str, Any] = {
        "listen": central.relay.listen,
        "data_dir": central.relay.data_dir,
        "timezone": central.relay.timezone,
        "default_unit": central.default_unit,
    }
    if systems:
        out["systems"] = [{"id": s["id"], "name": s["name"], **({"name_en": s["name_en"]} if s["name_en"] else {})}
                          for s in systems]
    out["alerting"] = {"units": units}
    return out


def _yaml(data: Any, header: str) -> str:
    return header + yaml.safe_dump(data, allow_unicode=True, sort_keys=False, width=110)


def render_fleet(inventory: str | os.PathLike[str], template: str | os.PathLike[str],
                 overrides: str | os.PathLike[str] | None = None,
                 central: str | os.PathLike[str] | None = None,
                 edition: Edition = "2026", agent_files: bool = True) -> FleetRender:
    """Render the whole fleet in memory (see the module docstring for the files).

    Args:
        inventory: communes CSV; template: Jinja2 agent config template;
        overrides: optional overrides YAML; central: optional central settings YAML;
        edition: ``"2026"`` (current names/types) or ``"2025"``.
        agent_files: include ``agents/<code>.yaml`` in the files (they are always rendered and
            validated; ``False`` writes only the central files, e.g. to refresh the committed
            copies under ``configs/``).

    Returns:
        :class:`FleetRender`; call :meth:`FleetRender.write` to write it.

    Raises:
        FleetError: any refusal listed in :func:`load_inventory`, :func:`render_agents`,
            :func:`collect_units`, :func:`file_sd_groups`, or a central setting naming an unknown
            unit.
    """
    communes = load_inventory(inventory, edition)
    ov = load_overrides(overrides)
    agents = render_agents(communes, template, ov)
    units = collect_units(agents)
    unit_ids = {u["id"] for u in units}
    settings = load_central(central, default_unit=None if central else (units[0]["id"] if units else None))
    problems = []
    if settings.default_unit not in unit_ids:
        problems.append(f"central: default_unit {settings.default_unit!r} is not a unit (known: {', '.join(sorted(unit_ids))})")
    for sid, owner in settings.system_owners.items():
        if owner not in unit_ids:
            problems.append(f"central: system_owners.{sid}: {owner!r} is not a unit")
    if problems:
        raise FleetError(problems)
    systems = _system_table(agents, settings, unit_ids)
    groups = file_sd_groups(agents)
    src = f"from {Path(inventory).name}, {Path(template).name}"
    src += f", {Path(overrides).name}" if overrides else ""
    src += f", {Path(central).name}" if central else ""
    head = f"# GENERATED by `hcc-sentinel fleet render` {src} -- do not edit by hand.\n"
    files: dict[str, str] = {}
    if agent_files:
        for a in agents:
            files[f"agents/{a.commune.code}.yaml"] = head + a.text
    files["prometheus/file_sd/hcc-sentinel.json"] = json.dumps(groups, ensure_ascii=False, indent=2) + "\n"
    files["prometheus/rules/fleet.rules.yml"] = _yaml(render_rules(agents, systems, units, settings), head)
    files["alertmanager/alertmanager.yml"] = _yaml(render_alertmanager(units, settings), head)
    files["relay/relay.yaml"] = _yaml(render_relay_config(units, settings, systems), head)
    return FleetRender(files=files, agents=agents, units=units)


def summary(render: FleetRender) -> str:
    """One-paragraph human summary of a render (counts of communes by type, units, files)."""
    types: dict[str, int] = {}
    for a in render.agents:
        types[a.commune.type] = types.get(a.commune.type, 0) + 1
    parts = ", ".join(f"{n} {t}" for t, n in sorted(types.items()))
    return (f"{len(render.agents)} communes ({parts}), {len(render.units)} units, "
            f"{len(render.files)} files")


__all__ = [
    "Commune", "CentralSettings", "CommuneOverrides", "FleetError", "FleetRender", "OverridesFile",
    "RenderedAgent", "collect_units", "file_sd_groups", "load_central", "load_inventory",
    "load_overrides", "load_yaml_verbatim", "make_environment", "name_key", "prom_duration",
    "render_agents", "render_alertmanager", "render_fleet", "render_relay_config", "render_rules",
    "summary", "validate_rendered",
]
