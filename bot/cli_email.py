"""`cobrabot email poll`: read inbound email from an IMAP mailbox, the alternative to POST /webhooks/email."""

from __future__ import annotations

import functools
import logging
import sys
import time
from collections.abc import Callable
from typing import NoReturn

import click

from bot.config import ConfigError, load_settings
from bot.email_poll import poll_mailbox
from bot.mailserver import imap_server
from bot.services import Services, bootstrap
from channels import build_registry
from channels.email import EmailChannel

logger = logging.getLogger(__name__)


@click.group("email")
def email_group() -> None:
    """Inbound email commands."""


@email_group.command("poll")
@click.option(
    "--imap-url",
    envvar="COBRABOT_IMAP_URL",
    required=True,
    help="imaps://user:pass@host:993, or imap://... (STARTTLS when offered). Env: COBRABOT_IMAP_URL.",
)
@click.option("--mailbox", default="INBOX", show_default=True, help="The folder to read.")
@click.option("--once", is_flag=True, help="Poll once and exit (for cron) instead of polling every --interval.")
@click.option("--interval", default=60, show_default=True, type=click.IntRange(5, 3600), help="Seconds between polls.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 1000), help="Most messages per poll.")
def poll_command(imap_url: str, mailbox: str, once: bool, interval: int, limit: int) -> None:
    """Hand each unseen email to the bot, marking it seen once handled (a failed one is read again next poll).

    With --once: exits 0 when the poll succeeded, 1 when it failed; 2 on a configuration error.
    """
    try:
        imap_server(imap_url)
    except ValueError as exc:
        _fail(str(exc))
    services = _services()
    try:
        channel = _email_channel(services)
        poll = functools.partial(poll_mailbox, imap_url, channel, services.inbound, mailbox=mailbox, limit=limit)
        if once:
            taken = _poll_once(poll)
            if taken is None:
                sys.exit(1)
            click.echo(f"{taken} message(s) handled")
            return
        click.echo(f"polling {mailbox} every {interval} s (Ctrl+C to stop)")
        _poll_forever(poll, interval)
    finally:
        services.database.dispose()


def _services() -> Services:
    try:
        settings = load_settings()
    except ConfigError as exc:
        _fail(str(exc))
    return bootstrap(settings, registry=build_registry(settings))


def _email_channel(services: Services) -> EmailChannel:
    channel = next((channel for channel in services.registry if isinstance(channel, EmailChannel)), None)
    if channel is None:
        reason = services.settings.channel_status()["email"]
        _fail(f"the email channel is disabled ({reason}): the bot could not answer what it reads")
    return channel


def _poll_once(poll: Callable[[], int]) -> int | None:
    """Messages taken, or None when the poll failed (logged; what was not handled stays unseen for the next)."""
    try:
        return poll()
    except Exception:
        # Whatever broke (mail server, database, a bug), the next poll retries: nothing unhandled was marked seen.
        logger.exception("email poll failed; unhandled messages stay unseen and are read again")
        return None


def _poll_forever(poll: Callable[[], int], interval: int) -> None:
    try:
        while True:
            _poll_once(poll)
            time.sleep(interval)
    except KeyboardInterrupt:
        click.echo("stopped")


def _fail(message: str) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(2)
