"""hcc-sentinel agent: config, scheduler, metrics, store, HTTP server and CLI."""

__version__ = "0.1.0"
