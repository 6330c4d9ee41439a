"""`cobrabot import payments`: the summary, the progress bar, exit codes, and a re-import that changes nothing."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import func, select

from bot.cli import main
from bot.config import Settings
from bot.models import Creditor, Debtor, Payment, StatementLine
from bot.store import Database

EXAMPLE = Path(__file__).parents[2] / "examples" / "statement_bancoestado.csv"


@pytest.fixture
def debtors(make_creditor: Callable[..., Creditor], make_debtor: Callable[..., Debtor]) -> None:
    creditor = make_creditor(slug="aguas")
    people = [("C-1001", "Ana María Pérez", 45990), ("C-1002", "Jorge Muñoz", 10000), ("C-1003", "Camila Rojas", 30000)]
    for index, (ref, name, balance) in enumerate(people):
        make_debtor(
            creditor,
            external_ref=ref,
            name=name,
            phone=f"+56 9 6123 45{index:02d}",
            email=f"{ref.lower()}@example.cl",
            invoices=[{"number": ref.replace("C", "F"), "amount": str(balance), "due_date": date(2026, 12, 5)}],
        )


@pytest.fixture
def invoke(settings: Settings, db: Database) -> Callable[..., Result]:
    env = {"COBRABOT_DATABASE_URL": settings.database_url, "COBRABOT_SECRET_KEY": settings.secret_key}

    def invoke(*args: str) -> Result:
        return CliRunner().invoke(main, ["import", "payments", *args], env=env)

    return invoke


def counts(db: Database) -> tuple[int, int]:
    with db.session() as session:
        return (
            session.scalar(select(func.count()).select_from(StatementLine)) or 0,
            session.scalar(select(func.count()).select_from(Payment)) or 0,
        )


def test_statement_is_reconciled_with_a_summary(invoke, debtors, db):
    result = invoke(str(EXAMPLE), "--format", "bancoestado", "--creditor", "aguas")

    assert result.exit_code == 1, result.output  # one malformed line
    assert "lines read:       9\n" in result.stdout
    assert "credits:          6\n" in result.stdout
    assert "matched:          2\n" in result.stdout
    assert "skipped debits:   2\n" in result.stdout
    assert "errors:           1\n" in result.stdout
    assert "lines/s)" in result.stdout
    assert "line 15: Abonos 'veinte mil'" in result.stderr
    assert "6/6" in result.stderr  # the progress bar
    assert counts(db) == (6, 2)


def test_second_run_is_a_no_op(invoke, debtors, db):
    invoke(str(EXAMPLE), "--format", "bancoestado", "--creditor", "aguas")
    result = invoke(str(EXAMPLE), "--format", "bancoestado", "--creditor", "aguas")

    assert "already imported: this file is batch" in result.stdout
    assert "matched:          0\n" in result.stdout
    assert counts(db) == (6, 2)


def test_generic_format_with_a_mapping(invoke, debtors, db, tmp_path):
    path = tmp_path / "export.csv"
    path.write_text('Fecha,Monto,Glosa\n2026-11-05,"10,000.00",pago F-1002\n2026-11-06,-500.00,fee\n')

    result = invoke(
        str(path), "--format", "generic", "--creditor", "aguas",
        "--mapping", "date=Fecha", "--mapping", "amount=Monto", "--mapping", "description=Glosa",
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    assert "matched:          1\n" in result.stdout and "skipped debits:   1\n" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--format", "bancoestado", "--creditor", "nobody"], "no creditor with slug 'nobody'"),
        (["--format", "generic", "--creditor", "aguas", "--mapping", "colour=x"], "unknown mapping key"),
        (["--format", "generic", "--creditor", "aguas", "--mapping", "nonsense"], "is not key=column"),
        (["--format", "generic", "--creditor", "aguas"], "no header row with a 'date' column"),
    ],
)
def test_unusable_input_exits_2_and_writes_nothing(invoke, debtors, db, args, message):
    result = invoke(str(EXAMPLE), *args)

    assert result.exit_code == 2
    assert message in result.stderr
    assert counts(db) == (0, 0)


def test_missing_file_exits_2(invoke, debtors, tmp_path):
    result = invoke(str(tmp_path / "nope.csv"), "--format", "bancoestado", "--creditor", "aguas")

    assert result.exit_code == 2 and "cannot read" in result.stderr
