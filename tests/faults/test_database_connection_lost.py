"""PostgreSQL drops the app's connections (pg_terminate_backend, as a server restart or failover does): the next
webhook succeeds (its first statement is retried on a fresh connection; idle connections are pinged before use);
a webhook that could not be stored answers 5xx so the provider retries, and the retry is stored once."""

from __future__ import annotations

import logging
import time

import pytest
from sqlalchemy import create_engine, event, text

from bot import store
from bot.models import InboxItem, Message
from bot.store import Database
from tests.faults.helpers import count, message_sid, post_sms, sms_form, twilio_app, twilio_services


@pytest.fixture
def postgres(db: Database) -> Database:
    if db.dialect != "postgresql":
        pytest.skip("connection kills need PostgreSQL")
    return db


def terminate_app_connections(database: Database) -> int:
    """Kill every other session on the app's database from a separate, unpooled connection."""
    killer = create_engine(database.url, poolclass=None, isolation_level="AUTOCOMMIT")
    try:
        with killer.connect() as connection:
            return len(
                connection.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    )
                ).all()
            )
    finally:
        killer.dispose()


def test_after_the_connections_are_killed_the_next_webhook_succeeds(postgres, clock, standin, make_debtor, caplog):
    app = twilio_app(twilio_services(postgres, clock, standin.url))
    debtor = make_debtor()
    assert post_sms(app, sms_form(debtor.phone, "hola", message_sid(1))).status_code == 200
    assert terminate_app_connections(postgres) >= 1
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="bot.store"):
        assert post_sms(app, sms_form(debtor.phone, "hola", message_sid(2))).status_code == 200
    recovery = time.monotonic() - started
    assert recovery < 5
    assert count(postgres, Message, Message.direction == "in") == 2
    # Recovered by retrying the first statement (the connection was not idle long enough to be pinged).
    assert any("retrying on a fresh one" in record.message for record in caplog.records)


def test_a_connection_idle_past_the_ping_threshold_is_replaced_before_use(postgres, monkeypatch):
    with postgres.engine.connect() as connection:
        connection.execute(text("SELECT 1"))
    assert terminate_app_connections(postgres) >= 1
    monkeypatch.setattr(store, "IDLE_PING_SECONDS", 0.0)
    with postgres.engine.connect() as connection:  # no retry here: only the checkout's ping can save it
        assert connection.execute(text("SELECT 1")).scalar_one() == 1


def test_a_webhook_whose_connection_dies_mid_write_is_5xx_and_its_retry_is_stored_once(
    postgres, clock, standin, make_debtor
):
    app = twilio_app(twilio_services(postgres, clock, standin.url))
    debtor = make_debtor()
    form = sms_form(debtor.phone, "hola", message_sid(7))
    killed: list[int] = []

    def kill_on_inbound_insert(connection, _cursor, statement, *_args) -> None:
        if not killed and statement.startswith("INSERT INTO messages"):
            killed.append(connection.connection.dbapi_connection.info.backend_pid)
            terminate_app_connections(postgres)

    event.listen(postgres.engine, "before_cursor_execute", kill_on_inbound_insert)
    try:
        failed = post_sms(app, form)
    finally:
        event.remove(postgres.engine, "before_cursor_execute", kill_on_inbound_insert)
    assert killed and failed.status_code >= 500  # Twilio retries a 5xx
    assert failed.get_json()["error"] == "internal_error"
    assert count(postgres, Message) == 0  # nothing half-stored

    retried = post_sms(app, form)
    assert retried.status_code == 200
    assert post_sms(app, form).status_code == 200  # a later duplicate delivery is acknowledged, not re-handled
    assert count(postgres, Message, Message.direction == "in") == 1


def test_a_webhook_is_5xx_while_the_database_is_unreachable(db, clock, standin, make_debtor, monkeypatch):
    """Also on SQLite: any store failure is a 5xx, never a 200 that would make the provider drop the message."""
    services = twilio_services(db, clock, standin.url)
    app = twilio_app(services)
    debtor = make_debtor()
    unreachable = Database("postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=1")
    monkeypatch.setattr(services.inbound, "database", unreachable)
    monkeypatch.setattr(services.conversations, "database", unreachable)
    form = sms_form(debtor.phone, "hola", message_sid(9))
    assert post_sms(app, form).status_code == 500
    monkeypatch.undo()
    assert post_sms(app, form).status_code == 200
    assert count(db, Message, Message.direction == "in") == 1


def test_a_queued_webhook_after_the_connections_are_killed_is_accepted(postgres, clock, standin, make_debtor, caplog):
    """Queue mode's accept bypasses the unit of work (one autocommitted INSERT): it has its own retry."""
    app = twilio_app(twilio_services(postgres, clock, standin.url, inbound_queue=True))
    debtor = make_debtor()
    assert post_sms(app, sms_form(debtor.phone, "hola", message_sid(1))).status_code == 200
    assert terminate_app_connections(postgres) >= 1
    with caplog.at_level(logging.WARNING, logger="bot.inbox"):
        assert post_sms(app, sms_form(debtor.phone, "hola", message_sid(2))).status_code == 200
    assert count(postgres, InboxItem) == 2
    assert any("retrying on a fresh one" in record.message for record in caplog.records)
    assert post_sms(app, sms_form(debtor.phone, "hola", message_sid(3))).status_code == 200  # the pool is sound
    assert count(postgres, InboxItem) == 3


def test_a_queued_webhook_on_a_connection_idle_past_the_ping_threshold_is_accepted(
    postgres, clock, standin, make_debtor, monkeypatch
):
    """The checkout's idle ping must leave the connection out of any transaction: the accept then switches it to
    autocommit, which psycopg refuses inside one (seen as 500s after a quiet spell under load)."""
    app = twilio_app(twilio_services(postgres, clock, standin.url, inbound_queue=True))
    debtor = make_debtor()
    assert post_sms(app, sms_form(debtor.phone, "hola", message_sid(1))).status_code == 200
    monkeypatch.setattr(store, "IDLE_PING_SECONDS", 0.0)  # every checkout now pings first

    assert post_sms(app, sms_form(debtor.phone, "hola", message_sid(2))).status_code == 200
    assert post_sms(app, sms_form(debtor.phone, "hola", message_sid(3))).status_code == 200
    assert count(postgres, InboxItem) == 3
