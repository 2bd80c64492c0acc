"""Delivery of one message on one channel through apprise, and secret hygiene.

One *channel* is one apprise URL of a unit (``zalo://``, ``mailto://``, ``tgram://``, ``json://``,
an SMS gateway ...).  :class:`AppriseSender` builds an :class:`apprise.Apprise` object holding that
single URL and awaits its asynchronous interface (:meth:`apprise.Apprise.async_notify`), so a
channel that hangs or fails never blocks or marks the unit's other channels: the outbox calls the
sender once per channel.

Secrets: apprise URLs carry tokens and passwords, and apprise's own logger prints URLs in some
error paths.  Every URL the agent loads is registered with :func:`register_secret`; a logging
filter on the ``apprise`` logger (and :func:`redact` for stored error strings) replaces the
registered strings with ``***``.  Metrics and pages only ever show a URL's scheme
(:func:`scheme_of`) and a short fingerprint (:func:`fingerprint`).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import threading
import time
import urllib.parse
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger("hcc_sentinel.alerts.delivery")

_SECRETS: set[str] = set()
_LOCK = threading.Lock()
_TOKEN_SPLIT = re.compile(r"[/:@?&=,]")
_HOSTLIKE = re.compile(r"[\d.]+|[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")


def scheme_of(url: str) -> str:
    """The URL's scheme in lower case (``"mailto"``, ``"json"``, ``"zalo"``), or ``"unknown"``.

    This is the only part of a channel URL that may appear in metrics, logs and pages.
    """
    head, sep, _ = url.partition("://")
    head = head.strip().lower()
    return head if sep and re.fullmatch(r"[a-z][a-z0-9+.-]{0,31}", head) else "unknown"


def fingerprint(url: str) -> str:
    """A stable, non-reversible 12-hex-digit id of a channel URL (SHA-256 prefix).

    Stored in the outbox instead of the URL, so that the database holds no secret; the URL is
    looked up in the current config at delivery time.
    """
    return hashlib.sha256(url.encode("utf-8")).hexdigest()[:12]


def register_secret(url: str) -> None:
    """Remember ``url`` and its secret-looking parts so that logs and stored errors redact them.

    Registered: the whole URL, the URL without its scheme, user and password, and every path
    segment or query value of 6 characters or more (tokens, chat ids, keys).  Over-redaction of
    a log line is accepted; a leaked token is not.
    """
    parts = {url}
    _, _, rest = url.partition("://")
    if rest:
        parts.add(rest)
    try:
        split = urllib.parse.urlsplit(url)
        for value in (split.username, split.password):
            if value:
                parts.add(value)
                parts.add(urllib.parse.unquote(value))
        netloc = split.netloc.rpartition("@")[2]
        # bot tokens written as host ("zalo://123456:ABC.../chat") look like host:port
        if netloc and not re.fullmatch(r"[\w.-]+(:\d{1,5})?", netloc):
            parts.add(netloc)
            for piece in netloc.split(":"):
                if len(piece) >= 6 and not _HOSTLIKE.fullmatch(piece):
                    parts.add(piece)
        for piece in _TOKEN_SPLIT.split(split.path + "&" + split.query):
            piece = urllib.parse.unquote(piece)
            if len(piece) >= 6:
                parts.add(piece)
    except ValueError:
        pass
    with _LOCK:
        _SECRETS.update(p for p in parts if len(p) >= 4)


def redact(text: str) -> str:
    """``text`` with every registered secret replaced by ``***`` (longest first)."""
    with _LOCK:
        secrets = sorted(_SECRETS, key=len, reverse=True)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, "***")
    return text


class _RedactFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: let logging report it as usual
            return True
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


_FILTER = _RedactFilter()


def install_log_filter() -> None:
    """Attach the redacting filter to the ``apprise`` logger (idempotent)."""
    logger = logging.getLogger("apprise")
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.WARNING)  # the outbox logs each delivery itself


#: apprise plugin classes whose ``send()`` gives up at once, without any network call, when the
#: URL left them no recipient (apprise 2.3 source: ``if not self.targets: ... return False``).
#: apprise drops recipients it cannot parse (``mailto://...?to=not-an-address``) with only a log
#: line, so such a URL loads fine and fails at every delivery ("There are no Email recipients to
#: notify") — a config error, not a temporary failure.  Plugins not listed (webhooks such as
#: ``json://``, or those with a default recipient) are not checked for recipients.  Telegram
#: is listed but accepted without chat id while it may detect the bot's owner (``detect=yes``,
#: apprise's default then).
NEEDS_RECIPIENTS: frozenset[str] = frozenset("""
    Notify46Elks NotifyACS NotifyAWSWhatsApp NotifyAfricasTalking NotifyAprs NotifyBale NotifyBark
    NotifyBrevo NotifyBulkVS NotifyBurstSMS NotifyCM NotifyClickSend NotifyClickatell NotifyCliq
    NotifyD7Networks NotifyDapnet NotifyEight00com NotifyEmail NotifyExotel NotifyFCM NotifyGoAlert
    NotifyGorush NotifyGroundmail NotifyGupshup NotifyHttpSMS NotifyInfobip NotifyInstagram
    NotifyKaleyra NotifyKavenegar NotifyLine NotifyMSG91 NotifyMailerSend NotifyMailgun
    NotifyMessageBird NotifyMobileMessage NotifyNextcloudTalk NotifyNotifyre NotifyOctopush
    NotifyOffice365 NotifyPingram NotifyPlivo NotifyPostmark NotifyRevolt NotifySES NotifySMPP
    NotifySMSC NotifySMSManager NotifySMSTunnel NotifySMTP2Go NotifySendGrid NotifySeven
    NotifySignalAPI NotifySignalgrid NotifySparkPost NotifyTelegram NotifyTelesign NotifyTelnyx
    NotifyThreema NotifyVapid NotifyViber NotifyVoipms NotifyWhapi NotifyWhatsApp NotifyZalo
""".split())


def check_url(url: str) -> str | None:
    """Validate an apprise URL without sending anything.

    The URL is instantiated with ``apprise.Apprise.instantiate``; a URL apprise cannot load is
    refused, and so is one that left a recipient-based plugin (e-mail, Zalo, SMS gateways ...,
    :data:`NEEDS_RECIPIENTS`) without any recipient — it would fail at every delivery.

    Returns:
        ``None`` when the URL is usable, else a problem description that names the scheme only
        (never the URL).
    """
    register_secret(url)
    install_log_filter()
    scheme = scheme_of(url)
    if scheme == "unknown":
        return "not an apprise URL (expected scheme://..., e.g. zalo://, mailto://, json://)"
    import apprise

    plugin = apprise.Apprise.instantiate(url)
    if plugin is None:
        return f"apprise cannot load this {scheme}:// URL (check its parameters; the URL is not shown because it may hold a secret)"
    targets = getattr(plugin, "targets", None)
    if (isinstance(targets, (list, tuple, set)) and not targets
            and any(c.__name__ in NEEDS_RECIPIENTS for c in type(plugin).__mro__)
            and not getattr(plugin, "detect_owner", False)):
        hint = " (mailto: give to=<address>; apprise drops addresses it cannot parse)" if "mail" in scheme else ""
        return (f"this {scheme}:// URL has no recipient apprise can use, so every delivery would fail{hint}; "
                "the URL is not shown because it may hold a secret")
    return None


@dataclass(frozen=True)
class SendResult:
    """Outcome of one attempt on one channel.

    Attributes:
        ok: the channel accepted the message (apprise reported success).
        error: short redacted reason when not ok.
        duration: seconds the attempt took.
    """

    ok: bool
    error: str | None
    duration: float


class Sender(Protocol):
    """Something that delivers one message on one channel (tests may substitute their own)."""

    async def send(self, url: str, title: str, body: str, notify_type: str, timeout: float) -> SendResult: ...


class AppriseSender:
    """Delivers through apprise's asynchronous interface, one channel (URL) per call.

    ``notify_type`` is one of apprise's ``info`` / ``success`` / ``warning`` / ``failure``.
    Body format is plain text (apprise converts for HTML channels such as e-mail).
    """

    def __init__(self) -> None:
        install_log_filter()

    async def send(self, url: str, title: str, body: str, notify_type: str, timeout: float) -> SendResult:
        """Send once; never raises for a channel failure.

        Args:
            url: the channel's apprise URL (secret).
            title: subject line; body: message text (UTF-8, Vietnamese diacritics kept).
            notify_type: apprise notify type.
            timeout: seconds for the whole attempt (apprise's call timeout plus our own guard).

        Returns:
            :class:`SendResult`; ``ok`` only when apprise reports the channel accepted it.
        """
        import apprise

        register_secret(url)
        started = time.monotonic()
        obj = apprise.Apprise()
        if not obj.add(url):
            return SendResult(False, f"apprise cannot load this {scheme_of(url)}:// URL", time.monotonic() - started)
        try:
            async with asyncio.timeout(timeout + 5):
                result = await obj.async_notify(body=body, title=title, notify_type=notify_type,
                                                body_format="text", timeout=timeout)
        except TimeoutError:
            return SendResult(False, f"timed out after {timeout:g}s", time.monotonic() - started)
        except Exception as exc:  # apprise raising is a bug there; keep the outbox alive
            return SendResult(False, redact(f"{type(exc).__name__}: {exc}")[:300], time.monotonic() - started)
        duration = time.monotonic() - started
        if bool(result):
            return SendResult(True, None, duration)
        reason = getattr(getattr(result, "status", None), "name", None) or "failed"
        detail = ""
        try:
            for entry in result.logs():
                line = str(entry)
                if "WARNING" in line or "ERROR" in line:
                    detail = line.split(" - ", 2)[-1]
                    break
        except Exception:
            detail = ""
        return SendResult(False, redact(f"{reason}: {detail}".strip(": "))[:300], duration)
