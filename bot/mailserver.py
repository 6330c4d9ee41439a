"""Mail server addresses from URLs (smtp://, smtps://, imap://, imaps://), shared by sending and polling."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from urllib.parse import unquote, urlparse


@dataclass(frozen=True, slots=True)
class MailServer:
    host: str
    port: int
    implicit_tls: bool
    username: str | None = None
    password: str = field(default="", repr=False)

    @classmethod
    def from_url(cls, url: str, *, variable: str, plain: tuple[str, int], tls: tuple[str, int]) -> MailServer:
        """`plain`/`tls`: (scheme, default port), e.g. ("smtp", 587) and ("smtps", 465)."""
        parsed = urlparse(url)
        try:
            port = parsed.port
        except ValueError:
            raise ValueError(f"{variable} has an invalid port") from None
        if parsed.scheme not in {plain[0], tls[0]} or not parsed.hostname:
            example = f"{tls[0]}://user:pass@host:{tls[1]} or {plain[0]}://host:{plain[1]}"
            raise ValueError(f"{variable} must look like {example}")
        implicit_tls = parsed.scheme == tls[0]
        return cls(
            host=parsed.hostname,
            port=port or (tls[1] if implicit_tls else plain[1]),
            implicit_tls=implicit_tls,
            username=unquote(parsed.username) if parsed.username else None,
            password=unquote(parsed.password or ""),
        )


def smtp_server(url: str) -> MailServer:
    return MailServer.from_url(url, variable="COBRABOT_SMTP_URL", plain=("smtp", 587), tls=("smtps", 465))


def imap_server(url: str) -> MailServer:
    return MailServer.from_url(url, variable="COBRABOT_IMAP_URL", plain=("imap", 143), tls=("imaps", 993))


def may_send_credentials(host: str, encrypted: bool) -> bool:
    """Credentials (SMTP or IMAP) go over TLS, or in clear only to this machine (a local relay); a stripped
    STARTTLS must not hand the password to whoever sits on the path."""
    if encrypted or host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
