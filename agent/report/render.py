"""Renderers of the SLA report: HTML (printable A4, Vietnamese first), CSV and JSON.

The HTML is one self-contained file: CSS inline with ``@page { size: A4 }``, charts drawn with
matplotlib (Agg) as inline SVG (text converted to paths, so no font is needed to view it), no
external asset, script or font.  The first page states the accounting method
(:func:`agent.report.accounting.method_text`).  Every incident gets its own page (CSS
``break-before: page``) that a unit can attach to the notices it must file: the initial notice
within 24 h and the full report within 72 h for a level-3 information system.

CSV files (UTF-8 with BOM so that spreadsheet programs read the diacritics): ``systems.csv``,
``communes.csv``, ``incidents.csv``.  JSON: ``report.json`` with the same numbers and the method.
"""

from __future__ import annotations

import csv
import datetime as dt
import html
import io
import json
import os
import re
from pathlib import Path
from typing import Any

import jinja2

from agent.report.accounting import (CAUSE_EN, CAUSE_VI, LOCAL_TZ, UPLINK, Incident, Report, local_time,
                                     method_text)

FORMATS = ("html", "csv", "json")


def pct(x: float | None, digits: int = 3) -> str:
    """0.99891 -> ``"99,891 %"`` (Vietnamese decimal comma); ``None`` -> ``"—"``."""
    if x is None:
        return "—"
    return f"{x * 100:.{digits}f}".replace(".", ",") + " %"


def num(x: float | None, digits: int = 1) -> str:
    if x is None:
        return "—"
    if float(x).is_integer() and digits <= 1:
        return f"{int(x):,}".replace(",", ".")
    return f"{x:,.{digits}f}".replace(",", " ").replace(".", ",").replace(" ", ".")


def minutes_text(m: float | None) -> str:
    """Minutes as ``"47 phút"`` / ``"2 giờ 0 phút"``."""
    if m is None:
        return "—"
    m = int(round(m))
    if m < 60:
        return f"{m} phút"
    h, r = divmod(m, 60)
    if h < 24:
        return f"{h} giờ {r} phút"
    d, h = divmod(h, 24)
    return f"{d} ngày {h} giờ {r} phút"


def system_name(report: Report, s: str) -> str:
    if s == UPLINK:
        return "Đường truyền của xã"
    r = report.systems.get(s)
    return r.meta.name if r else s


def commune_name(report: Report, c: str) -> str:
    r = report.communes.get(c)
    return r.meta.name if r else c


# -- data for JSON/CSV ------------------------------------------------------------------------

def to_dict(report: Report) -> dict[str, Any]:
    """The report as JSON-ready data (times as Unix seconds and local ISO 8601)."""
    def iso(ts: float) -> str:
        return dt.datetime.fromtimestamp(ts, LOCAL_TZ).isoformat(timespec="minutes")

    return {
        "period": {"start": report.period_start, "end": report.period_end, "start_local": iso(report.period_start),
                   "end_local": iso(report.period_end), "timezone": "Asia/Ho_Chi_Minh"},
        "source": report.source,
        "generated_at": report.generated_at,
        "method": {**report.method.__dict__, "single_vantage": report.single_vantage,
                   "text_vi": method_text(report.method, report.single_vantage)},
        "notes": report.notes,
        "systems": {s: {"name": r.meta.name, "name_en": r.meta.name_en, "owner": r.meta.owner,
                        "objective": r.meta.objective, "availability": r.availability, "minutes": r.minutes,
                        "downtime_minutes": r.downtime_minutes, "incidents": r.incidents,
                        "incidents_ongoing": r.incidents_ongoing,
                        "mttr_minutes": r.mttr_minutes, "slow_share": r.slow_share,
                        "error_budget_minutes": r.budget_minutes, "error_budget_used": r.budget_used,
                        "error_budget_remaining": r.budget_remaining, "burn_rate": r.burn_rate,
                        "link_excluded_commune_minutes": r.link_excluded_commune_minutes,
                        "local_failure_commune_minutes": r.local_failure_commune_minutes,
                        "daily": r.daily} for s, r in report.systems.items()},
        "communes": {c: {"name": r.meta.name, "type": r.meta.type, "rank": r.rank,
                         "mean_availability": r.mean_availability, "link": r.link, "systems": r.systems}
                     for c, r in report.communes.items()},
        "incidents": [{"id": i.id, "cause": i.cause, "systems": i.systems, "communes": i.communes,
                       "start": i.start, "end": i.end, "start_local": iso(i.start), "end_local": iso(i.end),
                       "minutes": i.minutes, "down_minutes": i.down_minutes, "ongoing": i.ongoing,
                       "system_spans": {k: {"start": a, "end": b, "ongoing": o} for k, (a, b, o) in i.spans.items()},
                       "timeline": [{"at": t, "at_local": iso(t), "text": x} for t, x in i.timeline],
                       "alerts": [{"name": a.name, "start": a.start, "end": a.end, "labels": a.labels,
                                   "source": a.source, "notifications": a.notifications} for a in i.alerts]}
                      for i in report.incidents],
    }


def write_csv(report: Report, out_dir: Path) -> list[Path]:
    """Write ``systems.csv``, ``communes.csv`` and ``incidents.csv``; returns the paths."""
    paths = []

    def w(name: str, header: list[str], rows: list[list[Any]]) -> None:
        p = out_dir / name
        with open(p, "w", encoding="utf-8-sig", newline="") as fh:
            cw = csv.writer(fh)
            cw.writerow(header)
            cw.writerows(rows)
        paths.append(p)

    w("systems.csv",
      ["system", "name", "objective", "availability", "up_minutes", "down_minutes", "maintenance_minutes",
       "unknown_minutes", "incidents", "mttr_minutes", "slow_share", "error_budget_minutes", "error_budget_used",
       "error_budget_remaining", "burn_rate", "link_excluded_commune_minutes", "incidents_ongoing"],
      [[s, r.meta.name, r.meta.objective, _f(r.availability), r.minutes["up"], r.minutes["down"],
        r.minutes["maintenance"], r.minutes["unknown"], r.incidents, _f(r.mttr_minutes), _f(r.slow_share),
        _f(r.budget_minutes), _f(r.budget_used), _f(r.budget_remaining), _f(r.burn_rate),
        r.link_excluded_commune_minutes, r.incidents_ongoing] for s, r in report.systems.items()])
    rows = []
    for c, r in sorted(report.communes.items(), key=lambda kv: kv[1].rank):
        for s, v in r.systems.items():
            m = v["minutes"]
            rows.append([r.rank, c, r.meta.name, s, _f(v["availability"]), m["up"], m["down"], m["link"],
                         m["maintenance"], m["unknown"], r.link["down"], r.link["outages"]])
    w("communes.csv", ["rank", "commune_code", "commune_name", "system", "experienced_availability", "up_minutes",
                       "down_minutes", "link_down_minutes", "maintenance_minutes", "unknown_minutes",
                       "commune_link_down_minutes", "commune_link_outages"], rows)
    w("incidents.csv", ["id", "cause", "start_local", "end_local", "minutes", "down_minutes", "systems", "communes",
                        "ongoing"],
      [[i.id, i.cause, local_time(i.start, "%Y-%m-%d %H:%M"), local_time(i.end, "%Y-%m-%d %H:%M"), i.minutes,
        i.down_minutes, ";".join(i.systems), ";".join(i.communes), int(i.ongoing)] for i in report.incidents])
    return paths


def _f(x: float | None) -> str:
    return "" if x is None else (f"{x:.6f}" if isinstance(x, float) else str(x))


# -- charts -----------------------------------------------------------------------------------

def _svg(fig: Any) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    text = buf.getvalue()
    text = text[text.index("<svg"):]
    return re.sub(r"<metadata>.*?</metadata>\s*", "", text, flags=re.S)


def _short(name: str) -> str:
    return name if len(name) <= 28 else name[:26] + "…"


def _setup_matplotlib() -> None:
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams.update({"svg.fonttype": "path", "font.family": "DejaVu Sans", "font.size": 8})


def _date_axis(ax: Any, report: Report) -> None:
    """The x axis of a per-day chart: exactly the period's days (half a day of margin), one tick
    a day up to ~10 ticks.  Without explicit limits matplotlib widens a one-day series to years."""
    import matplotlib.dates as mdates

    first = dt.date.fromisoformat(local_time(report.period_start, "%Y-%m-%d"))
    last = dt.date.fromisoformat(local_time(report.period_end - 1, "%Y-%m-%d"))
    days = (last - first).days + 1
    ax.set_xlim(mdates.date2num(first) - 0.5, mdates.date2num(last) + 0.5)
    step = max(1, -(-days // 10))
    ax.set_xticks([mdates.date2num(first + dt.timedelta(days=k)) for k in range(0, days, step)])
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%d/%m"))


def availability_figure(report: Report) -> Any:
    """Figure 1: availability per system against its objective (no bar when unknown)."""
    _setup_matplotlib()
    import matplotlib.pyplot as plt
    import numpy as np

    systems = list(report.systems.values())
    fig, ax = plt.subplots(figsize=(7.0, 0.45 * len(systems) + 1.0))
    y = np.arange(len(systems))
    av = [100 * r.availability if r.availability is not None else None for r in systems]
    ob = [100 * r.meta.objective for r in systems]
    lo = min([a for a in av if a is not None] + ob) - 0.5
    colors = ["#2e7d32" if (r.availability or 0) >= r.meta.objective else "#c62828" for r in systems]
    ax.barh(y, [a - lo if a is not None else 0 for a in av], left=lo, color=colors, height=0.55,
            label="Khả dụng (availability)")
    ax.scatter(ob, y, marker="|", s=400, color="black", label="Mục tiêu (objective)", zorder=3)
    for yi, a in zip(y, av):
        text = f" {a:.3f}%".replace(".", ",") if a is not None else " không có dữ liệu (no data)"
        ax.text(a if a is not None else lo, yi, text, va="center", fontsize=7)
    ax.set_yticks(y, [_short(r.meta.name) for r in systems])
    ax.invert_yaxis()
    ax.set_xlim(lo, 100.3)
    ax.set_xlabel("%")
    ax.set_title("Khả dụng của hệ thống so với mục tiêu (System availability vs objective)")
    ax.legend(loc="lower left", fontsize=7)
    return fig


def daily_figure(report: Report) -> Any:
    """Figure 2: daily availability per system (days without known minutes are gaps)."""
    _setup_matplotlib()
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(7.0, 2.6))
    for r in report.systems.values():
        xs = [dt.date.fromisoformat(d["date"]) for d in r.daily]
        ys = [100 * d["availability"] if d["availability"] is not None else np.nan for d in r.daily]
        ax.plot(xs, ys, marker=".", linewidth=1, label=_short(r.meta.name))
    _date_axis(ax, report)
    ax.set_ylabel("%")
    ax.set_title("Khả dụng theo ngày (daily availability)")
    ax.legend(fontsize=6, ncol=2)
    fig.autofmt_xdate()
    return fig


def budget_figure(report: Report) -> Any:
    """Figure 3: error budget consumed, cumulative per day."""
    _setup_matplotlib()
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(7.0, 2.6))
    for r in report.systems.values():
        xs = [dt.date.fromisoformat(d["date"]) for d in r.daily]
        down = np.cumsum([d["down"] for d in r.daily])
        eligible_total = max(1, r.minutes["up"] + r.minutes["down"])
        budget = (1 - r.meta.objective) * eligible_total
        ax.plot(xs, 100 * down / budget if budget else down * 0, marker=".", linewidth=1.2,
                label=_short(r.meta.name))
    _date_axis(ax, report)
    ax.axhline(100, color="#c62828", linewidth=0.8, linestyle="--")
    ax.set_ylabel("% ngân sách lỗi đã dùng")
    ax.set_title("Ngân sách lỗi đã tiêu hao, luỹ kế (error budget consumed)")
    ax.legend(fontsize=6, ncol=2)
    fig.autofmt_xdate()
    return fig


def commune_grid(report: Report) -> tuple[list[Any], list[str], Any]:
    """Figure 4's data: communes (ranked), system ids, and experienced availability in % as a
    float array (NaN where unknown; 0 % is a value, not a gap)."""
    import numpy as np

    communes = sorted(report.communes.values(), key=lambda r: r.rank)
    sys_ids = list(report.systems)
    grid = np.full((len(communes), len(sys_ids)), np.nan)
    for i, c in enumerate(communes):
        for j, s in enumerate(sys_ids):
            a = c.systems.get(s, {}).get("availability")
            if a is not None:
                grid[i, j] = 100 * a
    return communes, sys_ids, grid


def communes_figure(report: Report) -> Any | None:
    """Figure 4: experienced availability, communes × systems; ``None`` when no cell has a value
    (the HTML then says there is no data instead of drawing an empty chart)."""
    import numpy as np

    communes, sys_ids, grid = commune_grid(report)
    if not grid.size or not np.isfinite(grid).any():
        return None
    _setup_matplotlib()
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.0, 0.3 * len(communes) + 1.4))
    im = ax.imshow(grid, aspect="auto", cmap="RdYlGn", vmin=min(99.0, float(np.nanmin(grid))), vmax=100)
    ax.set_xticks(range(len(sys_ids)), [s for s in sys_ids], rotation=0)
    ax.set_yticks(range(len(communes)), [c.meta.name for c in communes])
    for i in range(grid.shape[0]):
        for j in range(grid.shape[1]):
            if not np.isnan(grid[i, j]):
                ax.text(j, i, f"{grid[i, j]:.2f}".replace(".", ","), ha="center", va="center", fontsize=6)
    fig.colorbar(im, ax=ax, label="%")
    ax.set_title("Khả dụng thực tế tại từng xã (experienced availability, link included)")
    return fig


def charts(report: Report) -> dict[str, str]:
    """Inline SVG charts: ``availability`` (per system vs objective), ``daily`` (daily availability
    per system), ``budget`` (error budget consumed over the period), ``communes`` (experienced
    availability, communes × systems; absent when no commune has a value)."""
    out: dict[str, str] = {}
    if not report.systems:
        return out
    out["availability"] = _svg(availability_figure(report))
    out["daily"] = _svg(daily_figure(report))
    out["budget"] = _svg(budget_figure(report))
    fig = communes_figure(report) if report.communes else None
    if fig is not None:
        out["communes"] = _svg(fig)
    return out


# -- HTML -------------------------------------------------------------------------------------

_TEMPLATE = r"""<!DOCTYPE html>
<html lang="vi">
<head>
<meta charset="utf-8">
<title>{{ title }}</title>
<style>
@page { size: A4; margin: 14mm 12mm 16mm 12mm;
        @bottom-right { content: "Trang " counter(page); font-size: 8pt; } }
* { box-sizing: border-box; }
body { font-family: "DejaVu Sans", "Noto Sans", Arial, sans-serif; font-size: 9pt; color: #111; margin: 0; }
main { max-width: 186mm; margin: 0 auto; }
h1 { font-size: 15pt; margin: 0 0 2mm 0; }
h2 { font-size: 12pt; margin: 6mm 0 2mm 0; border-bottom: 1px solid #999; }
h3 { font-size: 10pt; margin: 4mm 0 1mm 0; }
.en { color: #555; font-weight: normal; font-size: 0.85em; }
.meta { color: #333; margin-bottom: 3mm; }
.method { border: 1px solid #555; padding: 2mm 3mm; background: #f6f6f6; }
.method p { margin: 1mm 0; }
table { border-collapse: collapse; width: 100%; margin: 2mm 0; page-break-inside: auto; }
tr { page-break-inside: avoid; }
th, td { border: 1px solid #999; padding: 1mm 1.5mm; text-align: left; vertical-align: top; }
th { background: #e8e8e8; font-weight: bold; }
td.n { text-align: right; white-space: nowrap; }
.bad { color: #b71c1c; font-weight: bold; }
.good { color: #1b5e20; }
figure.chart { margin: 2mm 0; page-break-inside: avoid; }
figure.chart svg { width: 100%; height: auto; }
figcaption { font-size: 8pt; color: #444; }
section.incident { break-before: page; page-break-before: always; }
.sign { margin-top: 10mm; display: flex; justify-content: space-between; }
.notes li { margin: 1mm 0; }
.cause-central { color: #b71c1c; font-weight: bold; }
.ongoing { color: #b71c1c; font-weight: bold; }
.nodata { border: 1px dashed #999; padding: 2mm 3mm; color: #444; }
</style>
</head>
<body>
<main>
<section id="summary">
<h1>{{ title }}</h1>
<div class="meta">
Kỳ báo cáo <span class="en">(period)</span>: <b>{{ period_text }}</b> (giờ Việt Nam, Asia/Ho_Chi_Minh) ·
Nguồn dữ liệu <span class="en">(source)</span>: <b>{{ source_text }}</b> ·
Lập lúc <span class="en">(generated)</span>: {{ generated }}
</div>
<div class="method" id="method">
<h3>Phương pháp tính <span class="en">(accounting method)</span></h3>
{% for p in method %}<p>{{ p }}</p>
{% endfor %}
<p>Tham số <span class="en">(parameters)</span>: quorum = {{ m.quorum_pct }}; tối thiểu {{ m.min_vantage }} xã quan sát;
giữ kết quả tối đa {{ m.carry_minutes }} phút; gộp sự cố cách nhau ≤ {{ m.merge_gap }} phút;
sự cố tại xã liệt kê từ {{ m.min_local_minutes }} phút.</p>
</div>

<h2>1. Khả dụng của từng hệ thống <span class="en">(system availability, quorum of healthy-link communes)</span></h2>
<table id="systems-table">
<thead><tr><th>Hệ thống <span class="en">(system)</span></th><th>Mục tiêu</th><th>Khả dụng</th>
<th>Gián đoạn <span class="en">(downtime)</span></th><th>Số sự cố</th><th>MTTR</th><th>Tỷ lệ chậm</th>
<th>Ngân sách lỗi đã dùng / còn lại</th><th>Burn rate</th></tr></thead>
<tbody>
{% for s in systems %}<tr data-system="{{ s.id }}">
<td>{{ s.name }}<br><span class="en">{{ s.name_en }}</span></td><td class="n">{{ s.objective }}</td>
<td class="n {{ 'good' if s.met else 'bad' }}">{{ s.availability }}</td><td class="n">{{ s.down }} phút</td>
<td class="n">{{ s.incidents }}{% if s.ongoing %}<br><span class="ongoing">({{ s.ongoing }} đang diễn ra)</span>{% endif %}</td><td class="n">{{ s.mttr }}</td><td class="n">{{ s.slow }}</td>
<td class="n">{{ s.budget_used }} / {{ s.budget_left }}</td><td class="n">{{ s.burn }}</td></tr>
{% endfor %}</tbody></table>
<table id="excluded-table">
<thead><tr><th>Hệ thống</th><th>Bảo trì <span class="en">(maintenance)</span></th>
<th>Không rõ <span class="en">(unknown, no data)</span></th>
<th>Phút-xã bị loại do xã mất đường truyền <span class="en">(commune-minutes excluded: commune link down)</span></th>
<th>Phút-xã lỗi tại chỗ <span class="en">(local failures, system up)</span></th></tr></thead>
<tbody>
{% for s in systems %}<tr data-system="{{ s.id }}"><td>{{ s.name }}</td><td class="n">{{ s.maint }} phút</td>
<td class="n">{{ s.unknown }} phút</td><td class="n">{{ s.link_excluded }}</td><td class="n">{{ s.local_fail }}</td></tr>
{% endfor %}</tbody></table>
{% if charts.get('availability') %}<figure class="chart" id="chart-availability">{{ charts.availability|safe }}
<figcaption>Hình 1. Khả dụng so với mục tiêu.</figcaption></figure>{% endif %}
</section>

<section id="trends">
{% if charts.get('daily') %}<figure class="chart" id="chart-daily">{{ charts.daily|safe }}
<figcaption>Hình 2. Khả dụng theo ngày (phút bảo trì và không rõ không tính).</figcaption></figure>{% endif %}
{% if charts.get('budget') %}<figure class="chart" id="chart-budget">{{ charts.budget|safe }}
<figcaption>Hình 3. Ngân sách lỗi đã dùng, luỹ kế; vạch đỏ = 100 %.</figcaption></figure>{% endif %}
</section>

<section id="communes">
<h2>2. Khả dụng thực tế tại từng xã <span class="en">(availability experienced by each commune, its link included)</span></h2>
<table id="communes-table">
<thead><tr><th>Hạng</th><th>Xã/phường</th>
{% for s in systems %}<th>{{ s.id }}</th>{% endfor %}
<th>Mất đường truyền <span class="en">(link outages)</span></th><th>Không rõ</th></tr></thead>
<tbody>
{% for c in communes %}<tr data-commune="{{ c.code }}"><td class="n">{{ c.rank }}</td><td>{{ c.name }} ({{ c.code }})</td>
{% for v in c.cells %}<td class="n">{{ v }}</td>{% endfor %}
<td class="n">{{ c.link_outages }} lần, {{ c.link_minutes }} phút</td><td class="n">{{ c.unknown }} phút</td></tr>
{% endfor %}</tbody></table>
<p>Xếp hạng từ thấp đến cao theo khả dụng trung bình các hệ thống <span class="en">(ranked worst first)</span>.</p>
{% if charts.get('communes') %}<figure class="chart" id="chart-communes">{{ charts.communes|safe }}
<figcaption>Hình 4. Khả dụng thực tế tại từng xã theo hệ thống.</figcaption></figure>
{% elif communes %}<p class="nodata" id="chart-communes-nodata">Hình 4. Khả dụng thực tế tại từng xã theo hệ thống:
không có dữ liệu <span class="en">(no data: no minute up, down or with the link down in the period)</span>.</p>{% endif %}
</section>

<section id="incidents">
<h2>3. Sự cố trong kỳ <span class="en">(incidents of the period)</span></h2>
{% if incidents %}
<table id="incidents-table">
<thead><tr><th>Mã</th><th>Bắt đầu</th><th>Kết thúc</th><th>Thời lượng</th><th>Hệ thống</th>
<th>Xã bị ảnh hưởng</th><th>Phân loại <span class="en">(cause)</span></th></tr></thead>
<tbody>
{% for i in incidents %}<tr data-incident="{{ i.id }}" data-cause="{{ i.cause }}" data-ongoing="{{ 1 if i.ongoing else 0 }}"><td><a href="#{{ i.id }}">{{ i.id }}</a></td>
<td>{{ i.start }}</td><td>{% if i.ongoing %}<span class="ongoing">đang diễn ra <span class="en">(ongoing)</span></span>{% else %}{{ i.end }}{% endif %}</td>
<td class="n">{{ i.duration }}</td><td>{{ i.systems }}</td>
<td>{{ i.communes_short }}</td><td class="{{ 'cause-central' if i.cause == 'central' else '' }}">{{ i.cause_vi }}</td></tr>
{% endfor %}</tbody></table>
{% else %}<p>Không có sự cố trong kỳ <span class="en">(no incidents)</span>.</p>{% endif %}
<h3>Ghi chú về dữ liệu <span class="en">(data notes)</span></h3>
<ul class="notes">{% for n in notes %}<li>{{ n }}</li>{% endfor %}</ul>
</section>

{% for i in incidents %}
<section class="incident" id="{{ i.id }}">
<h1>Báo cáo sự cố {{ i.id }} <span class="en">(incident report)</span></h1>
<table class="incident-facts">
<tr><th>Phân loại <span class="en">(classification)</span></th><td>{{ i.cause_vi }} <span class="en">({{ i.cause_en }})</span></td></tr>
<tr><th>Bắt đầu</th><td>{{ i.start }}</td></tr>
<tr><th>Kết thúc</th><td>{% if i.ongoing %}<span class="ongoing">đang diễn ra <span class="en">(ongoing)</span></span>:
chưa thấy khôi phục trong kỳ; lỗi ghi nhận đến {{ i.end }}{% else %}{{ i.end }}{% endif %}</td></tr>
<tr><th>Thời lượng</th><td>{{ i.duration }} (số phút gián đoạn: {{ i.down_minutes }})</td></tr>
<tr><th>Hệ thống bị ảnh hưởng</th><td>{{ i.systems_long }}</td></tr>
<tr><th>Xã bị ảnh hưởng</th><td>{{ i.communes_long }}</td></tr>
<tr><th>Hạn thông báo ban đầu (24 giờ)</th><td>{{ i.due24 }}</td></tr>
<tr><th>Hạn báo cáo đầy đủ (72 giờ)</th><td>{{ i.due72 }}</td></tr>
</table>
<h3>Diễn biến <span class="en">(timeline, local time)</span></h3>
<table class="timeline"><thead><tr><th>Thời điểm</th><th>Sự kiện</th></tr></thead><tbody>
{% for t, x in i.timeline %}<tr><td>{{ t }}</td><td>{{ x }}</td></tr>{% endfor %}
</tbody></table>
<h3>Cảnh báo và thông báo <span class="en">(alerts and notifications)</span></h3>
{% if i.notifications %}
<table class="notifications"><thead><tr><th>Thời điểm</th><th>Đơn vị nhận</th><th>Kênh</th><th>Loại</th><th>Trạng thái</th></tr></thead><tbody>
{% for n in i.notifications %}<tr><td>{{ n.at }}</td><td>{{ n.unit }}</td><td>{{ n.channel }}</td><td>{{ n.kind }}</td><td>{{ n.status }}</td></tr>{% endfor %}
</tbody></table>
{% endif %}
{% if i.alert_rows %}
<table class="alerts"><thead><tr><th>Cảnh báo</th><th>Bắt đầu</th><th>Kết thúc</th><th>Nhãn</th></tr></thead><tbody>
{% for a in i.alert_rows %}<tr><td>{{ a.name }}</td><td>{{ a.start }}</td><td>{{ a.end }}</td><td>{{ a.labels }}</td></tr>{% endfor %}
</tbody></table>
{% endif %}
<p>{{ i.notify_note }}</p>
<div class="sign"><div>Người lập báo cáo<br><br><br>…………………………</div><div>Thủ trưởng đơn vị<br><br><br>…………………………</div></div>
</section>
{% endfor %}
</main>
</body>
</html>
"""


def render_html(report: Report, title: str | None = None) -> str:
    """The whole report as one self-contained HTML document (UTF-8 text)."""
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    tpl = env.from_string(_TEMPLATE)
    last_day = report.period_end - 1
    period_text = f"{local_time(report.period_start, '%d/%m/%Y')} – {local_time(last_day, '%d/%m/%Y')}"
    title = title or f"Báo cáo khả dụng các hệ thống dùng chung của Trung tâm phục vụ hành chính công xã, {period_text}"
    systems = [{
        "id": s, "name": r.meta.name, "name_en": r.meta.name_en, "objective": pct(r.meta.objective, 2),
        "availability": pct(r.availability), "met": r.availability is not None and r.availability >= r.meta.objective,
        "down": r.downtime_minutes, "incidents": r.incidents, "ongoing": r.incidents_ongoing,
        "mttr": minutes_text(r.mttr_minutes), "slow": pct(r.slow_share, 2),
        "budget_used": pct(r.budget_used, 1), "budget_left": pct(r.budget_remaining, 1),
        "burn": num(r.burn_rate, 2), "maint": r.minutes["maintenance"], "unknown": r.minutes["unknown"],
        "link_excluded": r.link_excluded_commune_minutes, "local_fail": r.local_failure_commune_minutes,
    } for s, r in report.systems.items()]
    communes = []
    for c, r in sorted(report.communes.items(), key=lambda kv: kv[1].rank):
        unknown = max((v["minutes"]["unknown"] for v in r.systems.values()), default=0)
        communes.append({"code": c, "name": r.meta.name, "rank": r.rank,
                         "cells": [pct(r.systems.get(s, {}).get("availability"), 3) for s in report.systems],
                         "link_outages": r.link["outages"], "link_minutes": r.link["down"], "unknown": unknown})
    incidents = [_incident_view(report, i) for i in report.incidents]
    source_text = {"prometheus": "Prometheus trung tâm (central Prometheus)",
                   "local": "lịch sử của agent tại xã (agent history, --local)"}.get(report.source, report.source)
    return tpl.render(
        title=title, period_text=period_text, source_text=source_text,
        generated=local_time(report.generated_at, "%d/%m/%Y %H:%M"),
        method=method_text(report.method, report.single_vantage),
        m={"quorum_pct": pct(report.method.quorum, 0), "min_vantage": 1 if report.single_vantage
           else report.method.min_vantage, "carry_minutes": report.method.carry_minutes,
           "merge_gap": report.method.merge_gap, "min_local_minutes": report.method.min_local_minutes},
        systems=systems, communes=communes, incidents=incidents, notes=report.notes, charts=charts(report))


def _incident_view(report: Report, i: Incident) -> dict[str, Any]:
    fmt = "%d/%m/%Y %H:%M"
    names = [commune_name(report, c) for c in i.communes]
    short = ", ".join(names) if len(names) <= 3 else f"{len(names)}/{len(report.communes)} xã"
    notifications = []
    alert_rows = []
    for a in i.alerts:
        for nt in a.notifications:
            notifications.append({"at": local_time(nt["at"], "%d/%m/%Y %H:%M:%S") if nt.get("at") else "—",
                                  "unit": nt.get("unit", ""), "channel": nt.get("channel", ""),
                                  "kind": nt.get("kind", ""), "status": nt.get("status", "")})
        alert_rows.append({"name": a.name, "start": local_time(a.start, fmt),
                           "end": local_time(a.end, fmt) if a.end else "đang diễn ra",
                           "labels": ", ".join(f"{k}={v}" for k, v in sorted(a.labels.items()) if v)})
    if report.notifications_available:
        note = ("Danh sách trên lấy từ cơ sở dữ liệu cảnh báo của agent (alerts.db): đơn vị được định tuyến, "
                "tin nhắn trong hàng đợi gửi (outbox) và kết quả gửi." if notifications else
                "Cơ sở dữ liệu cảnh báo (alerts.db) không có thông báo nào gắn với sự cố này.")
    else:
        note = ("Ai được thông báo và lúc nào không có trong Prometheus (Alertmanager gửi thông báo); bảng trên chỉ "
                "nêu các cảnh báo ALERTS đã kích hoạt." if alert_rows else
                "Không có dữ liệu về cảnh báo/thông báo cho sự cố này trong nguồn dữ liệu (Prometheus không lưu "
                "việc gửi thông báo; xem nhật ký Alertmanager hoặc báo cáo --local của agent).")
    return {
        "id": i.id, "cause": i.cause, "cause_vi": CAUSE_VI[i.cause], "cause_en": CAUSE_EN[i.cause],
        "start": local_time(i.start, fmt), "end": local_time(i.end, fmt), "ongoing": i.ongoing,
        "duration": minutes_text(i.minutes) + (", chưa kết thúc (so far)" if i.ongoing else ""),
        "down_minutes": i.down_minutes,
        "systems": ", ".join(i.systems), "systems_long": "; ".join(f"{system_name(report, s)} ({s})" for s in i.systems),
        "communes_short": short, "communes_long": "; ".join(f"{n} ({c})" for n, c in zip(names, i.communes)),
        "due24": local_time(i.start + 24 * 3600, fmt), "due72": local_time(i.start + 72 * 3600, fmt),
        "timeline": [(local_time(t, fmt), x) for t, x in i.timeline],
        "notifications": notifications, "alert_rows": alert_rows, "notify_note": note,
    }


class OutputDirError(OSError):
    """The output directory cannot be used; the message is one line naming the path."""


def prepare_out_dir(out_dir: str | os.PathLike[str]) -> Path:
    """Create ``out_dir`` (with its parents) if needed and check that files can be written in it.

    Raises:
        OutputDirError: it exists and is not a directory, it cannot be created, or it is not
            writable (one line naming the path and the reason).
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise OutputDirError(f"--out {out}: exists and is not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputDirError(f"--out {out}: cannot create the directory: {exc.strerror or exc}") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise OutputDirError(f"--out {out}: the directory is not writable")
    return out


def write(report: Report, out_dir: str | os.PathLike[str], formats: tuple[str, ...] = ("html", "csv")) -> list[Path]:
    """Write the report in ``formats`` (subset of :data:`FORMATS`) into ``out_dir`` (created).

    Returns:
        The files written (``sla-report.html``, the CSV files, ``report.json``).

    Raises:
        ValueError: an unknown format.
        OutputDirError: ``out_dir`` cannot be used (see :func:`prepare_out_dir`).
        OSError: a file cannot be written.
    """
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise ValueError(f"unknown format(s): {', '.join(bad)} (known: {', '.join(FORMATS)})")
    out = prepare_out_dir(out_dir)
    paths: list[Path] = []
    if "html" in formats:
        p = out / "sla-report.html"
        p.write_text(render_html(report), encoding="utf-8")
        paths.append(p)
    if "csv" in formats:
        paths += write_csv(report, out)
    if "json" in formats:
        p = out / "report.json"
        p.write_text(json.dumps(to_dict(report), ensure_ascii=False, indent=1), encoding="utf-8")
        paths.append(p)
    return paths


__all__ = ["render_html", "write", "write_csv", "to_dict", "charts", "availability_figure", "daily_figure",
           "budget_figure", "commune_grid", "communes_figure", "FORMATS", "pct", "html"]
