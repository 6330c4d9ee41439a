"""The demo's sandbox Pay button: the whole payment loop (record, allocate, cancel reminders, receipt) with no
money moving, only when COBRABOT_SANDBOX_PAYMENTS is on, once per idempotency key."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select

from bot.app import create_app
from bot.config import Settings
from bot.models import Debtor, Invoice, Message, Payment, ScheduledReminder
from bot.services import Services, bootstrap
from bot.store import Database
from tests.conftest import FixedClock

KEY = re.compile(r'name="key" value="([^"]+)"')


def _portal(settings: Settings, db: Database, clock: FixedClock, *, sandbox: bool) -> tuple[Services, FlaskClient]:
    services = bootstrap(settings.model_copy(update={"sandbox_payments": sandbox}), database=db, clock=clock)
    app = create_app(services=services)
    app.config["TESTING"] = True
    return services, app.test_client()


def _token(services: Services, debtor_id: int) -> str:
    return services.portal.issue(debtor_id, services.portal_link_lifetime, now=services.clock())[0]


def _payments(db: Database) -> int:
    with db.session() as session:
        return session.scalar(select(func.count()).select_from(Payment)) or 0


def test_without_the_setting_there_is_no_sandbox(
    settings: Settings, db: Database, clock: FixedClock, make_debtor: Callable[..., Debtor]
) -> None:
    services, web = _portal(settings, db, clock, sandbox=False)
    token = _token(services, make_debtor().id)
    assert 'name="key"' not in web.get(f"/p/{token}/pay/F-1").get_data(as_text=True)
    assert web.post(f"/p/{token}/pay/F-1/sandbox", data={"key": "k" * 24}).status_code == 404
    assert _payments(db) == 0


def test_paying_in_the_sandbox_settles_the_invoice_cancels_reminders_and_sends_a_receipt(
    settings: Settings, db: Database, clock: FixedClock, make_debtor: Callable[..., Debtor]
) -> None:
    services, web = _portal(settings, db, clock, sandbox=True)
    debtor = make_debtor(channel_preference=["sms"], locale="en")
    with db.session() as session:
        invoice_id = session.scalars(select(Invoice.id).where(Invoice.debtor_id == debtor.id)).one()
        session.add(
            ScheduledReminder(
                invoice_id=invoice_id, debtor_id=debtor.id, step_key="due+3", due_at=clock() + timedelta(days=3)
            )
        )
        session.commit()
    token = _token(services, debtor.id)
    page = web.get(f"/p/{token}/pay/F-1").get_data(as_text=True)
    assert "Pay now (test mode)" in page
    key = KEY.search(page).group(1)  # type: ignore[union-attr]

    paid = web.post(f"/p/{token}/pay/F-1/sandbox", data={"key": key})
    again = web.post(f"/p/{token}/pay/F-1/sandbox", data={"key": key})  # a double click
    assert paid.status_code == again.status_code == 303
    assert paid.headers["Location"] == again.headers["Location"]
    assert web.get(paid.headers["Location"]).status_code == 200  # the printable receipt

    with db.session() as session:
        invoice = session.get_one(Invoice, invoice_id)
        [payment] = session.scalars(select(Payment)).all()
        reminder = session.scalars(select(ScheduledReminder)).one()
        receipts = session.scalars(select(Message).where(Message.template_key == "payment_received")).all()
    assert (invoice.status, invoice.balance_minor) == ("paid", 0)
    assert (payment.provider, payment.amount_minor) == ("sandbox", 45990)
    assert (reminder.status, reminder.reason) == ("cancelled", "invoice paid")
    [receipt] = receipts  # on the debtor's channel, with the link to the printable receipt
    assert receipt.channel == "sms" and f"/receipts/{payment.id}" in receipt.body


@pytest.mark.parametrize("key", ["", "short", "x" * 65, "has spaces in it!!!!"])
def test_a_missing_or_malformed_key_changes_nothing(
    settings: Settings, db: Database, clock: FixedClock, make_debtor: Callable[..., Debtor], key: str
) -> None:
    services, web = _portal(settings, db, clock, sandbox=True)
    token = _token(services, make_debtor().id)
    response = web.post(f"/p/{token}/pay/F-1/sandbox", data={"key": key})
    assert response.status_code == 400 and b"idempotency key" in response.data
    assert _payments(db) == 0


def test_a_paid_or_unknown_invoice_cannot_be_paid_again(
    settings: Settings, db: Database, clock: FixedClock, make_debtor: Callable[..., Debtor]
) -> None:
    services, web = _portal(settings, db, clock, sandbox=True)
    token = _token(services, make_debtor().id)
    assert web.post(f"/p/{token}/pay/F-1/sandbox", data={"key": "a" * 24}).status_code == 303
    assert web.post(f"/p/{token}/pay/F-1/sandbox", data={"key": "b" * 24}).status_code == 400
    assert web.post(f"/p/{token}/pay/NOPE/sandbox", data={"key": "c" * 24}).status_code == 400
    assert web.post("/p/not-a-token/pay/F-1/sandbox", data={"key": "d" * 24}).status_code in (403, 404)
    assert _payments(db) == 1
