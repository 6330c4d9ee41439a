"""A link's life: opened with no transaction held during the provider's HTTP call, expired by the job or by
Stripe, and an installment link paying its installment until the plan completes (and a refund undoing it)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from datetime import date, timedelta
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import event, select, text

from bot.app import create_app
from bot.config import Settings
from bot.domain import Money
from bot.jobs import JOBS, run_job
from bot.models import Debtor, Installment, Invoice, PaymentAllocation, PaymentLink, PaymentPlan
from bot.payments.links import CheckoutRequest, create_link, expire_links, open_checkout
from bot.payments.stripe_provider import StripeProvider
from bot.payments.webhook import handle_stripe
from bot.portal import PortalTokens
from bot.services import bootstrap
from bot.store import Database
from bot.web import payments as payments_web
from tests.bot.payments.test_refunds import charge_refunded
from tests.bot.payments.test_stripe import checkout_completed, session_json, sign, stripe_settings  # noqa: F401
from tests.conftest import TEST_PUBLIC_URL, TEST_SECRET, FixedClock
from tests.standin import StandIn

TOKENS = PortalTokens(TEST_SECRET, TEST_PUBLIC_URL)


class OpenTransactions:
    """Counts transactions begun and not yet ended on the engine, on SQLite and PostgreSQL alike."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.open: set[int] = set()

    def _begin(self, connection: Any) -> None:
        self.open.add(id(connection))

    def _end(self, connection: Any) -> None:
        self.open.discard(id(connection))

    def attach(self) -> None:
        event.listen(self.db.engine, "begin", self._begin)
        event.listen(self.db.engine, "commit", self._end)
        event.listen(self.db.engine, "rollback", self._end)

    def detach(self) -> None:
        event.remove(self.db.engine, "begin", self._begin)
        event.remove(self.db.engine, "commit", self._end)
        event.remove(self.db.engine, "rollback", self._end)


@pytest.fixture
def transactions(db: Database) -> Iterator[OpenTransactions]:
    watcher = OpenTransactions(db)
    watcher.attach()
    yield watcher
    watcher.detach()


class ProbingProvider:
    """The real Stripe provider, which first checks that nothing holds a transaction, and on SQLite that another
    connection can take the write lock right now (it could not while a BEGIN IMMEDIATE transaction is open)."""

    name = "stripe"

    def __init__(self, real: StripeProvider, watcher: OpenTransactions) -> None:
        self.real = real
        self.watcher = watcher
        self.seen: list[tuple[int, bool | None]] = []

    def create_checkout(self, request: CheckoutRequest) -> tuple[str, str | None]:
        self.seen.append((len(self.watcher.open), _sqlite_writable(self.watcher.db)))
        return self.real.create_checkout(request)


def _sqlite_writable(db: Database) -> bool | None:
    if db.dialect != "sqlite":
        return None
    other = sqlite3.connect(db.engine.url.database or "", timeout=0, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        other.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError:  # "database is locked"
        return False
    finally:
        other.close()


def test_the_probe_sees_an_open_transaction(db: Database, transactions: OpenTransactions) -> None:
    """The check has teeth: inside a session's transaction it reports one open (and SQLite locked)."""
    with db.session() as session:
        session.execute(text("SELECT 1"))
        assert len(transactions.open) == 1
        assert _sqlite_writable(db) in (False, None)
    assert transactions.open == set() and _sqlite_writable(db) in (True, None)


def test_no_transaction_is_open_while_the_provider_is_called(
    db: Database,
    make_debtor: Callable[..., Debtor],
    stripe_settings: Settings,  # noqa: F811
    standin: StandIn,
    clock: FixedClock,
    transactions: OpenTransactions,
) -> None:
    debtor = make_debtor()
    real = StripeProvider.from_settings(stripe_settings)
    assert real is not None
    probe = ProbingProvider(real, transactions)
    standin.respond("POST", "/v1/checkout/sessions", 200, session_json())
    with db.session() as session:
        invoice_id = session.scalars(select(Invoice.id)).one()

    link = open_checkout(db, TOKENS, debtor.id, Money(45990, "CLP"), "invoice", invoice_id=invoice_id,
                         provider=probe, now=clock())  # fmt: skip

    assert probe.seen == [(0, True if db.dialect == "sqlite" else None)]
    with db.session() as session:
        stored = session.get_one(PaymentLink, link.id)
        assert (stored.status, stored.url, stored.provider_ref) == ("active", session_json()["url"], "cs_test_1")


def test_the_pay_button_calls_the_provider_with_no_transaction_open(
    db: Database,
    make_debtor: Callable[..., Debtor],
    stripe_settings: Settings,  # noqa: F811
    standin: StandIn,
    clock: FixedClock,
    transactions: OpenTransactions,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    services = bootstrap(stripe_settings, database=db, clock=clock)
    real = StripeProvider.from_settings(stripe_settings)
    assert real is not None
    probe = ProbingProvider(real, transactions)
    monkeypatch.setattr(payments_web, "checkout_provider", lambda settings, creditor: probe)
    debtor = make_debtor()
    standin.respond("POST", "/v1/checkout/sessions", 200, session_json())
    token = services.portal.issue(debtor.id, services.portal_link_lifetime, now=clock())[0]
    client: FlaskClient = create_app(services=services).test_client()

    response = client.get(f"/p/{token}/pay/F-1")

    assert (response.status_code, response.headers["Location"]) == (303, session_json()["url"])
    assert probe.seen == [(0, True if db.dialect == "sqlite" else None)]


def test_when_the_checkout_cannot_be_opened_the_pay_button_shows_the_portal_page(
    db: Database,
    make_debtor: Callable[..., Debtor],
    stripe_settings: Settings,  # noqa: F811
    standin: StandIn,
    clock: FixedClock,
) -> None:
    services = bootstrap(stripe_settings, database=db, clock=clock)
    debtor = make_debtor()
    standin.respond("POST", "/v1/checkout/sessions", 400, {"error": {"type": "invalid_request_error", "message": "x"}})
    token = services.portal.issue(debtor.id, services.portal_link_lifetime, now=clock())[0]

    response = create_app(services=services).test_client().get(f"/p/{token}/pay/F-1")

    assert response.status_code == 200 and "$45.990" in response.get_data(as_text=True)
    with db.session() as session:
        assert session.scalars(select(PaymentLink.status)).one() == "failed"


def _links(db: Database, debtor: Debtor, clock: FixedClock, statuses: dict[str, tuple[str, timedelta]]) -> None:
    with db.session() as session:
        owner = session.get_one(Debtor, debtor.id)
        for name, (status, lifetime) in statuses.items():
            link = create_link(session, TOKENS, owner, Money(100, "CLP"), "settlement", now=clock(), lifetime=lifetime)
            link.status, link.provider_ref = status, name
        session.commit()


def _statuses(db: Database) -> dict[str | None, str]:
    with db.session() as session:
        return dict(session.execute(select(PaymentLink.provider_ref, PaymentLink.status)).tuples().all())


def test_expire_links_marks_only_open_links_past_their_expiry(
    db: Database, make_debtor: Callable[..., Debtor], clock: FixedClock
) -> None:
    debtor = make_debtor()
    hour, week = timedelta(hours=1), timedelta(days=7)
    _links(db, debtor, clock, {"old": ("active", hour), "stuck": ("pending", hour), "fresh": ("active", week),
                               "paid": ("paid", hour), "cancelled": ("cancelled", hour)})  # fmt: skip
    clock.advance(hours=2)

    with db.session() as session:
        assert expire_links(session, clock()) == 2
        session.commit()
        assert expire_links(session, clock()) == 0  # safe to repeat

    assert _statuses(db) == {"old": "expired", "stuck": "expired", "fresh": "active", "paid": "paid",
                             "cancelled": "cancelled"}  # fmt: skip


def test_the_expiry_job_is_scheduled_and_runs(
    db: Database, make_debtor: Callable[..., Debtor], settings: Settings, clock: FixedClock
) -> None:
    debtor = make_debtor()
    _links(db, debtor, clock, {"old": ("active", timedelta(minutes=5))})
    clock.advance(minutes=10)
    assert JOBS["expire_payment_links"][1] == 15 * 60
    assert run_job("expire_payment_links", bootstrap(settings, database=db, clock=clock)) == {"expired": 1}
    assert _statuses(db) == {"old": "expired"}


def test_stripe_checkout_session_expired_expires_the_link(
    db: Database,
    make_debtor: Callable[..., Debtor],
    stripe_settings: Settings,  # noqa: F811
    clock: FixedClock,
) -> None:
    debtor = make_debtor()
    with db.session() as session:
        link = create_link(session, TOKENS, session.get_one(Debtor, debtor.id), Money(45990, "CLP"), "settlement",
                           now=clock())  # fmt: skip
        session.commit()
    expired = json.loads(checkout_completed(link, event_id="evt_exp", payment_status="unpaid", status="expired"))
    expired["type"] = "checkout.session.expired"
    payload = json.dumps(expired).encode()

    assert handle_stripe(payload, sign(payload), stripe_settings, db, clock).result == "expired"
    with db.session() as session:
        assert session.get_one(PaymentLink, link.id).status == "expired"


@pytest.fixture
def plan_ids(db: Database, make_debtor: Callable[..., Debtor]) -> tuple[int, int, list[int]]:
    """A debtor with F-1 (80 000) under an active two-installment plan of 40 000 each."""
    debtor = make_debtor(invoices=[{"number": "F-1", "amount": "80000", "due_date": date(2026, 11, 1)}])
    with db.session() as session:
        plan = PaymentPlan(debtor_id=debtor.id, currency="CLP", total_minor=80000, installment_count=2, status="active",
                           invoices=list(session.scalars(select(Invoice))))  # fmt: skip
        plan.installments = [
            Installment(seq=seq, due_date=date(2026, 12, 10 * seq), amount_minor=40000) for seq in (1, 2)
        ]
        session.add(plan)
        session.commit()
        return debtor.id, plan.id, [installment.id for installment in plan.installments]


def _pay_installment(
    db: Database, debtor_id: int, installment_id: int, settings_: Settings, clock: FixedClock, n: int
) -> int:
    with db.session() as session:
        link = create_link(session, TOKENS, session.get_one(Debtor, debtor_id), Money(40000, "CLP"), "installment",
                           installment_id=installment_id, now=clock())  # fmt: skip
        session.commit()
    payload = checkout_completed(link, event_id=f"evt_inst_{n}", payment_intent=f"pi_test_{n}")
    outcome = handle_stripe(payload, sign(payload), settings_, db, clock)
    assert outcome.result == "recorded" and outcome.payment_id is not None
    return outcome.payment_id


def test_installment_links_pay_their_installment_and_the_last_one_completes_the_plan(
    db: Database,
    plan_ids: tuple[int, int, list[int]],
    stripe_settings: Settings,  # noqa: F811
    clock: FixedClock,
) -> None:
    debtor_id, plan_id, (first, second) = plan_ids

    first_payment = _pay_installment(db, debtor_id, first, stripe_settings, clock, 1)
    with db.session() as session:
        allocations = session.scalars(select(PaymentAllocation).where(PaymentAllocation.payment_id == first_payment))
        assert [(a.installment_id, a.amount_minor) for a in allocations] == [(first, 40000)]
        assert [(i.status, i.paid_minor) for i in session.get_one(PaymentPlan, plan_id).installments] == [
            ("paid", 40000),
            ("pending", 0),
        ]
        assert session.get_one(PaymentPlan, plan_id).status == "active"

    _pay_installment(db, debtor_id, second, stripe_settings, clock, 2)
    with db.session() as session:
        assert session.get_one(PaymentPlan, plan_id).status == "completed"
        assert session.scalars(select(Invoice.status)).one() == "paid"

    # Refunding the last installment's payment re-opens the installment, the plan and the invoice.
    refund = charge_refunded(40000, "evt_refund_inst", payment_intent="pi_test_2", amount=40000)
    assert handle_stripe(refund, sign(refund), stripe_settings, db, clock).result == "refunded"
    with db.session() as session:
        plan = session.get_one(PaymentPlan, plan_id)
        assert plan.status == "active"
        assert [(i.status, i.paid_minor) for i in plan.installments] == [("paid", 40000), ("pending", 0)]
        assert session.scalars(select(Invoice.balance_minor)).one() == 40000
