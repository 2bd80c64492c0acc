"""The ``tls`` probe against real asyncio TLS servers on 127.0.0.1 with trustme/cryptography
certificates: valid, valid through an intermediate, expired, not yet valid, self-signed, wrong
host, expiring in 3 days, inside the warning window; plus refused and handshake hang."""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import json
import socket
import ssl
import time

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from probes import tls
from probes.base import Outcome, ProbeContext, TargetSpec

MARGIN = 1.5  # seconds: shared 2-core machine, never assert tight timings
HOST = "portal.hcc.test"
NOW = datetime.datetime.now(datetime.timezone.utc)
DAY = datetime.timedelta(days=1)


def spec(timeout: float = 3.0, slow_after: float = 2.0, **options) -> TargetSpec:
    options.setdefault("host", "127.0.0.1")
    options.setdefault("server_name", HOST)
    return TargetSpec(id="tls-test", kind="tls", timeout=timeout, slow_after=slow_after, options=tls.Options(**options))


async def run(target: TargetSpec):
    started = time.perf_counter()
    result = await tls.probe(target, ProbeContext())
    elapsed = time.perf_counter() - started
    assert elapsed <= target.timeout + MARGIN, f"probe took {elapsed:.2f}s"
    json.dumps(result.to_json())
    return result


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


@pytest.fixture
def ca_file(ca, tmp_path):
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


class TlsServers:
    def __init__(self) -> None:
        self.servers: list[asyncio.base_events.Server] = []

    async def serve(self, context: ssl.SSLContext | None) -> int:
        async def handler(reader, writer):
            try:
                await reader.read()  # until the client goes
            except (ConnectionError, ssl.SSLError, OSError):
                pass
            finally:
                writer.transport.abort()

        server = await asyncio.start_server(handler, "127.0.0.1", 0, ssl=context)
        self.servers.append(server)
        return server.sockets[0].getsockname()[1]

    def close(self) -> None:
        for server in self.servers:
            server.close()


@pytest.fixture
async def servers():
    holder = TlsServers()
    yield holder
    holder.close()


def leaf_context(leaf: trustme.LeafCert) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    leaf.configure_cert(context)
    return context


def self_signed_context(tmp_path, name: str = HOST, not_before=NOW - DAY, not_after=NOW + 90 * DAY) -> ssl.SSLContext:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "self.pem", tmp_path / "self.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(cert_path), str(key_path))
    return context


async def test_valid_certificate(servers, ca, ca_file):
    leaf = ca.issue_cert(HOST, not_after=NOW + 90 * DAY)
    port = await servers.serve(leaf_context(leaf))
    result = await run(spec(port=port, ca_file=ca_file))
    assert result.outcome is Outcome.OK and result.reason == "ok", result.detail
    facts = result.facts
    der = ssl.PEM_cert_to_DER_cert(leaf.cert_chain_pems[0].bytes().decode())
    assert facts["cert_fingerprint_sha256"] == hashlib.sha256(der).hexdigest()
    assert facts["cert_serial"] == format(x509.load_der_x509_certificate(der).serial_number, "x")
    assert 89 < facts["cert_days_left"] <= 90
    assert abs(facts["cert_not_after"] - (NOW + 90 * DAY).timestamp()) < 2
    assert facts["cert_not_before"] < time.time()
    assert "trustme" in facts["cert_issuer"]
    assert HOST in facts["cert_dns_names"]
    assert facts["tls_version"] in ("TLSv1.2", "TLSv1.3")
    assert facts["cert_verified"] is True and facts["cert_expiry_warning"] is False
    assert facts["ip_address"] == "127.0.0.1"
    assert result.phases["connect"] > 0 and result.phases["tls"] > 0


async def test_verified_chain_through_intermediate(servers, ca, ca_file):
    intermediate = ca.create_child_ca()
    leaf = intermediate.issue_cert(HOST, not_after=NOW + 60 * DAY)
    port = await servers.serve(leaf_context(leaf))
    result = await run(spec(port=port, ca_file=ca_file))
    assert result.reason == "ok", result.detail
    # leaf + intermediate + root: the verified chain is read (private API on Python 3.11);
    # where it is unavailable the probe falls back to the leaf alone.
    has_api = hasattr(ssl.SSLObject, "get_verified_chain") or hasattr(ssl._ssl._SSLSocket, "get_verified_chain")
    assert result.facts["cert_chain_length"] == (3 if has_api else 1)
    assert 59 < result.facts["cert_days_left"] <= 60


async def test_expired(servers, ca, ca_file):
    leaf = ca.issue_cert(HOST, not_before=NOW - 60 * DAY, not_after=NOW - 2 * DAY)
    port = await servers.serve(leaf_context(leaf))
    result = await run(spec(port=port, ca_file=ca_file))
    assert result.outcome is Outcome.ERROR and result.reason == "tls_expired", result.detail
    assert result.facts["cert_days_left"] < -1.9
    assert result.facts["cert_verified"] is False


async def test_not_yet_valid(servers, ca, ca_file):
    leaf = ca.issue_cert(HOST, not_before=NOW + 2 * DAY, not_after=NOW + 60 * DAY)
    port = await servers.serve(leaf_context(leaf))
    result = await run(spec(port=port, ca_file=ca_file))
    assert result.reason == "tls_expired" and "not valid before" in result.detail, result.detail


async def test_self_signed_is_untrusted(servers, ca_file, tmp_path):
    port = await servers.serve(self_signed_context(tmp_path))
    result = await run(spec(port=port, ca_file=ca_file))
    assert result.outcome is Outcome.ERROR and result.reason == "tls", result.detail
    assert result.facts["cert_subject"] == f"CN={HOST}"  # facts still read, unverified


async def test_self_signed_and_expired_reports_expiry(servers, ca_file, tmp_path):
    port = await servers.serve(self_signed_context(tmp_path, not_before=NOW - 30 * DAY, not_after=NOW - DAY))
    result = await run(spec(port=port, ca_file=ca_file))
    assert result.reason == "tls_expired", result.detail


async def test_self_signed_without_verification(servers, tmp_path):
    port = await servers.serve(self_signed_context(tmp_path))
    result = await run(spec(port=port, verify=False))
    assert result.reason == "ok", result.detail
    assert result.facts["cert_verified"] is False


async def test_wrong_host(servers, ca, ca_file):
    port = await servers.serve(leaf_context(ca.issue_cert("other.hcc.test")))
    result = await run(spec(port=port, ca_file=ca_file))
    assert result.reason == "tls_hostname", result.detail
    assert result.facts["cert_dns_names"] == ["other.hcc.test"]
    ok = await run(spec(port=port, ca_file=ca_file, check_hostname=False))
    assert ok.reason == "ok", ok.detail


async def test_ip_literal_host_checked_against_ip_san(servers, ca, ca_file):
    port = await servers.serve(leaf_context(ca.issue_cert("127.0.0.1")))
    result = await run(spec(port=port, ca_file=ca_file, server_name=None))
    assert result.reason == "ok", result.detail


async def test_expiring_in_three_days(servers, ca, ca_file):
    port = await servers.serve(leaf_context(ca.issue_cert(HOST, not_after=NOW + 3 * DAY)))
    result = await run(spec(port=port, ca_file=ca_file))  # min_days default 7
    assert result.outcome is Outcome.ERROR and result.reason == "tls_expiring", result.detail
    assert 2.9 < result.facts["cert_days_left"] <= 3.0
    relaxed = await run(spec(port=port, ca_file=ca_file, min_days=2, days_warning=5))
    assert relaxed.reason == "ok" and relaxed.facts["cert_expiry_warning"] is True


async def test_warning_window_is_still_ok(servers, ca, ca_file):
    port = await servers.serve(leaf_context(ca.issue_cert(HOST, not_after=NOW + 10 * DAY)))
    result = await run(spec(port=port, ca_file=ca_file))
    assert result.reason == "ok"
    assert result.facts["cert_expiry_warning"] is True and "warning" in result.detail


async def test_refused():
    closed = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    closed.bind(("127.0.0.1", 0))
    try:
        result = await run(spec(port=closed.getsockname()[1]))
        assert result.reason == "refused"
    finally:
        closed.close()


async def test_handshake_hang(servers):
    port = await servers.serve(None)  # plain TCP: never answers the ClientHello
    result = await run(spec(timeout=1.0, port=port))
    assert result.outcome is Outcome.HANG and result.reason == "timeout_tls"


async def test_bad_ca_file(servers, ca, tmp_path):
    port = await servers.serve(leaf_context(ca.issue_cert(HOST)))
    result = await run(spec(port=port, ca_file=str(tmp_path / "missing.pem")))
    assert result.reason == "tls" and "ca_file" in result.detail


def test_options():
    with pytest.raises(ValueError):
        tls.Options(host="h", min_days=30, days_warning=21)
    assert tls.Options(host="h").port == 443
