"""Email adapter: raw MIME messages in through POST /webhooks/email (shared-secret header) or the IMAP poller
(bot/email_poll.py), out through any SMTP server with the standard library as plain text plus a safe HTML part.

Auto-replies are acknowledged and dropped so the bot never talks to an autoresponder; bounces (RFC 3464 delivery
reports) become delivery statuses of the message they bounce. Reminders carry RFC 8058 one-click unsubscribe.
"""

from __future__ import annotations

import email
import hmac
import logging
import re
import smtplib
import ssl
from collections.abc import Iterable, Mapping
from email import errors
from email.message import EmailMessage, Message
from email.parser import HeaderParser
from email.policy import default as default_policy
from email.utils import formatdate, make_msgid, parseaddr
from typing import Any

from bot.config import Settings
from bot.domain import (
    BadPayload,
    ChannelCapabilities,
    ChannelName,
    DeliveryStatus,
    InboundMessage,
    InvalidSignature,
    OutboundMessage,
    Parsed,
    PermanentError,
    SendResult,
    TransientError,
    WebhookRequest,
)
from bot.mailserver import may_send_credentials, smtp_server
from bot.ports import render_buttons
from channels.email_text import body_text, opening, part_text, raw_header_text, text_to_html, windows_1252_controls

logger = logging.getLogger(__name__)

SECRET_HEADER = "X-Cobrabot-Email-Secret"
DEFAULT_TIMEOUT_SECONDS = 20.0
SUBJECT_LENGTH = 60
MAX_REFERENCES = 20  # mail clients thread on the last few; a long history must not grow the header without end
# The subject of our List-Unsubscribe mailto: an email with exactly this subject is read as the keyword.
UNSUBSCRIBE_SUBJECT = "unsubscribe"
AUTO_REPLY_SUBJECTS = (
    "out of office",
    "automatic reply",
    "auto-reply",
    "autoreply",
    "respuesta automática",
    "respuesta automatica",
    "fuera de la oficina",
)
MESSAGE_ID = re.compile(r"<([^<>\s]+)>")
ENHANCED_STATUS = re.compile(r"\b([245]\.\d{1,3}\.\d{1,3})\b")


class EmailChannel:
    name = ChannelName.EMAIL.value
    capabilities = ChannelCapabilities(max_length=None, buttons=False)

    def __init__(
        self,
        settings: Settings,
        *,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        if not settings.smtp_url:
            raise ValueError("the email channel needs COBRABOT_SMTP_URL, e.g. smtp://user:pass@host:587")
        if not settings.email_from:
            raise ValueError("the email channel needs COBRABOT_EMAIL_FROM, e.g. Cobranzas <cobros@example.com>")
        self.server = smtp_server(settings.smtp_url)
        self.sender = settings.email_from
        self.sender_address = parseaddr(settings.email_from)[1]
        if "@" not in self.sender_address:
            raise ValueError("COBRABOT_EMAIL_FROM must contain an email address")
        self.public_url = settings.public_url
        self.timeout = timeout
        self.tls_context = tls_context
        self._secret = settings.email_webhook_secret
        # Mail to the sender address reaches the bot only through the webhook or the IMAP poller; without either a
        # mailto unsubscribe would be a promise nobody keeps.
        self.reads_mail = bool(self._secret or settings.imap_url)

    def parse(self, request: WebhookRequest) -> Parsed:
        self._verify(request.headers)
        return self.parse_raw(request.body)

    def parse_raw(self, raw: bytes) -> Parsed:
        """One raw RFC 5322 message (from the webhook after its secret check, or from the IMAP poller)."""
        if not raw.strip():
            raise BadPayload("empty email body")
        message = email.message_from_bytes(raw, policy=default_policy)
        if _is_delivery_report(message):
            return _delivery_report(message)
        if _is_auto_reply(message):
            logger.info("ignored auto-reply %s", _message_id(message))
            return Parsed()
        return Parsed(messages=(_inbound(message),))

    def send(self, message: OutboundMessage) -> SendResult:
        recipient = parseaddr(message.recipient)[1]
        if "@" not in recipient or any(char.isspace() for char in recipient):
            raise PermanentError("recipient is not an email address", code="unreachable")
        outgoing = self._compose(message, recipient)
        self._deliver(outgoing)
        provider_id = _bare_id(str(outgoing["Message-ID"]))
        logger.info("email %s sent for outbound message %s", provider_id, message.message_id)
        return SendResult(provider_message_id=provider_id)

    def _verify(self, headers: Mapping[str, str]) -> None:
        if not self._secret:
            raise InvalidSignature("COBRABOT_EMAIL_WEBHOOK_SECRET is not set: inbound email is refused")
        given = next((value for key, value in headers.items() if key.lower() == SECRET_HEADER.lower()), "")
        if not hmac.compare_digest(given.encode(), self._secret.encode()):
            raise InvalidSignature(f"wrong or missing {SECRET_HEADER}")

    def _compose(self, message: OutboundMessage, recipient: str) -> EmailMessage:
        outgoing = EmailMessage()
        outgoing["From"] = self.sender
        outgoing["To"] = recipient
        outgoing["Subject"] = _subject(message)
        outgoing["Date"] = formatdate(usegmt=True)
        outgoing["Message-ID"] = make_msgid(domain=self.sender_address.rsplit("@", 1)[1])
        _thread(outgoing, message.metadata)
        self._unsubscribe(outgoing, message.metadata.get("unsubscribe_url"))
        if message.metadata.get("initiated_by") == "bot":
            # RFC 3834: tells the debtor's autoresponder not to answer a reminder.
            outgoing["Auto-Submitted"] = "auto-generated"
        text = render_buttons(message)
        outgoing.set_content(text)
        locale = message.metadata.get("locale")
        html = text_to_html(text, link_prefix=self.public_url, locale=locale if isinstance(locale, str) else None)
        outgoing.add_alternative(html, subtype="html")
        return outgoing

    def _unsubscribe(self, outgoing: EmailMessage, url: object) -> None:
        """RFC 2369 List-Unsubscribe, and RFC 8058 one-click (which only an https URL may offer)."""
        targets = [f"<mailto:{self.sender_address}?subject={UNSUBSCRIBE_SUBJECT}>"] if self.reads_mail else []
        one_click = isinstance(url, str) and url.startswith("https://") and not any(c in url for c in "<>, \t")
        if one_click:
            targets.append(f"<{url}>")
        if targets:
            outgoing["List-Unsubscribe"] = ", ".join(targets)
        if one_click:
            outgoing["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"

    def _deliver(self, outgoing: EmailMessage) -> None:
        try:
            smtp = self._connect()
            try:
                smtp.send_message(outgoing)
            finally:
                _quit_quietly(smtp)
        except smtplib.SMTPRecipientsRefused as exc:
            codes = sorted({code for code, _ in exc.recipients.values()})
            if all(400 <= code < 500 for code in codes):
                raise TransientError(f"SMTP recipient deferred ({codes})") from exc
            raise PermanentError(f"SMTP recipient refused ({codes})", code="unreachable") from exc
        except smtplib.SMTPResponseException as exc:
            raise _response_error(exc.smtp_code, exc.smtp_error) from exc
        except smtplib.SMTPServerDisconnected as exc:
            raise TransientError(f"SMTP server disconnected: {exc}") from exc
        except smtplib.SMTPException as exc:
            # What is left (no AUTH offered, no usable mechanism) is the server's setup, not this message's.
            raise PermanentError(f"SMTP server cannot take our mail: {exc}", code="smtp") from exc
        except OSError as exc:  # refused, unreachable, timed out, TLS handshake failed
            raise TransientError(f"SMTP server unreachable: {exc!r}") from exc

    def _connect(self) -> smtplib.SMTP:
        server = self.server
        context = self.tls_context or ssl.create_default_context()
        if server.implicit_tls:
            smtp: smtplib.SMTP = smtplib.SMTP_SSL(server.host, server.port, timeout=self.timeout, context=context)
        else:
            smtp = smtplib.SMTP(server.host, server.port, timeout=self.timeout)
        try:
            smtp.ehlo()
            encrypted = server.implicit_tls
            if not encrypted and smtp.has_extn("starttls"):
                smtp.starttls(context=context)
                smtp.ehlo()
                encrypted = True
            if server.username:
                if not may_send_credentials(server.host, encrypted):
                    raise PermanentError("refusing to send SMTP credentials unencrypted to a remote host", code="smtp")
                smtp.login(server.username, server.password)
        except BaseException:
            smtp.close()
            raise
        return smtp


def _thread(outgoing: EmailMessage, metadata: Mapping[str, Any]) -> None:
    """In-Reply-To and References (RFC 5322 3.6.4): the answer sits under the debtor's email in their client."""
    parent = _bare_id(str(metadata.get("in_reply_to") or ""))
    references = metadata.get("references") or ()
    if isinstance(references, str):
        references = MESSAGE_ID.findall(references) or references.split()
    if parent:
        outgoing["In-Reply-To"] = f"<{parent}>"
    chain = [id_ for id_ in dict.fromkeys([*(_bare_id(str(ref)) for ref in references), parent]) if id_]
    chain = chain[-MAX_REFERENCES:]
    if chain:
        outgoing["References"] = " ".join(f"<{reference}>" for reference in chain)


def _quit_quietly(smtp: smtplib.SMTP) -> None:
    # Once DATA is accepted the message is the server's: a failing QUIT must not turn it into a retry (a duplicate).
    try:
        smtp.quit()
    except (smtplib.SMTPException, OSError):
        smtp.close()


SERVER_SETUP_CODES = frozenset({530, 534, 535})


def _response_error(code: int, reply: bytes | str) -> TransientError | PermanentError:
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
    enhanced = ENHANCED_STATUS.search(text)
    # The server's text can quote the recipient address; only the codes travel on.
    detail = f"SMTP {code}" + (f" {enhanced.group(1)}" if enhanced else "")
    if code in SERVER_SETUP_CODES:
        # Our own SMTP login is wrong: no debtor should be moved to another channel for that. Retry and shout.
        logger.error("SMTP authentication failed (%s): check COBRABOT_SMTP_URL", code)
        return TransientError(detail)
    if code >= 500:
        return PermanentError(detail, code=str(code))
    return TransientError(detail)


def _subject(message: OutboundMessage) -> str:
    subject = str(message.metadata.get("subject") or "").strip() or opening(message.text, SUBJECT_LENGTH)
    return " ".join(subject.split())  # header values must not carry line breaks


def _header(message: Message, name: str) -> str:
    try:
        value = message.get(name)
    except (errors.HeaderParseError, IndexError, ValueError, TypeError):
        raise BadPayload(f"unreadable {name} header") from None
    if value is None:
        return ""
    text = windows_1252_controls(str(value))  # an encoded word labelled ISO-8859-1 can carry windows-1252
    if "\ufffd" in text:  # raw 8-bit bytes that are not UTF-8: read them as the sender's client wrote them
        text = raw_header_text(message, name) or text
    return text.strip()


def _bare_id(value: str) -> str:
    match = MESSAGE_ID.search(value)
    return match.group(1) if match else value.strip().strip("<>")


def _message_id(message: Message) -> str:
    return _bare_id(_header(message, "Message-ID"))


def _inbound(message: EmailMessage) -> InboundMessage:
    sender = parseaddr(_header(message, "From"))[1].strip().lower()
    if "@" not in sender:
        raise BadPayload("the email has no From address")
    message_id = _message_id(message)
    if not message_id:
        raise BadPayload("the email has no Message-ID")
    subject = _header(message, "Subject")
    metadata: dict[str, Any] = {
        "subject": subject,
        "in_reply_to": _bare_id(_header(message, "In-Reply-To")) or None,
        "attachments": _attachments(message.walk()),
    }
    # Our List-Unsubscribe mailto: whatever the client puts in the body, the request is the keyword.
    unsubscribe = subject.casefold() == UNSUBSCRIBE_SUBJECT
    return InboundMessage(
        channel=ChannelName.EMAIL.value,
        sender=sender,
        text=UNSUBSCRIBE_SUBJECT if unsubscribe else body_text(message),
        provider_message_id=message_id,
        metadata=metadata,
    )


def _attachments(parts: Iterable[Message]) -> list[dict[str, Any]]:
    """Name, type and size of each attachment; the contents stay out of the conversation record."""
    found = []
    for part in parts:
        filename = part.get_filename()
        if part.is_multipart() or (part.get_content_disposition() != "attachment" and filename is None):
            continue
        payload = part.get_payload(decode=True)
        size = len(payload) if isinstance(payload, bytes) else 0
        found.append({"filename": filename, "content_type": part.get_content_type(), "size": size})
    return found


def _is_auto_reply(message: Message) -> bool:
    auto_submitted = _header(message, "Auto-Submitted").split(";", 1)[0].strip().lower()
    if auto_submitted and auto_submitted != "no":
        return True
    if _header(message, "X-Autoreply") or _header(message, "X-Autorespond"):
        return True
    if _header(message, "Precedence").lower() == "auto_reply":
        return True
    subject = _header(message, "Subject").casefold()
    return any(marker in subject for marker in AUTO_REPLY_SUBJECTS)


def _is_delivery_report(message: Message) -> bool:
    report_type = str(message.get_param("report-type", "")).lower()
    return message.get_content_type() == "multipart/report" and report_type == "delivery-status"


def _delivery_report(message: Message) -> Parsed:
    """A bounce (or success report) for one of our messages, found by the original's Message-ID."""
    original_id = _original_message_id(message)
    if not original_id:
        logger.warning("delivery report %s names no original Message-ID; ignored", _message_id(message))
        return Parsed()
    for recipient in _recipient_fields(message):
        action = recipient.get("action", "").strip().lower()
        if action == "failed":
            error_code = _status_code(recipient)
            return Parsed(
                statuses=(DeliveryStatus(ChannelName.EMAIL.value, original_id, "failed", error_code=error_code),)
            )
        if action in {"delivered", "relayed", "expanded"}:
            return Parsed(statuses=(DeliveryStatus(ChannelName.EMAIL.value, original_id, "delivered"),))
    # "delayed": the remote server keeps trying and reports again when it gives up.
    return Parsed()


def _recipient_fields(message: Message) -> list[dict[str, str]]:
    """Per-recipient field groups of the message/delivery-status part (the first group is per-message)."""
    for part in message.walk():
        if part.get_content_type() == "message/delivery-status":
            groups = part.get_payload()
            if isinstance(groups, list):
                return [{key.lower(): str(value) for key, value in group.items()} for group in groups[1:]]
    return []


def _status_code(recipient: Mapping[str, str]) -> str | None:
    for name in ("status", "diagnostic-code"):
        match = ENHANCED_STATUS.search(recipient.get(name, ""))
        if match:
            return match.group(1)
    return None


def _original_message_id(message: Message) -> str:
    for part in message.walk():
        content_type = part.get_content_type()
        if content_type == "message/rfc822":
            payload = part.get_payload()
            if isinstance(payload, list) and payload:
                return _message_id(payload[0])
        elif content_type in {"text/rfc822-headers", "message/rfc822-headers"}:
            headers = HeaderParser(policy=default_policy).parsestr(part_text(part))
            return _message_id(headers)
    return ""
