"""Bank statement files: a column-mapped CSV format and named Chilean bank exports, parsed into typed lines.

Parsing never writes anything and never stops at a bad line: each one is reported with its line number and why,
and the good lines go on to reconciliation (bot.payments.reconcile). Only a file that cannot be read at all
(not text, no header row, a mapped column missing) raises StatementFileError.
"""

from __future__ import annotations

import csv
import io
import re
import unicodedata
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from decimal import Decimal

from babel.numbers import NumberFormatError, parse_decimal

from bot.domain import Money

FIELDS = ("date", "amount", "credit", "debit", "description", "reference", "payer_name")
SETTINGS = ("date_format", "locale", "delimiter", "currency")
HEADER_SEARCH_ROWS = 30  # bank exports put account details above the header; this many rows are searched


class StatementFileError(Exception):
    """The file as a whole cannot be read as this format; nothing was imported."""


@dataclass(frozen=True, slots=True)
class StatementFormat:
    """How one kind of export spells its lines. `columns` maps our field names to the file's header names."""

    name: str
    columns: Mapping[str, str]
    date_format: str = "%Y-%m-%d"
    locale: str = "en"
    delimiter: str | None = None  # None: whichever of ";" and "," the header row uses more
    currency: str | None = None  # None: the creditor's currency
    payer_pattern: re.Pattern[str] | None = None  # finds the payer's name in the description

    def with_mapping(self, overrides: Mapping[str, str]) -> StatementFormat:
        """This format with some columns (`amount=Monto`) or settings (`date_format=%d-%m-%Y`) replaced."""
        unknown = sorted(set(overrides) - set(FIELDS) - set(SETTINGS))
        if unknown:
            raise StatementFileError(
                f"unknown mapping key(s): {', '.join(unknown)}; known: {', '.join(FIELDS + SETTINGS)}"
            )
        columns = dict(self.columns) | {key: value for key, value in overrides.items() if key in FIELDS}
        settings = {key: value for key, value in overrides.items() if key in SETTINGS}
        return replace(self, columns=columns, **settings)


@dataclass(frozen=True, slots=True)
class ParsedLine:
    """One statement line: a credit (money in, a possible payment) or a debit (money out, skipped)."""

    line_no: int
    booked_on: date
    amount: Money  # always positive
    is_credit: bool
    description: str
    reference: str | None
    payer_name: str | None


@dataclass(frozen=True, slots=True)
class LineError:
    line_no: int
    reason: str


@dataclass
class ParsedStatement:
    lines: list[ParsedLine] = field(default_factory=list)
    errors: list[LineError] = field(default_factory=list)
    rows: int = 0  # data rows read, good or bad

    @property
    def credits(self) -> list[ParsedLine]:
        return [line for line in self.lines if line.is_credit]

    @property
    def debits(self) -> int:
        return sum(1 for line in self.lines if not line.is_credit)


GENERIC = StatementFormat(
    name="generic",
    columns={
        "date": "date",
        "amount": "amount",
        "description": "description",
        "reference": "reference",
        "payer_name": "payer_name",
    },
)

# BancoEstado "Cartola" CSV export (Excel in es-CL): account details above the header, semicolons,
# dd/mm/yyyy dates, amounts like 45.990 and separate Cargos (money out) and Abonos (money in) columns.
BANCOESTADO = StatementFormat(
    name="bancoestado",
    columns={
        "date": "Fecha",
        "reference": "N° Operación",
        "description": "Descripción",
        "debit": "Cargos",
        "credit": "Abonos",
    },
    date_format="%d/%m/%Y",
    locale="es_CL",
    delimiter=";",
    payer_pattern=re.compile(
        r"(?:TRANSFERENCIA|TRANSF\.?|TEF|DEPOSITO|DEPÓSITO)\s+(?:DE|DESDE)\s+"
        r"(?P<name>(?:(?!(?:PAGO|RUT|REF|FACT\w*|CTA|N)\b)[^\d\s]+\s*)+)",
        re.IGNORECASE,
    ),
)

FORMATS: dict[str, StatementFormat] = {fmt.name: fmt for fmt in (GENERIC, BANCOESTADO)}


def statement_format(name: str, mapping: Mapping[str, str] | None = None) -> StatementFormat:
    """The named format, with `mapping` overrides; raises StatementFileError for an unknown name."""
    try:
        fmt = FORMATS[name]
    except KeyError:
        raise StatementFileError(f"unknown statement format {name!r}; known: {', '.join(FORMATS)}") from None
    return fmt.with_mapping(mapping) if mapping else fmt


def parse_mapping(pairs: list[str] | tuple[str, ...]) -> dict[str, str]:
    """`["amount=Monto", "date_format=%d-%m-%Y"]` -> a dict; raises StatementFileError for a pair without '='."""
    mapping = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise StatementFileError(f"mapping {pair!r} is not key=column")
        mapping[key.strip()] = value.strip()
    return mapping


def parse_statement(data: bytes, fmt: StatementFormat, currency: str) -> ParsedStatement:
    """Every line of the file as a ParsedLine or a LineError; `currency` is used when the format names none."""
    text = _decode(data)
    rows = list(_csv_rows(text, fmt))
    header_index, positions = _find_header(rows, fmt)
    statement = ParsedStatement()
    reader = _LineReader(fmt, fmt.currency or currency, positions)
    for line_no, cells in rows[header_index + 1 :]:
        if not any(cell.strip() for cell in cells):
            continue
        statement.rows += 1
        try:
            statement.lines.append(reader.read(line_no, cells))
        except ValueError as exc:
            statement.errors.append(LineError(line_no, str(exc)))
    return statement


def normalise(text: str) -> str:
    """Lower case, accents and punctuation gone, single spaces: 'N° Operación' -> 'n operacion'."""
    stripped = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return " ".join(re.sub(r"[^a-z0-9]+", " ", stripped.lower()).split())


def _decode(data: bytes) -> str:
    if not data.strip():
        raise StatementFileError("the file is empty")
    if b"\x00" in data[:4096]:
        raise StatementFileError("the file is not a CSV text file (it looks binary, e.g. an .xlsx); export it as CSV")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        # Chilean bank portals still export Windows-1252; every byte decodes, so check it reads as text.
        text = data.decode("cp1252", errors="replace")
        if text.count("\ufffd") > 10:
            raise StatementFileError("the file is neither UTF-8 nor Windows-1252 text") from None
        return text


def _csv_rows(text: str, fmt: StatementFormat) -> Iterator[tuple[int, list[str]]]:
    delimiter = fmt.delimiter or _sniff_delimiter(text)
    try:
        yield from enumerate(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter), start=1)
    except csv.Error as exc:
        raise StatementFileError(f"unreadable CSV: {exc}") from None


def _sniff_delimiter(text: str) -> str:
    head = "\n".join(text.splitlines()[:HEADER_SEARCH_ROWS])
    return ";" if head.count(";") > head.count(",") else ","


def _find_header(rows: list[tuple[int, list[str]]], fmt: StatementFormat) -> tuple[int, dict[str, int]]:
    """The first row naming the date column, and where each mapped column sits in it."""
    wanted = {key: normalise(name) for key, name in fmt.columns.items()}
    for index, (_line_no, cells) in enumerate(rows[:HEADER_SEARCH_ROWS]):
        names = [normalise(cell) for cell in cells]
        if wanted["date"] not in names:
            continue
        positions = {key: names.index(name) for key, name in wanted.items() if name in names}
        _check_columns(fmt, positions)
        return index, positions
    raise StatementFileError(
        f"no header row with a {fmt.columns['date']!r} column in the first {HEADER_SEARCH_ROWS} lines; "
        f"is this a {fmt.name} statement? (use --format / --mapping date=...)"
    )


def _check_columns(fmt: StatementFormat, positions: dict[str, int]) -> None:
    has_amount = "amount" in positions or "credit" in positions
    if not has_amount:
        needed = "amount" if "amount" in fmt.columns else "credit"
        raise StatementFileError(f"the header has no {fmt.columns.get(needed, needed)!r} column")
    if "description" not in positions:
        raise StatementFileError(f"the header has no {fmt.columns.get('description', 'description')!r} column")


class _LineReader:
    def __init__(self, fmt: StatementFormat, currency: str, positions: dict[str, int]) -> None:
        self.fmt = fmt
        self.currency = currency
        self.positions = positions

    def read(self, line_no: int, cells: list[str]) -> ParsedLine:
        booked_on = self._date(self._cell(cells, "date"))
        amount, is_credit = self._amount(cells)
        description = " ".join(self._cell(cells, "description").split())[:500]
        payer = self._cell(cells, "payer_name") or self._payer_from(description)
        return ParsedLine(
            line_no=line_no,
            booked_on=booked_on,
            amount=amount,
            is_credit=is_credit,
            description=description,
            reference=self._cell(cells, "reference")[:200] or None,
            payer_name=payer[:200] or None,
        )

    def _cell(self, cells: list[str], key: str) -> str:
        position = self.positions.get(key)
        if position is None or position >= len(cells):
            return ""
        return cells[position].strip()

    def _date(self, value: str) -> date:
        if not value:
            raise ValueError(f"no date in column {self.fmt.columns['date']!r}")
        try:
            return datetime.strptime(value, self.fmt.date_format).date()
        except ValueError:
            raise ValueError(f"date {value!r} does not match {self.fmt.date_format}") from None

    def _amount(self, cells: list[str]) -> tuple[Money, bool]:
        if "amount" in self.positions:
            value = self._decimal(self._cell(cells, "amount"), "amount")
            if value is None or value == 0:
                raise ValueError("no amount")
            return self._money(abs(value)), value > 0
        credit = self._decimal(self._cell(cells, "credit"), "credit")
        debit = self._decimal(self._cell(cells, "debit"), "debit")
        if credit and debit:
            raise ValueError("both a credit and a debit on one line")
        if credit:
            return self._money(abs(credit)), True
        if debit:
            return self._money(abs(debit)), False
        raise ValueError("neither a credit nor a debit amount")

    def _decimal(self, value: str, key: str) -> Decimal | None:
        cleaned = value.replace("$", "").replace(" ", "").replace("\u00a0", "")
        if not cleaned:
            return None
        try:
            return parse_decimal(cleaned, locale=self.fmt.locale, strict=True)
        except NumberFormatError:
            column = self.fmt.columns.get(key, key)
            raise ValueError(f"{column} {value!r} is not an amount in {self.fmt.locale} format") from None

    def _money(self, value: Decimal) -> Money:
        return Money.from_amount(value, self.currency)  # ValueError for fractions the currency cannot hold

    def _payer_from(self, description: str) -> str:
        if self.fmt.payer_pattern is None:
            return ""
        found = self.fmt.payer_pattern.match(description)
        return " ".join(found.group("name").split()) if found else ""
