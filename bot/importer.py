"""Bulk import of debtors and invoices from CSV, validated exactly like the REST API (bot.debtors).

One row per invoice. Two passes over the file: the first checks encoding and header and notes the last row of
every debtor, so the second can stream rows and hand a debtor to validation as soon as its last row is read,
whatever the row order. Validated debtors are written in batches, one transaction each.
"""

from __future__ import annotations

import csv
import logging
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, TextIO

from pydantic import ValidationError
from sqlalchemy import inspect, select, text
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError
from sqlalchemy.orm import Session, selectinload

from bot.debtors import DebtorIn, FieldError, upsert_debtor
from bot.models import Creditor, Debtor, Invoice
from bot.store import Database

logger = logging.getLogger(__name__)

DEBTOR_COLUMNS = (
    "external_ref", "name", "phone", "email", "telegram_chat_id", "locale", "timezone", "country",
    "channel_preference", "national_id", "birth_date",
)  # fmt: skip
INVOICE_COLUMNS = ("invoice_number", "amount", "balance", "currency", "due_date", "issued_on", "description")
COLUMNS = DEBTOR_COLUMNS + INVOICE_COLUMNS
REQUIRED_COLUMNS = ("external_ref", "name", "invoice_number", "amount", "due_date")
INVOICE_FIELD = {column: column for column in INVOICE_COLUMNS} | {"invoice_number": "number"}
INVOICE_COLUMN = {name: column for column, name in INVOICE_FIELD.items()}
ROW = "row"  # the field named by errors about a whole row rather than one of its columns
IN_LIST_SIZE = 900  # values per IN (...): far below SQLite's and PostgreSQL's bind parameter limits
PLAIN_AMOUNT = re.compile(r"-?\d+(\.\d+)?")
GROUPED_THOUSANDS = re.compile(r"\d{1,3}([.,]\d{3})+")
ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")

Progress = Callable[[int, int], None]  # (rows done, rows in the file)


class CsvFileError(Exception):
    """The file as a whole cannot be imported (missing, not UTF-8, bad header); nothing was written."""


class UnknownCreditorError(LookupError):
    """No creditor has the given slug."""


@dataclass(frozen=True, slots=True)
class RowError:
    """One problem with one row: `row` counts the header as row 1, `field` is a CSV column (or "row")."""

    row: int
    external_ref: str
    field: str
    reason: str


@dataclass
class ImportReport:
    rows: int = 0
    debtors_created: int = 0
    debtors_updated: int = 0
    debtors_unchanged: int = 0
    invoices_created: int = 0
    invoices_updated: int = 0
    invoices_unchanged: int = 0
    errors: list[RowError] = field(default_factory=list)
    seconds: float = 0.0
    dry_run: bool = False

    @property
    def rows_with_errors(self) -> int:
        return len({error.row for error in self.errors})

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0

    def add(self, tally: Counter[str]) -> None:
        for name, count in tally.items():
            setattr(self, name, getattr(self, name) + count)


def import_debtors(
    database: Database,
    path: Path,
    creditor_slug: str,
    *,
    secret_key: str,
    batch_size: int = 1000,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> ImportReport:
    """Import every valid debtor of the file; report the rest row by row. Raises CsvFileError or
    UnknownCreditorError before writing anything."""
    started = time.perf_counter()
    scan = scan_csv(path)
    creditor = _creditor(database, creditor_slug)
    report = ImportReport(rows=scan.rows, dry_run=dry_run)
    validator = _Validator(scan.first_claim)
    writer = _Writer(database, creditor.id, secret_key, dry_run, report.errors)
    if progress:
        progress(0, scan.rows)
    batch: list[_Candidate] = []
    done = 0
    for ref, group in _debtor_groups(scan):
        candidate = validator.prepare(ref, group, report.errors)
        done += len(group)
        if candidate is not None:
            batch.append(candidate)
        if len(batch) >= batch_size:
            report.add(writer.write(batch))
            batch = []
            if progress:
                progress(done, scan.rows)
    if batch:
        report.add(writer.write(batch))
    if progress:
        progress(done, scan.rows)
    report.errors.sort(key=lambda error: error.row)
    report.seconds = time.perf_counter() - started
    return report


def _creditor(database: Database, slug: str) -> Creditor:
    with database.session() as session:
        creditor = session.scalars(select(Creditor).where(Creditor.slug == slug)).one_or_none()
    if creditor is None:
        raise UnknownCreditorError(f"no creditor with slug {slug!r}")
    return creditor


# --- reading -----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Row:
    number: int
    values: dict[str, str]
    problem: str | None = None


@dataclass(frozen=True)
class CsvScan:
    """What the first pass learnt: enough to stream the second pass and group rows by debtor."""

    path: Path
    delimiter: str
    columns: tuple[str, ...]
    rows: int
    last_row: dict[str, int]  # external_ref -> its last row
    first_claim: dict[str, tuple[str, int]]  # invoice_number -> (external_ref, row) of its first row


def scan_csv(path: Path) -> CsvScan:
    """First pass: decode all of it (so an encoding error stops us before any write) and check the header."""
    last_row: dict[str, int] = {}
    first_claim: dict[str, tuple[str, int]] = {}
    rows = 0
    reached = 1
    try:
        with _open(path) as handle:
            delimiter = _sniff_delimiter(handle)
            reader = csv.reader(handle, delimiter=delimiter)
            columns = _header(next(reader, None))
            for row in _rows(reader, columns):
                rows, reached = rows + 1, row.number
                ref = row.values.get("external_ref", "")
                if ref:
                    last_row[ref] = row.number
                    number = row.values.get("invoice_number", "")
                    if number:
                        first_claim.setdefault(number, (ref, row.number))
    except UnicodeDecodeError:
        raise CsvFileError(
            f"{path} is not UTF-8 text (undecodable bytes after row {reached}); save it as 'CSV UTF-8'"
        ) from None
    except csv.Error as exc:
        raise CsvFileError(f"{path}: unreadable CSV after row {reached}: {exc}") from None
    return CsvScan(path, delimiter, columns, rows, last_row, first_claim)


def _open(path: Path) -> TextIO:
    try:
        return path.open(encoding="utf-8-sig", newline="")  # -sig drops the BOM Excel writes
    except FileNotFoundError:
        raise CsvFileError(f"file not found: {path}") from None
    except OSError as exc:
        raise CsvFileError(f"cannot read {path}: {exc.strerror}") from None


def _sniff_delimiter(handle: TextIO) -> str:
    # Column names contain neither character, so the header line alone tells (Excel in es-CL writes ";").
    header = handle.readline()
    handle.seek(0)
    return ";" if header.count(";") > header.count(",") else ","


def _header(raw: list[str] | None) -> tuple[str, ...]:
    if not raw:
        raise CsvFileError("the file is empty; its first row must name the columns")
    names = tuple(name.strip().lower() for name in raw)
    missing = [column for column in REQUIRED_COLUMNS if column not in names]
    if missing:
        raise CsvFileError(f"missing required column(s): {', '.join(missing)} (header: {', '.join(names)})")
    unknown = [name for name in names if name and name not in COLUMNS]
    if unknown:
        raise CsvFileError(f"unknown column(s): {', '.join(unknown)}; known columns: {', '.join(COLUMNS)}")
    repeated = sorted({name for name in names if name and names.count(name) > 1})
    if repeated:
        raise CsvFileError(f"column(s) named twice: {', '.join(repeated)}")
    return names


def _rows(reader: Iterable[list[str]], columns: tuple[str, ...]) -> Iterator[Row]:
    """Data rows numbered as a spreadsheet shows them; blank rows are skipped, unnamed columns ignored."""
    width = len(columns)
    for number, fields in enumerate(reader, start=2):
        if not any(value.strip() for value in fields):
            continue
        values = {name: value.strip() for name, value in zip(columns, fields, strict=False) if name}
        extra = any(value.strip() for value in fields[width:])
        yield Row(number, values, f"has {len(fields)} fields, the header {width}" if extra else None)


def _debtor_groups(scan: CsvScan) -> Iterator[tuple[str, list[Row]]]:
    """Second pass: each debtor's rows, yielded at its last row; only debtors still open are held in memory."""
    pending: dict[str, list[Row]] = {}
    with _open(scan.path) as handle:
        reader = csv.reader(handle, delimiter=scan.delimiter)
        next(reader)
        for row in _rows(reader, scan.columns):
            ref = row.values.get("external_ref", "")
            if not ref:
                yield "", [row]
                continue
            group = pending.setdefault(ref, [])
            group.append(row)
            if scan.last_row[ref] == row.number:
                yield ref, pending.pop(ref)


# --- validating ----------------------------------------------------------------------------------------------


class Problem(NamedTuple):
    invoice: int | None  # index into the debtor's invoices, or None when the debtor itself is invalid
    column: str
    reason: str


@dataclass
class _Candidate:
    """One debtor's accepted rows; validation and writing drop invoices from it, or reject it, as they go."""

    ref: str
    values: dict[str, tuple[str, int]]  # debtor column -> (value, row it was first given on)
    rows: list[int] = field(default_factory=list)  # accepted rows: invoice rows and debtor-only rows
    invoice_rows: list[int] = field(default_factory=list)  # invoice_rows[i] is the row of invoices[i]
    invoices: list[dict[str, str]] = field(default_factory=list)  # as read, keyed by InvoiceIn field
    data: DebtorIn | None = None  # once validated

    def payload(self) -> dict[str, Any]:
        payload: dict[str, Any] = {column: value for column, (value, _) in self.values.items()}
        if "channel_preference" in payload:
            payload["channel_preference"] = [part.strip() for part in payload["channel_preference"].split("|")]
        payload["invoices"] = self.invoices
        return payload

    def row_of(self, problem: Problem) -> int:
        if problem.invoice is not None:
            return self.invoice_rows[problem.invoice]
        return self.values.get(problem.column, ("", self.rows[0]))[1]

    def report(self, problems: list[Problem], errors: list[RowError]) -> None:
        """Record the problems; a debtor problem rejects every row, an invoice problem only that invoice's."""
        errors.extend(RowError(self.row_of(p), self.ref, p.column, p.reason) for p in problems)
        debtor_problem = next((p for p in problems if p.invoice is None), None)
        if debtor_problem is not None:
            reported = {self.row_of(problem) for problem in problems}
            reason = f"debtor not imported: invalid {debtor_problem.column} on row {self.row_of(debtor_problem)}"
            errors.extend(RowError(row, self.ref, "external_ref", reason) for row in self.rows if row not in reported)
            self.rows.clear()
            return
        dropped = {problem.invoice for problem in problems if problem.invoice is not None}
        for index in sorted(dropped, reverse=True):
            self.rows.remove(self.invoice_rows.pop(index))
            del self.invoices[index]
        if self.data is not None:
            kept = [invoice for index, invoice in enumerate(self.data.invoices) if index not in dropped]
            self.data = self.data.model_copy(update={"invoices": kept})


class _Validator:
    """Turns a debtor's rows into a validated DebtorIn, the same input the REST API validates."""

    def __init__(self, first_claim: dict[str, tuple[str, int]]) -> None:
        self.first_claim = first_claim

    def prepare(self, ref: str, group: list[Row], errors: list[RowError]) -> _Candidate | None:
        """The debtor ready to write, or None when none of its rows survives; errors go to `errors`."""
        if not ref:
            errors.append(RowError(group[0].number, "", "external_ref", "required"))
            return None
        candidate = _Candidate(ref, {})
        for row in group:
            row_errors = self._row_errors(candidate, row)
            errors.extend(row_errors)
            if not row_errors:
                candidate.rows.append(row.number)
                if row.values.get("invoice_number"):
                    candidate.invoice_rows.append(row.number)
                    invoice = {INVOICE_FIELD[c]: v for c in INVOICE_COLUMNS if (v := row.values.get(c))}
                    candidate.invoices.append(invoice)
        while candidate.rows:
            problems = _format_problems(candidate)
            if not problems:
                try:
                    candidate.data = DebtorIn.model_validate(candidate.payload())
                    return candidate
                except ValidationError as exc:
                    problems = [_problem_of(error["loc"], error["msg"]) for error in exc.errors()]
            candidate.report(problems, errors)
        return None

    def _row_errors(self, candidate: _Candidate, row: Row) -> list[RowError]:
        """Problems only this row has: its shape, disagreeing with the debtor's earlier rows, its invoice number."""
        ref, values = candidate.ref, row.values
        if row.problem:
            return [RowError(row.number, ref, ROW, row.problem)]
        known = candidate.values
        conflicts = [c for c in DEBTOR_COLUMNS if (v := values.get(c)) and c in known and known[c][0] != v]
        if conflicts:
            return [
                RowError(row.number, ref, column, f"differs from row {known[column][1]} of the same external_ref")
                for column in conflicts
            ]
        for column in DEBTOR_COLUMNS:
            if values.get(column):
                known.setdefault(column, (values[column], row.number))
        number = values.get("invoice_number", "")
        if not number:
            filled = [column for column in INVOICE_COLUMNS if values.get(column)]
            reason = f"required when {', '.join(filled)} is given"
            return [RowError(row.number, ref, "invoice_number", reason)] if filled else []
        owner, first_row = self.first_claim[number]
        if first_row == row.number:
            return []
        reason = f"duplicate of row {first_row}" if owner == ref else f"also on row {first_row}, debtor {owner}"
        return [RowError(row.number, ref, "invoice_number", reason)]


def _format_problems(candidate: _Candidate) -> list[Problem]:
    """CSV spellings the typed API never sees: amounts with thousands separators, dates other than ISO."""
    problems = []
    birth_date = candidate.values.get("birth_date")
    if birth_date and not ISO_DATE.fullmatch(birth_date[0]):
        problems.append(Problem(None, "birth_date", "not a date in YYYY-MM-DD format"))
    for index, invoice in enumerate(candidate.invoices):
        for name in ("amount", "balance"):
            value = invoice.get(name, "")
            if value and not PLAIN_AMOUNT.fullmatch(value):
                problems.append(Problem(index, name, _amount_reason(value)))
        for name in ("due_date", "issued_on"):
            value = invoice.get(name, "")
            if value and not ISO_DATE.fullmatch(value):
                problems.append(Problem(index, name, "not a date in YYYY-MM-DD format"))
    return problems


def _amount_reason(value: str) -> str:
    if GROUPED_THOUSANDS.fullmatch(value):
        return f"thousands separators are not allowed: write {re.sub(r'[.,]', '', value)}"
    if re.fullmatch(r"-?\d+,\d+", value):
        return f"use a dot as decimal separator: {value.replace(',', '.')}"
    return "not a plain number: digits with an optional dot for decimals, e.g. 45990 or 120.50"


def _problem_of(loc: tuple[int | str, ...], message: str) -> Problem:
    """Map a pydantic error location on DebtorIn back to a CSV column (invoices.N.number -> invoice_number)."""
    reason = message.removeprefix("Value error, ")
    if len(loc) >= 2 and loc[0] == "invoices" and isinstance(loc[1], int):
        if len(loc) > 2:
            return Problem(loc[1], INVOICE_COLUMN.get(str(loc[2]), ROW), reason)
        # An error of InvoiceIn as a whole: its one such check compares balance with amount.
        return Problem(loc[1], "balance" if "balance" in reason else ROW, reason)
    if loc and loc[0] == "invoices":
        return Problem(None, "invoice_number", reason)
    return Problem(None, str(loc[0]) if loc else ROW, reason)


def _field_problem(exc: FieldError, candidate: _Candidate) -> Problem:
    """Map upsert_debtor's FieldError (phone, invoices.N.amount) back to a CSV column."""
    parts = exc.field.split(".")
    if len(parts) != 3 or parts[0] != "invoices":
        return Problem(None, parts[0], exc.reason)
    index, name = int(parts[1]), parts[2]
    reason = exc.reason
    raw = candidate.invoices[index].get(name, "")
    if GROUPED_THOUSANDS.fullmatch(raw):
        # "45.990" is a fine decimal, so only the currency's digits catch it; say what was probably meant.
        reason += f" (if you meant {raw.replace('.', '')}, leave out the thousands separator)"
    return Problem(index, INVOICE_COLUMN.get(name, ROW), reason)


# --- writing -------------------------------------------------------------------------------------------------


class _Writer:
    """Writes validated debtors a batch per transaction, loading the batch's existing debtors with one query.

    Row errors go straight to `errors`; counts are returned only for batches that were committed."""

    FIRST_ANALYZE_AT = 1000  # debtors created; then at 10x, 100x, ...

    def __init__(
        self, database: Database, creditor_id: int, secret_key: str, dry_run: bool, errors: list[RowError]
    ) -> None:
        self.database = database
        self.creditor_id = creditor_id
        self.secret_key = secret_key
        self.dry_run = dry_run
        self.errors = errors
        self.created = 0
        self.analyze_at = self.FIRST_ANALYZE_AT

    def write(self, batch: list[_Candidate]) -> Counter[str]:
        tally = self._write_isolating_failures(batch)
        self.created += tally["debtors_created"]
        if self.created >= self.analyze_at and not self.dry_run and self.database.dialect == "postgresql":
            self._analyze()
            self.analyze_at *= 10
        return tally

    def _write_isolating_failures(self, batch: list[_Candidate]) -> Counter[str]:
        try:
            return self._write(batch)
        except (IntegrityError, DataError) as exc:
            if len(batch) == 1:
                self._rejected_by_database(batch[0], exc)
                return Counter()
            # Retrying alone finds the debtor at fault without letting it cost the rest of the batch.
            logger.warning("batch of %d debtors failed (%s); retrying one by one", len(batch), type(exc).__name__)
            tally: Counter[str] = Counter()
            for candidate in batch:
                tally.update(self._write_isolating_failures([candidate]))
            return tally

    def _analyze(self) -> None:
        """Refresh PostgreSQL's statistics while the tables grow.

        Prepared statements keep the plan made when the tables were nearly empty (a sequential scan) until
        statistics change; with autovacuum off or late, each batch would then scan every row imported so far."""
        try:
            with self.database.engine.connect() as connection:
                connection.execute(text("ANALYZE debtors, invoices"))
                connection.commit()
        except DBAPIError as exc:  # e.g. not the tables' owner: slower, still correct
            logger.warning("ANALYZE after %d new debtors failed: %s", self.created, type(exc).__name__)

    def _write(self, batch: list[_Candidate]) -> Counter[str]:
        tally: Counter[str] = Counter()
        with self.database.session() as session:
            creditor = session.get_one(Creditor, self.creditor_id)
            existing = self._existing(session, [candidate.ref for candidate in batch])
            invoices = self._known_invoices(session, batch)
            # No autoflush: upsert_debtor's queries must not flush debtor by debtor; one flush sends the batch.
            with session.no_autoflush:
                for candidate in batch:
                    tally.update(self._upsert(session, creditor, candidate, existing.get(candidate.ref), invoices))
            session.flush()
            if self.dry_run:
                session.rollback()
            else:
                session.commit()
        return tally

    def _known_invoices(self, session: Session, batch: list[_Candidate]) -> dict[str, Invoice]:
        """The batch's invoice numbers that already exist, in one query per chunk instead of one per debtor."""
        numbers = [invoice.number for candidate in batch if candidate.data for invoice in candidate.data.invoices]
        found: dict[str, Invoice] = {}
        for chunk in _chunks(numbers):
            statement = select(Invoice).where(Invoice.creditor_id == self.creditor_id, Invoice.number.in_(chunk))
            found.update((invoice.number, invoice) for invoice in session.scalars(statement))
        return found

    def _existing(self, session: Session, refs: list[str]) -> dict[str, Debtor]:
        found: dict[str, Debtor] = {}
        for chunk in _chunks(refs):
            statement = (
                select(Debtor)
                .where(Debtor.creditor_id == self.creditor_id, Debtor.external_ref.in_(chunk))
                .options(selectinload(Debtor.invoices))  # appending a new invoice must not lazy-load them one by one
            )
            found.update((debtor.external_ref, debtor) for debtor in session.scalars(statement))
        return found

    def _upsert(
        self,
        session: Session,
        creditor: Creditor,
        candidate: _Candidate,
        current: Debtor | None,
        invoices: dict[str, Invoice],
    ) -> Counter[str]:
        while candidate.rows and candidate.data is not None:
            debtor = current
            if debtor is None:
                # The batch preload showed it is new: handing upsert_debtor a fresh debtor as `existing`
                # spares it a lookup query per debtor.
                debtor = Debtor(creditor_id=creditor.id, external_ref=candidate.ref, name=candidate.data.name)
                session.add(debtor)
            try:
                result = upsert_debtor(
                    session, creditor, candidate.data, self.secret_key, existing=debtor, known_invoices=invoices
                )
            except FieldError as exc:
                _discard(session, debtor)
                candidate.report([_field_problem(exc, candidate)], self.errors)
                continue
            created, updated = result.invoices_created, result.invoices_updated
            changed = created or updated or session.is_modified(debtor, include_collections=False)
            state = "created" if current is None else "updated" if changed else "unchanged"
            return Counter(
                {
                    f"debtors_{state}": 1,
                    "invoices_created": created,
                    "invoices_updated": updated,
                    "invoices_unchanged": len(candidate.data.invoices) - created - updated,
                }
            )
        return Counter()

    def _rejected_by_database(self, candidate: _Candidate, exc: Exception) -> None:
        logger.warning("debtor %s rejected by the database: %s", candidate.ref, type(exc).__name__)
        reason = f"rejected by the database: {str(getattr(exc, 'orig', exc)).splitlines()[0]}"
        self.errors.extend(RowError(row, candidate.ref, ROW, reason) for row in candidate.rows)
        candidate.rows.clear()


def _discard(session: Session, debtor: Debtor) -> None:
    """Undo what a failed upsert_debtor left in the session: it sets fields before it has checked them all."""
    for invoice in debtor.invoices:
        state = inspect(invoice)
        if state.pending:
            session.expunge(invoice)
        elif state.modified:
            session.expire(invoice)
    if inspect(debtor).pending:
        session.expunge(debtor)
    else:
        session.expire(debtor)


def _chunks(values: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(values), IN_LIST_SIZE):
        yield values[start : start + IN_LIST_SIZE]
