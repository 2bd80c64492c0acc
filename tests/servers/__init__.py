"""Real servers on 127.0.0.1 for tests (see :mod:`tests.servers.misbehaving_http`)."""

from tests.servers.misbehaving_http import (
    MisbehavingHTTPServer,
    Reply,
    Request,
    TLSMaterial,
    encode_body,
    free_port,
    silent_server,
    unresponsive_listener,
)

__all__ = [
    "MisbehavingHTTPServer",
    "Reply",
    "Request",
    "TLSMaterial",
    "encode_body",
    "free_port",
    "silent_server",
    "unresponsive_listener",
]
