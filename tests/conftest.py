"""Shared fixtures: a migrated real database (SQLite by default, PostgreSQL when
COBRABOT_TEST_DATABASE_URL is set), the app and client, a fixed clock and domain factories."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import URL, create_engine, make_url, text
from sqlalchemy.exc import OperationalError

from bot.app import create_app
from bot.config import Settings, load_settings
from bot.debtors import DebtorIn, upsert_debtor
from bot.migrate import upgrade
from bot.models import Base, Creditor, Debtor
from bot.services import Services, bootstrap
from bot.store import Database
from bot.templates import forget_template_overrides
from tests.standin import StandIn

TEST_SECRET = "test-secret-key"
TEST_API_TOKEN = "test-api-token"
TEST_PUBLIC_URL = "https://cobrabot.example"


class FixedClock:
    """An injectable clock that only moves when a test says so."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """SQLite in a temp dir, or a fresh PostgreSQL database created beside COBRABOT_TEST_DATABASE_URL's."""
    url = os.environ.get("COBRABOT_TEST_DATABASE_URL")
    if not url:
        yield f"sqlite:///{tmp_path_factory.mktemp('db') / 'test.db'}"
        return
    server = make_url(url.replace("postgresql://", "postgresql+psycopg://", 1))
    name = f"cobrabot_test_{os.getpid()}_{secrets.token_hex(3)}"
    try:
        _admin(server, f'CREATE DATABASE "{name}"')
    except OperationalError as exc:
        pytest.exit(f"COBRABOT_TEST_DATABASE_URL is set but unreachable: {exc}", returncode=3)
    yield server.set(database=name).render_as_string(hide_password=False)
    _admin(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _admin(server: URL, statement: str) -> None:
    # A private database per run keeps parallel runs apart and never touches the shared one's data.
    engine = create_engine(server, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.execute(text(statement))
    finally:
        engine.dispose()


@pytest.fixture(scope="session")
def migrated_database(database_url: str) -> Iterator[Database]:
    upgrade(database_url)
    database = Database(database_url)
    yield database
    database.dispose()


@pytest.fixture
def db(migrated_database: Database) -> Iterator[Database]:
    """A migrated database emptied after each test."""
    yield migrated_database
    _empty_tables(migrated_database)
    forget_template_overrides()  # the tables were emptied behind the ORM's back


def _empty_tables(database: Database) -> None:
    # DELETE is far faster than TRUNCATE for a few rows; the append-only audit table refuses DELETE on
    # PostgreSQL (trigger), and TRUNCATE does not fire row triggers, so it is emptied that way.
    tables = [table.name for table in reversed(Base.metadata.sorted_tables)]
    with database.engine.begin() as connection:
        for table in tables:
            if database.dialect == "postgresql" and table == "audit_events":
                if connection.execute(text("SELECT EXISTS (SELECT 1 FROM audit_events)")).scalar():
                    connection.execute(text("TRUNCATE audit_events"))
            else:
                connection.execute(text(f"DELETE FROM {table}"))


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(datetime(2026, 11, 25, 15, 0, tzinfo=UTC))


@pytest.fixture
def settings(database_url: str) -> Settings:
    return load_settings(
        database_url=database_url,
        secret_key=TEST_SECRET,
        api_token=TEST_API_TOKEN,
        public_url=TEST_PUBLIC_URL,
        openai_api_key=None,  # a developer's exported key must not send the suite's messages to OpenAI
    )


@pytest.fixture
def services(settings: Settings, db: Database, clock: FixedClock) -> Services:
    return bootstrap(settings, database=db, clock=clock)


@pytest.fixture
def app(services: Services) -> Flask:
    application = create_app(services=services)
    application.config["TESTING"] = True
    return application


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def api_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {TEST_API_TOKEN}"}


@pytest.fixture
def make_creditor(db: Database) -> Callable[..., Creditor]:
    def make(**fields: Any) -> Creditor:
        values = {
            "slug": "aguas-andinas",
            "name": "Aguas del Valle",
            "country": "CL",
            "currency": "CLP",
            "default_locale": "es-CL",
            "timezone": "America/Santiago",
        } | fields
        with db.session() as session:
            creditor = Creditor(**values)
            session.add(creditor)
            session.commit()
            return creditor

    return make


@pytest.fixture
def make_debtor(db: Database, make_creditor: Callable[..., Creditor]) -> Callable[..., Debtor]:
    """A debtor with one open invoice; pass creditor=... to reuse one, invoices=[] for none."""

    def make(creditor: Creditor | None = None, **fields: Any) -> Debtor:
        creditor = creditor or make_creditor()
        data = {
            "external_ref": "C-1001",
            "name": "Ana María Pérez",
            "phone": "+56 9 6123 4567",
            "email": "ana@example.cl",
            "national_id": "12.345.678-5",
            "invoices": [{"number": "F-1", "amount": "45990", "due_date": date(2026, 12, 5)}],
        } | fields
        with db.session() as session:
            creditor = session.merge(creditor)
            result = upsert_debtor(session, creditor, DebtorIn.model_validate(data), TEST_SECRET)
            session.commit()
            return result.debtor

    return make


DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/15"


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The test Redis; skipped only when nobody asked for one and none runs locally."""
    configured = os.environ.get("COBRABOT_TEST_REDIS_URL")
    url = configured or DEFAULT_REDIS_URL
    client = redis.Redis.from_url(url, socket_connect_timeout=1)
    try:
        client.ping()
    except redis.RedisError as exc:
        if configured:
            pytest.fail(f"COBRABOT_TEST_REDIS_URL is set but unreachable: {exc}")
        pytest.skip(f"no Redis at {DEFAULT_REDIS_URL} and COBRABOT_TEST_REDIS_URL unset")
    finally:
        client.close()
    return url


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def standin() -> Iterator[StandIn]:
    """A provider API stand-in on 127.0.0.1; point the real SDK's base URL at `standin.url`."""
    server = StandIn().start()
    yield server
    server.stop()


@pytest.fixture
def data_dir() -> Path:
    return Path(__file__).parent / "data"
