"""User-journey probe: a list of HTTP steps run in one session (cookies kept between steps).

The procedure system often "loads" its home page while the step a citizen needs — the search,
the procedure page, the VNeID login — hangs.  A ``flow`` target walks that journey the way a
browser would, without running JavaScript:

* one :class:`aiohttp.ClientSession` per probe with its own cookie jar (RFC 6265: cookies set by
  a response are sent with later requests to the same host/path; host-only cookies of an IP
  literal host are kept too, which aiohttp's default jar refuses);
* each step is a GET/POST/... with query, header, form (``application/x-www-form-urlencoded``),
  JSON or raw body; values are *templated* with a sandboxed :mod:`jinja2` environment
  (``StrictUndefined``: a missing value fails the step instead of sending an empty string);
* values are *extracted* from a step's response for later steps: a form field (hidden inputs
  such as CSRF tokens) or a ``<meta>`` tag read with :mod:`html.parser`, a link by its text, a
  regex group, a JSON field by dotted path, a header, the ``Location`` of a redirect resolved
  against the request URL (RFC 9110 §10.2.2 / §15.4), a cookie from the jar (RFC 6265 §5.4);
* *assertions* per step: status, text contains / not contains / regex (compared after Unicode
  NFC normalisation, Vietnamese pages come in NFC or NFD), JSON fields;
* *deadlines* per step, with the ``http`` kind's machinery (:mod:`probes.http`: its traced
  connector, phase tracker, bounded body reader and charset decoder are reused, not copied):
  ``connect_timeout`` (TCP connect), ``tls_timeout`` (TLS handshake), ``first_byte_timeout``
  (connection ready → first response byte), ``stall_timeout`` (longest silence while the body
  arrives) and ``timeout`` (the whole step), each capped by what is left of the target's
  ``timeout`` for the whole journey.

The journey stops at the first failing step and names it.  Outcome and reason are the failing
step's own: ``timeout_first_byte``/``stall``/``timeout_connect``/``timeout_total`` (hang),
``http_status``, ``refused``, ``tls``... (error), or ``step`` when one of the step's own
assertions or extractions failed.  A journey whose steps all succeed is ``ok``, or ``slow``
when it took longer than the target's ``slow_after`` or a step took longer than its own.

Facts: ``flow_failed_step`` (name or ``None``), ``flow_steps`` (one dict per step *run*:
``name``, ``title``, ``outcome``, ``reason``, ``duration_seconds``, ``status`` — HTTP status or
``None`` — and, on failure, ``check``), ``flow_step_names`` (all configured names, in order),
``http_status_code`` (of the last response received).

Secrets: ``secrets:`` values are :class:`pydantic.SecretStr` (the agent substitutes
``${ENV}``/``${file:...}`` into them) and are reachable in templates only as
``{{ secrets.NAME }}``.  Every text a result carries (detail, facts) is scrubbed of every secret
value (raw, URL-encoded, form-encoded and JSON-escaped) and of extracted values marked
``secret: true``; details show URLs without their query string and never show bodies (only the
page ``<title>``).

Options (YAML key ``flow``)::

    base_url: https://dichvucong.gov.vn      # relative step URLs are resolved against it
    variables: {keyword: "khai sinh", username: "giamsat.26068"}
    secrets: {password: "${PORTAL_PASSWORD}"}
    first_byte_timeout: 10s                  # defaults for every step
    steps:
      - name: home
        url: /p/home/dvc-trang-chu.html
        body_not_contains: ["Hệ thống đang bảo trì"]
      - name: login-page
        url: /dang-nhap
        extract:
          - {name: csrf, from: form_field, field: _csrf}
      - name: login
        method: POST
        url: /dang-nhap
        form: {username: "{{ username }}", password: "{{ secrets.password }}", _csrf: "{{ csrf }}"}
        body_contains: ["Đăng xuất"]

Like every kind, :func:`probe` never raises for a network failure.  Names are resolved as the
``http`` kind resolves them.  Full reference with examples: ``docs/flow-status.md``.
"""

from __future__ import annotations

import asyncio
import json as jsonlib
import os
import re
import time
import urllib.parse
from html.parser import HTMLParser
from typing import Any, Literal

import aiohttp
from multidict import CIMultiDict
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from yarl import URL

from probes import http as _http
from probes.base import Clock, Outcome, ProbeContext, ProbeResult, TargetSpec, make_result, nfc, reason_outcome
from probes.config_types import STRICT, PositiveDuration
from probes.http import JsonCondition, StatusRange, classify_exception, decode_body, display_url, walk_json

KIND = "flow"

_STEP_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
_VAR_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
#: Names the template context defines itself; a variable or extract may not take them.
RESERVED_NAMES = frozenset({"secrets", "steps", "target", "loop", "range", "dict", "lipsum", "cycler", "joiner", "namespace"})

Method = Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]

_templates: Any = None


def templates() -> Any:
    """The one sandboxed jinja2 environment of every flow: templates cannot reach Python
    internals, an undefined name raises instead of rendering as "" (a step must never send an
    empty CSRF token silently).  Made at first use: jinja2 (~1 MiB RSS) is imported only by an
    agent whose config has a flow target."""
    global _templates
    if _templates is None:
        import jinja2
        from jinja2.sandbox import SandboxedEnvironment

        _templates = SandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False,
                                          keep_trailing_newline=True)
    return _templates


def _template_names(text: str) -> set[str]:
    """Top-level names a template uses. Raises ValueError on a syntax error."""
    import jinja2
    import jinja2.meta

    try:
        return set(jinja2.meta.find_undeclared_variables(templates().parse(text)))
    except jinja2.TemplateSyntaxError as exc:
        raise ValueError(f"template syntax error in {text!r}: {exc.message}") from None


_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")  # RFC 9110 §5.6.2 token (header names)


def _check_header_names(headers: dict[str, str]) -> dict[str, str]:
    for name in headers:
        if not _TOKEN.match(name):
            raise ValueError(f"{name!r} is not a valid header name (RFC 9110 token)")
    return headers


def _strings_in(value: Any) -> list[str]:
    """Every string inside a JSON-like value (keys and values)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in _strings_in(k) + _strings_in(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings_in(v)]
    return []


# --------------------------------------------------------------------------------------------
# Options
# --------------------------------------------------------------------------------------------


class Extract(BaseModel):
    """One value taken from a step's response, available to later steps as ``{{ name }}``.

    ``from`` is one of:

    * ``form_field`` — ``value`` of the first ``<input>``/``<textarea>``/``<select>`` named
      ``field`` (hidden CSRF tokens), optionally inside the ``<form>`` whose ``id`` or ``action``
      contains ``form``;
    * ``meta`` — ``content`` of ``<meta name="field">`` (e.g. ``csrf-token``);
    * ``link`` — absolute URL of the first ``<a href>`` whose text contains ``text``
      (NFC, case-insensitive), resolved against the response URL;
    * ``regex`` — group ``value`` or group 1 (else the whole match) of ``pattern`` searched in
      the body text (or in header ``header`` when given);
    * ``json`` — the field at dotted ``path`` (``data.items.0.id``) of the JSON body; non-string
      values are JSON-encoded;
    * ``header`` — the response header ``header`` (case-insensitive);
    * ``location`` — the ``Location`` header resolved against the request URL (RFC 9110 §10.2.2):
      use it with ``follow_redirects: false``;
    * ``cookie`` — the cookie ``cookie`` the jar would send to the response URL (RFC 6265 §5.4);
    * ``url`` — the final URL of the step (after redirects).

    ``required: false`` with ``default`` gives a value when nothing is found; otherwise a missing
    value fails the step with reason ``step``.  ``secret: true`` scrubs the value from every
    result text, like a configured secret.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    name: str
    source: Literal["form_field", "meta", "link", "regex", "json", "header", "location", "cookie", "url"] = Field(
        alias="from")
    field: str | None = None
    form: str | None = None
    text: str | None = None
    pattern: str | None = None
    path: str | None = None
    header: str | None = None
    cookie: str | None = None
    required: bool = True
    default: str | None = None
    secret: bool = False

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _VAR_NAME.match(v) or v in RESERVED_NAMES:
            raise ValueError(f"{v!r}: must be an identifier (letters, digits, _) and not one of {sorted(RESERVED_NAMES)}")
        return v

    @model_validator(mode="after")
    def _needs(self) -> "Extract":
        need = {"form_field": "field", "meta": "field", "link": "text", "regex": "pattern", "json": "path",
                "header": "header", "cookie": "cookie"}.get(self.source)
        if need and getattr(self, need) is None:
            raise ValueError(f"from: {self.source} needs {need}:")
        if self.pattern is not None:
            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise ValueError(f"pattern is not a valid regular expression: {exc}") from None
        if not self.required and self.default is None:
            raise ValueError("required: false needs a default")
        return self


class Step(BaseModel):
    """One HTTP exchange of a journey (see the module docstring).

    Text fields ``url``, ``query``, ``headers``, ``form``, ``json`` (every string inside) and
    ``body`` are jinja2 templates.  Timeouts default to the flow's, then to what is left of the
    target's ``timeout``.  ``expect_status`` defaults to ``2xx`` (``2xx``/``3xx`` with
    ``follow_redirects: false``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    name: str = Field(description="slug, unique in the flow; the metric label 'step'")
    title: str | None = Field(None, description="Vietnamese display name, e.g. 'Tìm thủ tục'")
    method: Method = "GET"
    url: str
    query: dict[str, str] = Field(default_factory=dict)
    headers: dict[str, str] = Field(default_factory=dict)
    form: dict[str, str] | None = None
    json_body: Any = Field(None, alias="json")
    body: str | None = None
    content_type: str | None = None
    follow_redirects: bool = True
    max_redirects: int = Field(10, ge=1, le=50)
    expect_status: tuple[StatusRange, ...] | None = None
    body_contains: list[str] = Field(default_factory=list)
    body_not_contains: list[str] = Field(default_factory=list)
    body_regex: list[str] = Field(default_factory=list)
    body_not_regex: list[str] = Field(default_factory=list)
    json_conditions: tuple[JsonCondition, ...] = ()
    extract: list[Extract] = Field(default_factory=list)
    connect_timeout: PositiveDuration | None = None
    tls_timeout: PositiveDuration | None = None
    first_byte_timeout: PositiveDuration | None = None
    stall_timeout: PositiveDuration | None = None
    timeout: PositiveDuration | None = None
    slow_after: PositiveDuration | None = None
    max_body_bytes: int | None = Field(None, ge=1, le=64 * 1024 * 1024)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _STEP_NAME.match(v):
            raise ValueError("must be lower-case letters, digits, '-', '_' or '.', at most 63 characters")
        return v

    @field_validator("title")
    @classmethod
    def _title(cls, v: str | None) -> str | None:
        return nfc(v) if v is not None else None

    _headers = field_validator("headers")(lambda cls, v: _check_header_names(v))

    @field_validator("expect_status", mode="before")
    @classmethod
    def _status(cls, v: Any) -> Any:
        return [v] if v is not None and not isinstance(v, (list, tuple)) else v

    @field_validator("body_contains", "body_not_contains")
    @classmethod
    def _nfc_list(cls, v: list[str]) -> list[str]:
        return [nfc(x) for x in v]

    @field_validator("body_regex", "body_not_regex")
    @classmethod
    def _regexes(cls, v: list[str]) -> list[str]:
        for pattern in v:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"{pattern!r} is not a valid regular expression: {exc}") from None
        return [nfc(x) for x in v]

    @model_validator(mode="after")
    def _body_kinds(self) -> "Step":
        if sum(x is not None for x in (self.form, self.json_body, self.body)) > 1:
            raise ValueError("give at most one of form, json, body")
        names = [e.name for e in self.extract]
        if len(names) != len(set(names)):
            raise ValueError("duplicate extract name in one step")
        return self

    def templates(self) -> list[str]:
        """Every template string of the step (for config-time checks)."""
        out = [self.url, *self.query.values(), *self.query.keys(), *self.headers.values()]
        if self.form is not None:
            out += [*self.form.keys(), *self.form.values()]
        out += _strings_in(self.json_body)
        if self.body is not None:
            out.append(self.body)
        return out

    @property
    def status_ranges(self) -> tuple[tuple[int, int], ...]:
        """Accepted status ranges (inclusive): ``expect_status`` or the default, 200-299
        (200-399 with ``follow_redirects: false``)."""
        if self.expect_status:
            return tuple(self.expect_status)
        return ((200, 299),) if self.follow_redirects else ((200, 399),)

    def accepts(self, status: int) -> bool:
        """True when ``status`` lies in one of :attr:`status_ranges`."""
        return any(lo <= status <= hi for lo, hi in self.status_ranges)


class Options(BaseModel):
    """Options of the ``flow`` kind (see the module docstring for an example).

    Raises (at validation):
        ValueError: no steps; duplicate step names; a template with a syntax error or that uses
            a name not defined by ``variables``, ``secrets`` or an earlier step's ``extract``.
    """

    model_config = STRICT

    steps: list[Step] = Field(min_length=1, max_length=50)
    base_url: str | None = None
    variables: dict[str, str] = Field(default_factory=dict)
    secrets: dict[str, SecretStr] = Field(default_factory=dict)
    headers: dict[str, str] = Field(default_factory=dict, description="sent with every step")
    connect_timeout: PositiveDuration = 10.0
    tls_timeout: PositiveDuration = 10.0
    first_byte_timeout: PositiveDuration = 30.0
    stall_timeout: PositiveDuration = 10.0
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1, le=64 * 1024 * 1024)
    verify_tls: bool = True
    ca_file: str | None = None
    ip_protocol: Literal["ip4", "ip6"] = "ip4"
    ip_protocol_fallback: bool = True

    @field_validator("base_url")
    @classmethod
    def _base(cls, v: str | None) -> str | None:
        if v is not None and URL(v).scheme not in ("http", "https"):
            raise ValueError("base_url must be an absolute http:// or https:// URL")
        return v

    _headers = field_validator("headers")(lambda cls, v: _check_header_names(v))

    @field_validator("variables", "secrets")
    @classmethod
    def _var_names(cls, v: dict[str, Any]) -> dict[str, Any]:
        for name in v:
            if not _VAR_NAME.match(name) or name in RESERVED_NAMES:
                raise ValueError(f"{name!r}: must be an identifier and not one of {sorted(RESERVED_NAMES)}")
        return v

    @model_validator(mode="after")
    def _check_flow(self) -> "Options":
        names = [s.name for s in self.steps]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate step name(s): {', '.join(dupes)}")
        known = set(self.variables) | {"secrets", "steps", "target"}
        for value in self.headers.values():
            missing = _template_names(value) - known
            if missing:
                raise ValueError(f"headers use undefined name(s) {sorted(missing)}")
        for step in self.steps:
            for text in step.templates():
                missing = _template_names(text) - known
                if missing:
                    raise ValueError(
                        f"step {step.name!r}: {text!r} uses {', '.join(sorted(missing))}, defined by no variable "
                        "and no earlier step's extract")
            url = step.url
            if "{{" not in url and "{%" not in url and self.base_url is None and not URL(url).is_absolute() \
                    and step is self.steps[0]:
                raise ValueError(f"step {step.name!r}: the first step needs an absolute URL or a base_url")
            known |= {e.name for e in step.extract}
        return self


# --------------------------------------------------------------------------------------------
# HTML facts (stdlib html.parser)
# --------------------------------------------------------------------------------------------


class PageParser(HTMLParser):
    """Collects, in one pass: form fields (with their form's id/action), ``<meta name>``
    contents, links with their text, and the ``<title>``.  Tolerant of broken HTML (it is
    :class:`html.parser.HTMLParser`; entities in attribute values are unescaped by it)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.fields: list[tuple[str, str, str]] = []  # (form id+action, name, value)
        self.meta: dict[str, str] = {}
        self.links: list[tuple[str, str]] = []  # (href, text)
        self.title = ""
        self._form = ""
        self._in_title = False
        self._link: list[Any] | None = None
        self._textarea: list[Any] | None = None
        self._select: str | None = None
        self._select_first: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k.lower(): (v or "") for k, v in attrs}
        if tag == "form":
            self._form = f"{a.get('id', '')} {a.get('name', '')} {a.get('action', '')}"
        elif tag == "input" and a.get("name"):
            kind = a.get("type", "text").lower()
            if kind in ("checkbox", "radio") and "checked" not in a:
                return
            self.fields.append((self._form, a["name"], a.get("value", "")))
        elif tag == "textarea" and a.get("name"):
            self._textarea = [a["name"], ""]
        elif tag == "select" and a.get("name"):
            self._select, self._select_first = a["name"], None
        elif tag == "option" and self._select is not None:
            value = a.get("value", "")
            if "selected" in a:
                self.fields.append((self._form, self._select, value))
                self._select = None
            elif self._select_first is None:
                self._select_first = value
        elif tag == "meta" and (a.get("name") or a.get("property")):
            self.meta.setdefault((a.get("name") or a.get("property", "")).lower(), a.get("content", ""))
        elif tag == "a" and "href" in a:
            self._link = [a["href"], ""]
        elif tag == "title":
            self._in_title = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._form = ""
        elif tag == "textarea" and self._textarea is not None:
            self.fields.append((self._form, self._textarea[0], self._textarea[1]))
            self._textarea = None
        elif tag == "select" and self._select is not None:
            if self._select_first is not None:
                self.fields.append((self._form, self._select, self._select_first))
            self._select = None
        elif tag == "a" and self._link is not None:
            self.links.append((self._link[0], " ".join(self._link[1].split())))
            self._link = None
        elif tag == "title":
            self._in_title = False

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data
        if self._link is not None:
            self._link[1] += data
        if self._textarea is not None:
            self._textarea[1] += data

    def field(self, name: str, form: str | None = None) -> str | None:
        """Value of the first field ``name`` (inside a form whose id/name/action contains
        ``form`` when given), or None."""
        for form_key, field_name, value in self.fields:
            if field_name == name and (form is None or form in form_key):
                return value
        return None


def parse_page(text: str) -> PageParser:
    """Parse an HTML page (never raises on malformed HTML)."""
    parser = PageParser()
    try:
        parser.feed(text)
        parser.close()
    except Exception:  # noqa: BLE001 - html.parser may raise on pathological input; keep what we have
        pass
    return parser


# --------------------------------------------------------------------------------------------
# Secret scrubbing
# --------------------------------------------------------------------------------------------


class Scrubber:
    """Replaces secret values in text by ``***``: the raw value and its URL-encoded
    (RFC 3986 percent-encoding), form-encoded (``+`` for space) and JSON-escaped forms.

    Values shorter than 3 characters are ignored (scrubbing them would garble every message,
    and such a value is no secret)."""

    def __init__(self) -> None:
        self._needles: set[str] = set()

    def add(self, value: str) -> None:
        if len(value) < 3:
            return
        for form in (value, urllib.parse.quote(value, safe=""), urllib.parse.quote_plus(value),
                     urllib.parse.quote(value), jsonlib.dumps(value)[1:-1], jsonlib.dumps(value, ensure_ascii=False)[1:-1],
                     nfc(value)):
            if len(form) >= 3:
                self._needles.add(form)

    def __call__(self, value: Any) -> Any:
        """Scrubbed copy of a string, or of every string inside lists/dicts."""
        if isinstance(value, str):
            for needle in sorted(self._needles, key=len, reverse=True):
                if needle in value:
                    value = value.replace(needle, "***")
            return value
        if isinstance(value, list):
            return [self(v) for v in value]
        if isinstance(value, dict):
            return {k: self(v) for k, v in value.items()}
        return value


# --------------------------------------------------------------------------------------------
# One step
# --------------------------------------------------------------------------------------------


class StepFailure(Exception):
    """A step failed: ``reason`` from :data:`probes.base.REASONS`, ``check`` names the failed
    assertion/extraction (or the reason), ``detail`` is one line without secrets."""

    def __init__(self, reason: str, detail: str, check: str | None = None) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.check = check or reason


class _Limits:
    """The per-step view the ``http`` kind's tracker, resolver and body reader read (they
    duck-type its attributes: deadlines in seconds or None, body cap in bytes)."""

    def __init__(self, step: "Step", opts: "Options") -> None:
        self.connect_timeout = step.connect_timeout or opts.connect_timeout
        self.tls_timeout = step.tls_timeout or opts.tls_timeout
        self.first_byte_timeout = step.first_byte_timeout or opts.first_byte_timeout
        self.stall_timeout = step.stall_timeout or opts.stall_timeout
        self.max_body_bytes = step.max_body_bytes or opts.max_body_bytes
        self.ip_protocol = opts.ip_protocol
        self.ip_protocol_fallback = opts.ip_protocol_fallback
        self.verify_tls = opts.verify_tls
        self.wants_text = True  # keep the body: extraction needs it
        self.json_conditions = ()


class _FlowTracker(_http._Tracker):
    """The ``http`` kind's tracker, re-aimed at each step: :meth:`begin_step` sets the step's
    limits and deadline; the first hop of a step starts when the step sends, not when the
    previous step ended (the time spent between steps belongs to no phase)."""

    def __init__(self, opts: Any, total: float) -> None:
        super().__init__(opts, total)
        self._fresh_step = False

    def begin_step(self, limits: _Limits, deadline: float) -> None:
        self.opts = limits
        self.deadline = deadline
        self._fresh_step = True

    def new_hop(self, tls: bool) -> Any:
        hop = super().new_hop(tls)
        if self._fresh_step:  # not a redirect hop: starts now
            self._fresh_step = False
            hop.start = time.perf_counter()
        return hop


def _limit_of(tracker: _FlowTracker) -> str:
    armed = tracker.armed
    if armed == "total":
        return "the step's deadline"
    value = getattr(tracker.opts, armed, None)
    return f"{armed} {value:g}s" if isinstance(value, (int, float)) else armed


_TIMEOUT_TEXT = {
    "timeout_resolve": "no DNS answer",
    "timeout_connect": "TCP connect not finished",
    "timeout_tls": "TLS handshake not finished",
    "timeout_first_byte": "request sent, no response",
    "stall": "the body stopped arriving",
    "timeout_total": "response not complete",
}


class _Response:
    """What a step keeps of its final response (body decoded to NFC text)."""

    def __init__(self, status: int, url: URL, request_url: URL, headers: Any, text: str) -> None:
        self.status = status
        self.url = url
        self.request_url = request_url
        self.headers = headers
        self.text = text
        self._page: PageParser | None = None
        self._json: tuple[bool, Any] | None = None

    @property
    def page(self) -> PageParser:
        if self._page is None:
            self._page = parse_page(self.text)
        return self._page

    def json(self) -> tuple[bool, Any]:
        """``(parsed, document)``."""
        if self._json is None:
            try:
                self._json = (True, jsonlib.loads(self.text))
            except (ValueError, RecursionError):
                self._json = (False, None)
        return self._json

    def title(self) -> str:
        """The page ``<title>`` (80 characters at most), '' for non-HTML."""
        ctype = self.headers.get("Content-Type", "")
        if "html" not in ctype and not self.text.lstrip()[:15].lower().startswith(("<!doctype", "<html")):
            return ""
        return " ".join(self.page.title.split())[:80]


def _render(template: str, context: dict[str, Any]) -> str:
    import jinja2  # already imported by the config validation of this flow (no cost here)

    try:
        return templates().from_string(template).render(context)
    except jinja2.UndefinedError as exc:
        raise StepFailure("step", f"template value missing: {exc.message}", "template") from None
    except jinja2.TemplateError as exc:
        raise StepFailure("step", f"template error: {exc}", "template") from None


def _render_json(value: Any, context: dict[str, Any]) -> Any:
    if isinstance(value, str):
        return _render(value, context)
    if isinstance(value, dict):
        return {_render(k, context): _render_json(v, context) for k, v in value.items()}
    if isinstance(value, list):
        return [_render_json(v, context) for v in value]
    return value


def _jar_state(session: aiohttp.ClientSession) -> tuple[Any, ...]:
    """The cookies in the jar: a redirect back to a URL already visited is a loop only if no
    cookie changed meanwhile (login pages redirect to themselves after setting one)."""
    return tuple(sorted((c.key, c.value, c.get("domain", "")) for c in session.cookie_jar))


async def _exchange(session: aiohttp.ClientSession, tracker: _FlowTracker, step: Step, method: str, url: URL,
                    headers: CIMultiDict[str], data: bytes | None, facts: dict[str, Any]) -> _Response:
    """One step's request, following redirects hop by hop as the ``http`` kind does
    (RFC 9110 §15.4: 303 → GET, 301/302 after POST → GET; ``Authorization`` and explicit
    ``Cookie`` headers are not sent to another origin; the jar's cookies go where RFC 6265
    sends them), then the whole body (bounded, decompressed, decoded).

    Raises:
        StepFailure: every failure, with the ``http`` kind's reason codes.
    """
    origin0 = _http._origin(url)
    visited: set[tuple[Any, ...]] = {(method, str(url.with_fragment(None)), _jar_state(session))}
    redirects = 0
    request_url = url
    while True:
        where = display_url(url)
        tracker.new_hop(url.scheme == "https")
        hop_headers = headers.copy()
        if _http._origin(url) != origin0:
            for name in _http._CROSS_ORIGIN_DROP:
                hop_headers.popall(name, None)
        resp: aiohttp.ClientResponse | None = None
        try:
            async with asyncio.timeout(tracker.deadline) as timer:
                tracker.timer = timer
                tracker.arm(None, "total")
                resp = await session.request(method, url, headers=hop_headers, data=data, allow_redirects=False)
                tracker.headers_done()
                facts["http_status_code"] = resp.status
                location = resp.headers.get("Location")
                if step.follow_redirects and resp.status in _http.REDIRECT_STATUSES and location is not None:
                    tracker.end_hop()
                    resp.close()
                    target = _http._next_url(url, location)
                    if target.scheme not in ("http", "https") or not target.host:
                        raise StepFailure("redirect_policy", f"{where} redirects to a non-HTTP location")
                    redirects += 1
                    if redirects > step.max_redirects:
                        raise StepFailure("redirect_limit", f"more than {step.max_redirects} redirects (last from {where})")
                    if (resp.status == 303 and method != "HEAD") or (resp.status in (301, 302) and method == "POST"):
                        method, data = "GET", None
                        headers.popall("Content-Type", None)
                    state = (method, str(target.with_fragment(None)), _jar_state(session))
                    if state in visited:
                        raise StepFailure("redirect_limit", f"redirect loop: {where} leads back to {display_url(target)}")
                    visited.add(state)
                    request_url = url = target
                    continue
                body = await _http._read_body(resp, tracker.opts, tracker, facts)
                tracker.end_hop()
                if not body.decodable:
                    raise StepFailure("protocol", f"unsupported Content-Encoding {body.coding!r} from {where}")
                text, _charset = decode_body(body.raw or b"", body.content_type)
                return _Response(resp.status, resp.url, request_url, resp.headers, text)
        except StepFailure:
            raise
        except _http._ProbeFailure as failure:
            raise StepFailure(failure.reason, failure.detail) from None
        except BaseException as exc:
            expired = tracker.timer is not None and tracker.timer.expired()
            if isinstance(exc, asyncio.CancelledError) and not expired:
                raise
            if isinstance(exc, TimeoutError) or expired:
                reason = _http._timeout_reason(tracker.phase, tracker.armed)
                raise StepFailure(reason, f"{_TIMEOUT_TEXT[reason]} within {_limit_of(tracker)}") from None
            if not isinstance(exc, Exception):
                raise
            phase = tracker.raw_phase or tracker.phase
            host_port = f"{url.host}:{url.port}" if phase in ("connect", "tls") else (url.host or where) if phase == "resolve" else where
            reason, detail = classify_exception(tracker.raw_error or exc, phase, host_port)
            raise StepFailure(reason, detail) from None
        finally:
            tracker.timer = None
            if resp is not None:
                resp.close()
            if tracker.hops and tracker.hop.end is None:
                tracker.end_hop()


def _extract(ex: Extract, resp: _Response, session: aiohttp.ClientSession) -> str | None:
    """The value of one extraction (see :class:`Extract`), or None when not found."""
    src = ex.source
    if src == "form_field":
        return resp.page.field(ex.field or "", ex.form)
    if src == "meta":
        return resp.page.meta.get((ex.field or "").lower())
    if src == "link":
        needle = nfc(ex.text or "").casefold()
        for href, text in resp.page.links:
            if needle in nfc(text).casefold():
                return str(resp.url.join(URL(href)))
        return None
    if src == "regex":
        haystack = resp.headers.get(ex.header, "") if ex.header else resp.text
        m = re.search(nfc(ex.pattern or ""), haystack)
        if not m:
            return None
        if "value" in m.groupdict():
            return m.group("value")
        return m.group(1) if m.re.groups else m.group(0)
    if src == "json":
        ok, doc = resp.json()
        if not ok:
            return None
        value = walk_json(doc, ex.path or "")
        if value is _http._MISSING or value is None:
            return None
        return value if isinstance(value, str) else jsonlib.dumps(value, ensure_ascii=False)
    if src == "header":
        return resp.headers.get(ex.header or "")
    if src == "location":
        location = resp.headers.get("Location")
        return str(resp.url.join(URL(location.strip()))) if location else None
    if src == "cookie":
        morsel = session.cookie_jar.filter_cookies(resp.url).get(ex.cookie or "")
        return morsel.value if morsel is not None else None
    if src == "url":
        return str(resp.url)
    raise AssertionError(src)


def _check(step: Step, resp: _Response) -> None:
    """Assertions of one step, in order: status, contains, not contains, regex, not regex, JSON.

    Raises:
        StepFailure: ``http_status`` for the status, ``step`` for every other assertion.
    """
    title = resp.title()
    where = f" (page title {title!r})" if title else ""
    if not step.accepts(resp.status):
        wanted = ", ".join(f"{lo}" if lo == hi else f"{lo}-{hi}" for lo, hi in step.status_ranges)
        raise StepFailure("http_status", f"HTTP {resp.status}, expected {wanted}{where}", "expect_status")
    for needle in step.body_contains:
        if needle not in resp.text:
            raise StepFailure("step", f"body does not contain {needle!r}{where}", "body_contains")
    for needle in step.body_not_contains:
        if needle in resp.text:
            raise StepFailure("step", f"body contains {needle!r}{where}", "body_not_contains")
    for pattern in step.body_regex:
        if not re.search(pattern, resp.text):
            raise StepFailure("step", f"body does not match /{pattern}/{where}", "body_regex")
    for pattern in step.body_not_regex:
        if re.search(pattern, resp.text):
            raise StepFailure("step", f"body matches /{pattern}/{where}", "body_not_regex")
    if step.json_conditions:
        ok, doc = resp.json()
        if not ok:
            raise StepFailure("step", f"body is not JSON{where}", "json_conditions")
        for cond in step.json_conditions:
            problem = cond.check(doc)
            if problem is not None:
                raise StepFailure("step", problem, "json_conditions")


# --------------------------------------------------------------------------------------------
# The probe
# --------------------------------------------------------------------------------------------


async def probe(spec: TargetSpec, ctx: ProbeContext) -> ProbeResult:
    """Run the journey once.

    Args:
        spec: the target; ``spec.options`` is an :class:`Options`; ``spec.timeout`` (seconds)
            bounds the whole journey, ``spec.slow_after`` (seconds) classifies a slow success.
        ctx: agent facts (``User-Agent`` and extra headers sent with every request; the flow's
            and the step's ``headers`` override them).

    Returns:
        A :class:`ProbeResult` (see the module docstring for reasons and facts); phases are the
        ``http`` kind's, summed over every hop of every step.  Never raises for network
        failures; returns within ``spec.timeout`` plus the bounded session close (0.5 s).
    """
    opts: Options = spec.options
    clock = Clock()
    loop = asyncio.get_running_loop()
    flow_deadline = loop.time() + spec.timeout
    scrub = Scrubber()
    for secret in opts.secrets.values():
        scrub.add(secret.get_secret_value())
    steps_out: list[dict[str, Any]] = []
    facts: dict[str, Any] = {"flow_failed_step": None, "flow_steps": steps_out,
                             "flow_step_names": [s.name for s in opts.steps]}
    context: dict[str, Any] = {
        **opts.variables,
        "secrets": {k: v.get_secret_value() for k, v in opts.secrets.items()},
        "steps": {},
        "target": spec.id,
    }
    tracker: _FlowTracker | None = None
    any_slow = False

    def finish(reason: str | None, detail: str) -> ProbeResult:
        if reason is None and any_slow:
            reason = "slow"
        phases = tracker.phases() if tracker is not None else {}
        return make_result(spec, clock, reason, scrub(detail), phases, scrub(facts))

    try:
        ca_file = opts.ca_file
        sslctx = _http._ssl_context(opts.verify_tls, ca_file, os.stat(ca_file).st_mtime if ca_file else 0.0)
    except (OSError, ValueError) as exc:
        return finish("tls", f"cannot load ca_file {opts.ca_file!r}: {exc}")

    tracker = _FlowTracker(_Limits(opts.steps[0], opts), spec.timeout)
    connector = _http._TracedConnector(tracker, ssl=sslctx, use_dns_cache=False, force_close=True,
                                       resolver=_http._Resolver(tracker), limit=0)
    session = aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.CookieJar(unsafe=True),  # keep host-only cookies of IP-literal hosts (RFC 6265 §5.3)
        auto_decompress=False,  # the http kind's bounded decoder does it
        timeout=aiohttp.ClientTimeout(total=None, connect=None, sock_connect=None, sock_read=None),
        skip_auto_headers=("User-Agent",),
    )
    base = URL(opts.base_url) if opts.base_url else None
    last_url: URL | None = None
    try:
        for index, step in enumerate(opts.steps):
            step_clock = Clock()
            record: dict[str, Any] = {"name": step.name, "title": step.title, "outcome": None, "reason": None,
                                      "duration_seconds": None, "status": None}
            steps_out.append(record)
            facts.pop("http_status_code", None)
            resp: _Response | None = None
            shown = f"{step.method}"
            try:
                if loop.time() >= flow_deadline:
                    raise StepFailure("timeout_total", "the journey's timeout passed before this step", "timeout")
                url = URL(_render(step.url, context))
                if not url.is_absolute():
                    anchor = base or last_url
                    if anchor is None:
                        raise StepFailure("step", "relative URL and no base_url", "url")
                    url = anchor.join(url)
                if url.scheme not in ("http", "https") or not url.host:
                    raise StepFailure("step", f"not an http(s) URL: {display_url(url)}", "url")
                if step.query:
                    url = url.update_query({_render(k, context): _render(v, context) for k, v in step.query.items()})
                shown = f"{step.method} {display_url(url)}"
                headers: CIMultiDict[str] = CIMultiDict()
                headers["User-Agent"] = ctx.user_agent
                headers["Accept-Encoding"] = "gzip, deflate, br"
                for k, v in ctx.headers.items():
                    headers[k] = v
                for k, v in {**opts.headers, **step.headers}.items():
                    headers[k] = _render(v, context)
                data: bytes | None = None
                if step.form is not None:
                    form = {_render(k, context): _render(v, context) for k, v in step.form.items()}
                    data = urllib.parse.urlencode(form).encode("ascii")
                    headers.setdefault("Content-Type", "application/x-www-form-urlencoded")
                elif step.json_body is not None:
                    data = jsonlib.dumps(_render_json(step.json_body, context), ensure_ascii=False).encode("utf-8")
                    headers.setdefault("Content-Type", "application/json")
                elif step.body is not None:
                    data = _render(step.body, context).encode("utf-8")
                    headers.setdefault("Content-Type", "text/plain; charset=utf-8")
                if step.content_type:
                    headers["Content-Type"] = step.content_type

                deadline = flow_deadline
                if step.timeout is not None:
                    deadline = min(deadline, loop.time() + step.timeout)
                tracker.begin_step(_Limits(step, opts), deadline)
                resp = await _exchange(session, tracker, step, step.method, url, headers, data, facts)
                record["status"] = resp.status
                last_url = resp.url
                _check(step, resp)
                values: dict[str, str] = {}
                for ex in step.extract:
                    value = _extract(ex, resp, session)
                    if value is None:
                        if ex.required:
                            title = resp.title()
                            raise StepFailure("step", f"extract {ex.name!r} (from {ex.source}) found nothing"
                                              + (f" (page title {title!r})" if title else ""), "extract")
                        value = ex.default or ""
                    if ex.secret:
                        scrub.add(value)
                    values[ex.name] = value
                context.update(values)
                context["steps"][step.name] = {"status": resp.status, "url": str(resp.url)}
            except StepFailure as failure:
                record.update(outcome=reason_outcome(failure.reason).value, reason=failure.reason,
                              duration_seconds=round(step_clock.elapsed(), 6), check=failure.check)
                if record["status"] is None and "http_status_code" in facts:
                    record["status"] = facts["http_status_code"]
                facts["flow_failed_step"] = step.name
                return finish(failure.reason, f"step {index + 1}/{len(opts.steps)} {step.name!r} ({shown}): {failure.detail}")
            elapsed = step_clock.elapsed()
            slow = step.slow_after is not None and elapsed > step.slow_after
            any_slow = any_slow or slow
            record.update(outcome=(Outcome.SLOW if slow else Outcome.OK).value, reason="slow" if slow else "ok",
                          duration_seconds=round(elapsed, 6))
        return finish(None, f"{len(opts.steps)} steps passed, last {display_url(last_url) if last_url else '-'}")
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001 - a probe never raises
        if steps_out and steps_out[-1]["outcome"] is None:
            steps_out[-1].update(outcome="error", reason="internal", check="internal")
            facts["flow_failed_step"] = steps_out[-1]["name"]
        return finish("internal", f"unexpected {type(exc).__name__}: {exc}")
    finally:
        try:
            async with asyncio.timeout(0.5):
                await session.close()
        except BaseException:  # noqa: BLE001 - cleanup must not change the result
            pass
