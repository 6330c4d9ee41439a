"""Demo data for a first look: two creditors, a few debtors, an admin login. Safe to run repeatedly.

The demo has no SMS, WhatsApp or email credentials, only the portal's web chat. So each demo debtor prefers
web chat and has a portal chat open (as if they had visited their link once), and their debts are past due:
the first run of the in-process scheduler plans cadence reminders and the dispatcher delivers them into that
chat, where the portal page and the console's timeline show them (quiet hours in the debtor's zone permitting).
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.agents import create_agent
from bot.config import Settings
from bot.debtors import DebtorIn, upsert_debtor
from bot.domain import utcnow
from bot.migrate import upgrade
from bot.models import Agent, Conversation, Creditor
from bot.portal import PortalTokens
from bot.store import Database

DEMO_ADMIN_EMAIL = "admin@cobrabot.local"
DEMO_ADMIN_PASSWORD = "cobrabot-demo"  # printed on start; demo data only, bound to 127.0.0.1 by default

CREDITORS: list[dict[str, Any]] = [
    {
        "slug": "aguas-del-valle",
        "name": "Aguas del Valle",
        "country": "CL",
        "currency": "CLP",
        "default_locale": "es-CL",
        "timezone": "America/Santiago",
    },
    {
        "slug": "acme-energy",
        "name": "Acme Energy",
        "country": "US",
        "currency": "USD",
        "default_locale": "en-US",
        "timezone": "America/New_York",
    },
]


DEMO_CHANNELS = ["webchat", "whatsapp", "sms", "email"]


def _debtors(today: date) -> dict[str, list[dict[str, Any]]]:
    debtors = {
        "aguas-del-valle": [
            {
                "external_ref": "CL-1001",
                "name": "Ana María Pérez",
                "phone": "+56 9 6123 4567",
                "email": "ana.perez@example.cl",
                "national_id": "12.345.678-5",
                "locale": "es-CL",
                "invoices": [
                    {"number": "B-2026-0911", "amount": "38450", "due_date": today - timedelta(days=20)},
                    {"number": "B-2026-1011", "amount": "41290", "due_date": today + timedelta(days=10)},
                ],
            },
            {
                "external_ref": "CL-1002",
                "name": "Jorge Soto",
                "phone": "+56 9 7654 3210",
                "national_id": "9.876.543-2",
                "locale": "es-CL",
                "invoices": [{"number": "B-2026-0877", "amount": "125900", "due_date": today - timedelta(days=45)}],
            },
        ],
        "acme-energy": [
            {
                "external_ref": "US-2001",
                "name": "John Smith",
                "phone": "+1 415 555 2671",
                "email": "john.smith@example.com",
                "birth_date": "1984-03-09",
                "locale": "en-US",
                "timezone": "America/Los_Angeles",
                "invoices": [{"number": "INV-5521", "amount": "182.45", "due_date": today - timedelta(days=5)}],
            },
        ],
    }
    return {slug: [data | {"channel_preference": DEMO_CHANNELS} for data in rows] for slug, rows in debtors.items()}


def prepare_demo(settings: Settings) -> list[str]:
    """Migrate, load demo data, and return the lines to print: portal links and the admin login."""
    database = Database(settings.database_url)  # creates the SQLite directory before Alembic connects
    upgrade(settings.database_url)
    portal = PortalTokens(settings.secret_key, settings.public_url)
    today = utcnow().date()
    with database.unit_of_work() as uow:
        creditors = {data["slug"]: _creditor(uow.session, data) for data in CREDITORS}
        debtor_ids = {}
        for slug, debtors in _debtors(today).items():
            for data in debtors:
                result = upsert_debtor(uow.session, creditors[slug], DebtorIn.model_validate(data), settings.secret_key)
                uow.session.flush()
                debtor_ids[data["external_ref"]] = result.debtor.id
                _portal_chat(uow.session, result.debtor.id)
        _admin(uow.session)
        uow.commit()
    database.dispose()
    lines = ["Demo data loaded.", ""]
    for ref, label in (("CL-1001", "Spanish (Chile)"), ("US-2001", "English (US)")):
        token, _ = portal.issue(debtor_ids[ref], timedelta(days=settings.portal_link_days))
        lines.append(f"  Debtor portal, {label}: {portal.url(token)}")
    lines += [f"  Admin console login:     {DEMO_ADMIN_EMAIL} / {DEMO_ADMIN_PASSWORD}", ""]
    return lines


def _creditor(session: Session, data: dict[str, Any]) -> Creditor:
    creditor = session.scalars(select(Creditor).where(Creditor.slug == data["slug"])).one_or_none()
    if creditor is None:
        creditor = Creditor(**data)
        session.add(creditor)
        session.flush()
    return creditor


def _admin(session: Session) -> None:
    if session.scalar(select(Agent.id).where(Agent.email == DEMO_ADMIN_EMAIL)) is None:
        create_agent(session, DEMO_ADMIN_EMAIL, DEMO_ADMIN_PASSWORD, role="admin", name="Demo admin")


def _portal_chat(session: Session, debtor_id: int) -> None:
    """An open web chat conversation, addressed the way the portal's chat addresses it (portal:<debtor id>)."""
    open_chat = select(Conversation.id).where(
        Conversation.debtor_id == debtor_id, Conversation.channel == "webchat", Conversation.mode != "closed"
    )
    if session.scalar(open_chat) is None:
        session.add(Conversation(debtor_id=debtor_id, channel="webchat", address=f"portal:{debtor_id}"))
        session.flush()
