"""Email adapter: raw MIME messages in through POST /webhooks/email (shared-secret header), out through any SMTP
server with the standard library.

Auto-replies are acknowledged and dropped so the bot never talks to an autoresponder; bounces (RFC 3464 delivery
reports) become delivery statuses of the message they bounce.
"""

from __future__ import annotations

import email
import hmac
import ipaddress
import logging
import re
import smtplib
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from email import errors
from email.message import EmailMessage, Message
from email.parser import HeaderParser
from email.policy import default as default_policy
from email.utils import formatdate, make_msgid, parseaddr
from html.parser import HTMLParser
from typing import Any
from urllib.parse import unquote, urlparse

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
from bot.ports import render_buttons

logger = logging.getLogger(__name__)

SECRET_HEADER = "X-Cobrabot-Email-Secret"
DEFAULT_TIMEOUT_SECONDS = 20.0
SUBJECT_LENGTH = 60
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
# "On Mon, 23 Nov 2026, Cobrabot <...> wrote:" / "El lun, 23 nov 2026, Cobrabot <...> escribió:"
ATTRIBUTION = re.compile(r"^(on|el)\s.*\s(wrote|escribió|escribio):$", re.IGNORECASE)
# Outlook and forwards quote the history without ">" below one of these lines.
HISTORY_SEPARATOR = re.compile(
    r"^(-{2,}\s*(original message|mensaje original|forwarded message|mensaje reenviado)\s*-{2,}|_{10,})$",
    re.IGNORECASE,
)


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
        self.server = SmtpServer.from_url(settings.smtp_url)
        self.sender = settings.email_from
        self.sender_address = parseaddr(settings.email_from)[1]
        if "@" not in self.sender_address:
            raise ValueError("COBRABOT_EMAIL_FROM must contain an email address")
        self.timeout = timeout
        self.tls_context = tls_context
        self._secret = settings.email_webhook_secret

    def parse(self, request: WebhookRequest) -> Parsed:
        self._verify(request.headers)
        if not request.body.strip():
            raise BadPayload("empty email body")
        message = email.message_from_bytes(request.body, policy=default_policy)
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
        in_reply_to = message.metadata.get("in_reply_to")
        if in_reply_to:
            # Threads the answer under the debtor's email in their mail client.
            outgoing["In-Reply-To"] = outgoing["References"] = f"<{_bare_id(str(in_reply_to))}>"
        outgoing["List-Unsubscribe"] = self._unsubscribe(message.metadata.get("unsubscribe_url"))
        if message.metadata.get("initiated_by") == "bot":
            # RFC 3834: tells the debtor's autoresponder not to answer a reminder.
            outgoing["Auto-Submitted"] = "auto-generated"
        outgoing.set_content(render_buttons(message))
        return outgoing

    def _unsubscribe(self, url: object) -> str:
        targets = [f"<mailto:{self.sender_address}?subject=unsubscribe>"]
        if isinstance(url, str) and url.startswith(("https://", "http://")):
            targets.append(f"<{url}>")
        return ", ".join(targets)

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


@dataclass(frozen=True, slots=True)
class SmtpServer:
    """Where and how to submit mail, from COBRABOT_SMTP_URL (smtp:// uses STARTTLS when offered, smtps:// TLS)."""

    host: str
    port: int
    implicit_tls: bool
    username: str | None = None
    password: str = field(default="", repr=False)

    @classmethod
    def from_url(cls, url: str) -> SmtpServer:
        parsed = urlparse(url)
        try:
            port = parsed.port
        except ValueError:
            raise ValueError("COBRABOT_SMTP_URL has an invalid port") from None
        if parsed.scheme not in {"smtp", "smtps"} or not parsed.hostname:
            raise ValueError("COBRABOT_SMTP_URL must look like smtp://user:pass@host:587 or smtps://host:465")
        implicit_tls = parsed.scheme == "smtps"
        return cls(
            host=parsed.hostname,
            port=port or (465 if implicit_tls else 587),
            implicit_tls=implicit_tls,
            username=unquote(parsed.username) if parsed.username else None,
            password=unquote(parsed.password or ""),
        )


def may_send_credentials(host: str, encrypted: bool) -> bool:
    """Credentials go over TLS, or in clear only to this machine (a local relay); a stripped STARTTLS must not
    hand the SMTP password to whoever sits on the path."""
    if encrypted or host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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
    subject = str(message.metadata.get("subject") or "").strip() or _opening(message.text)
    return " ".join(subject.split())  # header values must not carry line breaks


def _opening(text: str) -> str:
    first_line = next((line.strip() for line in text.splitlines() if line.strip()), "")
    if len(first_line) <= SUBJECT_LENGTH:
        return first_line
    # One character more than fits: when it is a space the last word is whole and stays.
    return first_line[: SUBJECT_LENGTH + 1].rsplit(" ", 1)[0].rstrip(" ,.;:") + "…"


def _header(message: Message, name: str) -> str:
    try:
        value = message.get(name)
    except (errors.HeaderParseError, IndexError, ValueError, TypeError):
        raise BadPayload(f"unreadable {name} header") from None
    return str(value).strip() if value is not None else ""


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
    metadata: dict[str, Any] = {
        "subject": _header(message, "Subject"),
        "in_reply_to": _bare_id(_header(message, "In-Reply-To")) or None,
        "attachments": _attachments(message.walk()),
    }
    return InboundMessage(
        channel=ChannelName.EMAIL.value,
        sender=sender,
        text=_body_text(message),
        provider_message_id=message_id,
        metadata=metadata,
    )


def _body_text(message: EmailMessage) -> str:
    plain = message.get_body(preferencelist=("plain",))
    if plain is not None:
        return reply_text(_content(plain))
    html = message.get_body(preferencelist=("html",))
    if html is not None:
        return reply_text(html_to_text(_content(html)))
    return ""


def _content(part: EmailMessage) -> str:
    try:
        return str(part.get_content())
    except (LookupError, ValueError):  # unknown or lying charset: keep what can be read
        payload = part.get_payload(decode=True)
        return payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""


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


def reply_text(text: str) -> str:
    """The sender's own words: quoted lines, the history below an attribution line and the signature are dropped."""
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").split("\n")]
    kept: list[str] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        if line == "--" or HISTORY_SEPARATOR.match(line.strip()):
            break
        attribution = _attribution_lines(lines, index)
        if attribution:
            index += attribution
            if not _quoted_next(lines, index):
                break  # the history follows unquoted: nothing below is the sender's
            continue  # quoted history: answers written between the quotes are kept
        if not line.lstrip().startswith(">"):
            kept.append(line)
        index += 1
    return re.sub(r"\n{3,}", "\n\n", "\n".join(kept)).strip()


def _attribution_lines(lines: list[str], index: int) -> int:
    """1 or 2 when an "On ... wrote:" line (mail clients wrap long ones) starts at index, else 0."""
    first = lines[index].strip()
    if ATTRIBUTION.match(first):
        return 1
    if index + 1 < len(lines) and ATTRIBUTION.match(f"{first} {lines[index + 1].strip()}"):
        return 2
    return 0


def _quoted_next(lines: list[str], index: int) -> bool:
    following = next((line for line in lines[index:] if line.strip()), "")
    return following.lstrip().startswith(">")


class _HtmlText(HTMLParser):
    """Visible text of an HTML mail, one line per block; quoted replies (<blockquote>) and styles are skipped."""

    SKIP = frozenset({"blockquote", "head", "script", "style", "template", "title"})
    BLOCKS = frozenset({"br", "div", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "li", "p", "table", "tr"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.chunks: list[str] = []
        self.skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.SKIP:
            self.skipping += 1
        elif tag in self.BLOCKS and not self.skipping:
            self.chunks.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP and self.skipping:
            self.skipping -= 1
        elif tag in self.BLOCKS and not self.skipping:
            self.chunks.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.skipping:
            self.chunks.append(re.sub(r"\s+", " ", data))


def html_to_text(html: str) -> str:
    parser = _HtmlText()
    parser.feed(html)
    parser.close()
    lines = (line.strip() for line in "".join(parser.chunks).split("\n"))
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


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
            headers = HeaderParser(policy=default_policy).parsestr(_content(part))
            return _message_id(headers)
    return ""
