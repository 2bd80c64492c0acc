"""Real, deliberately misbehaving HTTP/HTTPS servers on loopback, for probe tests.

Raw :mod:`asyncio` servers (not ``aiohttp.web``) so that they can misbehave at the byte level:
stall before the status line, stall or drip the body, reset the connection, send garbage,
stream forever.  Everything listens on ``127.0.0.x`` only.

Usage::

    from tests.servers import MisbehavingHTTPServer, Reply

    async with MisbehavingHTTPServer() as srv:            # http://127.0.0.1:<port>
        srv.route("/page", Reply(body="Thủ tục hành chính".encode()))
        url = srv.url("/page")                             # or srv.url("/hang"), ...
        ...
        srv.requests[-1].headers["user-agent"]             # what the client sent

    async with MisbehavingHTTPServer(ssl_context=ctx) as srv:   # https://127.0.0.1:<port>

Built-in paths (query parameters in brackets):

===========================  ===============================================================
``/ok``                      200 ``ok\\n``
``/status/<code>``           that status, short text body
``/delay/<seconds>``         200 after waiting (before the status line)
``/hang``                    read the request, never answer (stall before headers)
``/stall-body``              200, ``Content-Length: 10000``, 100 bytes, then silence
``/drip[?interval=&bytes=]`` 200, ``Content-Length: bytes``, one byte every ``interval`` s
                             (defaults 0.1 s, 100 bytes)
``/endless``                 200, chunked, 64 KiB chunks forever
``/reset``                   read the request, then TCP RST (SO_LINGER 0)
``/reset-body``              200, ``Content-Length: 10000``, 100 bytes, then RST
``/close``                   read the request, close cleanly without answering (FIN)
``/garbage``                 non-HTTP bytes, then close
``/redirect/loop``           302 to itself
``/redirect/to?url=U``       302 to ``U`` (``[&status=301|303|307|308]``)
``/redirect/chain/<n>``      302 to ``/redirect/chain/<n-1>``; ``/redirect/chain/0`` is 200
``/echo``                    200 JSON ``{method, path, query, headers, body}``
``/auth/basic?user=&password=``  200 if the Basic credentials match, else 401
``/auth/bearer?token=``      200 if ``Authorization: Bearer <token>`` matches, else 401
===========================  ===============================================================

Custom behaviour: :meth:`MisbehavingHTTPServer.route` with a :class:`Reply` or a function
``(Request) -> Reply`` (sync or async).  Connection-level helpers: :func:`free_port` (a port
with nobody listening: connection refused), :func:`unresponsive_listener` (TCP connect hangs),
:func:`silent_server` (accepts, reads, never writes: TLS handshake / first byte stall).  TLS
helpers: :class:`TLSMaterial` (trustme CA, good / expired / wrong-host / self-signed certs).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import datetime as dt
import gzip
import inspect
import json
import select
import socket
import ssl
import struct
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qs, unquote, urlsplit
from tests.ports import free_port as _pick_port

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


@dataclasses.dataclass
class Request:
    """One request as received: header names lower-cased, body raw bytes."""

    method: str
    target: str  # as on the request line, e.g. "/echo?a=1"
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    peer: tuple[str, int] | None = None


@dataclasses.dataclass
class Reply:
    """What to send back.

    Attributes:
        status: status code.
        body: body bytes (a ``str`` is encoded as UTF-8).
        headers: extra header lines (``Content-Length`` / ``Transfer-Encoding`` are added
            unless given here).
        content_type: added as ``Content-Type`` unless ``headers`` has one; None: none at all.
        delay: seconds to wait before the status line.
        content_length: announced length (default ``len(body)``); announce more to stall or
            truncate.
        chunked: send ``Transfer-Encoding: chunked`` instead of a length.
        drip: seconds between body bytes (0: send at once).
        after: after the body: ``"close"`` (FIN), ``"hang"`` (keep the connection open and
            silent until the server stops), ``"reset"`` (RST).
    """

    status: int = 200
    body: bytes | str = b""
    headers: Sequence[tuple[str, str]] = ()
    content_type: str | None = "text/plain; charset=utf-8"
    delay: float = 0.0
    content_length: int | None = None
    chunked: bool = False
    drip: float = 0.0
    after: Literal["close", "hang", "reset"] = "close"


Handler = Callable[[Request], "Reply | Awaitable[Reply]"]

_REASONS = {200: "OK", 201: "Created", 204: "No Content", 301: "Moved Permanently", 302: "Found",
            303: "See Other", 307: "Temporary Redirect", 308: "Permanent Redirect", 400: "Bad Request",
            401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 500: "Internal Server Error",
            502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}


def encode_body(data: bytes | str, coding: Literal["gzip", "deflate", "deflate-raw", "br"]) -> bytes:
    """Compress ``data`` for a ``Content-Encoding`` (``deflate-raw``: headerless deflate, as
    some servers wrongly send for ``deflate``)."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    if coding == "gzip":
        return gzip.compress(raw)
    if coding == "deflate":
        return zlib.compress(raw)
    if coding == "deflate-raw":
        obj = zlib.compressobj(wbits=-zlib.MAX_WBITS)
        return obj.compress(raw) + obj.flush()
    if coding == "br":
        import brotli

        return brotli.compress(raw)
    raise ValueError(coding)


def _rst(writer: asyncio.StreamWriter) -> None:
    """Abort the connection with a TCP RST (SO_LINGER on, timeout 0)."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class MisbehavingHTTPServer:
    """An HTTP/1.1 (optionally TLS) server on ``host`` whose behaviour is chosen by the path.

    One response per connection (``Connection: close``).  Use as ``async with``; on exit every
    connection is aborted and every handler cancelled, so hanging behaviours never leak.

    Args:
        host: loopback address to bind (``127.0.0.1``, ``127.0.0.2``...).
        port: 0 for an ephemeral port.
        ssl_context: server-side context for HTTPS (see :class:`TLSMaterial`).
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, ssl_context: ssl.SSLContext | None = None) -> None:
        self.host = host
        self.port = port
        self.ssl_context = ssl_context
        self.requests: list[Request] = []
        self._routes: dict[str, Reply | Handler] = {}
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()

    # -- public API ------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        """``http(s)://host:port`` (no trailing slash)."""
        scheme = "https" if self.ssl_context else "http"
        return f"{scheme}://{self.host}:{self.port}"

    def url(self, path: str = "/") -> str:
        """Absolute URL of ``path`` on this server."""
        return self.base_url + (path if path.startswith("/") else "/" + path)

    def route(self, path: str, reply: Reply | Handler) -> None:
        """Serve ``reply`` (or call ``reply(request)``) for exactly ``path`` (query ignored);
        takes precedence over the built-in paths."""
        self._routes[path] = reply

    async def __aenter__(self) -> "MisbehavingHTTPServer":
        self._server = await asyncio.start_server(
            self._handle, self.host, self.port, ssl=self.ssl_context,
            ssl_handshake_timeout=5.0 if self.ssl_context else None,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._stopping.set()
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=2.0)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._server.wait_closed(), 2.0)

    # -- connection handling ---------------------------------------------------------------
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        try:
            request = await self._read_request(reader, writer)
            if request is None:
                return
            self.requests.append(request)
            await self._dispatch(request, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ssl.SSLError, OSError):
            pass
        except asyncio.CancelledError:
            pass
        finally:
            self._writers.discard(writer)
            self._tasks.discard(task)
            if not writer.transport.is_closing():
                writer.transport.abort()

    async def _read_request(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> Request | None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            return None
        lines = head.decode("latin-1").split("\r\n")
        try:
            method, target, _version = lines[0].split(" ", 2)
        except ValueError:
            return None
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if ":" in line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        body = b""
        if "content-length" in headers:
            body = await reader.readexactly(int(headers["content-length"]))
        split = urlsplit(target)
        query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        return Request(method, target, unquote(split.path), query, headers, body, writer.get_extra_info("peername"))

    async def _dispatch(self, req: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        custom = self._routes.get(req.path)
        if custom is not None:
            reply = custom(req) if callable(custom) else custom
            if inspect.isawaitable(reply):
                reply = await reply
            await self._send(reply, writer)
            return
        parts = [p for p in req.path.split("/") if p]
        head = parts[0] if parts else ""
        q = req.query
        if req.path in ("/", "/ok"):
            await self._send(Reply(body=b"ok\n"), writer)
        elif head == "status" and len(parts) == 2:
            await self._send(Reply(status=int(parts[1]), body=f"status {parts[1]}\n".encode()), writer)
        elif head == "delay" and len(parts) == 2:
            await self._send(Reply(delay=float(parts[1]), body=b"late but ok\n"), writer)
        elif req.path == "/hang":
            await self._stopping.wait()
        elif req.path == "/stall-body":
            await self._send(Reply(body=b"x" * 100, content_length=10000, after="hang"), writer)
        elif req.path == "/reset-body":
            await self._send(Reply(body=b"x" * 100, content_length=10000, after="reset"), writer)
        elif req.path == "/drip":
            n = int(q.get("bytes", "100"))
            await self._send(Reply(body=b"d" * n, drip=float(q.get("interval", "0.1"))), writer)
        elif req.path == "/endless":
            await self._endless(writer)
        elif req.path == "/reset":
            _rst(writer)
        elif req.path == "/close":
            writer.close()
        elif req.path == "/garbage":
            writer.write(b"SSH-2.0-OpenSSH_9.6 not http at all\r\n\r\n")
            await writer.drain()
            writer.close()
        elif req.path == "/redirect/loop":
            await self._send(Reply(status=302, headers=[("Location", "/redirect/loop")]), writer)
        elif req.path == "/redirect/to":
            status = int(q.get("status", "302"))
            await self._send(Reply(status=status, headers=[("Location", q.get("url", "/"))]), writer)
        elif head == "redirect" and len(parts) == 3 and parts[1] == "chain":
            n = int(parts[2])
            if n <= 0:
                await self._send(Reply(body=b"end of chain\n"), writer)
            else:
                await self._send(Reply(status=302, headers=[("Location", f"/redirect/chain/{n - 1}")]), writer)
        elif req.path == "/echo":
            doc = {"method": req.method, "path": req.path, "query": req.query, "headers": req.headers,
                   "body": req.body.decode("utf-8", "replace")}
            await self._send(Reply(body=json.dumps(doc, ensure_ascii=False).encode(), content_type="application/json"), writer)
        elif req.path == "/auth/basic":
            want = "Basic " + base64.b64encode(f"{q.get('user', '')}:{q.get('password', '')}".encode()).decode()
            ok = req.headers.get("authorization") == want
            await self._send(Reply(status=200 if ok else 401, body=b"welcome\n" if ok else b"denied\n",
                                   headers=() if ok else [("WWW-Authenticate", 'Basic realm="t"')]), writer)
        elif req.path == "/auth/bearer":
            ok = req.headers.get("authorization") == f"Bearer {q.get('token', '')}"
            await self._send(Reply(status=200 if ok else 401, body=b"welcome\n" if ok else b"denied\n"), writer)
        else:
            await self._send(Reply(status=404, body=b"no such behaviour\n"), writer)

    async def _send(self, reply: Reply, writer: asyncio.StreamWriter) -> None:
        if reply.delay:
            await asyncio.sleep(reply.delay)
        body = reply.body.encode("utf-8") if isinstance(reply.body, str) else reply.body
        names = {k.lower() for k, _ in reply.headers}
        lines = [f"HTTP/1.1 {reply.status} {_REASONS.get(reply.status, 'Status')}"]
        lines += [f"{k}: {v}" for k, v in reply.headers]
        if reply.content_type is not None and "content-type" not in names:
            lines.append(f"Content-Type: {reply.content_type}")
        if reply.chunked:
            if "transfer-encoding" not in names:
                lines.append("Transfer-Encoding: chunked")
        elif "content-length" not in names:
            lines.append(f"Content-Length: {reply.content_length if reply.content_length is not None else len(body)}")
        if "connection" not in names:
            lines.append("Connection: close")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        await writer.drain()
        if reply.chunked:
            if body:
                writer.write(f"{len(body):x}\r\n".encode() + body + b"\r\n")
            writer.write(b"0\r\n\r\n")
        elif reply.drip:
            for i in range(len(body)):
                writer.write(body[i : i + 1])
                await writer.drain()
                await asyncio.sleep(reply.drip)
        else:
            writer.write(body)
        await writer.drain()
        if reply.after == "hang":
            await self._stopping.wait()
        elif reply.after == "reset":
            _rst(writer)
        else:
            writer.close()

    async def _endless(self, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n"
                     b"Connection: close\r\n\r\n")
        chunk = b"%x\r\n" % 65536 + b"e" * 65536 + b"\r\n"
        while not self._stopping.is_set():
            writer.write(chunk)
            await writer.drain()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` with nobody listening (bound, then released): connecting to it
    is refused.  (A tiny race with other processes is possible, as with any such helper.)"""
    return _pick_port(host)


@contextlib.asynccontextmanager
async def unresponsive_listener(host: str = "127.0.0.1") -> AsyncIterator[str]:
    """Yield ``http://host:port`` of a listener whose accept queue is full, so a new TCP
    connect gets no SYN-ACK and hangs (Linux drops SYNs to a full queue).  Raises
    :class:`RuntimeError` if the queue could not be filled (then the test should skip)."""
    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.bind((host, 0))
    lsock.listen(0)
    addr = lsock.getsockname()
    fillers: list[socket.socket] = []
    try:
        for _ in range(16):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            s.connect_ex(addr)
            _, writable, _ = select.select([], [s], [], 0.3)
            if not writable or s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) != 0:
                s.close()
                break
            fillers.append(s)
        else:
            raise RuntimeError("could not fill the accept queue")
        yield f"http://{addr[0]}:{addr[1]}"
    finally:
        for s in fillers:
            s.close()
        lsock.close()


@contextlib.asynccontextmanager
async def silent_server(host: str = "127.0.0.1") -> AsyncIterator[tuple[str, int]]:
    """Yield ``(host, port)`` of a TCP server that accepts, reads and never writes: a TLS
    client hangs in the handshake, a plain HTTP client waits for the first byte."""
    stop = asyncio.Event()
    writers: set[asyncio.StreamWriter] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.add(writer)
        with contextlib.suppress(Exception, asyncio.CancelledError):
            while not stop.is_set() and await reader.read(65536):
                pass
            await stop.wait()
        writers.discard(writer)

    server = await asyncio.start_server(handle, host, 0)
    try:
        yield host, server.sockets[0].getsockname()[1]
    finally:
        stop.set()
        server.close()
        for w in list(writers):
            w.transport.abort()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(server.wait_closed(), 2.0)


class TLSMaterial:
    """Certificates for HTTPS tests, written under ``directory``.

    Attributes:
        ca: a :class:`trustme.CA`; ``ca_file`` is its PEM path (pass as the probe's
            ``ca_file``).

    Methods return server-side :class:`ssl.SSLContext` objects:
    :meth:`good` (valid for ``127.0.0.1``), :meth:`expired`, :meth:`wrong_host` (valid, but
    for ``wrong.test``), :meth:`self_signed` (not issued by ``ca``).
    """

    def __init__(self, directory: Path) -> None:
        import trustme

        self.ca = trustme.CA()
        self.ca_file = Path(directory) / "test-ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))

    @staticmethod
    def _server_ctx() -> ssl.SSLContext:
        return ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)

    def good(self, *names: str) -> ssl.SSLContext:
        ctx = self._server_ctx()
        self.ca.issue_cert(*(names or ("127.0.0.1", "127.0.0.2"))).configure_cert(ctx)
        return ctx

    def expired(self) -> ssl.SSLContext:
        now = dt.datetime.now(dt.timezone.utc)
        ctx = self._server_ctx()
        self.ca.issue_cert("127.0.0.1", not_before=now - dt.timedelta(days=30),
                           not_after=now - dt.timedelta(days=1)).configure_cert(ctx)
        return ctx

    def wrong_host(self) -> ssl.SSLContext:
        ctx = self._server_ctx()
        self.ca.issue_cert("wrong.test").configure_cert(ctx)
        return ctx

    def self_signed(self) -> ssl.SSLContext:
        """A self-signed leaf for 127.0.0.1 made with :mod:`cryptography`."""
        import ipaddress
        import tempfile

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
        now = dt.datetime.now(dt.timezone.utc)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(key, hashes.SHA256())
        )
        ctx = self._server_ctx()
        with tempfile.TemporaryDirectory() as tmp:
            cert_path, key_path = Path(tmp) / "c.pem", Path(tmp) / "k.pem"
            cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
            key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                   serialization.NoEncryption()))
            ctx.load_cert_chain(str(cert_path), str(key_path))
        return ctx
