"""Message rendering with Jinja2: Vietnamese first (with correct diacritics), English second.

One template file per event, each with a ``subject`` and a ``body`` block:

* ``problem.j2`` — new problems: down, degraded, flapping, and "commune link lost";
* ``resolved.j2`` — recoveries;
* ``reminder.j2`` — still open (every ``repeat_interval`` until acknowledged);
* ``escalation.j2`` — told to the next level of a unit's escalation chain.

Shared pieces live in ``_macros.j2``.  Lookup order (a unit can override any file):
``<templates_dir>/<unit_id>/<file>``, ``<templates_dir>/<file>``, then the defaults in
``alerts/templates/``.

Context given to every template (see :class:`Notice` and :class:`NoticeItem`): ``site``,
``event``, ``unit`` (id, name), ``other_units`` (names of the others told), ``items`` (one per
incident), ``systems`` (the items' distinct systems: titles count systems, several checks of one
system are that system), ``link_lost`` (an uplink item is down), ``affected`` (checks unreachable
behind the link), ``ack_command`` (``hcc-sentinel ack 1-4 8 -c <config>``, ready to run),
``status_url``, ``now`` (local datetime), ``tz`` and helpers ``fmt_time``/``fmt_duration``.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence
from zoneinfo import ZoneInfo

from alerts.model import Site
from probes.base import REASONS, nfc

if TYPE_CHECKING:  # jinja2 is imported when a message is first rendered (or checked): ~1 MiB RSS
    import jinja2

DEFAULT_DIR = Path(__file__).parent / "templates"
EVENTS: tuple[str, ...] = ("problem", "resolved", "reminder", "escalation")

#: Built-in "what to do first" advice per situation (Vietnamese, English).
ADVICE: dict[str, tuple[str, str]] = {
    "local_link": (
        "Kiểm tra modem/router và đường truyền của xã (đèn tín hiệu, nguồn điện); gọi nhà mạng nếu cần. "
        "Các hệ thống dùng chung có thể vẫn hoạt động bình thường.",
        "Check the commune's modem/router and line (lights, power); call the ISP if needed. "
        "The shared systems themselves may be fine."),
    "down": (
        "Thử mở hệ thống trên trình duyệt từ máy khác của xã; nếu vẫn lỗi, báo đơn vị vận hành hệ thống "
        "và hướng dẫn người dân nộp hồ sơ trực tiếp/giấy trong thời gian chờ.",
        "Try the system in a browser from another machine; if it still fails, report it to the system's "
        "operator and take paper applications meanwhile."),
    "degraded": (
        "Hệ thống phản hồi chậm: theo dõi thêm, báo đơn vị vận hành nếu kéo dài.",
        "The system is slow: keep watching, tell its operator if it persists."),
    "flapping": (
        "Hệ thống lúc được lúc không (chập chờn): kiểm tra đường truyền của xã và báo đơn vị vận hành.",
        "The system keeps going up and down: check the commune's link and tell the operator."),
}

_STATE_WORDS: dict[str, tuple[str, str]] = {
    "down": ("NGỪNG HOẠT ĐỘNG", "DOWN"),
    "degraded": ("CHẬM", "DEGRADED (slow)"),
    "flapping": ("CHẬP CHỜN", "FLAPPING"),
    "unreachable": ("KHÔNG KIỂM TRA ĐƯỢC", "UNREACHABLE"),
    "up": ("ĐÃ HOẠT ĐỘNG LẠI", "UP"),
    "link": ("MẤT KẾT NỐI ĐƯỜNG TRUYỀN", "COMMUNE LINK LOST"),
}

_OUTCOME_WORDS: dict[str, tuple[str, str]] = {
    "error": ("lỗi", "error"),
    "slow": ("chậm", "slow"),
    "hang": ("treo", "hang"),
    "ok": ("bình thường", "ok"),
}


def fmt_time(ts: float | None, tz: str) -> str:
    """Unix seconds -> ``"14:05:10 ngày 02/05/2026"`` in ``tz`` ("" for ``None``)."""
    if ts is None:
        return ""
    dt = datetime.fromtimestamp(ts, ZoneInfo(tz))
    return dt.strftime("%H:%M:%S ngày %d/%m/%Y")


def fmt_time_en(ts: float | None, tz: str) -> str:
    """Unix seconds -> ``"14:05:10 02/05/2026"`` in ``tz``."""
    if ts is None:
        return ""
    return datetime.fromtimestamp(ts, ZoneInfo(tz)).strftime("%H:%M:%S %d/%m/%Y")


def fmt_duration(seconds: float | None, lang: str = "vi") -> str:
    """Seconds -> ``"1 giờ 5 phút"`` / ``"1 h 5 min"`` (whole minutes; under a minute in seconds)."""
    if seconds is None:
        return ""
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s} giây" if lang == "vi" else f"{s} s"
    m = s // 60
    d, rem = divmod(m, 1440)
    h, mins = divmod(rem, 60)
    parts = []
    if lang == "vi":
        if d:
            parts.append(f"{d} ngày")
        if h:
            parts.append(f"{h} giờ")
        if mins or not parts:
            parts.append(f"{mins} phút")
    else:
        if d:
            parts.append(f"{d} d")
        if h:
            parts.append(f"{h} h")
        if mins or not parts:
            parts.append(f"{mins} min")
    return " ".join(parts)


@dataclasses.dataclass
class NoticeItem:
    """One incident line of a message.

    Attributes:
        incident_id: id for ``hcc-sentinel ack``; target_id/target_name; system_id,
        system_name, system_name_en; state: ``down``/``degraded``/``flapping``/``link``/``up``;
        outcome: ``error``/``slow``/``hang`` (last bad result); reason: reason code; detail: the
        probe's detail line; since: Unix seconds of the first bad result; resolved_at: Unix
        seconds or ``None``; cause: ``system``/``local_link``; acked_by: who acknowledged;
        advice_vi/advice_en: what to do first; flap_percent: Nagios percent state change;
        link: the item is (or was, for ``resolved``) the commune's own link being down.
    """

    incident_id: int | None
    target_id: str
    target_name: str
    system_id: str | None
    system_name: str | None
    system_name_en: str | None
    state: str
    outcome: str | None
    reason: str | None
    detail: str | None
    since: float | None
    resolved_at: float | None = None
    cause: str = "system"
    acked_by: str | None = None
    advice_vi: str = ""
    advice_en: str = ""
    flap_percent: float | None = None
    link: bool = False

    @property
    def state_vi(self) -> str:
        return _STATE_WORDS.get(self.state, (self.state, self.state))[0]

    @property
    def state_en(self) -> str:
        return _STATE_WORDS.get(self.state, (self.state, self.state))[1]

    @property
    def outcome_vi(self) -> str:
        return _OUTCOME_WORDS.get(self.outcome or "", (self.outcome or "", ""))[0]

    @property
    def outcome_en(self) -> str:
        return _OUTCOME_WORDS.get(self.outcome or "", ("", self.outcome or ""))[1]

    @property
    def reason_text(self) -> str:
        """English description of the reason code (from :data:`probes.base.REASONS`)."""
        return REASONS[self.reason][1] if self.reason in REASONS else (self.reason or "")


def id_ranges(ids: Sequence[int]) -> str:
    """Incident ids sorted numerically, runs of three or more written ``a-b``
    (``[10, 2, 3, 4, 8]`` -> ``"2-4 8 10"``; ``hcc-sentinel ack`` accepts both forms)."""
    nums = sorted({int(i) for i in ids})
    parts: list[str] = []
    k = 0
    while k < len(nums):
        j = k
        while j + 1 < len(nums) and nums[j + 1] == nums[j] + 1:
            j += 1
        if j - k >= 2:
            parts.append(f"{nums[k]}-{nums[j]}")
        else:
            parts.extend(str(n) for n in nums[k:j + 1])
        k = j + 1
    return " ".join(parts)


def ack_command(ids: Sequence[int], config_path: str | None) -> str | None:
    """The ``hcc-sentinel ack ...`` command line for ``ids`` (``None`` when there are none):
    ids sorted numerically and shortened to ranges, with the agent's ``-c`` config path
    (``<agent.yaml>`` when unknown)."""
    if not ids:
        return None
    config = shlex.quote(config_path) if config_path else "<agent.yaml>"
    return f"hcc-sentinel ack {id_ranges(ids)} -c {config}"


@dataclasses.dataclass
class Notice:
    """Everything a template sees (besides the helpers).

    Attributes:
        event: one of :data:`EVENTS`; site: :class:`alerts.model.Site`; unit_id/unit_name: the
        recipient; other_units: names of the other units told about these incidents;
        items: :class:`NoticeItem` list; affected: names of targets unreachable behind a lost
        link; now: Unix seconds; escalation_step: 1-based level for ``escalation``.
    """

    event: str
    site: Site
    unit_id: str
    unit_name: str
    items: Sequence[NoticeItem]
    other_units: Sequence[str] = ()
    affected: Sequence[str] = ()
    now: float = 0.0
    escalation_step: int = 0
    ack_hint: bool = True

    @property
    def link_lost(self) -> bool:
        return any(i.state == "link" or i.link for i in self.items)

    @property
    def systems(self) -> list[dict[str, Any]]:
        """Distinct systems of the items, in order (a target without a system counts as its
        own): ``{"id", "name", "name_en", "checks"}`` — several checks (targets) of one system
        are one system in titles."""
        out: dict[str, dict[str, Any]] = {}
        for i in self.items:
            key = i.system_id or i.target_id
            if key not in out:
                out[key] = {"id": key, "name": i.system_name or i.target_name,
                            "name_en": i.system_name_en or i.system_id or i.target_id, "checks": 0}
            out[key]["checks"] += 1
        return list(out.values())

    @property
    def ack_command(self) -> str | None:
        """``hcc-sentinel ack <ids> -c <config>`` for the items' incidents, or ``None``."""
        return ack_command([i.incident_id for i in self.items if i.incident_id], self.site.config_path)


class Renderer:
    """Renders :class:`Notice` objects to ``(subject, body)``.

    Args:
        templates_dir: directory with overriding ``*.j2`` files (and ``<unit_id>/`` subdirectories),
            or ``None`` for the defaults only.

    Raises (from :meth:`render`):
        jinja2.TemplateError: a broken override template (``hcc-sentinel check`` reports it via
            :meth:`check`).
    """

    def __init__(self, templates_dir: str | Path | None = None) -> None:
        self.templates_dir = Path(templates_dir) if templates_dir else None
        self._envs: dict[str | None, "jinja2.Environment"] = {}

    def _env(self, unit_id: str | None) -> "jinja2.Environment":
        if unit_id not in self._envs:
            import jinja2

            paths: list[str] = []
            if self.templates_dir is not None:
                if unit_id:
                    paths.append(str(self.templates_dir / unit_id))
                paths.append(str(self.templates_dir))
            paths.append(str(DEFAULT_DIR))
            env = jinja2.Environment(
                loader=jinja2.FileSystemLoader(paths, encoding="utf-8"),
                autoescape=False, trim_blocks=True, lstrip_blocks=True,
                keep_trailing_newline=False, undefined=jinja2.StrictUndefined,
                extensions=["jinja2.ext.do"])
            env.globals.update(fmt_time=fmt_time, fmt_time_en=fmt_time_en, fmt_duration=fmt_duration)
            self._envs[unit_id] = env
        return self._envs[unit_id]

    def render(self, notice: Notice) -> tuple[str, str]:
        """Render ``notice`` with ``<event>.j2``.

        Returns:
            ``(subject, body)`` — NFC-normalised text, subject on one line.

        Raises:
            ValueError: unknown event.
            jinja2.TemplateError: template syntax or undefined variable.
        """
        if notice.event not in EVENTS:
            raise ValueError(f"unknown event {notice.event!r}")
        template = self._env(notice.unit_id).get_template(f"{notice.event}.j2")
        ctx = template.new_context(self.context(notice))
        subject = "".join(template.blocks["subject"](ctx)).strip()
        body = "".join(template.blocks["body"](ctx)).strip() + "\n"
        body = re.sub(r"[ \t]+\n", "\n", body)
        body = re.sub(r"\n{3,}", "\n\n", body)
        subject = " ".join(subject.split())
        return nfc(subject), nfc(body)

    @staticmethod
    def context(notice: Notice) -> dict[str, Any]:
        """The template variables for ``notice``."""
        tz = notice.site.timezone
        return {
            "n": notice,
            "event": notice.event,
            "site": notice.site,
            "unit": {"id": notice.unit_id, "name": notice.unit_name},
            "other_units": list(notice.other_units),
            "items": list(notice.items),
            "link_lost": notice.link_lost,
            "affected": list(notice.affected),
            "status_url": notice.site.status_url,
            "now": notice.now,
            "tz": tz,
            "step": notice.escalation_step,
            "ack_hint": notice.ack_hint,
            "ack_command": notice.ack_command if notice.ack_hint else None,
            "ack_first_id": min((i.incident_id for i in notice.items if i.incident_id), default=None),
            "systems": notice.systems,
            "commune_label": notice.site.commune_name,
        }

    def check(self) -> list[str]:
        """Compile every template (defaults and overrides); returns problems as strings."""
        import jinja2

        problems = []
        units: list[str | None] = [None]
        if self.templates_dir is not None and self.templates_dir.is_dir():
            units += [p.name for p in self.templates_dir.iterdir() if p.is_dir()]
        for unit in units:
            for event in EVENTS:
                try:
                    self._env(unit).get_template(f"{event}.j2")
                except jinja2.TemplateError as exc:
                    problems.append(f"{unit or 'default'}/{event}.j2: {exc}")
        return problems
