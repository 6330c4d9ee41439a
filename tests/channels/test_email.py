"""Email adapter against a real SMTP server (aiosmtpd on 127.0.0.1) and recorded raw messages in tests/data/email."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from bot.config import Settings, load_settings
from bot.domain import (
    BadPayload,
    Button,
    DeliveryStatus,
    InvalidSignature,
    OutboundMessage,
    Parsed,
    PermanentError,
    TransientError,
    WebhookRequest,
)
from bot.mailserver import MailServer, may_send_credentials, smtp_server
from bot.ports import Channel
from channels.email import SECRET_HEADER, EmailChannel
from channels.email_text import reply_text, text_to_html

DATA = Path(__file__).parents[1] / "data" / "email"
SECRET = "inbound-email-secret"
FROM = "Cobranzas Aguas del Valle <cobros@cobrabot.example>"
PUBLIC_URL = "https://cobrabot.example"
P = '<p style="margin: 0 0 1em 0">'  # how the HTML part opens a paragraph
LOGIN, PASSWORD = "cobros", "s3cret/pass"
CREDENTIALS = f"{LOGIN}:s3cret%2Fpass@"  # the password percent-encoded, as it must be in the URL


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    login: bytes | None
    tls: bool


class Mailbox:
    """aiosmtpd handler keeping what it accepts; set rcpt_reply or data_reply to make it refuse instead."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.rcpt_reply: str | None = None
        self.data_reply: str | None = None

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        if self.rcpt_reply:
            return self.rcpt_reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.data_reply:
            return self.data_reply
        assert isinstance(envelope.content, bytes)
        login = session.auth_data.login if isinstance(session.auth_data, LoginPassword) else None
        # SMTP carries CRLF; LF keeps the tests' expected texts readable.
        message = message_from_bytes(envelope.content.replace(b"\r\n", b"\n"), policy=default_policy)
        assert isinstance(message, EmailMessage)
        tls = server.transport is not None and server.transport.get_extra_info("ssl_object") is not None
        received = Received(str(envelope.mail_from), list(envelope.rcpt_tos), message, login, tls)
        self.received.append(received)
        return "250 Message accepted for delivery"


def check_password(server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any) -> AuthResult:
    ok = isinstance(data, LoginPassword) and (data.login, data.password) == (LOGIN.encode(), PASSWORD.encode())
    # handled=False: aiosmtpd answers 535 itself when the check fails.
    return AuthResult(success=ok, handled=False, auth_data=data)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def mailbox() -> Mailbox:
    return Mailbox()


@pytest.fixture
def smtp_servers(mailbox: Mailbox) -> Iterator[Any]:
    """Starts aiosmtpd controllers on 127.0.0.1 (stopped after the test): start(port=None, **smtp_options)."""
    running: list[Controller] = []

    def start(port: int | None = None, **options: Any) -> Controller:
        controller = Controller(
            mailbox, hostname="127.0.0.1", port=port or free_port(), server_hostname="smtp.test", **options
        )
        controller.start()
        running.append(controller)
        return controller

    yield start
    for controller in running:
        controller.stop()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, made with the openssl tool (no Python crypto package needed)."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def server_tls(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    return context


def settings_for(port: int, *, scheme: str = "smtp", credentials: str = "", secret: str | None = SECRET) -> Settings:
    return load_settings(
        smtp_url=f"{scheme}://{credentials}127.0.0.1:{port}",
        email_from=FROM,
        email_webhook_secret=secret,
        public_url=PUBLIC_URL,
    )


def channel_for(port: int, **options: Any) -> EmailChannel:
    tls_context = options.pop("tls_context", None)
    timeout = options.pop("timeout", 5.0)
    return EmailChannel(settings_for(port, **options), timeout=timeout, tls_context=tls_context)


def receiver(secret: str | None = SECRET) -> EmailChannel:
    """A channel only used for inbound parsing: its SMTP port is never dialled."""
    return channel_for(2525, secret=secret)


def reminder(**metadata: Any) -> OutboundMessage:
    return OutboundMessage(
        channel="email",
        recipient="Ana.Perez@example.cl",
        text="Hola Ana María, su saldo con Aguas del Valle es de $45.990 y vence el 5 de diciembre.",
        message_id=42,
        metadata=metadata,
    )


def webhook(body: bytes, secret: str | None = SECRET) -> WebhookRequest:
    headers = {"Content-Type": "message/rfc822"}
    if secret is not None:
        headers[SECRET_HEADER] = secret
    return WebhookRequest(url="https://cobrabot.example/webhooks/email", method="POST", headers=headers, body=body)


def fixture_bytes(name: str) -> bytes:
    return (DATA / name).read_bytes()


def parse(name: str) -> Parsed:
    return receiver().parse(webhook(fixture_bytes(name)))


# --- construction -------------------------------------------------------------------------------------------------


def test_is_a_channel_without_buttons_or_length_limit() -> None:
    channel = channel_for(2525)
    assert isinstance(channel, Channel)
    assert channel.name == "email"
    assert channel.capabilities.max_length is None
    assert not channel.capabilities.buttons


@pytest.mark.parametrize(
    ("overrides", "variable"),
    [({"smtp_url": None}, "COBRABOT_SMTP_URL"), ({"email_from": None}, "COBRABOT_EMAIL_FROM")],
)
def test_refuses_to_start_without_smtp_url_or_sender(overrides: dict[str, Any], variable: str) -> None:
    settings = load_settings(**({"smtp_url": "smtp://127.0.0.1:2525", "email_from": FROM} | overrides))
    with pytest.raises(ValueError, match=variable):
        EmailChannel(settings)


def test_smtp_url_gives_defaults_and_decoded_credentials() -> None:
    assert smtp_server("smtp://mail.example.com") == MailServer("mail.example.com", 587, implicit_tls=False)
    server = smtp_server(f"smtps://{CREDENTIALS}mail.example.com")
    assert (server.port, server.implicit_tls, server.username, server.password) == (465, True, LOGIN, PASSWORD)
    assert PASSWORD not in repr(server)


@pytest.mark.parametrize(
    ("host", "encrypted", "allowed"),
    [("mail.example.com", True, True), ("mail.example.com", False, False), ("10.0.0.5", False, False),
     ("127.0.0.1", False, True), ("::1", False, True), ("localhost", False, True)],
)  # fmt: skip
def test_credentials_travel_in_clear_only_to_this_machine(host: str, encrypted: bool, allowed: bool) -> None:
    assert may_send_credentials(host, encrypted) is allowed


# --- sending ------------------------------------------------------------------------------------------------------


def parts(sent: EmailMessage) -> tuple[str, str]:
    """The plain and HTML alternatives of a sent email, asserting the multipart/alternative shape."""
    assert sent.get_content_type() == "multipart/alternative"
    plain, html = sent.iter_parts()
    assert (plain.get_content_type(), html.get_content_type()) == ("text/plain", "text/html")
    assert plain.get_content_charset() == html.get_content_charset() == "utf-8"
    assert isinstance(plain, EmailMessage) and isinstance(html, EmailMessage)
    return plain.get_content(), html.get_content()


def test_sends_a_bot_reminder_with_one_click_unsubscribe_and_auto_submitted(
    smtp_servers: Any, mailbox: Mailbox
) -> None:
    server = smtp_servers()
    url = f"{PUBLIC_URL}/u/signed-token"
    message = reminder(subject="Su cuenta con Aguas del Valle", initiated_by="bot", unsubscribe_url=url)

    result = channel_for(server.port).send(message)

    [received] = mailbox.received
    sent = received.message
    assert received.rcpt_tos == ["Ana.Perez@example.cl"]
    assert received.mail_from == "cobros@cobrabot.example"
    assert sent["From"] == FROM
    assert sent["To"] == "Ana.Perez@example.cl"
    assert sent["Subject"] == "Su cuenta con Aguas del Valle"
    assert sent["Message-ID"] == f"<{result.provider_message_id}>"
    assert result.provider_message_id.endswith("@cobrabot.example")
    assert result.status == "sent"
    assert sent["List-Unsubscribe"] == f"<mailto:cobros@cobrabot.example?subject=unsubscribe>, <{url}>"
    assert sent["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"  # RFC 8058
    assert sent["Auto-Submitted"] == "auto-generated"
    assert sent["Date"] is not None
    plain, html = parts(sent)
    assert plain.strip() == message.text
    assert "<p" in html and "Ana María" in html and "$45.990" in html


def test_a_reply_threads_under_the_debtors_email_without_auto_submitted(smtp_servers: Any, mailbox: Mailbox) -> None:
    server = smtp_servers()
    message = reminder(in_reply_to="<CAF+reply.0001@mail.example.cl>")

    channel_for(server.port).send(message)

    sent = mailbox.received[0].message
    assert sent["Auto-Submitted"] is None
    assert sent["In-Reply-To"] == sent["References"] == "<CAF+reply.0001@mail.example.cl>"
    # No unsubscribe URL: only the mailto, and no one-click promise.
    assert sent["List-Unsubscribe"] == "<mailto:cobros@cobrabot.example?subject=unsubscribe>"
    assert sent["List-Unsubscribe-Post"] is None
    # No subject given: the first words of the text, cut at a word boundary.
    assert sent["Subject"] == "Hola Ana María, su saldo con Aguas del Valle es de $45.990 y…"


@pytest.mark.parametrize(
    "references",
    [["<first.1@cobrabot.example>", "second.2@example.cl"], "<first.1@cobrabot.example> <second.2@example.cl>"],
)
def test_references_carry_the_thread_and_end_with_the_parent(
    smtp_servers: Any, mailbox: Mailbox, references: list[str] | str
) -> None:
    server = smtp_servers()
    message = reminder(in_reply_to="third.3@example.cl", references=references)

    channel_for(server.port).send(message)

    sent = mailbox.received[0].message
    assert sent["In-Reply-To"] == "<third.3@example.cl>"
    # Long enough to be folded onto the next line, hence split().
    assert sent["References"].split() == ["<first.1@cobrabot.example>", "<second.2@example.cl>", "<third.3@example.cl>"]


def test_no_list_unsubscribe_when_nothing_would_honour_it(smtp_servers: Any, mailbox: Mailbox) -> None:
    """Without inbound email (no webhook secret, no IMAP) nobody reads the mailto; an http:// URL cannot be
    one-click (RFC 8058 wants https). Promising either would be a lie."""
    server = smtp_servers()

    channel_for(server.port, secret=None).send(reminder(unsubscribe_url="http://cobrabot.example/u/token"))

    sent = mailbox.received[0].message
    assert sent["List-Unsubscribe"] is None
    assert sent["List-Unsubscribe-Post"] is None


def test_one_click_only_without_mailto_when_inbound_email_is_off(smtp_servers: Any, mailbox: Mailbox) -> None:
    server = smtp_servers()
    url = f"{PUBLIC_URL}/u/token"

    channel_for(server.port, secret=None).send(reminder(unsubscribe_url=url))

    sent = mailbox.received[0].message
    assert sent["List-Unsubscribe"] == f"<{url}>"
    assert sent["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_the_html_part_escapes_what_the_text_carries(smtp_servers: Any, mailbox: Mailbox) -> None:
    server = smtp_servers()
    text = (
        "Hola <script>alert('x')</script> & \"amigos\",\nsu saldo es $45.990.\n\n"
        f"Pague aquí: {PUBLIC_URL}/l/AB12CD.\nNo haga clic en https://cobrabot.example.evil.com/p/x"
    )
    message = OutboundMessage(channel="email", recipient="ana@example.cl", text=text, metadata={"locale": "es-CL"})

    channel_for(server.port).send(message)

    plain, html = parts(mailbox.received[0].message)
    assert plain.strip() == text
    assert "<script" not in html
    assert "Hola &lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; &quot;amigos&quot;,<br>" in html
    assert f'<a href="{PUBLIC_URL}/l/AB12CD">{PUBLIC_URL}/l/AB12CD</a>.' in html
    assert "https://cobrabot.example.evil.com/p/x</p>" in html and html.count("<a ") == 1
    assert '<html lang="es-CL">' in html
    assert "<img" not in html and "src=" not in html


def test_buttons_degrade_to_numbered_lines(smtp_servers: Any, mailbox: Mailbox) -> None:
    server = smtp_servers()
    buttons = (Button("Pagar ahora", "pay_now"), Button("Plan de pagos", "request_plan"))
    message = OutboundMessage(channel="email", recipient="ana@example.cl", text="¿Cómo quiere pagar?", buttons=buttons)

    channel_for(server.port).send(message)

    plain, html = parts(mailbox.received[0].message)
    assert plain.strip() == "¿Cómo quiere pagar?\n\n1. Pagar ahora\n2. Plan de pagos"
    assert '<p style="margin: 0 0 1em 0">1. Pagar ahora<br>\n2. Plan de pagos</p>' in html


@pytest.mark.parametrize(
    ("text", "body"),
    [
        ("Uno\n\n\n  \nDos\r\nTres", f"{P}Uno</p>\n{P}Dos<br>\nTres</p>"),
        (f"({PUBLIC_URL}/p/t?x=1&y=2)", f'(<a href="{PUBLIC_URL}/p/t?x=1&amp;y=2">{PUBLIC_URL}/p/t?x=1&amp;y=2</a>)'),
        (f'{PUBLIC_URL}/p/"onmouseover="x', f'<a href="{PUBLIC_URL}/p/">{PUBLIC_URL}/p/</a>&quot;onmouseover=&quot;x'),
        ("http://cobrabot.example/p/t", "http://cobrabot.example/p/t"),
        (f"{PUBLIC_URL}@evil.example/", f"{PUBLIC_URL}@evil.example/"),
    ],
)  # fmt: skip
def test_text_to_html_links_only_our_own_urls(text: str, body: str) -> None:
    html = text_to_html(text, link_prefix=PUBLIC_URL, locale="<en>")
    assert body in html
    assert "<html>" in html  # a locale that is no language tag is left out, not escaped into the tag


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_logs_in_when_the_url_has_credentials(smtp_servers: Any, mailbox: Mailbox) -> None:
    server = smtp_servers(authenticator=check_password, auth_required=True, auth_require_tls=False)

    channel_for(server.port, credentials=CREDENTIALS).send(reminder())

    [received] = mailbox.received
    assert received.login == LOGIN.encode()
    assert not received.tls  # allowed in clear only because the server is this machine


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
@pytest.mark.parametrize(("credentials", "code"), [("", "530"), (f"{LOGIN}:wrong@", "535")])
def test_missing_or_wrong_credentials_are_retried_not_blamed_on_the_debtor(
    smtp_servers: Any, mailbox: Mailbox, credentials: str, code: str
) -> None:
    # Our own login is wrong: a permanent error would move every debtor off email. It is retried (and logged).
    server = smtp_servers(authenticator=check_password, auth_required=True, auth_require_tls=False)

    with pytest.raises(TransientError) as caught:
        channel_for(server.port, credentials=credentials).send(reminder())

    assert f"SMTP {code}" in str(caught.value)
    assert mailbox.received == []


def test_upgrades_to_starttls_before_logging_in(
    smtp_servers: Any, mailbox: Mailbox, certificate: tuple[Path, Path]
) -> None:
    server = smtp_servers(
        tls_context=server_tls(certificate), require_starttls=True, authenticator=check_password, auth_required=True
    )
    trusted = ssl.create_default_context(cafile=str(certificate[0]))

    channel_for(server.port, credentials=CREDENTIALS, tls_context=trusted).send(reminder())

    [received] = mailbox.received
    assert received.tls
    assert received.login == LOGIN.encode()


def test_smtps_url_speaks_tls_from_the_start(
    smtp_servers: Any, mailbox: Mailbox, certificate: tuple[Path, Path]
) -> None:
    server = smtp_servers(ssl_context=server_tls(certificate))
    trusted = ssl.create_default_context(cafile=str(certificate[0]))

    channel_for(server.port, scheme="smtps", tls_context=trusted).send(reminder())

    assert mailbox.received[0].tls


def test_an_untrusted_certificate_is_not_accepted(
    smtp_servers: Any, mailbox: Mailbox, certificate: tuple[Path, Path]
) -> None:
    server = smtp_servers(tls_context=server_tls(certificate), require_starttls=True)

    with pytest.raises(TransientError):
        channel_for(server.port).send(reminder())

    assert mailbox.received == []


def test_server_down_is_transient() -> None:
    with pytest.raises(TransientError):
        channel_for(free_port()).send(reminder())


@pytest.fixture
def mute_server() -> Iterator[int]:
    """Accepts TCP connections (the kernel's backlog) but never says a word."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        yield int(listener.getsockname()[1])


@pytest.fixture
def hanging_up_server() -> Iterator[int]:
    """Accepts one connection and closes it before the SMTP greeting."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)

    def hang_up() -> None:
        connection, _ = listener.accept()
        connection.close()

    thread = threading.Thread(target=hang_up, daemon=True)
    thread.start()
    yield int(listener.getsockname()[1])
    thread.join(timeout=5)
    listener.close()


def test_a_server_that_never_greets_times_out_as_transient(mute_server: int) -> None:
    with pytest.raises(TransientError):
        channel_for(mute_server, timeout=0.3).send(reminder())


def test_a_server_that_hangs_up_is_transient(hanging_up_server: int) -> None:
    with pytest.raises(TransientError):
        channel_for(hanging_up_server).send(reminder())


@pytest.mark.parametrize("stage", ["rcpt_reply", "data_reply"])
def test_451_temporary_failure_is_transient(smtp_servers: Any, mailbox: Mailbox, stage: str) -> None:
    setattr(mailbox, stage, "451 4.3.0 Try again later")
    server = smtp_servers()

    with pytest.raises(TransientError):
        channel_for(server.port).send(reminder())


def test_550_recipient_refused_is_permanent_unreachable(smtp_servers: Any, mailbox: Mailbox) -> None:
    mailbox.rcpt_reply = "550 5.1.1 <Ana.Perez@example.cl>: Recipient address rejected: User unknown"
    server = smtp_servers()

    with pytest.raises(PermanentError) as caught:
        channel_for(server.port).send(reminder())

    assert caught.value.code == "unreachable"
    assert "Ana.Perez" not in str(caught.value)  # addresses stay out of errors that end up in logs


def test_other_5xx_is_permanent_with_its_code(smtp_servers: Any, mailbox: Mailbox) -> None:
    mailbox.data_reply = "554 5.7.1 Message rejected as spam"
    server = smtp_servers()

    with pytest.raises(PermanentError) as caught:
        channel_for(server.port).send(reminder())

    assert caught.value.code == "554"


def test_a_recipient_that_is_no_address_fails_without_calling_the_server() -> None:
    message = OutboundMessage(channel="email", recipient="+56961234567", text="Hola")
    with pytest.raises(PermanentError) as caught:
        channel_for(free_port()).send(message)
    assert caught.value.code == "unreachable"


def test_smtp_down_then_back_the_same_email_is_delivered(smtp_servers: Any, mailbox: Mailbox) -> None:
    """Fault test: SMTP server down -> the send is retryable, and succeeds once the server returns."""
    port = free_port()
    channel = channel_for(port)
    message = reminder(subject="Recordatorio", initiated_by="bot")

    with pytest.raises(TransientError):
        channel.send(message)
    assert mailbox.received == []

    smtp_servers(port=port)
    result = channel.send(message)

    [received] = mailbox.received
    assert received.message["Message-ID"] == f"<{result.provider_message_id}>"
    assert received.message["Subject"] == "Recordatorio"


def test_a_reply_to_a_sent_email_points_back_at_its_provider_id(smtp_servers: Any, mailbox: Mailbox) -> None:
    server = smtp_servers()
    channel = channel_for(server.port)
    result = channel.send(reminder(subject="Su cuenta"))
    reply = EmailMessage()
    reply["From"] = "Ana <ana.perez@example.cl>"
    reply["To"] = mailbox.received[0].message["From"]
    reply["Subject"] = "Re: Su cuenta"
    reply["Message-ID"] = "<answer.1@example.cl>"
    reply["In-Reply-To"] = mailbox.received[0].message["Message-ID"]
    reply.set_content("Pago el viernes.")

    [inbound] = channel.parse(webhook(reply.as_bytes())).messages

    assert inbound.metadata["in_reply_to"] == result.provider_message_id


# --- receiving ----------------------------------------------------------------------------------------------------


def test_plain_reply_drops_the_quoted_history() -> None:
    [message] = parse("reply_plain.eml").messages

    assert message.channel == "email"
    assert message.sender == "ana.perez@example.cl"
    assert message.text == "I can pay 20000 on Friday.\nThe rest next month, is that ok?\n\nThanks,\nAna"
    assert message.provider_message_id == "CAF+reply.0001@mail.example.cl"
    assert message.metadata == {
        "subject": "Re: Your account with Aguas del Valle",
        "in_reply_to": "173000000000.4242.1111@cobrabot.example",
        "attachments": [],
    }


def test_crlf_line_endings_parse_the_same() -> None:
    body = fixture_bytes("reply_plain.eml").replace(b"\n", b"\r\n")
    [message] = receiver().parse(webhook(body)).messages
    assert message.text.endswith("Thanks,\nAna")


def test_spanish_reply_drops_the_el_escribio_block_and_prefers_plain_text() -> None:
    [message] = parse("reply_spanish.eml").messages

    assert message.sender == "ana@example.cl"
    assert message.text == "Puedo pagar el viernes 5 de diciembre, mañana les confirmo."
    assert message.metadata["subject"] == "Re: Su cuenta con Aguas del Valle"


def test_html_only_email_becomes_text_without_the_quote() -> None:
    [message] = parse("html_only.eml").messages

    assert message.text == "Hola, ya pagué la factura F-1 & la F-2.\n¿Me envían el comprobante?"


def test_attachments_are_listed_not_kept() -> None:
    [message] = parse("with_attachments.eml").messages

    assert message.text == "Adjunto el comprobante de la transferencia.\n\nAna"
    assert message.metadata["attachments"] == [
        {"filename": "comprobante.pdf", "content_type": "application/pdf", "size": 1040},
        {"filename": "transferencia año.jpg", "content_type": "image/jpeg", "size": 500},
    ]
    assert "%PDF" not in repr(message)


def test_iso_8859_1_label_with_windows_1252_bytes_reads_as_outlook_meant_it() -> None:
    [message] = parse("reply_latin1_outlook.eml").messages

    assert message.sender == "jose.munoz@example.cl"
    # =93 =94 =80 are "“", "”" and "€" in windows-1252; read as ISO-8859-1 they would be control characters.
    assert message.text == "Pagaré el miércoles; el monto “$45.990” ya incluye los 3 € de comisión?"
    assert message.metadata["subject"] == "RE: Su cuenta con Aguas del Valle – año 2026"


def test_windows_1252_8bit_body_and_encoded_word_subject() -> None:
    [message] = parse("reply_windows1252.eml").messages

    assert message.text == "¿Cuánto debo en total? Puedo pagar 10.000 € — mañana."
    assert message.metadata["subject"] == "Re: “Su cuenta” – ¿cuánto es?"


@pytest.mark.parametrize(
    ("subject", "content_type", "body", "expected_subject", "expected_text"),
    [
        # Raw 8-bit Latin-1 in a header (no encoded word) and an HTML body labelled ISO-8859-1.
        (b"Re: Pagar\xe9 ma\xf1ana", b"text/html; charset=ISO-8859-1", b"<p>Pagar\xe9 ma\xf1ana \x80 100</p>",
         "Re: Pagaré mañana", "Pagaré mañana € 100"),
        # UTF-8 bytes under a us-ascii label (or none at all): read as the UTF-8 they are.
        (b"Re: Pagar\xc3\xa9", b"text/plain; charset=us-ascii", "Pagaré mañana".encode(), "Re: Pagaré",
         "Pagaré mañana"),
        (b"Re: cuenta", b"text/plain", "Pagaré".encode("cp1252"), "Re: cuenta", "Pagaré"),
        # A charset nobody knows: what is readable stays.
        (b"Re: cuenta", b"text/plain; charset=x-unknown-42", b"Pago hoy", "Re: cuenta", "Pago hoy"),
    ],
)  # fmt: skip
def test_mislabelled_and_8bit_charsets_are_read_like_mail_clients_read_them(
    subject: bytes, content_type: bytes, body: bytes, expected_subject: str, expected_text: str
) -> None:
    raw = (b"From: Ana <ana@example.cl>\r\nSubject: " + subject + b"\r\nMessage-ID: <cs.1@example.cl>\r\n"
           b"Content-Type: " + content_type + b"\r\nContent-Transfer-Encoding: 8bit\r\n\r\n" + body)  # fmt: skip

    [message] = receiver().parse(webhook(raw)).messages

    assert (message.metadata["subject"], message.text) == (expected_subject, expected_text)


def test_parse_raw_reads_the_same_message_without_the_webhook_secret() -> None:
    """The IMAP poller's path: no HTTP request, no secret header, the same parsing."""
    raw = fixture_bytes("reply_plain.eml")
    [polled] = receiver(secret=None).parse_raw(raw).messages
    [posted] = receiver().parse(webhook(raw)).messages
    assert polled == replace(posted, received_at=polled.received_at)


def test_an_email_to_our_unsubscribe_mailto_is_the_unsubscribe_keyword() -> None:
    raw = plain_email(subject="unsubscribe").replace(b"Pago el viernes.", b"This message was sent by Gmail.")
    [message] = receiver().parse(webhook(raw)).messages
    assert message.text == "unsubscribe"


def plain_email(*headers: str, subject: str = "Re: Su cuenta") -> bytes:
    lines = ["From: Ana <ana@example.cl>", "To: cobros@cobrabot.example", f"Subject: {subject}",
             "Message-ID: <plain.5@example.cl>", *headers, "Content-Type: text/plain; charset=utf-8", "",
             "Pago el viernes."]  # fmt: skip
    return "\r\n".join(lines).encode()


def test_auto_reply_is_acknowledged_and_ignored() -> None:
    assert parse("auto_reply.eml") == Parsed()


@pytest.mark.parametrize(
    ("headers", "subject"),
    [(("Auto-Submitted: auto-generated",), "Su cuenta"), (("X-Autoreply: yes",), "Su cuenta"),
     (("Precedence: auto_reply",), "Su cuenta"), ((), "Out of Office: back on Monday"),
     ((), "Automatic reply: Your account"), ((), "Respuesta automática: Su cuenta")],
)  # fmt: skip
def test_autoresponders_are_never_answered(headers: tuple[str, ...], subject: str) -> None:
    assert receiver().parse(webhook(plain_email(*headers, subject=subject))) == Parsed()


def test_auto_submitted_no_is_a_person() -> None:
    [message] = receiver().parse(webhook(plain_email("Auto-Submitted: no"))).messages
    assert message.text == "Pago el viernes."


@pytest.mark.parametrize(
    ("name", "original_id", "code"),
    [
        ("bounce_failed.eml", "173000000000.4242.2222@cobrabot.example", "5.1.1"),
        ("bounce_headers_only.eml", "173000000000.4242.3333@cobrabot.example", "5.2.2"),
    ],
)
def test_bounce_marks_the_original_message_failed(name: str, original_id: str, code: str) -> None:
    assert parse(name) == Parsed(statuses=(DeliveryStatus("email", original_id, "failed", error_code=code),))


def test_a_delay_report_changes_nothing() -> None:
    body = fixture_bytes("bounce_headers_only.eml").replace(b"Action: failed", b"Action: delayed")
    assert receiver().parse(webhook(body)) == Parsed()


@pytest.mark.parametrize("secret", ["wrong-secret", "", None])
def test_wrong_or_missing_secret_is_refused(secret: str | None) -> None:
    with pytest.raises(InvalidSignature):
        receiver().parse(webhook(fixture_bytes("reply_plain.eml"), secret=secret))


def test_secret_header_name_is_case_insensitive() -> None:
    request = WebhookRequest(url="", method="POST", headers={SECRET_HEADER.lower(): SECRET}, body=plain_email())
    assert len(receiver().parse(request).messages) == 1


def test_inbound_is_refused_while_no_secret_is_configured() -> None:
    channel = receiver(secret=None)
    with pytest.raises(InvalidSignature):
        channel.parse(webhook(fixture_bytes("reply_plain.eml"), secret=""))


@pytest.mark.parametrize(
    "body",
    [b"", b"\x00\xff\xfe not an email at all \x00", b"{\"text\": \"hola\"}",
     plain_email().replace(b"Message-ID: <plain.5@example.cl>\r\n", b""),
     plain_email().replace(b"From: Ana <ana@example.cl>\r\n", b"")],
)  # fmt: skip
def test_garbage_or_incomplete_email_is_a_bad_payload(body: bytes) -> None:
    with pytest.raises(BadPayload):
        receiver().parse(webhook(body))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Ok, pago mañana.\n-- \nAna Pérez\n+56 9 6123 4567", "Ok, pago mañana."),
        ("Sí.\n\n-----Original Message-----\nFrom: Cobranzas\nHola Ana", "Sí."),
        ("Sí.\n\n________________________________\nDe: Cobranzas\nHola Ana", "Sí."),
        ("Listo.\n\nOn Mon, Nov 23, 2026, Cobranzas wrote:\nHello Ana, your balance", "Listo."),
        # Answers written between the quoted lines are the debtor's and stay.
        ("El lun, 23 nov 2026, Cobranzas escribió:\n> ¿Puede pagar hoy?\nNo, el viernes.\n> ¿Cuánto?\nTodo.",
         "No, el viernes.\nTodo."),
    ],
)  # fmt: skip
def test_reply_text_keeps_only_the_senders_words(text: str, expected: str) -> None:
    assert reply_text(text) == expected
