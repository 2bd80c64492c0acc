"""Monthly uptime/SLA report and the data it is computed from.

Modules:

* :mod:`agent.report.accounting` — the declared accounting method: per-minute categories,
  the quorum rule for a system's availability, the availability each commune experienced,
  incidents, MTTR, error budget and burn rate (SRE workbook ch. 2 and 5).
* :mod:`agent.report.promsource` — observations from the central Prometheus (``query_range``
  on ``probe_outcomes_total`` and ``hcc_sentinel_target_state``).
* :mod:`agent.report.localsource` — observations from one agent's SQLite history
  (``<data_dir>/history.db``) and its alerts database.
* :mod:`agent.report.render` — HTML (printable A4, Vietnamese, inline SVG charts), CSV, JSON.
* :mod:`agent.report.synthetic` — a synthetic month for a small fleet with known outages
  (tests, demos), written as OpenMetrics for ``promtool tsdb create-blocks-from openmetrics``
  or as an agent's SQLite history.
* :mod:`agent.report.promlocal` — run Debian's ``promtool``/``prometheus`` on such a month.
"""
