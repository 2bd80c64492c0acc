"""Alerting: per-target states, incidents, dependencies, maintenance, routing to responsible
units, escalation, templates and a durable outbox delivering through apprise.

Modules: :mod:`alerts.config` (the ``alerting:`` section), :mod:`alerts.model` (targets and site
as the engine sees them), :mod:`alerts.state` (state machine and flap detection),
:mod:`alerts.maintenance` (windows and silences), :mod:`alerts.routing` (routing tree),
:mod:`alerts.templates` (Jinja2 messages), :mod:`alerts.db` (SQLite schema and shared
operations), :mod:`alerts.outbox` (durable outbox and worker), :mod:`alerts.delivery` (apprise,
secret hygiene), :mod:`alerts.engine` (the engine and its Prometheus collector).

``alerts`` never imports ``agent``; see ``docs/alerts.md``.
"""
