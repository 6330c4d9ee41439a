"""`cobrabot chat`: talk to the bot in the terminal, as a debtor would, without touching real data.

The debtor (and their creditor and invoices) is copied into a private scratch database, so promises,
plans and opt-outs made while trying a flow never reach the real one and nothing is ever sent.
"""

from __future__ import annotations

import itertools
import tempfile
from typing import Any, TypeVar

import click
from sqlalchemy import inspect, select
from sqlalchemy.orm import Session

from bot.config import ConfigError, Settings, load_settings
from bot.domain import InboundMessage
from bot.migrate import upgrade
from bot.models import Base, Creditor, Debtor, Invoice
from bot.services import Services, bootstrap
from bot.store import Database

Model = TypeVar("Model", bound=Base)


@click.command("chat")
@click.option("--debtor", "external_ref", required=True, help="The debtor's external ref.")
@click.option("--creditor", "creditor_slug", default=None, help="Creditor slug (needed if the ref is ambiguous).")
@click.option("--channel", type=click.Choice(["sms", "whatsapp", "telegram", "email", "webchat"]), default="sms")
@click.option("--locale", default=None, help="Speak to the debtor in this locale (es, en, es-MX, ...).")
@click.option("--verified", is_flag=True, help="Skip the identity check, as the portal's web chat does.")
def chat_command(
    external_ref: str, creditor_slug: str | None, channel: str, locale: str | None, verified: bool
) -> None:
    """Chat with the bot as debtor EXTERNAL_REF would; type 'exit' or Ctrl+D to stop."""
    try:
        settings = load_settings()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    with tempfile.TemporaryDirectory(prefix="cobrabot-chat-") as scratch:
        sandbox, debtor_id = _sandbox(settings, f"sqlite:///{scratch}/sandbox.db", external_ref, creditor_slug, locale)
        _converse(sandbox, debtor_id, channel, verified)
        sandbox.database.dispose()


def _converse(sandbox: Services, debtor_id: int, channel: str, verified: bool) -> None:
    click.echo(f"Chatting on {channel} (sandbox: nothing is saved or sent). Type 'exit' to stop.")
    for number in itertools.count(1):
        text = _prompt()
        if text is None or text.strip().lower() in {"exit", "quit", "salir"}:
            break
        if not text.strip():
            continue
        message = InboundMessage(channel, "simulator", text, provider_message_id=f"sim-{number}")
        received = sandbox.conversations.receive(message, debtor_id, verified=verified)
        for reply in received.replies:
            click.secho(f"bot> {reply.text}", fg="green")
        if not received.replies:
            click.secho("bot> (silent: the conversation is with a person or closed)", fg="yellow")


def _prompt() -> str | None:
    try:
        return click.prompt("you", prompt_suffix="> ", default="", show_default=False)
    except (click.Abort, EOFError):
        return None


def _sandbox(
    settings: Settings, sandbox_url: str, ref: str, creditor_slug: str | None, locale: str | None
) -> tuple[Services, int]:
    source = Database(settings.database_url)
    sandbox_db = Database(sandbox_url)
    upgrade(sandbox_db.url)
    with source.session() as read, sandbox_db.session() as write:
        debtor = _find_debtor(read, ref, creditor_slug)
        creditor = _clone(debtor.creditor)
        write.add(creditor)
        write.flush()
        copy = _clone(debtor, creditor=creditor, locale=locale or debtor.locale)
        invoices = read.scalars(select(Invoice).where(Invoice.debtor_id == debtor.id))
        copy.invoices = [_clone(invoice, creditor_id=creditor.id) for invoice in invoices]
        write.add(copy)
        write.commit()
        debtor_id = copy.id
    source.dispose()
    return bootstrap(settings, database=sandbox_db), debtor_id


def _find_debtor(session: Session, ref: str, creditor_slug: str | None) -> Debtor:
    query = select(Debtor).where(Debtor.external_ref == ref)
    if creditor_slug:
        query = query.join(Creditor).where(Creditor.slug == creditor_slug)
    found = session.scalars(query).all()
    if not found:
        raise click.ClickException(f"no debtor {ref!r}" + (f" for creditor {creditor_slug!r}" if creditor_slug else ""))
    if len(found) > 1:
        raise click.ClickException(f"{len(found)} debtors have ref {ref!r}; pass --creditor")
    return found[0]


def _clone(obj: Model, **overrides: Any) -> Model:
    """A new, unsaved copy of a row: same column values, no primary or foreign keys."""
    mapper = inspect(type(obj))
    skip = {column.key for column in mapper.primary_key} | {
        column.key for column in mapper.columns if column.foreign_keys
    }
    values = {attr.key: getattr(obj, attr.key) for attr in mapper.column_attrs if attr.key not in skip}
    return type(obj)(**(values | overrides))
