"""Statement parsing: named bank exports and the column-mapped format, locale amounts, and bad lines reported
with their number and reason instead of stopping the import."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from bot.domain import Money
from bot.payments.statements import (
    BANCOESTADO,
    GENERIC,
    StatementFileError,
    normalise,
    parse_mapping,
    parse_statement,
    statement_format,
)

EXAMPLE = Path(__file__).parents[3] / "examples" / "statement_bancoestado.csv"


def test_bancoestado_example_skips_the_preamble_and_reads_credits_and_debits():
    statement = parse_statement(EXAMPLE.read_bytes(), BANCOESTADO, "CLP")

    assert statement.rows == 9 and len(statement.credits) == 6 and statement.debits == 2
    first = statement.lines[0]
    assert (first.line_no, first.booked_on, first.amount, first.is_credit) == (
        7, date(2026, 11, 2), Money(45990, "CLP"), True,
    )  # fmt: skip
    assert (first.reference, first.payer_name) == ("100234", "ANA MARIA PEREZ")
    assert statement.lines[1].is_credit is False and statement.lines[1].amount == Money(120000, "CLP")
    assert [(e.line_no, e.reason) for e in statement.errors] == [
        (15, "Abonos 'veinte mil' is not an amount in es_CL format")
    ]


def test_windows_1252_export_is_read():
    text = "Fecha;Descripción;Cargos;Abonos\n01/11/2026;TRANSFERENCIA DE JOSÉ ÑUÑEZ;;1.500\n"

    statement = parse_statement(text.encode("cp1252"), BANCOESTADO, "CLP")

    assert statement.lines[0].payer_name == "JOSÉ ÑUÑEZ"


@pytest.mark.parametrize(
    ("locale", "raw", "minor"),
    [("es_CL", "45.990", 45990), ("en", "45,990.00", 45990), ("es_CL", "$ 1.234.567", 1234567), ("en", "-1,000", 1000)],
)
def test_amounts_in_each_locale(locale, raw, minor):
    fmt = GENERIC.with_mapping({"locale": locale})

    line = parse_statement(f'date;amount;description\n2026-11-05;"{raw}";x\n'.encode(), fmt, "CLP").lines[0]

    assert line.amount == Money(minor, "CLP") and line.is_credit is not raw.startswith("-")


def test_mapping_renames_columns_and_sets_date_format():
    fmt = statement_format("generic", parse_mapping(["date=Fecha", "amount=Monto", "description=Glosa",
                                                      "payer_name=Ordenante", "date_format=%d-%m-%Y"]))  # fmt: skip
    data = "Fecha,Monto,Glosa,Ordenante\n05-11-2026,10000,pago,Ana Pérez\n".encode()

    line = parse_statement(data, fmt, "CLP").lines[0]

    assert (line.booked_on, line.payer_name, line.description) == (date(2026, 11, 5), "Ana Pérez", "pago")


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ("2026-13-01,100,x", "date '2026-13-01' does not match %Y-%m-%d"),
        (",100,x", "no date in column 'date'"),
        ("2026-11-01,,x", "no amount"),
        ("2026-11-01,12.50,x", "12.50 has more decimals than CLP allows"),
        ("2026-11-01,abc,x", "amount 'abc' is not an amount in en format"),
    ],
)
def test_bad_lines_are_reported_not_raised(row, reason):
    data = f"date,amount,description\n2026-11-01,100,good\n{row}\n".encode()

    statement = parse_statement(data, GENERIC, "CLP")

    assert len(statement.lines) == 1
    assert [(e.line_no, e.reason) for e in statement.errors] == [(3, reason)]


def test_usd_keeps_cents():
    line = parse_statement(b"date,amount,description\n2026-11-01,12.50,x\n", GENERIC, "USD").lines[0]

    assert line.amount == Money(1250, "USD")


def test_both_credit_and_debit_is_a_line_error():
    data = "Fecha;Descripción;Cargos;Abonos\n01/11/2026;x;1.000;2.000\n".encode()

    assert parse_statement(data, BANCOESTADO, "CLP").errors[0].reason == "both a credit and a debit on one line"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"PK\x03\x04\x00\x00binary", "looks binary"),
        (b"a,b,c\n1,2,3\n", "no header row with a 'date' column"),
        (b"date,description\n2026-11-01,x\n", "no 'amount' column"),
    ],
)
def test_unreadable_files_raise(data, message):
    with pytest.raises(StatementFileError, match=message):
        parse_statement(data, GENERIC, "CLP")


def test_unknown_format_and_mapping_key():
    with pytest.raises(StatementFileError, match="unknown statement format 'bci'"):
        statement_format("bci")
    with pytest.raises(StatementFileError, match="unknown mapping key"):
        statement_format("generic", {"colour": "x"})


def test_normalise_strips_accents_and_punctuation():
    assert normalise("  N° Operación ") == "n operacion"
    assert normalise("José Ñúñez-Soto") == "jose nunez soto"
