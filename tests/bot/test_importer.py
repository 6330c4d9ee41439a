"""CSV import of debtors: what gets in, what is reported (row and column), and that nothing else changes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

import bot.importer
from bot.config import Settings
from bot.debtors import upsert_debtor
from bot.importer import CsvFileError, ImportReport, UnknownCreditorError, import_debtors
from bot.models import Creditor, Debtor, Invoice
from bot.store import Database

EXAMPLE = Path(__file__).parents[2] / "examples" / "debtors.csv"
HEADER = "external_ref,name,phone,email,country,invoice_number,amount,balance,currency,due_date\n"


@pytest.fixture
def creditor(make_creditor: Callable[..., Creditor]) -> Creditor:
    return make_creditor(slug="aguas", country="CL", currency="CLP")


@pytest.fixture
def run(db: Database, settings: Settings, creditor: Creditor) -> Callable[..., ImportReport]:
    def run(path: Path, **options: Any) -> ImportReport:
        return import_debtors(db, path, creditor.slug, secret_key=settings.secret_key, **options)

    return run


def write(tmp_path: Path, body: str, header: str = HEADER, name: str = "debtors.csv") -> Path:
    path = tmp_path / name
    path.write_text(header + body, encoding="utf-8")
    return path


def errors_of(report: ImportReport) -> list[tuple[int, str, str]]:
    return [(error.row, error.external_ref, error.field) for error in report.errors]


def stored(db: Database) -> dict[str, dict[str, tuple[int, int, str]]]:
    """external_ref -> {invoice number: (amount_minor, balance_minor, currency)}"""
    with db.session() as session:
        rows = session.execute(
            select(Debtor.external_ref, Invoice.number, Invoice.amount_minor, Invoice.balance_minor, Invoice.currency)
            .select_from(Debtor)
            .outerjoin(Invoice)
        )
        result: dict[str, dict[str, tuple[int, int, str]]] = {}
        for ref, number, amount, balance, currency in rows:
            invoices = result.setdefault(ref, {})
            if number is not None:
                invoices[number] = (amount, balance, currency)
        return result


def debtor(db: Database, ref: str) -> Debtor:
    with db.session() as session:
        return session.scalars(select(Debtor).where(Debtor.external_ref == ref)).one()


def test_example_file_imports_every_row_in_minor_units_and_e164(run, db):
    report = run(EXAMPLE)

    assert report.errors == []
    assert (report.rows, report.debtors_created, report.invoices_created) == (10, 7, 10)
    invoices = stored(db)
    assert invoices["C-1001"] == {
        "F-2026-10-0001": (45990, 45990, "CLP"),
        "F-2026-11-0001": (38500, 20000, "CLP"),
    }
    assert invoices["MX-2001"]["MX-A-10231"] == (125050, 125050, "MXN")
    assert invoices["US-3001"]["INV-77102"] == (12050, 12050, "USD")
    ana, emily = debtor(db, "C-1001"), debtor(db, "US-3002")
    assert (ana.phone, ana.locale, ana.channel_preference) == ("+56961234567", "es-CL", ["whatsapp", "sms", "email"])
    assert ana.national_id_hash and "5678" not in ana.national_id_hash
    assert (emily.phone, emily.timezone, emily.country) == ("+13125550148", "America/Chicago", "US")


def test_second_run_of_the_same_file_changes_nothing(run, db):
    run(EXAMPLE)
    before = debtor(db, "C-1001").updated_at

    again = run(EXAMPLE)

    assert again.errors == []
    assert (again.debtors_created, again.debtors_updated, again.debtors_unchanged) == (0, 0, 7)
    assert (again.invoices_created, again.invoices_updated, again.invoices_unchanged) == (0, 0, 10)
    assert debtor(db, "C-1001").updated_at == before


def test_changed_rows_update_only_what_changed(run, db, tmp_path):
    first = write(
        tmp_path, "A-1,Ana,+56 9 6123 4567,,CL,F-1,1000,,CLP,2026-12-05\nB-1,Bea,,,CL,F-2,2000,,CLP,2026-12-05\n"
    )
    run(first)
    changed = write(
        tmp_path,
        "A-1,Ana,+56 9 6123 4567,,CL,F-1,1000,400,CLP,2026-12-05\n"
        "B-1,Bea,,bea@example.cl,CL,F-2,2000,,CLP,2026-12-05\n",
    )

    report = run(changed)

    assert (report.debtors_updated, report.debtors_unchanged) == (2, 0)
    assert (report.invoices_updated, report.invoices_unchanged) == (1, 1)
    assert stored(db)["A-1"]["F-1"] == (1000, 400, "CLP")
    assert debtor(db, "B-1").email == "bea@example.cl"


def test_broken_rows_are_reported_with_row_and_column_and_good_rows_import(run, db, data_dir):
    report = run(data_dir / "debtors_broken.csv")

    assert errors_of(report) == [
        (3, "C-1", "amount"),  # 1.250.000: thousands separators
        (4, "C-2", "phone"),  # not a valid Chilean number
        (5, "C-2", "external_ref"),  # the rest of C-2, skipped with it
        (6, "C-3", "name"),  # missing
        (7, "C-4", "locale"),  # unknown locale
        (8, "C-5", "due_date"),  # 05/12/2026
        (9, "C-6", "amount"),  # CLP with decimals
        (12, "C-7", "phone"),  # differs from C-7's first row
        (13, "C-8", "amount"),  # missing
        (14, "C-9", "invoice_number"),  # F-1 again, for another debtor
        (16, "C-10", "amount"),  # decimal comma
        (17, "C-11", "due_date"),  # 2026-02-30
        (18, "C-12", "email"),
        (19, "C-13", "balance"),  # above the amount
    ]
    reasons = {(error.row, error.field): error.reason for error in report.errors}
    assert reasons[3, "amount"] == "thousands separators are not allowed: write 1250000"
    assert reasons[4, "phone"] == "not a valid phone number for region CL"
    assert reasons[5, "external_ref"] == "debtor not imported: invalid phone on row 4"
    assert reasons[7, "locale"] == "unknown locale 'zz'"
    assert reasons[9, "amount"] == "CLP allows 0 decimals"
    assert reasons[12, "phone"] == "differs from row 11 of the same external_ref"
    assert reasons[14, "invoice_number"] == "also on row 2, debtor C-1"
    assert reasons[16, "amount"] == "use a dot as decimal separator: 80.25"
    assert (report.rows, report.rows_with_errors) == (18, 14)
    assert stored(db) == {
        "C-1": {"F-1": (45990, 45990, "CLP")},
        "C-6": {"F-9": (120, 120, "CLP")},
        "C-7": {"F-10": (5000, 5000, "CLP")},
        "C-10": {"F-13": (12050, 12050, "USD")},
    }
    assert debtor(db, "C-7").phone == "+56961234003"  # the first row's value is kept


def test_semicolon_file_with_bom_and_any_header_case(run, db, data_dir):
    report = run(data_dir / "debtors_semicolon_bom.csv")

    assert report.errors == []
    assert stored(db) == {
        "C-1001": {"F-1": (45990, 45990, "CLP"), "F-2": (38500, 38500, "CLP")},
        "C-1002": {"F-3": (129900, 129900, "CLP")},
    }
    with db.session() as session:
        description = session.scalar(select(Invoice.description).where(Invoice.number == "F-2"))
    assert description == "Consumo de agua; noviembre"
    assert debtor(db, "C-1002").name == "José Ñúñez"


def test_rows_of_a_debtor_may_be_spread_over_the_file(run, db, tmp_path):
    path = write(
        tmp_path,
        "A-1,Ana,,,CL,F-1,100,,CLP,2026-12-05\n"
        "B-1,Bea,,,CL,F-2,200,,CLP,2026-12-05\n"
        "A-1,,,,,F-3,300,,CLP,2026-12-05\n"  # later rows may leave debtor columns empty
        "\n"
        "B-1,Bea,,,CL,F-4,400,,CLP,2026-12-05\n",
    )

    report = run(path, batch_size=1)

    assert report.errors == []
    assert (report.rows, report.debtors_created, report.invoices_created) == (4, 2, 4)
    assert stored(db) == {
        "A-1": {"F-1": (100, 100, "CLP"), "F-3": (300, 300, "CLP")},
        "B-1": {"F-2": (200, 200, "CLP"), "F-4": (400, 400, "CLP")},
    }


def test_row_without_invoice_columns_updates_the_debtor_only(run, db, tmp_path):
    run(write(tmp_path, "A-1,Ana,,,CL,F-1,100,,CLP,2026-12-05\n"))

    report = run(write(tmp_path, "A-1,Ana,+56 9 6123 4567,,CL,,,,,\nB-1,Bea,,,CL,,,,CLP,\n"))

    assert errors_of(report) == [(3, "B-1", "invoice_number")]
    assert report.errors[0].reason == "required when currency is given"
    assert report.debtors_updated == 1
    assert debtor(db, "A-1").phone == "+56961234567"
    assert stored(db) == {"A-1": {"F-1": (100, 100, "CLP")}}


def test_invoice_already_owned_by_another_debtor_is_refused(run, db, creditor, make_debtor, tmp_path):
    make_debtor(creditor=creditor, external_ref="C-1001")  # owns F-1
    path = write(tmp_path, "C-2,Bea,,,CL,F-1,100,,CLP,2026-12-05\nC-2,Bea,,,CL,F-2,200,,CLP,2026-12-05\n")

    report = run(path)

    assert errors_of(report) == [(2, "C-2", "invoice_number")]
    assert report.errors[0].reason == "already belongs to another debtor"
    assert stored(db)["C-2"] == {"F-2": (200, 200, "CLP")}
    assert stored(db)["C-1001"] == {"F-1": (45990, 45990, "CLP")}


def test_debtor_rejected_by_upsert_leaves_its_stored_data_untouched(run, db, creditor, make_debtor, tmp_path):
    make_debtor(creditor=creditor, external_ref="C-1001", name="Ana María Pérez")
    path = write(
        tmp_path,
        "C-1001,Ana Renamed,12345,,CL,F-1,99999,,CLP,2026-12-05\n"  # bad phone: upsert_debtor refuses it
        "C-2,Bea,,,CL,F-2,200,,CLP,2026-12-05\n",
    )

    report = run(path)

    assert errors_of(report) == [(2, "C-1001", "phone")]
    ana = debtor(db, "C-1001")
    assert (ana.name, ana.phone) == ("Ana María Pérez", "+56961234567")
    assert stored(db)["C-1001"] == {"F-1": (45990, 45990, "CLP")}
    assert stored(db)["C-2"] == {"F-2": (200, 200, "CLP")}


def test_invoice_refused_by_upsert_keeps_the_debtors_other_changes(run, db, creditor, make_debtor, tmp_path):
    make_debtor(creditor=creditor, external_ref="C-1001")  # F-1: 45990 CLP
    path = write(
        tmp_path,
        "C-1001,Ana,,,CL,F-1,45990,10000,CLP,2026-12-05\n"
        "C-1001,Ana,,,CL,F-2,99.5,,CLP,2026-12-05\n",  # CLP has no decimals: refused half-way through the debtor
    )

    report = run(path)

    assert errors_of(report) == [(3, "C-1001", "amount")]
    assert (report.debtors_updated, report.invoices_updated, report.invoices_created) == (1, 1, 0)
    assert stored(db)["C-1001"] == {"F-1": (45990, 10000, "CLP")}
    assert debtor(db, "C-1001").name == "Ana"


def test_debtor_refused_by_the_database_costs_only_its_own_rows(run, db, tmp_path, monkeypatch):
    def upsert_breaking_one(session, creditor, data, secret_key, existing=None, known_invoices=None):
        result = upsert_debtor(session, creditor, data, secret_key, existing=existing, known_invoices=known_invoices)
        if data.external_ref == "B-1":
            result.debtor.name = None  # NOT NULL: the whole batch's flush fails
        return result

    monkeypatch.setattr(bot.importer, "upsert_debtor", upsert_breaking_one)
    path = write(
        tmp_path,
        "A-1,Ana,,,CL,F-1,100,,CLP,2026-12-05\nB-1,Bea,,,CL,F-2,200,,CLP,2026-12-05\nC-1,Cata,,,CL,F-3,300,,CLP,2026-12-05\n",
    )

    report = run(path)

    assert errors_of(report) == [(3, "B-1", "row")]
    assert report.errors[0].reason.startswith("rejected by the database")
    assert report.debtors_created == 2
    assert set(stored(db)) == {"A-1", "C-1"}


def test_amount_with_thousands_dot_in_clp_gets_a_hint(run, tmp_path):
    report = run(write(tmp_path, "A-1,Ana,,,CL,F-1,45.990,,CLP,2026-12-05\n"))

    assert errors_of(report) == [(2, "A-1", "amount")]
    assert report.errors[0].reason == ("CLP allows 0 decimals (if you meant 45990, leave out the thousands separator)")


def test_too_many_fields_and_missing_external_ref_are_row_errors(run, db, tmp_path):
    path = write(
        tmp_path,
        "A-1,Ana,,,CL,F-1,100,,CLP,2026-12-05,surplus\n,Bea,,,CL,F-2,200,,CLP,2026-12-05\nC-1,Cata,,,CL,F-3,1,,CLP,2026-12-05\n",
    )

    report = run(path)

    assert errors_of(report) == [(2, "A-1", "row"), (3, "", "external_ref")]
    assert report.errors[0].reason == "has 11 fields, the header 10"
    assert set(stored(db)) == {"C-1"}


def test_dry_run_counts_like_a_real_run_and_writes_nothing(run, db):
    report = run(EXAMPLE, dry_run=True)

    assert report.dry_run
    assert (report.debtors_created, report.invoices_created) == (7, 10)
    assert stored(db) == {}


def test_postgres_statistics_are_refreshed_as_the_tables_grow(run, db, monkeypatch, caplog):
    analyzed_at: list[int] = []
    original = bot.importer._Writer._analyze

    def analyze(writer: bot.importer._Writer) -> None:
        analyzed_at.append(writer.created)
        original(writer)

    monkeypatch.setattr(bot.importer._Writer, "FIRST_ANALYZE_AT", 2)
    monkeypatch.setattr(bot.importer._Writer, "_analyze", analyze)

    report = run(EXAMPLE, batch_size=2)

    assert report.debtors_created == 7
    assert analyzed_at == ([2] if db.dialect == "postgresql" else [])
    assert "ANALYZE" not in caplog.text


def test_progress_is_reported_up_to_the_row_count(run, tmp_path):
    calls: list[tuple[int, int]] = []
    body = "".join(f"A-{n},Ana,,,CL,F-{n},100,,CLP,2026-12-05\n" for n in range(5))

    run(write(tmp_path, body), batch_size=2, progress=lambda done, total: calls.append((done, total)))

    assert calls[0] == (0, 5)
    assert calls[-1] == (5, 5)
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)


def test_file_not_in_utf8_is_refused_even_when_the_bad_bytes_come_late(run, db, tmp_path):
    good_rows = "".join(f"A-{n},Ana,,,CL,F-{n},100,,CLP,2026-12-05\n" for n in range(3000))
    latin1_row = "Z-1,Peña,,,CL,F-Z,100,,CLP,2026-12-05\n".encode("latin-1")
    path = tmp_path / "debtors.csv"
    path.write_bytes((HEADER + good_rows).encode() + latin1_row)

    with pytest.raises(CsvFileError, match="is not UTF-8 text"):
        run(path, batch_size=10)

    assert stored(db) == {}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("external_ref,name,invoice_number\nA-1,Ana,F-1\n", "missing required column(s): amount, due_date"),
        (HEADER.replace("email", "emial"), "unknown column(s): emial"),
        (HEADER.replace("email", "phone"), "column(s) named twice: phone"),
        ("", "the file is empty"),
    ],
)
def test_file_with_a_bad_header_is_refused(run, db, tmp_path, content, message):
    path = write(tmp_path, "A-1,Ana,,,CL,F-1,100,,CLP,2026-12-05\n" if content else "", header=content)

    with pytest.raises(CsvFileError) as raised:
        run(path)

    assert message in str(raised.value)
    assert stored(db) == {}


def test_missing_file_and_unknown_creditor(db, settings, tmp_path):
    with pytest.raises(CsvFileError, match="file not found"):
        import_debtors(db, tmp_path / "nope.csv", "aguas", secret_key=settings.secret_key)
    with pytest.raises(UnknownCreditorError, match="no creditor with slug 'nope'"):
        import_debtors(db, EXAMPLE, "nope", secret_key=settings.secret_key)
