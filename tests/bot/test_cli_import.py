"""`cobrabot import debtors`: exit codes, the summary, the error report and --dry-run."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import func, select

from bot.cli import main
from bot.config import Settings
from bot.models import Creditor, Debtor, Invoice
from bot.store import Database

EXAMPLE = Path(__file__).parents[2] / "examples" / "debtors.csv"
HEADER = "external_ref,name,phone,invoice_number,amount,currency,due_date\n"


@pytest.fixture
def creditor(make_creditor: Callable[..., Creditor]) -> Creditor:
    return make_creditor(slug="aguas")


@pytest.fixture
def invoke(settings: Settings, db: Database) -> Callable[..., Result]:
    env = {"COBRABOT_DATABASE_URL": settings.database_url, "COBRABOT_SECRET_KEY": settings.secret_key}

    def invoke(*args: str, env_overrides: dict[str, str] | None = None) -> Result:
        return CliRunner().invoke(main, ["import", "debtors", *args], env=env | (env_overrides or {}))

    return invoke


def counts(db: Database) -> tuple[int, int]:
    with db.session() as session:
        return (
            session.scalar(select(func.count()).select_from(Debtor)) or 0,
            session.scalar(select(func.count()).select_from(Invoice)) or 0,
        )


def test_good_file_exits_0_with_a_summary(invoke, creditor, db):
    result = invoke(str(EXAMPLE), "--creditor", "aguas")

    assert result.exit_code == 0, result.output
    assert "rows:             10\n" in result.stdout
    assert "debtors:          7 created, 0 updated, 0 unchanged\n" in result.stdout
    assert "invoices:         10 created, 0 updated, 0 unchanged\n" in result.stdout
    assert "rows with errors: 0\n" in result.stdout
    assert "rows/s)" in result.stdout
    assert "10/10" in result.stderr  # the progress bar
    assert counts(db) == (7, 10)


def test_second_run_reports_everything_unchanged(invoke, creditor):
    invoke(str(EXAMPLE), "--creditor", "aguas")

    result = invoke(str(EXAMPLE), "--creditor", "aguas", "--batch-size", "2")

    assert result.exit_code == 0, result.output
    assert "debtors:          0 created, 0 updated, 7 unchanged\n" in result.stdout
    assert "invoices:         0 created, 0 updated, 10 unchanged\n" in result.stdout


def test_broken_rows_exit_1_and_are_listed_with_row_and_field(invoke, creditor, db, data_dir, tmp_path):
    report_path = tmp_path / "report.csv"

    result = invoke(str(data_dir / "debtors_broken.csv"), "--creditor", "aguas", "--errors-file", str(report_path))

    assert result.exit_code == 1, result.output
    assert "rows with errors: 14\n" in result.stdout
    assert "  row 4 [C-2] phone: not a valid phone number for region CL\n" in result.stderr
    assert "  row 9 [C-6] amount: CLP allows 0 decimals\n" in result.stderr
    with report_path.open(encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["row", "external_ref", "field", "reason"]
    assert rows[1] == ["3", "C-1", "amount", "thousands separators are not allowed: write 1250000"]
    assert len(rows) == 1 + 14
    assert counts(db) == (4, 4)


def test_only_the_first_20_errors_are_printed_but_the_file_gets_all(invoke, creditor, tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text(HEADER + "".join(f"A-{n},Ana,,F-{n},12.5,CLP,2026-12-05\n" for n in range(25)), encoding="utf-8")
    report_path = tmp_path / "report.csv"

    without_file = invoke(str(path), "--creditor", "aguas")
    with_file = invoke(str(path), "--creditor", "aguas", "--errors-file", str(report_path))

    assert without_file.exit_code == 1
    assert without_file.stderr.count("amount: CLP allows 0 decimals") == 20
    assert "... and 5 more (use --errors-file to get them all)" in without_file.stderr
    assert f"... and 5 more (see {report_path})" in with_file.stderr
    assert len(report_path.read_text(encoding="utf-8").splitlines()) == 1 + 25


def test_dry_run_reports_like_a_real_run_and_writes_nothing(invoke, creditor, db):
    result = invoke(str(EXAMPLE), "--creditor", "aguas", "--dry-run")

    assert result.exit_code == 0, result.output
    assert "dry run: everything was rolled back, nothing was written" in result.stdout
    assert "debtors:          7 created" in result.stdout
    assert counts(db) == (0, 0)


def test_unknown_creditor_exits_2(invoke, creditor, db):
    result = invoke(str(EXAMPLE), "--creditor", "nope")

    assert result.exit_code == 2
    assert "error: no creditor with slug 'nope'" in result.stderr
    assert counts(db) == (0, 0)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "error: file not found:"),
        ((HEADER + "A-1,Peña,,F-1,100,CLP,2026-12-05\n").encode("latin-1"), "is not UTF-8 text"),
        (b"external_ref;name;invoice_number\nA-1;Ana;F-1\n", "missing required column(s): amount, due_date"),
    ],
)
def test_unusable_file_exits_2_naming_the_problem(invoke, creditor, db, tmp_path, content, message):
    path = tmp_path / "debtors.csv"
    if content is not None:
        path.write_bytes(content)

    result = invoke(str(path), "--creditor", "aguas")

    assert result.exit_code == 2
    assert message in result.stderr
    assert "rows:" not in result.stdout
    assert counts(db) == (0, 0)


def test_invalid_configuration_exits_2(invoke, creditor):
    result = invoke(str(EXAMPLE), "--creditor", "aguas", env_overrides={"COBRABOT_DATABASE_URL": "mysql://x"})

    assert result.exit_code == 2
    assert "COBRABOT_DATABASE_URL: must be a sqlite:/// or postgresql:// URL" in result.stderr
