"""`cobrabot chat`: a terminal sandbox that never writes to the real database."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner
from sqlalchemy import func, select

from bot.cli import main
from bot.models import Message
from bot.store import Database


def test_chatting_with_a_demo_debtor_in_the_sandbox(tmp_path: Path):
    env = {"COBRABOT_DATABASE_URL": f"sqlite:///{tmp_path / 'real.db'}", "COBRABOT_SECRET_KEY": "chat-secret"}
    runner = CliRunner()
    assert runner.invoke(main, ["demo"], env=env).exit_code == 0
    result = runner.invoke(
        main,
        ["chat", "--debtor", "CL-1001", "--verified"],
        env=env,
        input="cuánto debo?\nquiero pagar en cuotas\nexit\n",
    )
    assert result.exit_code == 0, result.output
    assert "bot> Su saldo pendiente con Aguas del Valle es de $79.740" in result.output
    assert "cuotas de" in result.output
    database = Database(env["COBRABOT_DATABASE_URL"])
    with database.session() as session:
        assert session.scalar(select(func.count()).select_from(Message)) == 0  # nothing reached the real data
    database.dispose()


def test_unknown_debtor_is_a_clear_error(tmp_path: Path):
    env = {"COBRABOT_DATABASE_URL": f"sqlite:///{tmp_path / 'real.db'}"}
    runner = CliRunner()
    runner.invoke(main, ["db", "upgrade"], env=env)
    result = runner.invoke(main, ["chat", "--debtor", "NOPE"], env=env, input="exit\n")
    assert result.exit_code == 1 and "no debtor 'NOPE'" in result.output
