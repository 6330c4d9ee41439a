"""The IMAP poller against a small IMAP server written here (127.0.0.1, threads), the real email parser and the
real inbound path on SQLite or PostgreSQL."""

from __future__ import annotations

import imaplib
import re
import shutil
import socketserver
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from bot import mailserver
from bot.cli_email import email_group
from bot.config import load_settings
from bot.domain import Parsed
from bot.email_poll import MailboxError, poll_mailbox
from bot.inbound import InboundService
from bot.mailserver import MailServer
from bot.models import Debtor, Message
from bot.services import Services
from bot.store import Database
from channels.email import EmailChannel
from tests.conftest import TEST_PUBLIC_URL, TEST_SECRET

LOGIN, PASSWORD = "cobros@aguas.example", 'pa ss"word\\'  # imaplib must quote and escape this password
CREDENTIALS = "cobros%40aguas.example:pa%20ss%22word%5C@"
ATOM_OR_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"|(\S+)')


@dataclass
class StoredMail:
    uid: int
    raw: bytes
    flags: set[str] = field(default_factory=set)


@dataclass
class FakeImap:
    """The mailbox state and the switches tests flip; the protocol lives in _ImapSession."""

    tls: ssl.SSLContext | None = None  # offered through STARTTLS, or from the first byte with implicit_tls
    implicit_tls: bool = False
    mails: list[StoredMail] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    logins: list[tuple[str, bool]] = field(default_factory=list)  # (user, over TLS)
    refuse_store: set[int] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, raw: bytes, *flags: str) -> int:
        uid = len(self.mails) + 1
        self.mails.append(StoredMail(uid, raw, set(flags)))
        return uid

    def seen(self) -> list[int]:
        with self.lock:
            return [mail.uid for mail in self.mails if "\\Seen" in mail.flags]

    def find(self, uid: int) -> tuple[int, StoredMail] | None:
        return next(((seq, mail) for seq, mail in enumerate(self.mails, 1) if mail.uid == uid), None)


class _ImapSession(socketserver.StreamRequestHandler):
    """One client connection speaking the IMAP4rev1 subset imaplib and the poller use: CAPABILITY, STARTTLS, LOGIN,
    SELECT, UID SEARCH UNSEEN, UID FETCH, UID STORE, LOGOUT. Like a real server (RFC 3501 6.4.5), fetching BODY[]
    or RFC822 sets \\Seen; BODY.PEEK[] does not."""

    server: _TcpServer

    def handle(self) -> None:
        self.imap = self.server.imap
        self.encrypted = False
        self.authenticated = False
        if self.imap.implicit_tls:
            self._start_tls()
        self._say("* OK fake IMAP4rev1 ready")
        while line := self.rfile.readline():
            tag, _, rest = line.decode().rstrip("\r\n").partition(" ")
            command, _, args = rest.partition(" ")
            self.imap.commands.append(f"{command.upper()} {args}".strip())
            if not self._dispatch(tag, command.upper(), args):
                return

    def _dispatch(self, tag: str, command: str, args: str) -> bool:
        if command == "LOGOUT":
            self._say("* BYE", f"{tag} OK LOGOUT completed")
            return False
        if command == "CAPABILITY":
            starttls = " STARTTLS" if self.imap.tls and not self.encrypted else ""
            self._say(f"* CAPABILITY IMAP4rev1{starttls}", f"{tag} OK CAPABILITY completed")
        elif command == "STARTTLS" and self.imap.tls and not self.encrypted:
            self._say(f"{tag} OK begin TLS now")
            self._start_tls()
        elif command == "LOGIN":
            self._login(tag, args)
        elif not self.authenticated:
            self._say(f"{tag} BAD log in first")
        elif command == "SELECT":
            ok = _words(args) == ["INBOX"]
            self._say(f"* {len(self.imap.mails)} EXISTS", "* FLAGS (\\Seen)")
            self._say(f"{tag} OK [READ-WRITE] SELECT completed" if ok else f"{tag} NO no such mailbox")
        elif command == "UID":
            self._uid(tag, *args.split(" ", 2))
        else:
            self._say(f"{tag} BAD unknown command")
        return True

    def _login(self, tag: str, args: str) -> None:
        user, password = _words(args)
        self.imap.logins.append((user, self.encrypted))
        self.authenticated = (user, password) == (LOGIN, PASSWORD)
        self._say(f"{tag} OK LOGIN completed" if self.authenticated else f"{tag} NO [AUTHENTICATIONFAILED] no")

    def _uid(self, tag: str, command: str, *args: str) -> None:
        command = command.upper()
        with self.imap.lock:
            if command == "SEARCH" and args == ("UNSEEN",):
                unseen = " ".join(str(mail.uid) for mail in self.imap.mails if "\\Seen" not in mail.flags)
                self._say(f"* SEARCH {unseen}".rstrip(), f"{tag} OK SEARCH completed")
            elif command == "FETCH":
                self._fetch(tag, int(args[0]), args[1].upper())
            elif command == "STORE" and int(args[0]) in self.imap.refuse_store:
                self._say(f"{tag} NO [SERVERBUG] cannot store flags now")
            elif command == "STORE" and args[1].upper().startswith("+FLAGS.SILENT ("):
                found = self.imap.find(int(args[0]))
                if found:
                    found[1].flags.update(args[1].split("(", 1)[1].rstrip(")").split())
                self._say(f"{tag} OK STORE completed")
            else:
                self._say(f"{tag} BAD unsupported UID command")

    def _fetch(self, tag: str, uid: int, items: str) -> None:
        found = self.imap.find(uid)
        if found:  # a message expunged meanwhile just answers nothing
            seq, mail = found
            if "BODY.PEEK[]" not in items:
                mail.flags.add("\\Seen")
            self.wfile.write(f"* {seq} FETCH (UID {uid} BODY[] {{{len(mail.raw)}}}\r\n".encode() + mail.raw + b")\r\n")
        self._say(f"{tag} OK FETCH completed")

    def _say(self, *lines: str) -> None:
        for line in lines:
            self.wfile.write(line.encode() + b"\r\n")
        self.wfile.flush()

    def _start_tls(self) -> None:
        assert self.imap.tls is not None
        self.wfile.flush()
        self.connection = self.imap.tls.wrap_socket(self.connection, server_side=True)
        self.rfile = self.connection.makefile("rb")
        self.wfile = self.connection.makefile("wb")
        self.encrypted = True


class _TcpServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, imap: FakeImap) -> None:
        super().__init__(("127.0.0.1", 0), _ImapSession)
        self.imap = imap

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client refusing our test certificate ends its connection; that is the test's point, not noise."""


def _words(args: str) -> list[str]:
    """IMAP arguments: atoms as they are, quoted strings unquoted and unescaped."""
    return [atom or re.sub(r"\\(.)", r"\1", quoted) for quoted, atom in ATOM_OR_QUOTED.findall(args)]


@pytest.fixture
def imap_server() -> Iterator[Callable[..., tuple[FakeImap, int]]]:
    """start(**FakeImap options) -> (state, port); every server started is stopped after the test."""
    running: list[_TcpServer] = []

    def start(**options: Any) -> tuple[FakeImap, int]:
        server = _TcpServer(FakeImap(**options))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        running.append(server)
        return server.imap, int(server.server_address[1])

    yield start
    for server in running:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, made with the openssl tool."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    folder = tmp_path_factory.mktemp("imap-tls")
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


def email_settings_overrides(database_url: str) -> dict[str, Any]:
    return {
        "database_url": database_url,
        "secret_key": TEST_SECRET,
        "public_url": TEST_PUBLIC_URL,
        "smtp_url": "smtp://127.0.0.1:2525",
        "email_from": "Cobranzas <cobros@aguas.example>",
    }


@pytest.fixture
def parser(database_url: str) -> EmailChannel:
    """The email adapter, used for parsing only: its SMTP server is never dialled."""
    return EmailChannel(load_settings(**email_settings_overrides(database_url)))


@pytest.fixture
def debtor(make_debtor: Callable[..., Debtor]) -> Debtor:
    return make_debtor(email="ana@example.cl")


def mail(number: int, text: str = "quiero pagar", *, sender: str = "Ana <ana@example.cl>", extra: str = "") -> bytes:
    return (
        f"From: {sender}\r\nTo: cobros@aguas.example\r\nSubject: Re: su cuenta\r\n{extra}"
        f"Message-ID: <poll.{number}@example.cl>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{text}\r\n"
    ).encode()


def url(port: int, scheme: str = "imap", credentials: str = CREDENTIALS) -> str:
    return f"{scheme}://{credentials}127.0.0.1:{port}"


def inbound_ids(db: Database) -> list[str | None]:
    with db.session() as session:
        query = select(Message.provider_message_id).where(Message.direction == "in").order_by(Message.id)
        return list(session.scalars(query))


class FailingOn:
    """Wraps the real inbound service and raises on the n-th message it is given, like a database outage."""

    def __init__(self, inbound: InboundService, failing_call: int) -> None:
        self.inbound, self.failing_call, self.calls = inbound, failing_call, 0

    def handle(self, parsed: Parsed) -> object:
        self.calls += 1
        if self.calls == self.failing_call:
            raise RuntimeError("database unavailable")
        return self.inbound.handle(parsed)


# --- the poll -----------------------------------------------------------------------------------------------------


def test_unseen_messages_reach_the_conversation_and_are_marked_seen(
    imap_server: Any, parser: EmailChannel, services: Services, debtor: Debtor, db: Database
) -> None:
    imap, port = imap_server()
    imap.add(mail(1, "quiero pagar"))
    imap.add(mail(2, "ya pagué"), "\\Seen")  # read by a person already: not the bot's
    imap.add(mail(3, "¿cuánto debo?\r\n\r\nEl lun, 23 nov 2026, Aguas escribió:\r\n> Hola Ana"))

    taken = poll_mailbox(url(port), parser, services.inbound)

    assert taken == 2
    assert inbound_ids(db) == ["poll.1@example.cl", "poll.3@example.cl"]
    with db.session() as session:
        bodies = session.scalars(select(Message.body).where(Message.direction == "in").order_by(Message.id))
        assert list(bodies) == ["quiero pagar", "¿cuánto debo?"]  # the same parsing as the webhook
        assert session.scalars(select(Message).where(Message.direction == "out")).first() is not None
    assert imap.seen() == [1, 2, 3]
    assert poll_mailbox(url(port), parser, services.inbound) == 0
    assert imap.logins == [(LOGIN, False), (LOGIN, False)]  # in clear only because the server is this machine
    assert "LOGOUT" in imap.commands


def test_a_message_is_marked_seen_only_after_it_was_handled(
    imap_server: Any, parser: EmailChannel, services: Services, debtor: Debtor
) -> None:
    imap, port = imap_server()
    for number in (1, 2, 3):
        imap.add(mail(number))
    seen_while_handling: list[list[int]] = []

    class Spy:
        def handle(self, parsed: Parsed) -> object:
            seen_while_handling.append(imap.seen())
            return services.inbound.handle(parsed)

    poll_mailbox(url(port), parser, Spy())

    assert seen_while_handling == [[], [1], [1, 2]]
    assert imap.seen() == [1, 2, 3]
    assert not any(command.startswith("UID FETCH") and "PEEK" not in command for command in imap.commands)


def test_a_failure_mid_way_leaves_that_message_and_the_rest_unseen_for_the_next_poll(
    imap_server: Any, parser: EmailChannel, services: Services, debtor: Debtor, db: Database
) -> None:
    imap, port = imap_server()
    for number in (1, 2, 3):
        imap.add(mail(number, f"mensaje {number}"))

    with pytest.raises(RuntimeError, match="database unavailable"):
        poll_mailbox(url(port), parser, FailingOn(services.inbound, failing_call=2))

    assert imap.seen() == [1]
    assert inbound_ids(db) == ["poll.1@example.cl"]
    assert "LOGOUT" in imap.commands  # the connection is closed even so

    assert poll_mailbox(url(port), parser, services.inbound) == 2
    assert imap.seen() == [1, 2, 3]
    assert inbound_ids(db) == ["poll.1@example.cl", "poll.2@example.cl", "poll.3@example.cl"]


def test_a_crash_between_handling_and_marking_seen_reads_the_message_again_harmlessly(
    imap_server: Any, parser: EmailChannel, services: Services, debtor: Debtor, db: Database
) -> None:
    imap, port = imap_server()
    imap.add(mail(1))
    imap.refuse_store.add(1)

    with pytest.raises(MailboxError, match="STORE"):
        poll_mailbox(url(port), parser, services.inbound)
    assert imap.seen() == []

    imap.refuse_store.clear()
    assert poll_mailbox(url(port), parser, services.inbound) == 1

    assert imap.seen() == [1]
    assert inbound_ids(db) == ["poll.1@example.cl"]  # the dedupe on Message-ID kept it to one
    with db.session() as session:
        assert len(session.scalars(select(Message).where(Message.direction == "out")).all()) == 1


def test_limit_takes_the_oldest_first(
    imap_server: Any, parser: EmailChannel, services: Services, debtor: Debtor
) -> None:
    imap, port = imap_server()
    for number in range(1, 6):
        imap.add(mail(number))

    assert poll_mailbox(url(port), parser, services.inbound, limit=2) == 2

    assert imap.seen() == [1, 2]


def test_unreadable_mail_and_auto_replies_are_taken_without_a_conversation(
    imap_server: Any, parser: EmailChannel, services: Services, debtor: Debtor, db: Database
) -> None:
    imap, port = imap_server()
    imap.add(b"this is not an email at all")
    imap.add(mail(2, extra="Auto-Submitted: auto-replied\r\n"))
    imap.add(mail(3, sender="stranger@elsewhere.example"))
    imap.add(mail(4))

    assert poll_mailbox(url(port), parser, services.inbound) == 4

    assert imap.seen() == [1, 2, 3, 4]  # left unseen, the broken one would be fetched and refused forever
    assert inbound_ids(db) == ["poll.4@example.cl"]


def test_a_message_expunged_by_another_client_mid_poll_is_passed_over(
    imap_server: Any, parser: EmailChannel, services: Services, debtor: Debtor, db: Database
) -> None:
    imap, port = imap_server()
    for number in (1, 2, 3):
        imap.add(mail(number))

    class ExpungingTwo:
        def handle(self, parsed: Parsed) -> object:
            with imap.lock:
                imap.mails = [stored for stored in imap.mails if stored.uid != 2]
            return services.inbound.handle(parsed)

    poll_mailbox(url(port), parser, ExpungingTwo())

    assert inbound_ids(db) == ["poll.1@example.cl", "poll.3@example.cl"]
    assert imap.seen() == [1, 3]


def test_an_unknown_mailbox_is_a_mailbox_error(imap_server: Any, parser: EmailChannel, services: Services) -> None:
    _imap, port = imap_server()
    with pytest.raises(MailboxError, match="SELECT Archive"):
        poll_mailbox(url(port), parser, services.inbound, mailbox="Archive")


def test_a_wrong_password_fetches_nothing(imap_server: Any, parser: EmailChannel, services: Services) -> None:
    imap, port = imap_server()
    imap.add(mail(1))

    with pytest.raises(imaplib.IMAP4.error):
        poll_mailbox(url(port, credentials="cobros:wrong@"), parser, services.inbound)

    assert not any(command.startswith(("SELECT", "UID")) for command in imap.commands)


# --- TLS ----------------------------------------------------------------------------------------------------------


def test_imap_url_upgrades_to_starttls_before_logging_in(
    imap_server: Any, parser: EmailChannel, services: Services, debtor: Debtor, certificate: tuple[Path, Path]
) -> None:
    imap, port = imap_server(tls=server_tls(certificate))
    imap.add(mail(1))
    trusted = ssl.create_default_context(cafile=str(certificate[0]))

    assert poll_mailbox(url(port), parser, services.inbound, tls_context=trusted) == 1

    assert imap.logins == [(LOGIN, True)]
    assert imap.commands.index("STARTTLS") < imap.commands.index(next(c for c in imap.commands if "LOGIN" in c))


def test_imaps_url_speaks_tls_from_the_start(
    imap_server: Any, parser: EmailChannel, services: Services, debtor: Debtor, certificate: tuple[Path, Path]
) -> None:
    imap, port = imap_server(tls=server_tls(certificate), implicit_tls=True)
    imap.add(mail(1))
    trusted = ssl.create_default_context(cafile=str(certificate[0]))

    assert poll_mailbox(url(port, scheme="imaps"), parser, services.inbound, tls_context=trusted) == 1

    assert imap.logins == [(LOGIN, True)]
    assert "STARTTLS" not in imap.commands


def test_an_untrusted_certificate_is_refused_before_the_password_is_sent(
    imap_server: Any, parser: EmailChannel, services: Services, certificate: tuple[Path, Path]
) -> None:
    imap, port = imap_server(tls=server_tls(certificate))

    with pytest.raises(ssl.SSLError):
        poll_mailbox(url(port), parser, services.inbound)  # the system's trust store does not know our test CA

    assert imap.logins == []


@pytest.mark.parametrize(
    ("imap_url", "expected"),
    [
        ("imaps://mail.example.com", MailServer("mail.example.com", 993, implicit_tls=True)),
        ("imap://mail.example.com", MailServer("mail.example.com", 143, implicit_tls=False)),
        (f"imaps://{CREDENTIALS}mail.example.com:1993",
         MailServer("mail.example.com", 1993, implicit_tls=True, username=LOGIN, password=PASSWORD)),
    ],
)  # fmt: skip
def test_imap_url_gives_defaults_and_decoded_credentials(imap_url: str, expected: MailServer) -> None:
    server = mailserver.imap_server(imap_url)
    assert server == expected
    assert PASSWORD not in repr(server)


@pytest.mark.parametrize("imap_url", ["pop3://mail.example.com", "imaps://", "imap://mail.example.com:99999"])
def test_a_bad_imap_url_is_refused(imap_url: str) -> None:
    with pytest.raises(ValueError, match="COBRABOT_IMAP_URL"):
        mailserver.imap_server(imap_url)


# --- `cobrabot email poll` ----------------------------------------------------------------------------------------


def cli_env(database_url: str, **extra: str | None) -> dict[str, str | None]:
    variables = {f"COBRABOT_{key.upper()}": value for key, value in email_settings_overrides(database_url).items()}
    return variables | extra


def test_poll_once_from_the_command_line(imap_server: Any, debtor: Debtor, database_url: str, db: Database) -> None:
    imap, port = imap_server()
    imap.add(mail(1))

    result = CliRunner().invoke(email_group, ["poll", "--once"], env=cli_env(database_url, COBRABOT_IMAP_URL=url(port)))

    assert result.exit_code == 0, result.output
    assert "1 message(s) handled" in result.output
    assert inbound_ids(db) == ["poll.1@example.cl"]
    assert imap.seen() == [1]


def test_poll_keeps_polling_until_stopped(
    imap_server: Any, debtor: Debtor, database_url: str, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    imap, port = imap_server()
    imap.add(mail(1))
    naps: list[float] = []

    def sleep(seconds: float) -> None:
        naps.append(seconds)
        if len(naps) == 2:
            raise KeyboardInterrupt  # Ctrl+C during the second wait
        imap.add(mail(2))

    monkeypatch.setattr("bot.cli_email.time.sleep", sleep)

    result = CliRunner().invoke(
        email_group, ["poll", "--interval", "30"], env=cli_env(database_url, COBRABOT_IMAP_URL=url(port))
    )

    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == "stopped"
    assert naps == [30, 30]
    assert inbound_ids(db) == ["poll.1@example.cl", "poll.2@example.cl"]


def test_poll_once_fails_with_exit_1_when_the_server_is_down(database_url: str, db: Database) -> None:
    with socketserver.TCPServer(("127.0.0.1", 0), socketserver.BaseRequestHandler) as probe:
        port = int(probe.server_address[1])  # closed again before the poll: nobody listens there

    result = CliRunner().invoke(email_group, ["poll", "--once", "--imap-url", url(port)], env=cli_env(database_url))

    assert result.exit_code == 1


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--imap-url", "pop3://mail.example.com"], {}, "COBRABOT_IMAP_URL must look like"),
        (["--imap-url", "imaps://mail.example.com"], {"COBRABOT_SMTP_URL": ""}, "the email channel is disabled"),
        ([], {"COBRABOT_IMAP_URL": None}, "Missing option '--imap-url'"),
    ],
)
def test_configuration_errors_exit_2(
    database_url: str, db: Database, args: list[str], env: dict[str, str | None], message: str
) -> None:
    result = CliRunner().invoke(email_group, ["poll", "--once", *args], env=cli_env(database_url) | env)

    assert result.exit_code == 2
    assert message in result.output
