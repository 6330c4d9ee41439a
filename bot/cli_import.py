"""`cobrabot import debtors FILE.csv`: bulk import of debtors and their invoices (format in docs/import.md);
`cobrabot import payments FILE.csv`: bank-statement reconciliation (docs/payments.md)."""

from __future__ import annotations

import csv
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import NoReturn, TextIO

import click
from sqlalchemy.exc import SQLAlchemyError
from tqdm import tqdm

from bot.config import ConfigError, load_settings
from bot.importer import CsvFileError, ImportReport, RowError, UnknownCreditorError, import_debtors
from bot.payments.reconcile import StatementReport, import_statement
from bot.payments.statements import FORMATS, StatementFileError, parse_mapping, statement_format
from bot.store import Database

ERRORS_SHOWN = 20


@click.group("import")
def import_group() -> None:
    """Bulk imports from files."""


@import_group.command("debtors")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--creditor", "creditor_slug", required=True, help="Slug of the creditor the debtors owe.")
@click.option(
    "--batch-size", default=1000, show_default=True, type=click.IntRange(1, 10_000), help="Debtors per transaction."
)
@click.option(
    "--errors-file",
    type=click.File("w", encoding="utf-8", lazy=False),
    help="Write every row error to this CSV (row, external_ref, field, reason).",
)
@click.option("--dry-run", is_flag=True, help="Validate and count everything, then roll back: nothing is written.")
def import_debtors_command(
    file: Path, creditor_slug: str, batch_size: int, errors_file: TextIO | None, dry_run: bool
) -> None:
    """Create or update the debtors and invoices in FILE (CSV, one row per invoice).

    Exits 0 when every row was imported, 1 when some rows were rejected (the others are imported),
    2 when nothing could be imported (unreadable file, bad header, unknown creditor, configuration).
    """
    try:
        settings = load_settings()
    except ConfigError as exc:
        _fail(str(exc))
    database = Database(settings.database_url)
    bar = _ProgressBar()
    try:
        report = import_debtors(
            database,
            file,
            creditor_slug,
            secret_key=settings.secret_key,
            batch_size=batch_size,
            dry_run=dry_run,
            progress=bar,
        )
    except (CsvFileError, UnknownCreditorError) as exc:
        _fail(str(exc))
    except SQLAlchemyError as exc:
        _fail(
            f"database error ({type(exc).__name__}): {str(getattr(exc, 'orig', exc)).splitlines()[0]}\n"
            "Batches finished before it are saved; running the same file again is safe."
        )
    finally:
        bar.close()
        database.dispose()
    if errors_file is not None:
        _write_errors(errors_file, report.errors)
    _print_summary(report)
    _print_errors(report.errors, errors_file)
    sys.exit(1 if report.errors else 0)


class _ProgressBar:
    """A tqdm bar on stderr, opened once the file is scanned and its row count known (not before an error)."""

    def __init__(self, unit: str = " rows", desc: str = "importing") -> None:
        self.bar: tqdm | None = None
        self.unit = unit
        self.desc = desc

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None:
            self.bar = tqdm(total=total, unit=self.unit, file=sys.stderr, desc=self.desc)
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _print_summary(report: ImportReport) -> None:
    if report.dry_run:
        click.echo("dry run: everything was rolled back, nothing was written")
    click.echo(f"rows:             {report.rows}")
    click.echo(
        f"debtors:          {report.debtors_created} created, {report.debtors_updated} updated, "
        f"{report.debtors_unchanged} unchanged"
    )
    click.echo(
        f"invoices:         {report.invoices_created} created, {report.invoices_updated} updated, "
        f"{report.invoices_unchanged} unchanged"
    )
    click.echo(f"rows with errors: {report.rows_with_errors}")
    click.echo(f"time:             {report.seconds:.2f} s ({report.rows_per_second:,.0f} rows/s)")


def _print_errors(errors: list[RowError], errors_file: TextIO | None) -> None:
    if not errors:
        return
    click.echo(f"errors (row numbers count the header as row 1; first {ERRORS_SHOWN} shown):", err=True)
    for error in errors[:ERRORS_SHOWN]:
        click.echo(f"  row {error.row} [{error.external_ref}] {error.field}: {error.reason}", err=True)
    if len(errors) > ERRORS_SHOWN:
        where = f"see {errors_file.name}" if errors_file else "use --errors-file to get them all"
        click.echo(f"  ... and {len(errors) - ERRORS_SHOWN} more ({where})", err=True)


def _write_errors(handle: TextIO, errors: list[RowError]) -> None:
    writer = csv.writer(handle, lineterminator="\n")
    writer.writerow(["row", "external_ref", "field", "reason"])
    writer.writerows([error.row, error.external_ref, error.field, error.reason] for error in errors)
    handle.flush()


@import_group.command("payments")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--format", "format_name", required=True, type=click.Choice(sorted(FORMATS)), help="Statement format.")
@click.option("--creditor", "creditor_slug", required=True, help="Slug of the creditor whose account it is.")
@click.option("--mapping", multiple=True, help="Column or setting override, e.g. amount=Monto or date_format=%d-%m-%Y.")
def import_payments_command(file: Path, format_name: str, creditor_slug: str, mapping: tuple[str, ...]) -> None:
    """Reconcile the bank statement FILE: credits become payments, suggestions or queue entries (docs/payments.md).

    Exits 0 when every line was read, 1 when some lines were rejected (the others are imported), 2 when nothing
    could be imported. The same file again changes nothing.
    """
    try:
        settings = load_settings()
        fmt = statement_format(format_name, parse_mapping(mapping))
        data = file.read_bytes()
    except (ConfigError, StatementFileError) as exc:
        _fail(str(exc))
    except OSError as exc:
        _fail(f"cannot read {file}: {exc.strerror}")
    database = Database(settings.database_url)
    bar = _ProgressBar(unit=" lines", desc="reconciling")
    try:
        report = import_statement(
            database, data, file.name, fmt, creditor_slug, now=_now(), actor="cli", settings=settings, progress=bar
        )
    except (StatementFileError, UnknownCreditorError) as exc:
        _fail(str(exc))
    except SQLAlchemyError as exc:
        _fail(f"database error ({type(exc).__name__}): {str(getattr(exc, 'orig', exc)).splitlines()[0]}")
    finally:
        bar.close()
        database.dispose()
    _print_statement_summary(report)
    for error in report.errors[:ERRORS_SHOWN]:
        click.echo(f"  line {error.line_no}: {error.reason}", err=True)
    if len(report.errors) > ERRORS_SHOWN:
        click.echo(f"  ... and {len(report.errors) - ERRORS_SHOWN} more", err=True)
    sys.exit(1 if report.errors else 0)


def _now() -> datetime:
    return datetime.now(UTC)


def _print_statement_summary(report: StatementReport) -> None:
    if report.already_imported:
        click.echo(f"already imported: this file is batch {report.batch_id}; nothing changed")
    click.echo(f"lines read:       {report.lines}")
    click.echo(f"credits:          {report.credits}")
    click.echo(f"matched:          {report.matched}")
    click.echo(f"suggested:        {report.suggested}")
    click.echo(f"unmatched:        {report.unmatched}")
    click.echo(f"skipped debits:   {report.debits}")
    click.echo(f"errors:           {len(report.errors)}")
    click.echo(f"already imported: {report.seen_before if not report.already_imported else report.credits}")
    click.echo(f"time:             {report.seconds:.2f} s ({report.lines_per_second:,.0f} lines/s)")


def _fail(message: str) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(2)
