"""The `cobrabot` command: migrations, demo data, portal links, users, configuration errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from bot.agents import verify_password
from bot.cli import main
from bot.models import Agent, AuditEvent, Debtor, Invoice
from bot.store import Database


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    return {
        "COBRABOT_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}",
        "COBRABOT_SECRET_KEY": "cli-test-secret",
        "COBRABOT_PUBLIC_URL": "https://pay.example.cl",
    }


def run(env: dict[str, str], *args: str, input: str | None = None):
    return CliRunner().invoke(main, list(args), env=env, input=input, catch_exceptions=False)


def test_db_upgrade_creates_the_schema(cli_env):
    result = run(cli_env, "db", "upgrade")
    assert result.exit_code == 0, result.output
    database = Database(cli_env["COBRABOT_DATABASE_URL"])
    with database.session() as session:
        assert session.scalar(select(func.count()).select_from(Debtor)) == 0
    database.dispose()


def test_demo_loads_once_and_prints_working_links(cli_env):
    first = run(cli_env, "demo")
    second = run(cli_env, "demo")
    assert first.exit_code == 0 and second.exit_code == 0
    assert "https://pay.example.cl/p/" in first.output
    assert "admin@cobrabot.local / cobrabot-demo" in first.output
    database = Database(cli_env["COBRABOT_DATABASE_URL"])
    with database.session() as session:
        assert session.scalar(select(func.count()).select_from(Debtor)) == 3
        assert session.scalar(select(func.count()).select_from(Invoice)) == 4
        assert session.scalar(select(func.count()).select_from(Agent)) == 1
    database.dispose()


def test_portal_link_for_a_known_and_an_unknown_debtor(cli_env):
    run(cli_env, "demo")
    known = run(cli_env, "portal", "link", "--creditor", "aguas-del-valle", "CL-1001")
    assert known.exit_code == 0 and known.output.startswith("https://pay.example.cl/p/")
    unknown = run(cli_env, "portal", "link", "--creditor", "aguas-del-valle", "NOPE")
    assert unknown.exit_code == 2
    assert "no debtor 'NOPE'" in unknown.output


def test_users_create_hashes_the_password_and_audits(cli_env):
    run(cli_env, "db", "upgrade")
    result = run(
        cli_env,
        "users",
        "create",
        "--email",
        "Luisa@Example.com",
        "--role",
        "manager",
        "--password",
        "correct horse battery",
    )
    assert result.exit_code == 0, result.output
    database = Database(cli_env["COBRABOT_DATABASE_URL"])
    with database.session() as session:
        agent = session.scalars(select(Agent)).one()
        assert agent.email == "luisa@example.com" and agent.role == "manager"
        assert agent.password_hash.startswith("$argon2id$")
        assert verify_password(agent.password_hash, "correct horse battery")
        assert session.scalars(select(AuditEvent.action)).all() == ["agent.created"]
    database.dispose()


def test_users_create_refuses_duplicates_and_short_passwords(cli_env):
    run(cli_env, "db", "upgrade")
    run(cli_env, "users", "create", "--email", "a@example.com", "--password", "long enough pw")
    duplicate = run(cli_env, "users", "create", "--email", "A@example.com", "--password", "long enough pw")
    assert duplicate.exit_code == 2 and "already exists" in duplicate.output
    short = run(cli_env, "users", "create", "--email", "b@example.com", "--password", "short")
    assert short.exit_code == 2 and "at least 10 characters" in short.output


def test_invalid_configuration_names_the_variable(cli_env):
    result = run(cli_env | {"COBRABOT_PUBLIC_URL": "ftp://nope"}, "db", "upgrade")
    assert result.exit_code == 2
    assert "COBRABOT_PUBLIC_URL" in result.output


@pytest.mark.parametrize(
    ("host", "expected"), [("127.0.0.1", "http://127.0.0.1:8765/p/"), ("0.0.0.0", "http://127.0.0.1:8765/p/")]
)
def test_serve_demo_links_point_at_the_port_it_serves(cli_env, monkeypatch, host, expected):
    served: dict[str, object] = {}
    monkeypatch.setattr("waitress.serve", lambda app, **options: served.update(options))
    monkeypatch.delenv("COBRABOT_PUBLIC_URL", raising=False)
    monkeypatch.delenv("COBRABOT_SANDBOX_PAYMENTS", raising=False)
    env = {key: value for key, value in cli_env.items() if key != "COBRABOT_PUBLIC_URL"}
    result = run(env, "serve", "--demo", "--no-jobs", "--host", host, "--port", "8765")
    assert result.exit_code == 0, result.output
    assert expected in result.output
    assert served["port"] == 8765


def test_serve_demo_keeps_a_configured_public_url(cli_env, monkeypatch):
    monkeypatch.setattr("waitress.serve", lambda app, **options: None)
    monkeypatch.delenv("COBRABOT_SANDBOX_PAYMENTS", raising=False)
    result = run(cli_env, "serve", "--demo", "--no-jobs", "--port", "8765")
    assert result.exit_code == 0, result.output
    assert "https://pay.example.cl/p/" in result.output
