"""Inbound email by IMAP, the alternative to POST /webhooks/email for mailboxes that cannot forward to a webhook.

Each unseen message goes through the same parser as the webhook (the email adapter's `parse_raw`) and the same
`InboundService.handle`, and is marked \\Seen only after it was handled: a crash in between reads it again next
time, which the dedupe on (channel, Message-ID) makes harmless. Framework-free; `cobrabot email poll` runs it.
"""

from __future__ import annotations

import contextlib
import imaplib
import logging
import ssl
from typing import Any, Protocol

from bot.domain import BadPayload, Parsed
from bot.mailserver import MailServer, imap_server, may_send_credentials

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_SECONDS = 30.0
# BODY.PEEK[] leaves the \Seen flag alone; RFC822 and BODY[] would set it on fetch, before the message is handled.
FETCH_ITEMS = "(BODY.PEEK[])"


class RawEmailParser(Protocol):
    def parse_raw(self, raw: bytes) -> Parsed: ...


class InboundHandler(Protocol):
    def handle(self, parsed: Parsed) -> Any: ...


class MailboxError(Exception):
    """The IMAP server refused a step, or logging in would have sent the password in clear."""


def poll_mailbox(
    imap_url: str,
    channel: RawEmailParser,
    inbound: InboundHandler,
    *,
    mailbox: str = "INBOX",
    limit: int = 50,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
    tls_context: ssl.SSLContext | None = None,
) -> int:
    """Hand the oldest `limit` unseen messages to `inbound`, one by one; returns how many were taken.

    A failure while handling stops the batch and propagates: that message and the ones after it stay unseen
    and are read again on the next poll. A message that is no usable email is marked seen and skipped, since
    reading it again would fail the same way and hold up the mail behind it.
    """
    client = _connect(imap_server(imap_url), timeout, tls_context or ssl.create_default_context())
    try:
        _ok(client.select(_quoted(mailbox)), f"SELECT {mailbox}")
        uids = _unseen(client)[:limit]
        for uid in uids:
            _take(client, uid, channel, inbound)
        if uids:
            logger.info("IMAP poll took %d message(s) from %s", len(uids), mailbox)
        return len(uids)
    finally:
        _logout_quietly(client)


def _connect(server: MailServer, timeout: float, context: ssl.SSLContext) -> imaplib.IMAP4:
    if server.implicit_tls:
        client: imaplib.IMAP4 = imaplib.IMAP4_SSL(server.host, server.port, ssl_context=context, timeout=timeout)
    else:
        client = imaplib.IMAP4(server.host, server.port, timeout=timeout)
    try:
        encrypted = server.implicit_tls
        if not encrypted and "STARTTLS" in client.capabilities:
            # The context is always ours: imaplib's default one does not check the certificate.
            client.starttls(context)
            encrypted = True
        if server.username:
            if not may_send_credentials(server.host, encrypted):
                raise MailboxError("refusing to send IMAP credentials unencrypted to a remote host")
            client.login(server.username, server.password)
    except BaseException:
        with contextlib.suppress(OSError):  # a failed TLS handshake has already taken the socket apart
            client.shutdown()
        raise
    return client


def _unseen(client: imaplib.IMAP4) -> list[str]:
    data = _ok(client.uid("SEARCH", "UNSEEN"), "SEARCH UNSEEN")
    found = b" ".join(item for item in data if isinstance(item, bytes)).split()
    return [str(uid) for uid in sorted(int(uid) for uid in found)]


def _take(client: imaplib.IMAP4, uid: str, channel: RawEmailParser, inbound: InboundHandler) -> None:
    raw = _fetch(client, uid)
    if raw is None:
        logger.info("IMAP message %s vanished before it was fetched", uid)
        return
    try:
        parsed = channel.parse_raw(raw)
    except BadPayload as exc:
        logger.warning("IMAP message %s is no usable email (%s); marked seen and skipped", uid, exc)
    else:
        inbound.handle(parsed)
    _ok(client.uid("STORE", uid, "+FLAGS.SILENT", "(\\Seen)"), f"STORE {uid} \\Seen")


def _fetch(client: imaplib.IMAP4, uid: str) -> bytes | None:
    data = _ok(client.uid("FETCH", uid, FETCH_ITEMS), f"FETCH {uid}")
    # imaplib gives a literal as (b'1 (UID 7 BODY[] {1234}', b'<the message>'), then b')'.
    return next((item[1] for item in data if isinstance(item, tuple) and len(item) == 2), None)


def _ok(response: tuple[str, list[Any]], step: str) -> list[Any]:
    status, data = response
    if status != "OK":
        detail = b" ".join(item for item in data if isinstance(item, bytes)).decode("utf-8", "replace")
        raise MailboxError(f"IMAP {step} failed: {status} {detail}".strip())
    return data


def _quoted(mailbox: str) -> str:
    escaped = mailbox.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def _logout_quietly(client: imaplib.IMAP4) -> None:
    # Everything handled is already flagged on the server: a failing LOGOUT loses nothing.
    with contextlib.suppress(imaplib.IMAP4.error, OSError):
        client.logout()
